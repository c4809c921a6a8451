"""Two scans at once share one score cache safely: no "database is locked", identical results, all cached after."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

from cull.cache import ScoreCache
from cull.score import PhotoScore
from cull.scan import ScanOptions, scan
from tests.conftest import REPO, blurred_image, save, sharp_image


def _tree(root: Path) -> Path:
    for folder in ("a", "b"):
        for i in range(3):
            save(sharp_image(i, 0.5), root / folder / f"s{i}.jpg")
            save(blurred_image(i, 4), root / folder / f"b{i}.jpg")
    return root


def _two_scans(tree: Path, cache: Path, tmp: Path, tag: str, *extra: str) -> list[tuple[dict[str, tuple[object, ...]], str, str]]:
    env = {**os.environ, "CULL_CACHE_DIR": str(cache)}
    procs = [
        subprocess.Popen([sys.executable, "-m", "cull", "scan", str(tree), "-j", "1", "--show", "none",
                          "--report", str(tmp / f"{tag}{n}.jsonl"), *extra],
                         env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(2)
    ]
    outcomes = []
    for n, proc in enumerate(procs):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        rows = {r["path"]: (r["score"], r["verdict"], r["error"]) for r in map(json.loads, (tmp / f"{tag}{n}.jsonl").read_text().splitlines())}
        outcomes.append((rows, out, err))
    return outcomes


def test_two_concurrent_scans_of_one_tree_share_the_cache(tmp_path):
    tree, cache = _tree(tmp_path / "tree"), tmp_path / "cache"
    cold = _two_scans(tree, cache, tmp_path, "cold", "--no-xmp")  # both create and fill a new cache at once
    warm = _two_scans(tree, cache, tmp_path, "warm")  # both read it (and write XMP) at once
    reports = [rows for rows, _, _ in cold + warm]
    assert len(reports[0]) == 12 and all(r == reports[0] for r in reports)
    for _, out, err in cold + warm:
        assert "locked" not in err and "cache" not in err, err
    assert all("(12 from cache)" in out for _, out, _ in warm)


def test_a_scan_waits_for_another_writer_instead_of_dropping_its_scores(tmp_path, card, caplog):
    tree, db = _tree(tmp_path / "tree"), tmp_path / "cache" / "scores.sqlite"
    options = ScanOptions(workers=1, cache_path=db)
    ScoreCache(db, card.fingerprint).close()  # the cache exists
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another scan in the middle of writing
    threading.Timer(1.5, lambda: other.execute("COMMIT")).start()
    with caplog.at_level(logging.WARNING, logger="cull.cache"):
        first = scan([tree], card, options)
    assert not caplog.records, caplog.text
    again = scan([tree], card, options)
    assert again.counts()["cached"] == 12
    assert [r.row() for r in again.results] == [r.row() for r in first.results]
    other.close()


def test_opening_a_cache_that_another_cull_is_creating_waits_instead_of_going_uncached(tmp_path, monkeypatch, caplog):
    """Switching a new cache to WAL needs the file to itself, and SQLite answers "database is locked"
    at once (no busy wait) when another cull is doing the same: the open retries (seen once in CI: a
    scan went on uncached with a warning)."""
    real_connect = sqlite3.connect
    answers = iter([True, True, False])  # "locked" twice, then the other cull is done

    class Contended:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql.startswith("PRAGMA journal_mode") and next(answers, False):
                raise sqlite3.OperationalError("database is locked")
            return self.db.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self.db, name)

    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: Contended(real_connect(*a, **k)))
    db = tmp_path / "scores.sqlite"
    with caplog.at_level(logging.WARNING, logger="cull.cache"):
        cache = ScoreCache(db, "m")
    assert not caplog.records, caplog.text
    assert cache._db is not None
    cache.close()
    monkeypatch.undo()
    with real_connect(db) as check:
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert check.execute("SELECT COUNT(*) FROM scores_v2").fetchone()[0] == 0


def test_a_cache_that_cannot_be_written_warns_once_per_scan_not_at_every_flush(tmp_path, caplog):
    """A full disk fails every flush (one per 256 scores and at the end): one warning says it."""

    class Full:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def executemany(self, sql: str, rows: object) -> sqlite3.Cursor:
            raise sqlite3.OperationalError("database or disk is full")

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.db.rollback()

        def __getattr__(self, name: str) -> object:
            return getattr(self.db, name)

    db = tmp_path / "scores.sqlite"
    cache = ScoreCache(db, "m")
    cache._db = Full(cache._db)  # type: ignore[assignment,arg-type]
    with caplog.at_level(logging.WARNING, logger="cull.cache"):
        for i in range(600):
            cache.put(tmp_path / f"{i}.jpg", (1, i), PhotoScore(0.5, 8))
        cache.close()
    assert [r.getMessage() for r in caplog.records] == ["could not update the score cache: database or disk is full"]
