"""`cull move` / `cull undo` at the edges a review found: names near the file system's limit, targets
without hard links (FAT, exFAT), files renamed in the target, a shot whose files changed after an
interrupted move planned it, and a place that cannot be looked at during undo."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import cull.move
from cull.discover import Shot
from cull.fsutil import NAME_MAX
from cull.journal import JOURNAL_DIR
from cull.move import execute, finish_interrupted, partial_path, plan_moves, undo
from tests.test_move import make_shot, snapshot
from tests.test_move_faults import Crash, crash_after, shots_under

LONG_STEM = "写真" * 40  # 240 bytes of UTF-8: IMG.CR2 fits NAME_MAX, its partial copy's name would not


def test_partial_copy_names_fit_the_limit_and_keep_apart():
    near = Path("/x") / (LONG_STEM + ".CR2")
    partial = partial_path(near)
    assert len(os.fsencode(partial.name)) <= NAME_MAX and partial.name.startswith(".写真")
    other = partial_path(Path("/x") / (LONG_STEM + ".CR3"))
    assert other != partial  # names that differ only at the end get different partial names
    assert partial_path(Path("/x/IMG_1.CR2")).name == ".IMG_1.CR2.cull-partial"  # as before for every usual name
    for stem in ("IMG_" + "長" * 80, "a" + "長" * 80, "ab" + "長" * 80):  # cut where a character would split
        os.fsencode(partial_path(Path("/x") / (stem + ".JPG")).name).decode("utf-8")  # whole characters: exFAT takes it


@pytest.mark.parametrize("cross_device", [False, True])
def test_long_names_move_and_come_back(tmp_path, monkeypatch, cross_device):
    monkeypatch.setattr(cull.move, "same_device", lambda a, b: not cross_device)
    root = tmp_path / "lib"
    make_shot(root, LONG_STEM, True, True, [], 1)
    make_shot(root, "IMG_0002", True, False, [], 2)
    before = snapshot(root)
    target = root / "_culled"
    moved = execute(plan_moves(shots_under(root), root, target), root, target)
    assert not moved.failed and len(list(target.glob("*.CR2"))) == 2
    back = undo(target)
    assert back.restored == 3 and not back.left and not back.missing
    assert snapshot(root) == before


def test_a_collision_suffix_shortens_the_stem_alike_in_every_file_of_the_shot(tmp_path):
    stem = "p" * 246  # NAME.jpg.xmp is 254 bytes, 256 with "_1": over the limit
    root = tmp_path / "lib"
    root.mkdir()
    (root / f"{stem}.jpg").write_bytes(b"\xff\xd8photo")
    (root / f"{stem}.jpg.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    target = root / "_culled"
    target.mkdir()
    (target / f"{stem}.jpg").write_bytes(b"an earlier reject of that name")
    plan = plan_moves([Shot(root / f"{stem}.jpg")], root, target)
    names = sorted(m.dst.name for m in plan.moves)
    assert all(len(os.fsencode(name)) <= NAME_MAX for name in names)
    shortened = names[0].split("_1")[0]
    assert names == [f"{shortened}_1.jpg", f"{shortened}_1.jpg.xmp"] and stem.startswith(shortened)
    moved = execute(plan, root, target)
    assert not moved.failed
    assert undo(target).restored == 2 and (root / f"{stem}.jpg.xmp").is_file()


def test_a_target_without_hard_links_takes_copies_by_rename(tmp_path, monkeypatch):
    """FAT and exFAT answer link() with EPERM: the verified copy gets its name by a rename instead."""
    monkeypatch.setattr(cull.move, "same_device", lambda a, b: False)
    real_link = os.link

    def fat_link(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(src).endswith(cull.move.PARTIAL):
            raise OSError(errno.EPERM, "Operation not permitted", str(src))
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(cull.move.os, "link", fat_link)
    root = tmp_path / "card"
    make_shot(root, "IMG_0001", True, True, ["adobe"], 1)
    before = snapshot(root)
    target = tmp_path / "culled"
    moved = execute(plan_moves(shots_under(root), root, target), root, target)
    assert not moved.failed and sorted(p.name for p in target.iterdir() if p.is_file()) == [
        "IMG_0001.CR2", "IMG_0001.JPG", "IMG_0001.xmp"]
    back = undo(target)
    assert back.restored == 3 and not back.left
    assert snapshot(root) == before
    assert not list(root.glob(".*cull-partial")) and not list(target.glob(".*cull-partial"))


def test_a_taken_name_is_never_overwritten_when_renaming_instead_of_linking(tmp_path, monkeypatch):
    monkeypatch.setattr(cull.move.os, "link", lambda *a, **k: (_ for _ in ()).throw(OSError(errno.ENOTSUP, "no links")))
    src, dst = tmp_path / "a", tmp_path / "b"
    src.write_bytes(b"new")
    dst.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        cull.move._link_or_rename(src, dst)
    assert dst.read_bytes() == b"someone else's" and src.read_bytes() == b"new"


def test_undo_finds_a_file_the_user_renamed_in_the_target(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, ["adobe"], 1)
    before = snapshot(root)
    target = root / "_culled"
    execute(plan_moves(shots_under(root), root, target), root, target)
    os.rename(target / "IMG_0001.JPG", target / "IMG_0001_maybe.JPG")
    back = undo(target)
    assert back.restored == 3 and not back.missing and not back.left
    assert any("IMG_0001_maybe.JPG: renamed in the target" in note for note in back.notes)
    assert snapshot(root) == before


def test_a_renamed_look_alike_that_this_move_placed_is_not_taken(tmp_path):
    """Two identical files moved (one card imported twice): the one deleted from the target is missing,
    the other is not taken for it."""
    root = tmp_path / "lib"
    for folder in ("a", "b"):
        (root / folder).mkdir(parents=True)
        (root / folder / "IMG_1.JPG").write_bytes(b"\xff\xd8same")
    target = tmp_path / "culled"
    execute(plan_moves(shots_under(root), root, target), root, target)
    (target / "a" / "IMG_1.JPG").unlink()
    os.rename(target / "b" / "IMG_1.JPG", target / "a" / "IMG_1_moved_by_hand.JPG")
    back = undo(target)
    assert back.restored == 1 and len(back.missing) == 1  # the renamed file went back to one place, not two


def test_recovery_leaves_in_place_a_planned_file_that_changed_since(tmp_path):
    """After a crash part-way through a shot, a file of the shot's plan that is another file now (a new
    card with the same numbers) is not moved by the next run's recovery, and the shot is put back whole."""
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, ["adobe"], 1)
    target = root / "_culled"
    plan = plan_moves(shots_under(root), root, target)
    with pytest.raises(Crash):
        execute(plan, root, target, on_file=crash_after(1))
    waiting = [m.src for m in plan.moves if m.src.exists()]
    assert len(waiting) == 2
    moved = [m.src for m in plan.moves if not m.src.exists()]
    waiting[0].write_bytes(b"a new photo with the old name")
    recovery = finish_interrupted(target)
    assert recovery.changed == [waiting[0]] and recovery.completed == 0 and recovery.rolled_back == 1
    assert waiting[0].read_bytes() == b"a new photo with the old name"
    assert all(src.is_file() for src in moved + waiting)  # the shot is put back whole, not left split
    assert not [p for p in target.rglob("*") if p.is_file() and JOURNAL_DIR not in p.parts]


def test_undo_goes_on_past_a_shot_it_cannot_look_at(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, False, [], 1)
    make_shot(root, "IMG_0002", True, False, [], 2)
    target = root / "_culled"
    execute(plan_moves(shots_under(root), root, target), root, target)
    real_settle = cull.move._settle

    def settle(step):  # type: ignore[no-untyped-def]
        if step.dst.name == "IMG_0001.CR2":
            raise OSError(errno.ENAMETOOLONG, "File name too long", str(step.dst))
        return real_settle(step)

    monkeypatch.setattr(cull.move, "_settle", settle)
    back = undo(target)
    assert back.restored == 1 and (root / "IMG_0002.CR2").is_file()
    assert [p.name for p, _ in back.left] == ["IMG_0001.CR2"] and "File name too long" in back.left[0][1]
    monkeypatch.setattr(cull.move, "_settle", real_settle)
    assert undo(target).restored == 1 and (root / "IMG_0001.CR2").is_file()  # the move stayed open


def test_undo_says_when_it_removes_an_identical_copy(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, False, [], 1)
    target = root / "_culled"
    execute(plan_moves(shots_under(root), root, target), root, target)
    os.link(target / "IMG_0001.CR2", root / "IMG_0001.CR2")  # the same bytes are back at the source
    back = undo(target)
    assert any("identical copy in the target was removed" in note for note in back.notes)
    assert (root / "IMG_0001.CR2").is_file() and not (target / "IMG_0001.CR2").exists()


def test_a_path_through_a_link_and_dotdot_moves_the_file_it_judged(tmp_path):
    """`cull move sym/cur/../y2025` with cur a link into store/: the kernel reads store/y2025, and so
    must the move (os.path.abspath made it sym/y2025, another folder: a sharp photo was moved)."""
    from typer.testing import CliRunner

    from cull.cli import app
    from tests.conftest import blurred_image, save, sharp_image

    (tmp_path / "sym" / "store" / "y2026").mkdir(parents=True)
    save(blurred_image(0, 9), tmp_path / "sym" / "store" / "y2025" / "P.jpg")  # what the path names
    save(sharp_image(0), tmp_path / "sym" / "y2025" / "P.jpg")  # what the path names as text
    (tmp_path / "sym" / "cur").symlink_to("store/y2026")
    given = tmp_path / "sym" / "cur" / ".." / "y2025"
    moved = CliRunner().invoke(app, ["move", str(given), "--rejects", "--workers", "1"])
    assert moved.exit_code == 0, moved.output
    assert (tmp_path / "sym" / "y2025" / "P.jpg").is_file()  # the sharp photo stayed
    assert (tmp_path / "sym" / "store" / "y2025" / "_culled" / "P.jpg").is_file()
    back = CliRunner().invoke(app, ["undo", str(given)])
    assert back.exit_code == 0, back.output
    assert (tmp_path / "sym" / "store" / "y2025" / "P.jpg").is_file()


def test_undo_does_not_take_an_identical_file_another_move_placed(tmp_path):
    """Two shots with byte-identical companions moved by two moves: undoing the second, whose copy the user
    deleted, must not take the first move's file for a rename of its own."""
    root = tmp_path / "lib"
    for stem in ("IMG_1", "IMG_2"):
        make_shot(root, stem, True, False, [], 1)
        (root / f"{stem}.CR2.pp3").write_bytes(b"[Version]\nAppVersion=5.9\n")  # the same profile, byte for byte
    target = root / "_culled"
    first, second = shots_under(root)
    execute(plan_moves([first], root, target), root, target)
    execute(plan_moves([second], root, target), root, target)
    (target / "IMG_2.CR2.pp3").unlink()
    back = undo(target)
    assert [p.name for p, _ in back.missing] == ["IMG_2.CR2.pp3"] and not any("renamed" in n for n in back.notes)
    assert (target / "IMG_1.CR2.pp3").is_file()


def test_a_full_target_disk_is_named_in_the_error(tmp_path, monkeypatch):
    import errno
    import shutil

    monkeypatch.setattr(cull.move, "same_device", lambda a, b: False)

    def full(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(shutil, "copy2", full)
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, False, [], 1)
    target = tmp_path / "usb"
    moved = execute(plan_moves(shots_under(root), root, target), root, target)
    assert moved.failed and any(f"no space left on the device ({target})" in why for _, why in moved.failed)


def test_recovery_checks_the_file_in_progress_at_the_crash_too(tmp_path, monkeypatch):
    """Killed between a file's journalled intent and its move, then that file replaced: recovery used to
    move the new, unjudged photo into `_culled` (its intent holds the size and time it was judged with)."""
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, ["adobe"], 1)
    target = root / "_culled"
    plan = plan_moves(shots_under(root), root, target)
    real_place, calls = cull.move._place, []

    def place_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(args)
        if len(calls) == 2:
            raise Crash
        return real_place(*args, **kwargs)

    monkeypatch.setattr(cull.move, "_place", place_then_die)
    with pytest.raises(Crash):
        execute(plan, root, target)
    monkeypatch.setattr(cull.move, "_place", real_place)
    in_progress = calls[1][0]
    in_progress.write_bytes(b"a new photo under the old name")
    recovery = finish_interrupted(target)
    assert in_progress in recovery.changed and recovery.rolled_back == 1 and recovery.completed == 0
    assert all(m.src.is_file() for m in plan.moves) and in_progress.read_bytes() == b"a new photo under the old name"


def test_a_roll_back_that_cannot_put_a_file_back_leaves_it_in_the_target_and_goes_on(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, [], 1)
    target = root / "_culled"
    plan = plan_moves(shots_under(root), root, target)
    with pytest.raises(Crash):
        execute(plan, root, target, on_file=crash_after(1))
    moved = next(m for m in plan.moves if not m.src.exists())
    waiting = next(m for m in plan.moves if m.src.exists())
    moved.src.mkdir()  # something else took the moved file's name
    waiting.src.write_bytes(b"changed since the plan")
    recovery = finish_interrupted(target)  # no exception: the next runs are not stopped for good
    assert [p for p, _ in recovery.stuck] == [moved.dst] and moved.dst.is_file()
    assert finish_interrupted(target).stuck == []  # the move is closed; `cull undo` takes the file up
