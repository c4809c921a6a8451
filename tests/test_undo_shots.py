"""`cull undo` shot by shot, and as a photographer's library changes between the move and the undo: a
new photo takes an old name, files are edited or weeded out in `_culled`, targets are shared, libraries
are renamed."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from cull.discover import Shot, discover
from cull.move import execute, plan_moves, undo
from tests.test_move import make_shot, snapshot


def move_all(root: Path, target: Path | None = None) -> Path:
    """Move every shot of ``root`` (as `cull move` would move rejects) into ``target``; returns it."""
    target = target or root / "_culled"
    shots = [s for s in discover([root]) if isinstance(s, Shot)]
    result = execute(plan_moves(shots, root, target), root, target)
    assert not result.failed, result.failed
    return target


def test_a_new_photo_in_one_of_a_shots_places_keeps_the_whole_old_shot_in_the_target(tmp_path):
    """Camera counters wrap: IMG_0001.JPG of a new card must not get the old IMG_0001's RAW and sidecars."""
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, ["adobe", "darktable"], 1)
    make_shot(root, "IMG_0002", False, True, ["darktable"], 2)
    target = move_all(root)
    (root / "IMG_0001.JPG").write_bytes(b"a new, sharp photo of the next import")
    result = undo(target)
    assert sorted(dst.name for dst, _ in result.left) == ["IMG_0001.CR2", "IMG_0001.CR2.xmp", "IMG_0001.JPG", "IMG_0001.xmp"]
    assert any("is taken by another file" in why for _, why in result.left)
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0002.JPG.xmp"]
    assert (root / "IMG_0001.JPG").read_bytes() == b"a new, sharp photo of the next import"
    (root / "IMG_0001.JPG").rename(tmp_path / "elsewhere.jpg")  # the name is free again: the old shot comes back whole
    again = undo(target)
    assert not again.left and again.restored == 4


def test_files_weeded_out_of_the_target_are_missing_not_left(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_1", True, True, ["darktable"], 1)
    make_shot(root, "IMG_2", False, True, ["darktable"], 2)
    target = move_all(root)
    (target / "IMG_1.JPG").unlink()  # the user deleted the worst frames
    (target / "IMG_2.JPG").unlink()
    result = CliRunner().invoke(app, ["undo", str(root)])
    assert result.exit_code == 1
    assert "2 missing" in result.stdout and "left in" not in result.stdout, result.stdout
    assert result.stderr.count("missing: ") == 2 and "deleted from the target?" in result.stderr
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["IMG_1.CR2", "IMG_1.CR2.xmp", "IMG_2.JPG.xmp"]


def test_a_file_edited_in_the_target_comes_back_with_the_edit_and_its_own_time(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_3", False, True, ["darktable"], 3)
    before = snapshot(root)
    target = move_all(root)
    (target / "IMG_3.JPG.xmp").write_bytes(b"darktable rewrote me while browsing _culled")
    edited_at = (target / "IMG_3.JPG.xmp").stat().st_mtime_ns
    result = CliRunner().invoke(app, ["undo", str(root)])
    assert result.exit_code == 0, result.output
    assert "was changed in" in result.stderr and "put back with your changes" in result.stderr
    assert (root / "IMG_3.JPG.xmp").read_bytes() == b"darktable rewrote me while browsing _culled"
    assert (root / "IMG_3.JPG.xmp").stat().st_mtime_ns == edited_at  # looks changed, to darktable and to cull's cache
    assert snapshot(root)["IMG_3.JPG"] == before["IMG_3.JPG"]
    assert not any(p.is_file() for p in target.iterdir() if p.name != ".cull-journal")


def test_undo_of_one_library_leaves_another_librarys_move_into_a_shared_target(tmp_path):
    shared = tmp_path / "rejects"
    lib_a, lib_b = tmp_path / "A", tmp_path / "B"
    make_shot(lib_a, "a", False, True, [], 1)
    make_shot(lib_b, "b", False, True, [], 2)
    move_all(lib_a, shared)
    move_all(lib_b, shared)  # the last move into the shared target
    result = CliRunner().invoke(app, ["undo", str(lib_a), "--to", str(shared)])
    assert result.exit_code == 0, result.output
    assert (lib_a / "a.JPG").is_file() and not (lib_b / "b.JPG").exists()
    assert "were left alone" in result.stderr and str(lib_b) in result.stderr
    nothing = CliRunner().invoke(app, ["undo", str(lib_a), "--to", str(shared)])
    assert nothing.exit_code == 1 and "nothing to undo from" in nothing.stderr and str(lib_b) in nothing.stderr
    assert CliRunner().invoke(app, ["undo", str(lib_b), "--to", str(shared)]).exit_code == 0
    assert (lib_b / "b.JPG").is_file()


def test_a_library_renamed_with_its_culled_folder_is_still_undone(tmp_path):
    root = tmp_path / "shoot"
    make_shot(root / "day1", "IMG_4", False, True, ["darktable"], 4)
    move_all(root)
    renamed = tmp_path / "2026-06-01 shoot"
    os.rename(root, renamed)  # or the drive mounted at another path
    result = CliRunner().invoke(app, ["undo", str(renamed)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (renamed / "day1").iterdir()) == ["IMG_4.JPG", "IMG_4.JPG.xmp"]



def test_move_says_when_xmp_rejects_of_an_earlier_scan_are_not_its_own(tmp_path):
    """scan --model mine.json (or --strictness strict), then a plain move: move judges again with its
    own card, and names the photos an earlier scan marked reject that it does not take."""
    from cull.xmp import Verdict, merge
    from tests.conftest import save, sharp_image

    save(sharp_image(3), tmp_path / "judged_elsewhere.jpg", quality=92)
    (tmp_path / "judged_elsewhere.jpg.xmp").write_bytes(merge(None, Verdict("reject", 0.3, "defocus", "mine")).packet)
    save(sharp_image(4), tmp_path / "decided.jpg", quality=92)
    (tmp_path / "decided.jpg.xmp").write_bytes(merge(None, Verdict("reject", 0.3, "defocus", "mine")).packet.replace(
        b'cull:Verdict="reject"', b'cull:Verdict="reject" cull:UserVerdict="keep"'))
    result = CliRunner().invoke(app, ["move", str(tmp_path), "--rejects", "--workers", "1", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "note: 1 photos (e.g. " in result.stderr and "judged_elsewhere.jpg" in result.stderr  # not the user's keep
    assert "--model, --strictness" in result.stderr


def test_undo_into_a_subfolder_renamed_since_says_it_made_the_old_one_again(tmp_path):
    root = tmp_path / "lib"
    make_shot(root / "2024" / "wedding", "IMG_5", False, True, [], 5)
    make_shot(root / "2024" / "wedding", "IMG_6", False, True, [], 6)
    target = root / "_culled"
    shots = [s for s in discover([root]) if isinstance(s, Shot) and s.path.name == "IMG_5.JPG"]
    execute(plan_moves(shots, root, target), root, target)
    os.rename(root / "2024" / "wedding", root / "2024" / "2024-06-01 wedding")
    result = CliRunner().invoke(app, ["undo", str(root)])
    assert result.exit_code == 0, result.output
    assert "note: folder " in result.stderr and "wedding was gone (renamed since the move?)" in result.stderr
    assert (root / "2024" / "wedding" / "IMG_5.JPG").is_file()


def test_a_deleted_reject_whose_name_a_new_photo_took_keeps_its_sidecars_in_the_target(tmp_path):
    """The user deleted the blurry IMG_1.JPG from _culled; the next import brought a new IMG_1.JPG.
    Its old reject sidecar must not come back beside the new photo."""
    root = tmp_path / "lib"
    make_shot(root, "IMG_1", False, True, ["darktable"], 1)
    target = move_all(root)
    (target / "IMG_1.JPG").unlink()
    (root / "IMG_1.JPG").write_bytes(b"a new photo of the next import")
    result = undo(target)
    assert not (root / "IMG_1.JPG.xmp").exists() and (target / "IMG_1.JPG.xmp").is_file()
    assert any("taken by another file" in why for _, why in result.left)


def test_a_renamed_sub_folder_moved_into_the_librarys_culled_is_not_undone_into_the_library(tmp_path):
    lib = tmp_path / "lib"
    make_shot(lib / "2024", "A", False, True, [], 1)
    move_all(lib / "2024", lib / "_culled")  # cull move lib/2024 --to lib/_culled
    os.rename(lib / "2024", lib / "2024-summer")
    result = CliRunner().invoke(app, ["undo", str(lib)])
    assert result.exit_code == 1 and "nothing to undo" in result.stderr
    assert not (lib / "A.JPG").exists() and (lib / "_culled" / "A.JPG").is_file()


def test_a_renamed_library_whose_old_name_is_back_is_still_undone_into_it(tmp_path):
    """A folder of the old name is there again (an import made it): the recorded folder identity says
    which one the move was made from.  Undo from the new folder of the old name finds nothing."""
    lib, renamed = tmp_path / "lib", tmp_path / "lib2"
    make_shot(lib, "A", False, True, [], 1)
    make_shot(tmp_path / "shared_src", "Z", False, True, [], 3)
    move_all(lib)
    os.rename(lib, renamed)
    lib.mkdir()
    result = CliRunner().invoke(app, ["undo", str(renamed)])
    assert result.exit_code == 0, result.output
    assert (renamed / "A.JPG").is_file() and not list(lib.iterdir())


def test_undo_at_the_journalled_path_of_another_folder_goes_there_with_a_note(tmp_path):
    """The journalled path decides where files go back (a library restored from a copy, or a FAT drive
    mounted again, has a new inode); when the folder there is not the one the move was made from
    (a folder made under a renamed library's old name), a note says so.  The renamed library itself
    takes its moves with --from."""
    lib, renamed, shared = tmp_path / "A", tmp_path / "A2", tmp_path / "T"
    make_shot(lib, "X", False, True, [], 1)
    make_shot(lib, "Y", False, True, [], 2)
    shots = [s for s in discover([lib]) if isinstance(s, Shot)]
    for shot in shots:
        execute(plan_moves([shot], lib, shared), lib, shared)
    os.rename(lib, renamed)
    lib.mkdir()
    (lib / "new.JPG").write_bytes(b"another library now")
    there = CliRunner().invoke(app, ["undo", str(lib), "--to", str(shared)])
    assert there.exit_code == 0 and "is not the folder the move" in there.stderr
    assert (lib / "Y.JPG").is_file()
    mine = CliRunner().invoke(app, ["undo", str(renamed), "--to", str(shared), "--from", str(lib)])
    assert mine.exit_code == 0, mine.output
    assert (renamed / "X.JPG").is_file()


def test_a_library_replaced_by_its_copy_at_the_same_path_is_undone(tmp_path):
    lib = tmp_path / "lib"
    make_shot(lib, "A", False, True, [], 1)
    move_all(lib)
    shutil.copytree(lib, tmp_path / "lib.copy", symlinks=True)  # a restore from backup, a sync tool: new inodes
    shutil.rmtree(lib)
    os.rename(tmp_path / "lib.copy", lib)
    result = CliRunner().invoke(app, ["undo", str(lib)])
    assert result.exit_code == 0, result.output
    assert (lib / "A.JPG").is_file()


def test_a_culled_folder_moved_into_another_library_is_not_undone_there(tmp_path):
    lib, other = tmp_path / "lib", tmp_path / "lib2"
    make_shot(lib, "A", False, True, [], 1)
    make_shot(other, "B", False, True, [], 2)
    move_all(lib)
    os.rename(lib / "_culled", other / "_culled")  # lib still exists, with its photos
    (lib / "keep.txt").write_text("the library is still here")
    refused = CliRunner().invoke(app, ["undo", str(other)])
    assert refused.exit_code == 1 and "nothing to undo" in refused.stderr and "--from" not in refused.stderr
    assert not (other / "A.JPG").exists()
    wrong = CliRunner().invoke(app, ["undo", str(other), "--from", str(lib)])  # lib is no renamed folder
    assert wrong.exit_code == 1 and "cannot be the folder" in wrong.stderr and not (other / "A.JPG").exists()


def test_from_must_name_a_folder_that_is_gone_and_not_around_path(tmp_path):
    lib1, lib2, shared = tmp_path / "L1", tmp_path / "L2", tmp_path / "T"
    make_shot(lib1, "A", False, True, [], 1)
    make_shot(lib2, "B", False, True, [], 2)
    move_all(lib1, shared)
    (lib1 / "kept.JPG").write_bytes(b"L1 is still a library with photos")
    for path, old in ((lib2, lib1), (lib1 / "sub", lib1)):
        path.mkdir(exist_ok=True)
        result = CliRunner().invoke(app, ["undo", str(path), "--to", str(shared), "--from", str(old)])
        assert result.exit_code == 1 and "cannot be the folder" in result.stderr, result.output
    assert (shared / "A.JPG").is_file()


def test_an_old_relative_journal_is_not_every_librarys(tmp_path, monkeypatch):
    lib1, lib2, shared = tmp_path / "L1", tmp_path / "L2", tmp_path / "T"
    make_shot(lib1, "A", False, True, [], 1)
    lib2.mkdir()
    move_all(lib1, shared)
    journal = next((shared / ".cull-journal").glob("move-*.jsonl"))
    journal.write_text(journal.read_text().replace(f"{tmp_path}/", ""))  # an old journal: paths relative to the cwd
    monkeypatch.chdir(tmp_path)
    refused = CliRunner().invoke(app, ["undo", str(lib2), "--to", str(shared)])
    assert refused.exit_code == 1 and not (lib2 / "A.JPG").exists()


def test_a_shot_put_back_by_hand_and_edited_closes_the_move(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_2", False, True, ["darktable"], 2)
    target = move_all(root)
    for name in ("IMG_2.JPG", "IMG_2.JPG.xmp"):
        os.rename(target / name, root / name)
    (root / "IMG_2.JPG.xmp").write_bytes(b"rated in darktable since")
    result = undo(target)
    assert not result.left and not result.missing
    from cull.journal import journals
    assert all(j.undone() for j in journals(target))


def test_a_hidden_target_inside_a_renamed_library_follows_it(tmp_path):
    lib, renamed = tmp_path / "lib", tmp_path / "lib2"
    make_shot(lib, "A", False, True, [], 1)
    move_all(lib, lib / ".trash")
    os.rename(lib, renamed)
    result = CliRunner().invoke(app, ["undo", str(renamed), "--to", str(renamed / ".trash")])
    assert result.exit_code == 0, result.output
    assert (renamed / "A.JPG").is_file()


def test_records_of_an_undo_made_after_one_rename_still_match_after_another(tmp_path):
    lib = tmp_path / "lib"
    make_shot(lib, "A", False, True, [], 1)
    make_shot(lib, "B", False, True, [], 2)
    target = move_all(lib)
    os.rename(lib, tmp_path / "lib2")
    (tmp_path / "lib2" / "B.JPG").write_bytes(b"a new photo took B's name")
    first = undo(tmp_path / "lib2" / "_culled", root=tmp_path / "lib2")
    assert first.restored == 1 and len(first.left) == 1
    (tmp_path / "lib2" / "B.JPG").unlink()
    os.rename(tmp_path / "lib2", tmp_path / "lib3")
    second = undo(tmp_path / "lib3" / "_culled", root=tmp_path / "lib3")
    assert second.restored == 1 and not second.missing and not second.left  # A's restore was remembered
    assert sorted(p.name for p in (tmp_path / "lib3").iterdir() if p.is_file()) == ["A.JPG", "B.JPG"]


def test_a_renamed_library_with_a_shared_target_is_known_by_its_folder(tmp_path):
    """The journal records the library folder's identity (a rename keeps it): `undo NEW --to T` finds
    the renamed library's moves.  A journal without it (an older cull) needs `--from OLD`."""
    lib, renamed, shared = tmp_path / "lib", tmp_path / "lib2", tmp_path / "shared"
    make_shot(lib, "A", False, True, [], 1)
    make_shot(lib, "B", False, True, [], 2)
    shots = [s for s in discover([lib]) if isinstance(s, Shot)]
    for shot in shots:  # two moves
        execute(plan_moves([shot], lib, shared), lib, shared)
    os.rename(lib, renamed)
    refused = CliRunner().invoke(app, ["undo", str(renamed), "--to", str(shared)])  # an inode alone never decides
    assert refused.exit_code == 1 and f"add --from {lib}" in refused.stderr
    first = CliRunner().invoke(app, ["undo", str(renamed), "--to", str(shared), "--from", str(lib)])
    assert first.exit_code == 0, first.output
    journal = sorted((shared / ".cull-journal").glob("move-*.jsonl"))[0]
    journal.write_text(re.sub(r', "root_id": \[[0-9, ]+\]', "", journal.read_text()))  # as an older cull wrote it
    result = CliRunner().invoke(app, ["undo", str(renamed), "--to", str(shared), "--from", str(lib)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in renamed.iterdir()) == ["A.JPG", "B.JPG"] and not lib.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="root moves out of any folder; an ordinary user is kept out by permissions")
def test_root_does_not_move_photos_out_of_a_folder_locked_without_write_bits(tmp_path):
    root = tmp_path / "lib"
    make_shot(root / "locked", "A", False, True, [], 1)
    (root / "locked").chmod(0o555)
    try:
        shots = [s for s in discover([root]) if isinstance(s, Shot)]
        plan = plan_moves(shots, root, root / "_culled")
        assert not plan.moves and "read-only folder (no write bits)" in plan.refused[0][1]
    finally:
        (root / "locked").chmod(0o755)


def test_a_one_file_shot_whose_place_another_file_took_is_noted_not_called_back_in_place(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_7", False, True, [], 7)
    target = move_all(root)
    (target / "IMG_7.JPG").unlink()  # weeded out of _culled ...
    (root / "IMG_7.JPG").write_bytes(b"... and the next import brought a new IMG_7.JPG")
    result = CliRunner().invoke(app, ["undo", str(root)])
    assert result.exit_code == 0, result.output
    assert "the file at its place is not the one moved" in result.stderr
    assert (root / "IMG_7.JPG").read_bytes() == b"... and the next import brought a new IMG_7.JPG"


def test_undo_through_a_link_and_dotdot_takes_the_real_folder(tmp_path):
    real = tmp_path / "disk" / "lib"
    make_shot(real, "A", False, True, [], 1)
    move_all(real)
    (tmp_path / "link").symlink_to(tmp_path / "disk" / "lib")
    result = CliRunner().invoke(app, ["undo", str(tmp_path / "link" / ".." / "lib")])  # link/.. is disk, not tmp_path
    assert result.exit_code == 0, result.output
    assert (real / "A.JPG").is_file() and "put back 1 files" in result.stdout
