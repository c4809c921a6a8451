"""A rescan of an unchanged tree costs a stat and a cache look-up per file: no sidecar is opened, no
photo is scanned for embedded XMP; yet any edit between scans (a rating added, a decision made in
review, a new sidecar) is read and honoured (in-focus priority: never a reject over the user's word)."""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any

import pytest

import cull.cache
import cull.protect
from cull.cache import FactCache, default_cache_path
from cull.decide import Decision
from cull.decide import Verdict as Call
from cull.discover import Shot, discover
from cull.protect import Places, apply_user_verdicts, read_sidecar
from cull.scan import PhotoResult
from cull.score import PhotoScore
from cull.sidecars import XmpOptions, write_results
from cull.xmp import read_fields
from tests.test_protection import user_xmp


@pytest.fixture(autouse=True)
def _no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files written a moment ago may be trusted here (ext4/tmpfs keep ns times); see the test below."""
    monkeypatch.setattr(cull.cache, "RACY_SECONDS", 0.0)


def _results(folder: Path) -> list[PhotoResult]:
    """Three shots: a reject, an uncertain, a keep (fake photo bytes: no decode is needed)."""
    calls = {"a_reject.jpg": (Call.REJECT, 0.02), "b_unsure.jpg": (Call.UNCERTAIN, 0.4), "c_keep.jpg": (Call.KEEP, 0.9)}
    out = []
    for name, (call, score) in calls.items():
        path = folder / name
        path.write_bytes(b"\xff\xd8\xff\xe0 not an image, no XMP inside\xff\xd9")
        out.append(PhotoResult(path, None, PhotoScore(score, 9, "defocus"), Decision(call, "test")))
    return out


def _rescan(results: list[PhotoResult]) -> tuple[list[PhotoResult], Any]:
    """What `cull scan` does after scoring: the review decisions, then the XMP."""
    with FactCache(default_cache_path()) as facts:
        results = apply_user_verdicts(results, Places(facts))
    return results, write_results(results, XmpOptions(), "test-model")


def _forbid_reading_sidecars(monkeypatch: pytest.MonkeyPatch, allowed: tuple[Path, ...] = ()) -> list[str]:
    """Make opening any .xmp file (other than ``allowed``) or scanning a photo for XMP fail; returns the attempts."""
    attempts: list[str] = []
    real_open, real_os_open = builtins.open, os.open
    allowed_names = {str(p) for p in allowed}

    def check(path: object) -> None:
        name = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else ""
        if name.endswith(".xmp") and name not in allowed_names:
            attempts.append(name)
            raise AssertionError(f"opened {name} on an unchanged rescan")

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        check(file)
        return real_open(file, *args, **kwargs)

    def guarded_os_open(path: Any, *args: Any, **kwargs: Any) -> int:
        check(path)
        return real_os_open(path, *args, **kwargs)

    def no_scan(photo: Path) -> list[bytes]:
        attempts.append(str(photo))
        raise AssertionError(f"scanned {photo} for embedded XMP on an unchanged rescan")

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(cull.protect, "embedded_packets", no_scan)
    return attempts


def test_unchanged_rescan_opens_no_sidecar_and_scans_no_photo(tmp_path, monkeypatch):
    results = _results(tmp_path)
    _rescan(results)  # the first scan writes the sidecars of the reject and the uncertain photo
    _rescan(results)  # the review check of the first scan saw no sidecar yet: now it learns them
    sidecars = sorted(p.name for p in tmp_path.glob("*.xmp"))
    assert sidecars == ["a_reject.jpg.xmp", "b_unsure.jpg.xmp"]
    before = {p: p.read_bytes() for p in tmp_path.glob("*.xmp")}

    attempts = _forbid_reading_sidecars(monkeypatch)
    again, summary = _rescan(results)
    assert attempts == []
    assert [r.verdict for r in again] == [Call.REJECT, Call.UNCERTAIN, Call.KEEP]
    assert (summary.written, summary.errors, summary.conflicts) == (0, [], [])
    assert summary.unchanged == 3
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in tmp_path.glob("*.xmp")} == before
    assert read_fields((tmp_path / "a_reject.jpg.xmp").read_bytes())["xmp:Rating"] == "-1"


def test_sidecar_edited_between_scans_is_read_and_honoured_even_with_the_same_size_and_mtime(tmp_path, monkeypatch):
    results = _results(tmp_path)
    _rescan(results)
    _rescan(results)
    sidecar = tmp_path / "a_reject.jpg.xmp"
    old = os.stat(sidecar)
    rated = user_xmp(Rating="3")
    assert len(rated) <= old.st_size
    with open(sidecar, "r+b") as fh:  # in place (same inode), same size, then the old mtime put back
        fh.write(rated + b" " * (old.st_size - len(rated)))
    os.utime(sidecar, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert (os.stat(sidecar).st_size, os.stat(sidecar).st_mtime_ns) == (old.st_size, old.st_mtime_ns)

    attempts = _forbid_reading_sidecars(monkeypatch, allowed=(sidecar,))
    again, summary = _rescan(results)
    assert attempts == []  # only the edited sidecar was opened
    assert [path.name for path, _ in summary.conflicts] == ["a_reject.jpg"]
    assert "3 stars" in summary.conflicts[0][1]
    monkeypatch.undo()
    assert read_fields(sidecar.read_bytes()).get("xmp:Rating") == "3"  # never marked rejected over the user's rating


def test_new_sidecar_or_review_decision_between_scans_is_honoured(tmp_path):
    results = _results(tmp_path)
    _rescan(results)
    _rescan(results)
    (tmp_path / "a_reject.xmp").write_bytes(user_xmp(pick="1"))  # Lightroom's name beside a JPEG, made since
    sidecar = tmp_path / "b_unsure.jpg.xmp"
    sidecar.write_bytes(sidecar.read_bytes().replace(b'cull:Verdict="uncertain"', b'cull:Verdict="uncertain" cull:UserVerdict="keep"'))
    assert b"UserVerdict" in sidecar.read_bytes()
    again, summary = _rescan(results)
    assert [path.name for path, _ in summary.conflicts] == ["a_reject.jpg"]
    assert read_fields((tmp_path / "a_reject.jpg.xmp").read_bytes()).get("xmp:Rating") in (None, "0")  # the reject was taken back
    assert again[1].verdict is Call.KEEP  # the decision made in review stands


def test_changed_verdict_is_written_on_a_rescan(tmp_path):
    results = _results(tmp_path)
    _rescan(results)
    _rescan(results)
    changed = [PhotoResult(r.path, None, r.photo, Decision(Call.UNCERTAIN, "test")) if r.verdict is Call.REJECT else r
               for r in results]
    _again, summary = _rescan(changed)
    assert summary.written == 1
    assert read_fields((tmp_path / "a_reject.jpg.xmp").read_bytes()).get("xmp:Rating") in (None, "0")


def test_places_listing_misses_no_existing_sidecar_whatever_its_case(tmp_path):
    (tmp_path / "IMG_1.JPG.XMP").write_bytes(user_xmp(Rating="2"))
    places = Places()
    assert places.may_exist(tmp_path / "IMG_1.JPG.xmp")  # a case-insensitive file system would find it: stat it
    assert not places.may_exist(tmp_path / "IMG_2.JPG.xmp")
    assert read_sidecar(tmp_path / "IMG_2.JPG.xmp", places) is None


def test_discover_still_dedups_a_photo_linked_into_another_folder(tmp_path):
    real = tmp_path / "a"
    real.mkdir()
    (real / "x.jpg").write_bytes(b"\xff\xd8")
    other = tmp_path / "b"
    other.mkdir()
    (other / "y.jpg").symlink_to(real / "x.jpg")
    (tmp_path / "c").symlink_to(real, target_is_directory=True)
    found = [item for item in discover([tmp_path]) if isinstance(item, Shot)]
    assert [s.path.relative_to(tmp_path).as_posix() for s in found] == ["a/x.jpg"]


def test_a_sidecar_written_a_moment_ago_is_read_again(tmp_path, monkeypatch):
    """FAT/exFAT keep mtime in 2 s steps: an edit in the same tick with the same size would keep the
    stamp, so a file modified in the last RACY_SECONDS is never taken from the fact cache."""
    monkeypatch.setattr(cull.cache, "RACY_SECONDS", 3600.0)
    results = _results(tmp_path)
    _rescan(results)
    _rescan(results)
    attempts = _forbid_reading_sidecars(monkeypatch)
    with pytest.raises(AssertionError):
        _rescan(results)
    assert attempts  # read, not trusted


def test_scan_with_no_cache_creates_no_cache_file(tmp_path):
    from typer.testing import CliRunner

    from cull.cli import app
    from tests.conftest import blurred_image, save

    save(blurred_image(0, 6), tmp_path / "p" / "soft.jpg")
    result = CliRunner().invoke(app, ["scan", str(tmp_path / "p"), "--no-cache", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "soft.jpg.xmp").is_file()  # the verdict was written
    assert not default_cache_path().exists()  # but neither scores nor XMP facts were cached
