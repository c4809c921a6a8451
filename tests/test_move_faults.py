"""Faults of `cull move` / `cull undo` found in review: working directory, ordering, concurrency,
shared companions, exit codes, torn journals, names that are not UTF-8, symlinked targets."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from cull.discover import Shot, discover
from cull.journal import JOURNAL_DIR, journals
from cull.move import MoveError, execute, finish_interrupted, plan_moves, undo, validate_target
from tests.conftest import blurred_image, save, sharp_image
from tests.test_move import SLOW_CULL, make_shot, snapshot, tree_with_rejects


def shots_under(root: Path) -> list[Shot]:
    return [s for s in discover([root]) if isinstance(s, Shot)]


class Crash(BaseException):
    """Stands in for kill -9: leaves execute() at once, with no `end` in the journal."""


def crash_after(n: int):  # type: ignore[no-untyped-def]
    count = {"n": 0}

    def on_file(_move: object) -> None:
        count["n"] += 1
        if count["n"] >= n:
            raise Crash

    return on_file


# --- D1: absolute journal paths -------------------------------------------------------------------

def test_cli_undo_from_the_parent_folder_after_a_relative_move(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    tree_with_rejects(root, 2)
    before = snapshot(root)
    runner = CliRunner()
    monkeypatch.chdir(root)
    moved = runner.invoke(app, ["move", ".", "--rejects", "--workers", "1"])
    assert moved.exit_code == 0, moved.output
    record = next(r for r in journals(root / "_culled")[0].records() if r["op"] == "intent")
    assert Path(record["src"]).is_absolute() and Path(record["dst"]).is_absolute()
    monkeypatch.chdir(tmp_path)
    back = runner.invoke(app, ["undo", "lib"])
    assert back.exit_code == 0, back.output
    assert "put back 6 files" in back.output
    assert snapshot(root) == before


def test_undo_and_recovery_from_anywhere(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    for i in range(3):
        make_shot(root / "day", f"IMG_{i:04d}", True, True, ["adobe"], i)
    before = snapshot(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(root)  # plan with relative paths, as a user in the library would type them
    rel_shots = [Shot(Path(os.path.relpath(s.path)), Path(os.path.relpath(s.partner)) if s.partner else None)
                 for s in shots_under(root)]
    with pytest.raises(Crash):  # cut off in the middle of the second shot
        execute(plan_moves(rel_shots, Path("."), Path("_culled")), Path("."), Path("_culled"), on_file=crash_after(4))
    monkeypatch.chdir(elsewhere)
    recovered = finish_interrupted(root / "_culled")
    assert recovered.completed == 2 and not recovered.missing  # the rest of the cut-off shot
    assert sorted(p.name for p in (root / "day").iterdir()) == ["IMG_0002.CR2", "IMG_0002.JPG", "IMG_0002.xmp"]
    back = undo(root / "_culled")
    assert back.restored == 6 and not back.left
    assert snapshot(root) == before


def test_a_file_in_neither_place_stops_undo_and_the_move_stays_undoable(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, ["adobe"], 1)
    before = snapshot(root)
    target = root / "_culled"
    execute(plan_moves(shots_under(root), root, target), root, target)
    aside = tmp_path / "IMG_0001.CR2"
    os.rename(target / "IMG_0001.CR2", aside)  # someone took it out of _culled
    first = undo(target)
    assert not first.left and [reason for _dst, reason in first.missing] == [
        f"neither at {root / 'IMG_0001.CR2'} nor at {target / 'IMG_0001.CR2'} (deleted from the target?)"]
    assert first.restored == 2
    assert not journals(target)[0].undone()  # not marked undone: a later undo can still finish it
    os.rename(aside, target / "IMG_0001.CR2")
    second = undo(target)
    assert second.restored == 1 and not second.left and not second.missing and journals(target)[0].undone()
    assert snapshot(root) == before
    with pytest.raises(MoveError, match="nothing to undo"):
        undo(target)


def test_old_journal_with_relative_paths_undoes_from_another_folder(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    (root / "_culled" / JOURNAL_DIR).mkdir(parents=True)
    (root / "_culled" / "IMG_1.JPG").write_bytes(b"photo")
    journal = root / "_culled" / JOURNAL_DIR / "move-20261125-120000-abcdef.jsonl"  # written by cull before 0.2
    from cull.fsutil import file_sha256

    records = [
        {"op": "begin", "root": "lib", "target": "lib/_culled", "time": 0},
        {"op": "shot", "shot": "lib/IMG_1.JPG", "moves": [["lib/IMG_1.JPG", "lib/_culled/IMG_1.JPG"]]},
        {"op": "intent", "src": "lib/IMG_1.JPG", "dst": "lib/_culled/IMG_1.JPG", "size": 5,
         "sha256": file_sha256(root / "_culled" / "IMG_1.JPG"), "mtime_ns": 1_600_000_000_000_000_000,
         "shot": "lib/IMG_1.JPG"},
        {"op": "done", "dst": "lib/_culled/IMG_1.JPG"},
        {"op": "end", "time": 0},
    ]
    journal.write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.chdir(root)  # neither the folder it ran in nor the library's parent
    back = undo(Path("_culled"))
    assert back.restored == 1 and not back.left
    assert (root / "IMG_1.JPG").read_bytes() == b"photo"
    assert (root / "IMG_1.JPG").stat().st_mtime_ns == 1_600_000_000_000_000_000


# --- D13: the last move is the one with the highest sequence number -------------------------------

def test_undo_takes_the_newest_of_moves_made_in_the_same_second(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda *_a: "20261126-010203")  # every journal in the same second
    for trial in range(12):
        root = tmp_path / f"lib{trial}"
        make_shot(root, "IMG_0001", True, False, [], 1)
        make_shot(root, "IMG_0002", True, False, [], 2)
        target = root / "_culled"
        first, second = shots_under(root)
        execute(plan_moves([first], root, target), root, target)
        execute(plan_moves([second], root, target), root, target)
        undo(target)
        assert (root / "IMG_0002.CR2").is_file() and not (root / "IMG_0001.CR2").exists(), trial
        assert [json.loads(p.read_text().splitlines()[0])["seq"] for p in sorted((target / JOURNAL_DIR).glob("*.jsonl"))] == [1, 2]


# --- F7: a plain undo after a crash and a re-run says what is still moved ------------------------

def test_undo_after_crash_and_rerun_points_to_undo_all(tmp_path):
    root = tmp_path / "lib"
    for i in range(3):
        make_shot(root, f"IMG_{i:04d}", True, True, [], i)
    before = snapshot(root)
    target = root / "_culled"
    first, second, third = shots_under(root)
    with pytest.raises(Crash):
        execute(plan_moves([first, second], root, target), root, target, on_file=crash_after(3))
    assert finish_interrupted(target).completed == 1  # the re-run finishes the cut-off move ...
    execute(plan_moves([third], root, target), root, target)  # ... and moves its own shot
    result = CliRunner().invoke(app, ["undo", str(root)])
    assert result.exit_code == 0, result.output
    assert f"4 files from an earlier move are still in {target}" in result.output
    assert f"`cull undo {root} --all` every one" in result.output
    assert CliRunner().invoke(app, ["undo", str(root), "--all"]).exit_code == 0
    assert snapshot(root) == before


# --- torn journal ---------------------------------------------------------------------------------

def test_undo_tolerates_a_journal_whose_last_line_is_torn(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, ["adobe"], 1)
    before = snapshot(root)
    target = root / "_culled"
    result = execute(plan_moves(shots_under(root), root, target), root, target)
    assert result.journal is not None
    with open(result.journal, "a") as fh:
        fh.write('{"op": "undo-done", "dst": "' + str(target))  # a crash in the middle of a write
    back = undo(target)
    assert back.restored == 3 and not back.left
    assert snapshot(root) == before


# --- D11: one move or undo at a time per target ---------------------------------------------------

def test_a_second_move_waits_for_the_running_one_and_never_splits_a_shot(tmp_path):
    root = tmp_path / "lib"
    tree_with_rejects(root, 4)
    before = snapshot(root)
    env = {**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")}
    go = tmp_path / "go"
    first = subprocess.Popen([sys.executable, str(SLOW_CULL), "--hold-after", "2", "--until", str(go), "--", "move",
                              str(root), "--rejects", "--workers", "1"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and first.poll() is None:  # until it holds in its first shot
            found = journals(root / "_culled")
            if found and sum(r["op"] == "done" for r in found[0].records()) >= 2:
                break
            time.sleep(0.02)
        assert first.poll() is None, first.communicate()
        second = subprocess.Popen([sys.executable, "-m", "cull", "move", str(root), "--rejects", "--workers", "1"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        waited = []
        assert second.stderr is not None
        for line in second.stderr:  # it must wait for the lock, not roll the running move forward
            waited.append(line)
            if "waiting for another cull move" in line:
                break
        assert "waiting for another cull move" in "".join(waited), ("".join(waited), second.communicate())
        assert not journals(root / "_culled")[0].finished()
    finally:
        go.touch()
        out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, "".join(waited) + err2
    assert "moved 4 shots (12 files" in out1 and "moved 0 shots" in out2
    assert "interrupted" not in err2
    assert sorted(p.name for p in (root / "day").iterdir()) == ["IMG_0100.JPG"]
    assert not (root / "_culled" / JOURNAL_DIR / "lock").exists()
    assert CliRunner().invoke(app, ["undo", str(root)]).exit_code == 0
    assert snapshot(root) == before


# --- D12: a companion named by stem belongs to the shot that owns the stem ------------------------

def test_stem_companions_go_only_with_the_shot_that_owns_them(tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    for name in ["IMG_7.JPG", "IMG_7.CR2", "IMG_7.xmp", "IMG_7.png", "IMG_7.png.xmp", "IMG_7.THM",
                 "IMG_8.jpg", "IMG_8.png", "IMG_8.xmp", "IMG_9.jpg", "IMG_9.xmp", "IMG_9.AAE"]:
        (root / name).write_bytes(name.encode())
    shots = {s.path.name: s for s in shots_under(root)}
    assert shots["IMG_7.JPG"].partner == root / "IMG_7.CR2"

    def planned(name: str) -> list[str]:
        return sorted(m.src.name for m in plan_moves([shots[name]], root, root / "_culled").moves)

    assert planned("IMG_7.png") == ["IMG_7.png", "IMG_7.png.xmp"]  # not the RAW's Adobe sidecar
    assert planned("IMG_7.JPG") == ["IMG_7.CR2", "IMG_7.JPG", "IMG_7.THM", "IMG_7.xmp"]
    assert planned("IMG_8.jpg") == ["IMG_8.jpg"] and planned("IMG_8.png") == ["IMG_8.png"]  # nobody owns IMG_8.xmp
    assert planned("IMG_9.jpg") == ["IMG_9.AAE", "IMG_9.jpg", "IMG_9.xmp"]


# --- D15: exit codes and the target ---------------------------------------------------------------

@pytest.mark.parametrize("dry_run", [True, False])
def test_move_exits_1_when_photos_could_not_be_judged(tmp_path, dry_run):
    root = tmp_path / "lib"
    save(blurred_image(0, 9), root / "IMG_0001.JPG")
    save(sharp_image(1), root / "IMG_0002.JPG")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    result = CliRunner().invoke(app, ["move", str(root), "--rejects", "--workers", "1"] + (["--dry-run"] if dry_run else []))
    assert result.exit_code == 1, result.output
    assert "not judged (left in place)" in result.output and "broken.jpg" in result.output
    assert (root / "_culled" / "IMG_0001.JPG").is_file() != dry_run


def test_dry_run_exits_like_the_real_run_when_files_are_refused(tmp_path):
    root = tmp_path / "lib"
    save(blurred_image(0, 9), tmp_path / "outside" / "IMG_0001.JPG")
    root.mkdir()
    os.symlink(tmp_path / "outside" / "IMG_0001.JPG", root / "IMG_0001.JPG")
    runner = CliRunner()
    dry = runner.invoke(app, ["move", str(root), "--rejects", "--workers", "1", "--dry-run"])
    real = runner.invoke(app, ["move", str(root), "--rejects", "--workers", "1"])
    assert "refused" in dry.output and "symbolic link" in dry.output
    assert dry.exit_code == real.exit_code == 1, (dry.output, real.output)


def test_move_with_nothing_to_move_creates_no_target(tmp_path):
    root = tmp_path / "lib"
    save(sharp_image(0), root / "IMG_0001.JPG")
    result = CliRunner().invoke(app, ["move", str(root), "--rejects", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "moved 0 shots" in result.output and not (root / "_culled").exists()
    deep = CliRunner().invoke(app, ["move", str(root), "--rejects", "--workers", "1", "--to", str(tmp_path / "new" / "deep")])
    assert deep.exit_code == 0, deep.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lib"]  # not even the lock's folders stay


def test_move_to_an_existing_file_is_a_usage_error(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, False, [], 1)
    (tmp_path / "afile").write_text("not a folder")
    result = CliRunner().invoke(app, ["move", str(root), "--rejects", "--to", str(tmp_path / "afile")])
    assert result.exit_code == 2, result.output
    assert "exists and is not a folder" in result.output
    assert (tmp_path / "afile").read_text() == "not a folder"


def test_a_symlinked_target_is_refused(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, False, [], 1)
    (tmp_path / "real-target").mkdir()
    os.symlink(tmp_path / "real-target", tmp_path / "link")
    with pytest.raises(MoveError, match="symbolic link"):
        validate_target(root, tmp_path / "link")
    os.symlink(tmp_path / "real-target", root / "_culled")  # the default target, made a link
    with pytest.raises(MoveError, match="symbolic link"):
        validate_target(root, root / "_culled")


# --- D8: names that are not UTF-8 -----------------------------------------------------------------

def test_a_name_that_is_not_utf8_moves_and_comes_back(tmp_path):
    root = tmp_path / "lib"
    root.mkdir()
    name = os.fsdecode(b"caf\xe9")
    (root / f"{name}.CR2").write_bytes(b"raw")
    (root / f"{name}.xmp").write_bytes(b"sidecar")
    (root / "a.CR2").write_bytes(b"raw a")
    before = snapshot(root)
    target = root / "_culled"
    result = execute(plan_moves(shots_under(root), root, target), root, target)
    assert not result.failed and len(result.moved) == 3
    assert os.path.exists(os.fsencode(target) + b"/caf\xe9.CR2")
    back = undo(target)
    assert back.restored == 3 and not back.left
    assert snapshot(root) == before


def test_cli_move_and_undo_with_a_name_that_is_not_utf8(tmp_path):
    root = tmp_path / "lib"
    save(blurred_image(0, 9), Path(os.fsdecode(os.fsencode(root) + b"/caf\xe9.jpg")))
    save(sharp_image(1), root / "good.jpg")
    before = snapshot(root)
    env = {**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache"), "PYTHONIOENCODING": "utf-8:strict"}
    moved = subprocess.run([sys.executable, "-m", "cull", "move", str(root), "--rejects", "--workers", "1"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert moved.returncode == 0, moved.stderr
    assert "moved 1 shots" in moved.stdout and "journal:" in moved.stdout
    assert os.path.exists(os.fsencode(root) + b"/_culled/caf\xe9.jpg")
    back = subprocess.run([sys.executable, "-m", "cull", "undo", str(root)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert back.returncode == 0, back.stderr
    assert snapshot(root) == before


def _photo(path: Path) -> tuple[str, int, int]:
    from cull.move import sha256_of

    save(sharp_image(0), path)
    info = path.stat()
    return sha256_of(path), info.st_size, info.st_mtime_ns


def test_a_bind_mount_of_the_same_file_system_is_moved_by_copying(tmp_path, monkeypatch):
    """A bind mount or a container volume shares its file system's device number, yet link() and
    rename() across it fail with EXDEV: the move copies, verifies and removes instead."""
    import errno as errnos

    import cull.move

    src = tmp_path / "photos" / "IMG_1.jpg"
    digest, size, mtime_ns = _photo(src)
    dst = tmp_path / "mounted" / "IMG_1.jpg"

    def cross_mount(a, b, *args, **kwargs):  # noqa: ANN001 - os.link's and os.rename's signature
        if Path(b).parent == dst.parent and not Path(a).name.startswith("."):
            raise OSError(errnos.EXDEV, "Invalid cross-device link")
        return real_link(a, b, *args, **kwargs)

    real_link = os.link
    monkeypatch.setattr(cull.move.os, "link", cross_mount)
    cull.move._place(src, dst, digest, size, mtime_ns)
    assert not src.exists() and dst.is_file() and cull.move.sha256_of(dst) == digest
    assert dst.stat().st_mtime_ns == mtime_ns and not list(dst.parent.glob(".*"))


@pytest.mark.parametrize("across", [False, True])
def test_a_source_that_cannot_be_removed_leaves_no_copy_in_the_target(tmp_path, monkeypatch, across):
    """A read-only photo folder: the file cannot leave it, so the link or copy just made goes too."""
    import errno as errnos

    import cull.move

    src = tmp_path / "photos" / "IMG_1.jpg"
    digest, size, mtime_ns = _photo(src)
    dst = tmp_path / "out" / "IMG_1.jpg"
    real_unlink = os.unlink

    def read_only_source(path, *args, **kwargs):  # noqa: ANN001
        if Path(path) == src:
            raise PermissionError(errnos.EACCES, "Permission denied", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(cull.move.os, "unlink", read_only_source)
    if across:
        monkeypatch.setattr(cull.move, "same_device", lambda a, b: False)
    with pytest.raises(PermissionError):
        cull.move._place(src, dst, digest, size, mtime_ns)
    assert src.is_file() and cull.move.sha256_of(src) == digest
    assert list(dst.parent.iterdir()) == []


def test_a_refused_link_names_the_folder_that_refused_it(tmp_path):
    """An undo into a read-only photo folder fails on link(target file, photo path): the message names the
    photo folder, not the file in the target."""
    from cull.move import describe_os_error

    readable = tmp_path / "_culled"
    readable.mkdir()
    refused = PermissionError(errno.EACCES, "Permission denied", str(readable / "IMG_1.jpg"), None,
                              str(tmp_path / "no-such-folder" / "IMG_1.jpg"))
    assert describe_os_error(refused) == f"permission denied or read-only (folder {tmp_path / 'no-such-folder'} is not writable)"


def test_a_shot_changed_between_plan_and_move_stays(tmp_path):
    """The user rates a shot in darktable while `cull move --rejects` runs: its protection was read from
    the old sidecar, so the shot stays (reported, a rerun judges it again); the others move."""
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, ["adobe"], 1)
    make_shot(root, "IMG_0002", True, True, ["adobe"], 2)
    target = root / "_culled"
    plan = plan_moves(shots_under(root), root, target)
    (root / "IMG_0002.xmp").write_bytes(b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/> rated 5 stars meanwhile')
    result = execute(plan, root, target)
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["IMG_0002.CR2", "IMG_0002.JPG", "IMG_0002.xmp"]
    assert [(src.name, why.split(":")[0]) for src, why in result.failed] == [("IMG_0002.xmp", "changed since this move judged it (rated or edited?)")]
    assert undo(target).restored == 3


def test_recovery_removes_an_undo_s_copy_left_beside_the_photo(tmp_path):
    """An undo from another device killed after linking its verified copy under the photo's name, before
    removing the copy's temporary name: recovery removes `.NAME.cull-partial` beside the photo."""
    from cull.journal import Step
    from cull.move import _settle, partial_path

    src, dst = tmp_path / "lib" / "IMG_1.JPG", tmp_path / "t" / "IMG_1.JPG"
    src.parent.mkdir()
    dst.parent.mkdir()
    src.write_bytes(b"photo")
    partial = partial_path(src)
    os.link(src, partial)
    assert _settle(Step(src, dst, 5, "", 0, "IMG_1.JPG")) == "src" and not partial.exists() and src.read_bytes() == b"photo"


def test_a_sidecar_that_appears_after_the_plan_keeps_its_shot_in_place(tmp_path):
    """Lightroom writes IMG_0002.xmp when the RAW is first rated, after `cull move` planned the shot: the
    shot stays (its new sidecar would be left behind, its rating unread)."""
    root = tmp_path / "lib"
    make_shot(root, "IMG_0002", True, True, [], 2)
    target = root / "_culled"
    plan = plan_moves(shots_under(root), root, target)
    (root / "IMG_0002.xmp").write_bytes(b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/> rated 4 stars')
    result = execute(plan, root, target)
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["IMG_0002.CR2", "IMG_0002.JPG", "IMG_0002.xmp"]
    assert [src.name for src, _ in result.failed] == ["IMG_0002.xmp"]
