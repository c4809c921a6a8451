"""What `cull eval` and `cull calibrate` write and read: outputs never replace a file that is not cull's own,
problems with an output are found before any work, a labelled tree is walked as `cull scan` walks one,
and a malformed card is a one-line error.  (Found by a hostile-input test of both commands.)"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.card import load_card
from cull.cli import app
from cull.errors import ModelError
from cull.evaluate import labelled_tree
from tests.conftest import REPO, blurred_image, save, sharp_image

SHIPPED = REPO / "models" / "focus.json"


def labelled(root: Path, n: int = 3) -> Path:
    for i in range(n):
        save(sharp_image(i), root / "sharp" / f"s{i}.jpg")
        save(blurred_image(i, 8), root / "blurred" / f"b{i}.jpg")
    return root


def run(*args: object) -> object:
    return CliRunner().invoke(app, [str(a) for a in args])


def test_eval_json_replaces_only_its_own_report(tmp_path):
    folder = labelled(tmp_path / "set")
    photo = folder / "sharp" / "s0.jpg"
    before = photo.read_bytes()
    for target, why in ((photo, "must end in .json"), (tmp_path / "notes.json", "is not a cull eval report"),
                        (tmp_path / "a_folder.json", "is a folder")):
        if target.name == "notes.json":
            target.write_text('{"my": "notes"}')
        elif target.name == "a_folder.json":
            target.mkdir()
        result = run("eval", folder, "--workers", "1", "--json", target)
        assert result.exit_code == 2 and why in result.stderr, result.output
        assert "evaluating" not in result.stderr  # refused before any photo was scored
    assert photo.read_bytes() == before and json.loads((tmp_path / "notes.json").read_text()) == {"my": "notes"}
    report = tmp_path / "report.json"
    assert run("eval", folder, "--workers", "1", "--json", report).exit_code == 0
    assert json.loads(report.read_text())["report"] == "cull eval"
    assert run("eval", folder, "--workers", "1", "--json", report).exit_code == 0  # a rerun replaces it


def test_calibrate_out_never_replaces_a_file_that_is_not_a_calibrated_card(tmp_path):
    folder = tmp_path / "set"
    notes = tmp_path / "notes.json"
    notes.write_text('{"my": "notes"}')
    photo = tmp_path / "photo.jpg"
    save(sharp_image(0), photo)
    (tmp_path / "link.json").symlink_to(photo.name)  # a .json name that leads to a photo
    (tmp_path / "l1.json").symlink_to("l2.json")
    (tmp_path / "l2.json").symlink_to("l1.json")
    (tmp_path / "folder.json").mkdir()
    other_base = tmp_path / "base" / "focus.json"
    other_base.parent.mkdir()
    shutil.copy(SHIPPED, other_base)
    shutil.copy(REPO / "models" / "focus.onnx", other_base.with_suffix(".onnx"))
    for out, extra, why in ((notes, [], "not a card written by cull calibrate"),
                            (tmp_path / "link.json", [], "not a card written by cull calibrate"),
                            (tmp_path / "l1.json", [], "loop"),
                            (tmp_path / "folder.json", [], "is a folder"),
                            (SHIPPED, ["--model", other_base], "not a card written by cull calibrate")):
        result = run("calibrate", folder if folder.exists() else tmp_path, "--out", out, *extra)
        assert result.exit_code == 2 and why in result.stderr, (out, result.output)
    assert json.loads(notes.read_text()) == {"my": "notes"} and photo.read_bytes()[:2] == b"\xff\xd8"
    assert load_card(SHIPPED).version == json.loads(SHIPPED.read_text())["version"]


def test_a_labelled_tree_is_walked_as_scan_walks_a_folder(tmp_path):
    """Hidden files are left out; a dangling link or a loop is reported per file (exit 1), not dropped."""
    folder = labelled(tmp_path / "set")
    (folder / "sharp" / "._s0.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (folder / "sharp" / ".thumbnails").mkdir()
    (folder / "sharp" / ".thumbnails" / "t.jpg").write_bytes(b"x")
    (folder / "blurred" / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (folder / "blurred" / "loopA.jpg").symlink_to("loopB.jpg")
    (folder / "blurred" / "loopB.jpg").symlink_to("loopA.jpg")
    photos, unreadable = labelled_tree(folder)
    assert sorted(p.path.name for p in photos) == ["b0.jpg", "b1.jpg", "b2.jpg", "s0.jpg", "s1.jpg", "s2.jpg"]
    assert sorted(p.path.name for p, _ in unreadable) == ["gone.jpg", "loopA.jpg", "loopB.jpg"]
    result = run("eval", folder, "--workers", "1")
    assert result.exit_code == 1
    assert "gone.jpg" in result.stderr and "._s0" not in result.output + result.stderr


@pytest.mark.parametrize("raw", ["[]", "null", '"text"', "THRESHOLDS_LIST", "KIND_TEXT", "NAN_TEXTURE"])
def test_a_card_of_the_wrong_shape_is_a_one_line_model_error(tmp_path, raw):
    card = json.loads(SHIPPED.read_text())
    card["model_file"] = str(REPO / "models" / "focus.onnx")
    if raw == "THRESHOLDS_LIST":
        card["thresholds"] = []
    elif raw == "KIND_TEXT":
        card["kind"] = "x"
    elif raw == "NAN_TEXTURE":
        card["analysis"]["min_std"] = math.nan
    path = tmp_path / "card.json"
    path.write_text(raw if raw in ("[]", "null", '"text"') else json.dumps(card))
    with pytest.raises(ModelError, match="malformed model card|invalid analysis settings"):
        load_card(path)
    result = run("scan", tmp_path, "--model", path, "--no-xmp")
    assert result.exit_code == 2 and "Traceback" not in result.output
    with pytest.raises(ModelError, match="no such file"):
        load_card(tmp_path / "typo.json")


SLOW = '''
import time
import cull.analyse
real = cull.analyse.decode_levels
def setup():
    def slow(path, long_side):
        time.sleep(0.5)
        return real(path, long_side)
    cull.analyse.decode_levels = slow
'''

MAIN = '''
import sys
from pathlib import Path
from cull.__main__ import _stop_cleanly_on_termination
from cull.card import load_card
from cull.runner import analyse_paths
import slowdecode
_stop_cleanly_on_termination()
photos = sorted(Path(sys.argv[1]).glob("*.jpg")) * 10
for analysis in analyse_paths(photos, load_card(), workers=2, worker_setup=slowdecode.setup):
    print("scored", flush=True)
'''


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups")
def test_sigterm_ends_a_scan_without_leaving_workers_behind(tmp_path):
    """`cull` turns SIGTERM into an orderly exit: the pool shuts down, no worker or fork server stays."""
    (tmp_path / "slowdecode.py").write_text(SLOW)
    photos = tmp_path / "photos"
    for i in range(2):
        save(sharp_image(i), photos / f"{i}.jpg")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}
    proc = subprocess.Popen([sys.executable, "-c", MAIN, str(photos)], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "scored"  # workers are busy now
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)  # anything left in the command's process group?
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("worker processes outlived the command")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses names that are not UTF-8")
def test_names_that_are_not_utf8_are_shown_escaped_by_eval_and_calibrate(tmp_path):
    folder = labelled(tmp_path / "set")
    (folder / "blurred").joinpath(os.fsdecode(b"bad_\xff.jpg")).write_bytes(b"junk")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "CULL_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-m", "cull", "eval", str(folder), "--workers", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bad_\\xff.jpg: not an image file" in done.stderr


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads folders without permission")
def test_a_folder_that_cannot_be_searched_is_reported_not_a_traceback(tmp_path):
    folder = labelled(tmp_path / "set")
    locked = folder / "blurred" / "locked"
    save(blurred_image(5, 8), locked / "b5.jpg")
    locked.chmod(0o600)  # listable by name only: no entry can be opened
    try:
        result = run("eval", folder, "--workers", "1")
        assert result.exit_code == 1 and "Traceback" not in result.output and "locked" in result.stderr
    finally:
        locked.chmod(0o755)


def test_a_report_or_sheet_through_a_link_never_replaces_a_photo(tmp_path):
    """report.csv (or sheet.html) that is a link to a photo: refused before any work; the photo intact."""
    photo = save(sharp_image(0, 0.25), tmp_path / "lib" / "kodim.jpg")
    before = photo.read_bytes()
    (tmp_path / "lib" / "report.csv").symlink_to(photo)
    (tmp_path / "sheet.html").symlink_to(photo)
    runner = CliRunner()
    scan = runner.invoke(app, ["scan", str(tmp_path / "lib"), "--report", str(tmp_path / "lib" / "report.csv"), "-j1"])
    assert scan.exit_code == 2 and "is a link to" in scan.stderr and "not replaced" in scan.stderr
    review = runner.invoke(app, ["review", str(tmp_path / "lib"), "--html", str(tmp_path / "sheet.html"), "-j1"])
    assert review.exit_code == 2 and "is a link to" in review.stderr
    assert photo.read_bytes() == before


def test_review_refuses_a_burst_gap_without_bursts_and_an_empty_label(tmp_path):
    runner = CliRunner()
    gap = runner.invoke(app, ["review", str(tmp_path), "--burst-gap", "5", "--html", str(tmp_path / "s.html")])
    assert gap.exit_code == 2 and "Traceback" not in gap.output and "--bursts" in gap.stderr
    label = runner.invoke(app, ["review", str(tmp_path), "--label", "", "--html", str(tmp_path / "s.html")])
    assert label.exit_code == 2 and "Traceback" not in label.output


def test_a_reader_that_goes_away_does_not_lose_the_scan(tmp_path):
    """`cull scan DIR | head -1`: the listing stops, the scan's sidecars and report are still written."""
    for i in range(40):
        save(blurred_image(i % 4, 6).resize((200, 150)), tmp_path / "lib" / f"b{i:02d}.jpg")
    report = tmp_path / "r.jsonl"
    env = {**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "cull", "scan", str(tmp_path / "lib"), "-j1", "--show", "all",
                             "--report", str(report)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.readline()
    proc.stdout.close()  # as `head -1` exits
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert len(list((tmp_path / "lib").glob("*.jpg.xmp"))) == 40 and len(report.read_text().splitlines()) == 40
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_contact_sheet_names_a_non_utf8_photo_escaped(tmp_path):
    folder = tmp_path / "H"
    folder.mkdir()
    save(blurred_image(0, 6).resize((300, 200)), Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.jpg")))
    result = CliRunner().invoke(app, ["review", str(folder), "--html", str(tmp_path / "sheet.html"), "-j1"])
    assert result.exit_code == 0, result.output
    assert "caf\\xe9.jpg" in (tmp_path / "sheet.html").read_text(encoding="utf-8")


def test_ctrl_c_during_a_scan_says_how_far_it_got(tmp_path, monkeypatch):
    """Ctrl-C while photos are scored: one line saying what was kept and what was not written, exit 130
    (typer's own handling printed nothing: the user could not tell that no XMP was written)."""
    import cull.scan

    for i in range(3):
        save(sharp_image(i, 0.25), tmp_path / "lib" / f"{i}.jpg")

    def interrupted(paths, card, options, *, on_total=None, on_result=None, **_):  # type: ignore[no-untyped-def]
        on_total(3)
        on_result(None)
        raise KeyboardInterrupt

    monkeypatch.setattr(cull.scan, "scan", interrupted)
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "lib"), "-j1"])
    assert result.exit_code == 130
    assert "interrupted after 1 of 3 photos" in result.stderr and "no XMP and no report written" in result.stderr
    assert not list((tmp_path / "lib").glob("*.xmp"))


def test_small_command_line_mistakes_are_one_line(tmp_path):
    runner = CliRunner()
    photo = save(sharp_image(0, 0.25), tmp_path / "p.jpg")
    card = runner.invoke(app, ["scan", str(tmp_path), "--model", str(photo)])
    assert card.exit_code == 2 and "is not a model card" in card.stderr
    nan = runner.invoke(app, ["eval", str(tmp_path), "--laplacian-threshold", "nan"])
    assert nan.exit_code == 2 and "--laplacian-threshold" in nan.stderr
    prune = runner.invoke(app, ["cache", "prune", "--model", str(tmp_path / "typo.json")])
    assert prune.exit_code == 2 and "--other-models" in prune.stderr
    helped = runner.invoke(app, ["scan", "--help"])
    assert "PATH..." in helped.output and "{paths}" not in helped.output


def test_an_unreadable_photo_named_on_the_command_line_is_a_per_file_error(tmp_path):
    """Like the same photo one folder down: an error line and exit 1, the other photos scanned (it was a
    usage error refusing the whole scan)."""
    from tests.conftest import drop_dac_override

    good = save(sharp_image(0, 0.25), tmp_path / "good.jpg")
    bad = save(sharp_image(1, 0.25), tmp_path / "bad.jpg")
    bad.chmod(0)
    result = subprocess.run([sys.executable, "-m", "cull", "scan", str(good), str(bad), "-j1", "--dry-run"],
                            capture_output=True, text=True, preexec_fn=drop_dac_override,
                            env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 1, result.stderr
    assert "bad.jpg" in result.stderr and "1 keep" in result.stdout
