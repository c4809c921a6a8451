import os
import sys

import pytest

from cull.discover import Shot, Skipped, discover, pair_shots


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def shots_and_skips(*roots, **kw):
    items = list(discover(roots, **kw))
    return [i for i in items if isinstance(i, Shot)], [i for i in items if isinstance(i, Skipped)]


def test_walk_is_recursive_sorted_and_skips_hidden_system_and_target_folders(tmp_path):
    for rel in ["b/2.jpg", "a/1.JPG", "a/z.png", "c.tiff", "notes.txt", "a/.hidden.jpg",
                ".git/x.jpg", "@eaDir/t.jpg", ".thumbnails/t.jpg", "_culled/old.jpg", "d/e/f.webp"]:
        touch(tmp_path / rel)
    shots, skipped = shots_and_skips(tmp_path)
    names = [s.path.relative_to(tmp_path).as_posix() for s in shots]
    assert names == ["c.tiff", "a/1.JPG", "a/z.png", "b/2.jpg", "d/e/f.webp"]
    assert not skipped
    assert names == [s.path.relative_to(tmp_path).as_posix() for s in shots_and_skips(tmp_path)[0]]


def test_raw_and_jpeg_with_the_same_stem_are_one_shot(tmp_path):
    for name in ["IMG_0001.CR2", "IMG_0001.JPG", "IMG_0002.NEF", "IMG_0003.jpg", "DSC_9.ARW", "dsc_9.jpeg"]:
        touch(tmp_path / name)
    shots, _ = shots_and_skips(tmp_path)
    pairs = {s.path.name: (s.partner.name if s.partner else None) for s in shots}
    assert pairs == {"IMG_0001.JPG": "IMG_0001.CR2", "IMG_0002.NEF": None, "IMG_0003.jpg": None, "dsc_9.jpeg": "DSC_9.ARW"}


def test_pairing_keeps_extra_files_of_a_stem_as_their_own_shots(tmp_path):
    files = [touch(tmp_path / n) for n in ["a.CR2", "a.jpg", "a.png"]]
    shots = pair_shots(files)
    assert Shot(tmp_path / "a.jpg", tmp_path / "a.CR2") in shots and Shot(tmp_path / "a.png") in shots


def test_symlink_loops_and_broken_links_are_reported_not_followed_forever(tmp_path):
    touch(tmp_path / "a" / "1.jpg")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a -> root -> a -> ...
    os.symlink(tmp_path / "missing.jpg", tmp_path / "a" / "dangling.jpg")
    os.symlink("self.jpg", tmp_path / "a" / "self.jpg")  # a link to itself: ELOOP
    shots, skipped = shots_and_skips(tmp_path)
    assert [s.path.name for s in shots] == ["1.jpg"]
    reasons = {s.path.name: s.reason for s in skipped}
    assert "broken symbolic link" in reasons["dangling.jpg"]
    assert "self.jpg" in reasons
    assert "loop" in reasons["loop"] and not [s for s in skipped if s.path.name == "loop"][0].error


def test_a_folder_named_like_a_photo_is_walked_and_noted(tmp_path):
    touch(tmp_path / "x.jpg" / "inside.jpg")
    shots, skipped = shots_and_skips(tmp_path)
    assert [s.path.name for s in shots] == ["inside.jpg"]
    assert skipped[0].path.name == "x.jpg" and not skipped[0].error


def test_explicit_files_and_exclusions(tmp_path):
    photo = touch(tmp_path / "one.jpg")
    touch(tmp_path / "target" / "moved.jpg")
    shots, _ = shots_and_skips(photo, tmp_path, exclude=[tmp_path / "target"])
    assert [s.path.name for s in shots] == ["one.jpg"]  # listed once, target folder not entered


def test_a_folder_tree_1100_deep_is_walked_without_recursion_error(tmp_path):
    deep = tmp_path
    for _ in range(1100):  # os.makedirs itself recurses once per level
        deep = deep / "d"
        deep.mkdir()
    try:
        touch(deep / "x.jpg")
        touch(tmp_path / "d" / "top.jpg")
        assert sys.getrecursionlimit() < 1100 * 3  # the old recursive walk needed a frame pair per level
        shots, skipped = shots_and_skips(tmp_path)
        assert [s.path.name for s in shots] == ["top.jpg", "x.jpg"] and not skipped
    finally:
        remove_deep_tree(tmp_path / "d")  # shutil.rmtree (pytest's cleanup) recurses: it would fail on this


def remove_deep_tree(top):
    """Delete a deeply nested tree without recursion (shutil.rmtree and, before 3.12, os.walk recurse)."""
    stack, folders = [str(top)], []
    while stack:
        folder = stack.pop()
        folders.append(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders):
        os.rmdir(folder)


def test_special_files_get_their_own_reason(tmp_path):
    touch(tmp_path / "ok.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    os.symlink("/dev/null", tmp_path / "null.CR2")
    os.mkfifo(tmp_path / "fifo.jpg")
    shots, skipped = shots_and_skips(tmp_path)
    reasons = {s.path.name: s.reason for s in skipped}
    assert [s.path.name for s in shots] == ["ok.jpg"]
    assert reasons == {"zero.jpg": "not a regular file (character device)",
                       "null.CR2": "not a regular file (character device)", "fifo.jpg": "not a regular file (FIFO)"}
    assert all(s.error for s in skipped)


@pytest.mark.parametrize("name,reason", [("fifo.jpg", "not a regular file (FIFO)"), ("dev", "not a regular file (character device)")])
def test_a_special_file_given_as_argument_is_not_a_folder_error(tmp_path, name, reason):
    path = tmp_path / name
    if name == "dev":
        os.symlink("/dev/zero", path)
    else:
        os.mkfifo(path)
    shots, skipped = shots_and_skips(path)
    assert not shots and [(s.path, s.reason) for s in skipped] == [(path, reason)]


def test_photos_named_as_files_keep_their_raw_jpeg_partner(tmp_path):
    """`cull scan card/*` names both files of a pair: one shot, as a scan of the folder makes it, in
    whatever order the files, and their folder, are given; a file alone is still a shot."""
    for name in ["IMG_1.JPG", "IMG_1.CR2", "IMG_2.jpg", "img_3.nef", "IMG_3.jpg"]:
        touch(tmp_path / name)
    for roots in ([tmp_path / "IMG_1.JPG", tmp_path / "IMG_1.CR2"], [tmp_path / "IMG_1.CR2", tmp_path / "IMG_1.JPG"],
                  [tmp_path / "IMG_1.CR2", tmp_path], [tmp_path, tmp_path / "IMG_1.JPG"]):
        shots, skipped = shots_and_skips(*roots)
        pairs = [(s.path.name, s.partner.name if s.partner else None) for s in shots]
        assert ("IMG_1.JPG", "IMG_1.CR2") in pairs and len([p for p in pairs if "IMG_1" in p[0]]) == 1, pairs
        assert not [s for s in skipped if s.error]
    shots, _ = shots_and_skips(tmp_path / "img_3.nef", tmp_path / "IMG_2.jpg")
    assert [(s.path.name, s.partner.name if s.partner else None) for s in shots] == [("IMG_3.jpg", "img_3.nef"), ("IMG_2.jpg", None)]


def test_a_raw_beside_a_small_jpeg_is_the_file_judged(tmp_path):
    """RAW+S: a JPEG under the analysis scale shows blur shrunk with it, so the RAW (its full-size
    preview) is judged; a JPEG large enough, or one whose header cannot be read, stays the judged file."""
    from PIL import Image

    Image.new("RGB", (720, 480)).save(tmp_path / "IMG_1.JPG")
    Image.new("RGB", (1600, 1067)).save(tmp_path / "IMG_2.JPG")
    (tmp_path / "IMG_3.JPG").write_bytes(b"\xff\xd8 broken")
    for stem in ("IMG_1", "IMG_2", "IMG_3"):
        touch(tmp_path / f"{stem}.CR2")
    shots, _ = shots_and_skips(tmp_path, judge_raw_below=1309)
    assert [(s.path.name, s.partner.name if s.partner else None) for s in shots] == [
        ("IMG_1.CR2", "IMG_1.JPG"), ("IMG_2.JPG", "IMG_2.CR2"), ("IMG_3.JPG", "IMG_3.CR2")]
    assert [s.path.name for s in shots_and_skips(tmp_path)[0]] == ["IMG_1.JPG", "IMG_2.JPG", "IMG_3.JPG"]
    named, _ = shots_and_skips(tmp_path / "IMG_1.JPG", judge_raw_below=1309)
    assert [(s.path.name, s.partner.name) for s in named] == [("IMG_1.CR2", "IMG_1.JPG")]


def test_a_photo_named_as_a_file_pairs_as_its_folder_pairs_it(tmp_path):
    """IMG_1.JPG beside IMG_1.CR2 and IMG_1.DNG: naming the files gives the pairs a folder scan gives,
    whatever order the folder lists its entries in; naming the RAWs with the folder judges none twice."""
    for name in ["IMG_1.JPG", "IMG_1.DNG", "IMG_1.CR2", "IMG_2.CR2", "IMG_2.NEF"]:
        touch(tmp_path / name)
    folder = {(s.path.name, s.partner.name if s.partner else None) for s in shots_and_skips(tmp_path)[0]}
    named = {(s.path.name, s.partner.name if s.partner else None)
             for s in shots_and_skips(*sorted(tmp_path.iterdir(), reverse=True))[0]}
    assert named == folder
    both, _ = shots_and_skips(tmp_path, tmp_path / "IMG_2.CR2", tmp_path / "IMG_2.NEF")
    assert len(both) == len(folder)
