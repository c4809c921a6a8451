"""A photo replaced, edited or removed while a scan runs (which can take hours) keeps no verdict: the
verdict was for the file that was judged, and must not reach the XMP, the report or a move."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from typer.testing import CliRunner

from cull.card import load_card
from cull.cli import app
from cull.scan import PhotoResult, ScanOptions, scan
from tests.conftest import blurred_image, save, sharp_image


def library(root: Path) -> tuple[Path, Path, Path]:
    blurred, other, sharp = root / "blurred.jpg", root / "other.jpg", root / "sharp_spare.jpg"
    save(blurred_image(1, 9), blurred)
    save(blurred_image(2, 9), other)
    save(sharp_image(3), sharp)
    return blurred, other, sharp


def replacing(when_judged: Path, action) -> object:  # type: ignore[no-untyped-def]
    """An on_result hook that acts on the library once ``when_judged`` has its result."""

    def on_result(result: PhotoResult) -> None:
        if result.path == when_judged:
            action()

    return on_result


def test_a_photo_replaced_after_it_was_judged_gets_no_verdict(tmp_path):
    blurred, other, sharp = library(tmp_path / "lib")
    spare = tmp_path / "sharp.jpg"
    shutil.move(sharp, spare)

    def replace_with_sharp() -> None:
        shutil.copyfile(spare, blurred)
        os.utime(blurred, ns=(1, 1_700_000_000_000_000_000))

    found = scan([tmp_path / "lib"], load_card(), ScanOptions(workers=1, use_cache=False),
                 on_result=replacing(blurred, replace_with_sharp))
    by_path = {r.path: r for r in found.results}
    assert by_path[blurred].verdict is None and "changed since it was judged" in (by_path[blurred].error or "")
    assert by_path[other].verdict is not None and by_path[other].error is None


def test_a_photo_removed_after_it_was_judged_gets_no_verdict(tmp_path):
    blurred, other, _ = library(tmp_path / "lib")
    found = scan([tmp_path / "lib"], load_card(), ScanOptions(workers=1, use_cache=False),
                 on_result=replacing(blurred, blurred.unlink))
    by_path = {r.path: r for r in found.results}
    assert by_path[blurred].verdict is None and "gone since it was judged" in (by_path[blurred].error or "")


def test_cli_writes_no_xmp_for_a_changed_photo_and_reports_it(tmp_path, monkeypatch):
    """Through the command line: no sidecar for the photo that changed, an error row in the report,
    exit code 1; the other photos as usual.  A rescan judges the new file."""
    import cull.scan

    blurred, other, sharp = library(tmp_path / "lib")
    real_scan = cull.scan.scan

    def scan_then_edit(*args, **kwargs):  # type: ignore[no-untyped-def]
        hook = kwargs.get("on_result")

        def on_result(result: PhotoResult) -> None:
            if hook:
                hook(result)
            if result.path == blurred:
                shutil.copyfile(sharp, blurred)
        kwargs["on_result"] = on_result
        return real_scan(*args, **kwargs)

    monkeypatch.setattr(cull.scan, "scan", scan_then_edit)
    report = tmp_path / "report.jsonl"
    first = CliRunner().invoke(app, ["scan", str(tmp_path / "lib"), "--workers", "1", "--report", str(report)])
    assert first.exit_code == 1, first.output
    assert not (tmp_path / "lib" / "blurred.jpg.xmp").exists() and (tmp_path / "lib" / "other.jpg.xmp").exists()
    rows = {Path(row["path"]).name: row for row in map(json.loads, report.read_text().splitlines())}
    assert rows["blurred.jpg"]["verdict"] is None and "changed since it was judged" in rows["blurred.jpg"]["error"]
    monkeypatch.setattr(cull.scan, "scan", real_scan)
    again = CliRunner().invoke(app, ["scan", str(tmp_path / "lib"), "--workers", "1", "--report", str(report)])
    assert again.exit_code == 0, again.output
    rows = {Path(row["path"]).name: row for row in map(json.loads, report.read_text().splitlines())}
    assert rows["blurred.jpg"]["score"] == rows["sharp_spare.jpg"]["score"]  # judged as the file that is there now


def test_unchanged_photos_keep_their_verdicts_on_a_cached_rescan(tmp_path):
    library(tmp_path / "lib")
    options = ScanOptions(workers=1, cache_path=tmp_path / "cache.db")
    first = scan([tmp_path / "lib"], load_card(), options)
    second = scan([tmp_path / "lib"], load_card(), options)
    assert all(r.cached and r.verdict is not None for r in second.results)
    assert [r.verdict for r in first.results] == [r.verdict for r in second.results]



def test_a_worker_that_read_another_file_than_the_one_listed_gives_no_verdict(tmp_path, monkeypatch):
    """A --ray worker whose mount shows another file at the driver's path: its reading is not recorded
    as the driver's photo (a sharp photo got the reject of the file the worker saw, and it was cached)."""
    import cull.analyse

    blurred, other, _ = library(tmp_path / "lib")
    original = cull.analyse.file_key

    def stamp_of_another_version(path: Path):  # type: ignore[no-untyped-def]
        found = original(path)
        return (found[0] + 1, found[1]) if found is not None and Path(path).name == "blurred.jpg" else found

    monkeypatch.setattr(cull.analyse, "file_key", stamp_of_another_version)  # workers=1 analyses in this process
    options = ScanOptions(workers=1, cache_path=tmp_path / "cache.db")
    found = {r.path: r for r in scan([tmp_path / "lib"], load_card(), options).results}
    assert found[blurred].verdict is None and "not the one listed here" in (found[blurred].error or "")
    assert found[other].verdict is not None
    monkeypatch.setattr(cull.analyse, "file_key", original)
    again = {r.path: r for r in scan([tmp_path / "lib"], load_card(), options).results}
    assert not again[blurred].cached and again[blurred].verdict is not None  # nothing was cached for it


def test_a_worker_mount_with_coarser_file_times_is_the_same_file(tmp_path, monkeypatch):
    """An SMB or sshfs worker keeps modification times coarser (100 ns, 1 s) than the driver's disk: the
    same size and a time within 2 s is the same file, judged as usual."""
    import cull.analyse

    blurred, other, _ = library(tmp_path / "lib")
    original = cull.analyse.file_key

    def coarse(path: Path):  # type: ignore[no-untyped-def]
        found = original(path)
        return None if found is None else (found[0], found[1] // 1_000_000_000 * 1_000_000_000)

    monkeypatch.setattr(cull.analyse, "file_key", coarse)
    found = scan([tmp_path / "lib"], load_card(), ScanOptions(workers=1, use_cache=False)).results
    assert all(r.verdict is not None and r.error is None for r in found)
