"""`cull scan` end to end: verdicts, reports, exit codes, bad input, cache, dry run."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import cull.analyse
from cull.cache import default_cache_path
from cull.cli import app
from cull.decide import Verdict
from cull.scan import ScanOptions, scan
from tests.conftest import (
    CLEARLY_SHARP,
    EXAMPLES,
    blurred_image,
    drop_dac_override,
    save,
    sharp_image,
    tree_snapshot,
)

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_examples_folder_sharp_kept_blurred_flagged(tmp_path):
    photos = tmp_path / "examples"
    shutil.copytree(EXAMPLES, photos)
    report = tmp_path / "scan.jsonl"
    result = run("scan", photos, "--report", report, "--workers", "1")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(rows) == 8
    assert all({"path", "score", "verdict", "kind", "partner", "error"} <= set(r) for r in rows)
    for row in rows:
        blurred = "_defocus" in row["path"] or "_motion" in row["path"]
        assert 0.0 <= row["score"] <= 1.0 and row["error"] is None
        if blurred:
            assert row["verdict"] in ("reject", "uncertain"), row  # never kept
        else:
            assert row["verdict"] != "reject", row  # in-focus priority: a sharp photo is never rejected
    sharp_kept = [r for r in rows if "_" not in Path(r["path"]).stem and r["verdict"] == "keep"]
    assert len(sharp_kept) >= 3  # kodim23 (shallow depth of field, soft film scan) may be uncertain
    assert "8 files: " in result.stdout and "files/s" in result.stdout
    listed = [line.split()[0] for line in result.stdout.splitlines()[:-1]]
    assert sorted(listed) == sorted(r["verdict"] for r in rows if r["verdict"] != "keep")  # the default: flagged
    for show in ("flagged", "rejects"):  # review's word, and scan's older one for the same
        again = run("scan", photos, "--workers", "1", "--show", show, "--no-xmp")
        assert again.stdout.splitlines()[:-1] == result.stdout.splitlines()[:-1]


def test_csv_report_and_raw_jpeg_pair_scored_once(tmp_path):
    photos = tmp_path / "photos"
    save(sharp_image(1), photos / "IMG_0001.JPG")
    (photos / "IMG_0001.CR2").write_bytes(b"not really raw")  # partner: never decoded
    report = tmp_path / "r.csv"
    result = run("scan", photos, "--report", report, "--workers", "1")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(report.read_text())))
    assert len(rows) == 1
    assert rows[0]["path"].endswith("IMG_0001.JPG") and rows[0]["partner"].endswith("IMG_0001.CR2")
    assert rows[0]["verdict"] == "keep" and rows[0]["error"] == ""


@pytest.mark.parametrize(
    "args",
    [["scan", "{tmp}/missing"], ["scan", "{tmp}", "--strictness", "harsh"], ["scan", "{tmp}", "--report", "{tmp}/r.txt"],
     ["scan", "{tmp}", "--workers", "0"], ["scan"], ["eval", "{tmp}"], ["nonsense"]],
)
def test_usage_errors_exit_2(tmp_path, args):
    result = run(*[a.format(tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output


def test_missing_model_is_a_clear_error(tmp_path):
    result = run("scan", EXAMPLES, "--model", tmp_path / "nope.json", "--dry-run")
    assert result.exit_code == 2 and "no model card" in result.stderr




def make_bad_tree(root: Path) -> None:
    save(sharp_image(0), root / "good.jpg")
    (root / "zero.jpg").write_bytes(b"")
    whole = io.BytesIO()
    sharp_image(1).save(whole, "JPEG")
    (root / "truncated.jpg").write_bytes(whole.getvalue()[:4000])
    (root / "random.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (root / "folder.jpg").mkdir()
    save(sharp_image(2), root / "folder.jpg" / "inside.jpg")
    save(sharp_image(3), root / "locked.jpg")
    os.chmod(root / "locked.jpg", 0)
    os.symlink(root / "gone.jpg", root / "broken.jpg")
    os.symlink(root, root / "loop")
    (root / "bad.CR2").write_bytes(b"II*\x00" + bytes(5000))
    save(Image.new("RGB", (1, 1), "white"), root / "dot.png")
    save(Image.new("L", (10000, 10000), 90), root / "huge.jpg", quality=40)


def test_bad_input_is_reported_per_file_scan_goes_on_nothing_changes(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    make_bad_tree(root)
    before = tree_snapshot(root)
    report = tmp_path / "r.jsonl"
    proc = subprocess.run(
        [sys.executable, "-m", "cull", "scan", str(root), "--workers", "2", "--report", str(report), "--no-xmp"],
        capture_output=True, text=True, preexec_fn=drop_dac_override, timeout=300,
        env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 1, proc.stderr
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    expected_errors = {
        "zero.jpg": "empty file",
        "truncated.jpg": "truncated",
        "random.jpg": "not an image",
        "locked.jpg": "permission denied",
        "broken.jpg": "broken symbolic link",
        "bad.CR2": "not a RAW file LibRaw can read",
    }
    for name, reason in expected_errors.items():
        assert reason in (rows[name]["error"] or ""), (name, rows[name])
        assert f"{name}: " in proc.stderr  # one line per failure on stderr
    assert rows["good.jpg"]["verdict"] == "keep" and rows["inside.jpg"]["verdict"] == "keep"
    assert rows["dot.png"]["verdict"] == "uncertain"  # 1x1: too little to judge, never reject
    assert rows["huge.jpg"]["error"] is None and rows["huge.jpg"]["verdict"] == "uncertain"  # flat 100 MP
    assert "folder named like a photo" in proc.stderr and "loop" in proc.stderr
    assert "Traceback" not in proc.stderr
    os.chmod(root / "locked.jpg", 0o644)
    after = tree_snapshot(root)
    assert {k: v for k, v in after.items() if k != "locked.jpg"} == {k: v for k, v in before.items() if k != "locked.jpg"}


def test_rescan_of_unchanged_files_decodes_nothing(tmp_path, card, monkeypatch):
    photos = tmp_path / "p"
    for i in range(3):
        save(sharp_image(i), photos / f"{i}.jpg")
    first = scan([photos], card, ScanOptions(workers=1))
    assert not any(r.cached for r in first.results)

    def no_decode(*a, **k):
        raise AssertionError("a cached rescan must not decode")

    with monkeypatch.context() as patched:
        patched.setattr(cull.analyse, "decode_levels", no_decode)
        second = scan([photos], card, ScanOptions(workers=1))
    assert all(r.cached for r in second.results)
    assert [r.photo.score for r in second.results] == pytest.approx([r.photo.score for r in first.results], abs=1e-6)
    os.utime(photos / "1.jpg", ns=(1, 1))  # a changed file is rescored
    third = scan([photos], card, ScanOptions(workers=1))
    assert [r.cached for r in third.results] == [True, False, True]
    assert not any(r.cached for r in scan([photos], card, ScanOptions(workers=1, use_cache=False)).results)


def test_dry_run_writes_nothing(tmp_path):
    photos = tmp_path / "p"
    save(blurred_image(0), photos / "soft.jpg")
    before = tree_snapshot(tmp_path)
    result = run("scan", photos, "--dry-run", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert tree_snapshot(tmp_path) == before
    assert not default_cache_path().exists()
    assert "no files written" in result.stdout


def test_parallel_workers_agree_with_one_worker(tmp_path, card):
    photos = tmp_path / "p"
    for i in range(4):
        save(sharp_image(i), photos / f"s{i}.jpg")
        save(blurred_image(i, 4), photos / f"b{i}.jpg")
    one = scan([photos], card, ScanOptions(workers=1, use_cache=False))
    two = scan([photos], card, ScanOptions(workers=2, batch_size=16, use_cache=False))
    assert [r.path for r in one.results] == [r.path for r in two.results]
    assert [r.photo.score for r in two.results] == pytest.approx([r.photo.score for r in one.results], abs=1e-5)
    verdicts = {r.path.stem: r.verdict for r in one.results}
    assert all(verdicts[f"s{i}"] is Verdict.KEEP for i in range(CLEARLY_SHARP))
    assert verdicts["s3"] is not Verdict.REJECT  # kodim23, shallow depth of field: borderline, never rejected
    assert all(verdicts[f"b{i}"] is not Verdict.KEEP for i in range(4))


def test_a_corrupt_jpeg_is_judged_by_its_raw_partner(tmp_path, card, shared_raw):
    photos = tmp_path / "p"
    photos.mkdir()
    (photos / "DC50.jpg").write_bytes(b"\xff\xd8\xff broken")
    shutil.copy(shared_raw / "RAW_KODAK_DC50.KDC", photos / "DC50.KDC")
    (photos / "other.jpg").write_bytes(b"")
    (photos / "other.NEF").write_bytes(b"not raw either")
    result = scan([photos], card, ScanOptions(workers=1, use_cache=False))
    by_name = {r.path.name: r for r in result.results}
    assert by_name["DC50.KDC"].photo is not None and by_name["DC50.KDC"].partner.name == "DC50.jpg"
    assert by_name["other.jpg"].error.startswith("empty file") and "partner: not a RAW file LibRaw can read" in by_name["other.jpg"].error
    # the shot has its verdict, and the damaged JPEG is still reported, once, in the failures (exit code 1)
    damaged = [(p.name, why) for p, why in result.failures if p.name == "DC50.jpg"]
    assert len(damaged) == 1 and "judged by its partner DC50.KDC" in damaged[0][1]
    # with --bursts the shot judged by its RAW has its burst place too (its footprint was filed under the JPEG)
    shutil.copy(shared_raw / "RAW_KODAK_DC50.KDC", photos / "DC51.KDC")  # a second frame of the same moment
    bursts = {r.path.name: r for r in scan([photos], card, ScanOptions(workers=1, use_cache=False, bursts=True)).results}
    placed, other = bursts["DC50.KDC"].burst, bursts["DC51.KDC"].burst
    assert placed is not None and other is not None and placed.burst == other.burst and {placed.rank, other.rank} == {1, 2}


def test_first_pass_gives_the_same_verdicts_as_scoring_every_patch(tmp_path, card):
    from dataclasses import replace

    from cull.analyse import analyse_chunk
    from cull.decide import decide
    from cull.score import OnnxScorer

    paths = [save(sharp_image(i), tmp_path / f"s{i}.jpg") for i in range(4)]
    paths += [save(blurred_image(i, r), tmp_path / f"b{i}_{r}.jpg") for i in range(4) for r in (1, 3, 8)]
    full_card = replace(card, analysis=replace(card.analysis, first_pass=card.analysis.max_patches))
    scorer = OnnxScorer(card)
    quick = analyse_chunk(paths, card, scorer)
    full = analyse_chunk(paths, full_card, scorer)
    shortcuts = 0
    for q, f in zip(quick, full):
        for level in ("lenient", "normal", "strict"):
            t = card.thresholds_for(level)
            assert decide(q.photo, t, 4).verdict == decide(f.photo, t, 4).verdict, (q.path, level)
        if q.photo.patches < f.photo.patches:  # stopped early: only ever for a sure keep
            shortcuts += 1
            assert card.sure_keep <= q.photo.score <= f.photo.score
        else:
            assert q.photo.score == pytest.approx(f.photo.score, abs=1e-6)
    assert shortcuts >= 3  # the clearly sharp photos took the shortcut


def test_version_and_bare_command():
    from cull import __version__

    assert run("--version").stdout.strip() == f"cull {__version__}"
    bare = run()
    assert bare.exit_code == 2 and "scan" in bare.stdout  # no command: the help, as a usage error
