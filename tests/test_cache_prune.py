"""`cull cache info` / `cull cache prune`: rows of photos that are gone go, everything else stays."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

from typer.testing import CliRunner

from cull.cache import FactCache, ScoreCache
from cull.cache_prune import describe_cache, path_state, prune_cache
from cull.card import load_card
from cull.cli import app
from cull.score import PhotoScore
from tests.conftest import blurred_image, save, sharp_image

runner = CliRunner()


def scan(folder: Path, env: dict[str, str], tmp: Path) -> tuple[int, str]:
    """(photos in the report, the summary line)"""
    report = tmp / "report.jsonl"
    result = runner.invoke(app, ["scan", str(folder), "--workers", "1", "--no-xmp", "--report", str(report)], env=env)
    assert result.exit_code == 0, result.output
    return len([json.loads(line) for line in report.read_text().splitlines()]), result.output


def rows(cache: Path, table: str) -> list[bytes]:
    with sqlite3.connect(cache) as db:
        return sorted(row[0] for row in db.execute(f"SELECT path FROM {table}"))


def test_prune_drops_gone_photos_keeps_unreachable_folders_and_other_models_on_request(tmp_path):
    env = {"CULL_CACHE_DIR": str(tmp_path / "cache")}
    library = tmp_path / "library"
    save(sharp_image(1), library / "day1" / "a.jpg")
    save(blurred_image(2, 6), library / "day1" / "b.jpg")
    save(sharp_image(3), library / "day2" / "c.jpg")
    photos, summary = scan(library, env, tmp_path)
    assert photos == 3 and "(0 from cache)" in summary
    cache = Path(env["CULL_CACHE_DIR"]) / "scores.sqlite"
    with FactCache(cache) as facts:  # an XMP fact of the photo that will be deleted
        facts.put((library / "day1" / "b.jpg").absolute(), "stamp", merged="x")
    with ScoreCache(cache, "an-older-model") as old:  # a score left by an earlier model
        old.put((library / "day1" / "a.jpg").absolute(), (1, 1), PhotoScore(0.9, 8))

    (library / "day1" / "b.jpg").unlink()  # deleted
    shutil.move(library / "day2", tmp_path / "elsewhere")  # folder gone: a drive not mounted, say
    assert path_state(os.fsencode((library / "day1" / "b.jpg").absolute())) == "gone"
    assert path_state(os.fsencode((library / "day2" / "c.jpg").absolute())) == "unreachable"

    before = (rows(cache, "scores_v2"), rows(cache, "xmp_facts_v1"))
    counted = prune_cache(cache, dry_run=True)
    assert counted.gone["scores_v2"] == 1 and counted.gone["xmp_facts_v1"] == 1 and counted.unreachable_paths == 1
    assert (rows(cache, "scores_v2"), rows(cache, "xmp_facts_v1")) == before  # a dry run changes nothing

    result = runner.invoke(app, ["cache", "prune"], env=env)
    assert result.exit_code == 0, result.output
    assert "removed what was cached of 1 files that are gone (2 rows)" in result.output, result.output
    assert "kept 1 files whose folder is missing" in result.output and "compacted" in result.output
    kept = rows(cache, "scores_v2")
    assert os.fsencode((library / "day1" / "b.jpg").absolute()) not in kept
    assert os.fsencode((library / "day2" / "c.jpg").absolute()) in kept  # may come back with its drive
    assert rows(cache, "xmp_facts_v1") == []
    photos, summary = scan(library, env, tmp_path)
    assert photos == 1 and "(1 from cache)" in summary  # what is left still serves rescans

    contents = describe_cache(cache)
    current = load_card().fingerprint
    assert contents is not None and contents.scores_by_model == {current: 2, "an-older-model": 1}
    info = runner.invoke(app, ["cache", "info"], env=env)
    assert info.exit_code == 0 and f"{current[:12]}  (current)" in info.output and "an-older-mo" in info.output

    result = runner.invoke(app, ["cache", "prune", "--other-models"], env=env)
    assert result.exit_code == 0 and "and 1 scores of other models" in result.output, result.output
    assert describe_cache(cache).scores_by_model == {current: 2}  # type: ignore[union-attr]
    assert sorted(p.name for p in (library / "day1").iterdir()) == ["a.jpg"]  # photos untouched


def test_prune_beside_a_scan_reading_the_cache(tmp_path):
    """A scan reading the cache keeps its consistent view while rows go; it sees the pruned cache next time."""
    cache = tmp_path / "scores.sqlite"
    photo = save(sharp_image(4), tmp_path / "p.jpg")
    with ScoreCache(cache, "m") as scores:
        scores.put(photo.absolute(), (1, 1), PhotoScore(0.9, 8))
        scores.put((tmp_path / "gone.jpg").absolute(), (1, 1), PhotoScore(0.1, 8))
    reader = sqlite3.connect(cache, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM scores_v2").fetchone()[0] == 2
    try:
        outcome = prune_cache(cache)
        assert reader.execute("SELECT COUNT(*) FROM scores_v2").fetchone()[0] == 2  # its snapshot
    finally:
        reader.execute("ROLLBACK")
    assert reader.execute("SELECT COUNT(*) FROM scores_v2").fetchone()[0] == 1
    reader.close()
    assert outcome.gone["scores_v2"] == 1 and rows(cache, "scores_v2") == [os.fsencode(photo.absolute())]


def test_no_cache_yet(tmp_path):
    env = {"CULL_CACHE_DIR": str(tmp_path / "none")}
    assert "no score cache yet" in runner.invoke(app, ["cache", "info"], env=env).output
    assert runner.invoke(app, ["cache", "prune"], env=env).exit_code == 0
    assert not (tmp_path / "none").exists()  # looking creates nothing


def test_a_damaged_cache_is_named_not_a_traceback(tmp_path):
    env = {"CULL_CACHE_DIR": str(tmp_path)}
    (tmp_path / "scores.sqlite").write_bytes(b"not a database at all")
    for command in (["cache", "info"], ["cache", "prune"]):
        result = runner.invoke(app, command, env=env)
        assert result.exit_code == 1 and "file is not a database" in result.output, result.output
        assert "remove the file to start a new one" in result.output
        assert isinstance(result.exception, SystemExit)  # a clean exit, not an uncaught error
    assert (tmp_path / "scores.sqlite").read_bytes() == b"not a database at all"
