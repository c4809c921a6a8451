"""Look inside the score cache and trim it: rows of photos that are gone, rows of other models.

The cache only ever grows while a library changes: a photo deleted or moved away leaves its row, and
a new model leaves every row of the old one.  Nothing here touches a photo or a sidecar; a row removed
only means that photo is analysed again if it ever comes back.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TABLES = ("scores_v2", "footprints_v1", "xmp_facts_v1")
MODEL_TABLES = ("scores_v2", "footprints_v1")


@dataclass(frozen=True)
class CacheContents:
    """What one cache file holds: its size, score rows per model fingerprint, other rows."""

    path: Path
    size_bytes: int
    scores_by_model: dict[str, int]
    footprints: int
    xmp_facts: int


@dataclass
class PruneOutcome:
    """Rows removed per reason (``gone``: the file is missing from a folder that exists; ``model``:
    scored by another model), paths kept because their folder is missing (a drive not mounted,
    a renamed folder), and whether the file was compacted afterwards."""

    gone: Counter[str] = field(default_factory=Counter)  # rows per table
    model: Counter[str] = field(default_factory=Counter)
    gone_paths: int = 0
    unreachable_paths: int = 0
    compacted: bool = False
    note: str | None = None

    @property
    def removed(self) -> int:
        return sum(self.gone.values()) + sum(self.model.values())


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def describe_cache(path: Path) -> CacheContents | None:
    """The contents of the cache at ``path`` (None: there is no cache yet), read-only."""
    if not path.is_file():
        return None
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        tables = _tables(db)
        by_model = dict(db.execute("SELECT model, COUNT(*) FROM scores_v2 GROUP BY model").fetchall()) if "scores_v2" in tables else {}
        prints = db.execute("SELECT COUNT(*) FROM footprints_v1").fetchone()[0] if "footprints_v1" in tables else 0
        facts = db.execute("SELECT COUNT(*) FROM xmp_facts_v1").fetchone()[0] if "xmp_facts_v1" in tables else 0
    finally:
        db.close()
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return CacheContents(path, size, by_model, prints, facts)


def path_state(raw: bytes) -> str:
    """``present``, ``gone`` (missing from a folder that exists) or ``unreachable`` (its folder is
    missing too, or cannot be looked into: kept, it may come back with its drive)."""
    try:
        os.lstat(raw)
        return "present"
    except FileNotFoundError:
        pass
    except OSError:
        return "unreachable"
    parent = os.path.dirname(raw) or b"."
    return "gone" if os.path.isdir(parent) else "unreachable"


def prune_cache(path: Path, keep_model: str | None = None, dry_run: bool = False) -> PruneOutcome:
    """Remove the rows of files that are gone and, with ``keep_model`` (a card fingerprint), every
    score of another model; then compact the file.  ``dry_run`` counts and changes nothing.
    Safe beside a running scan (SQLite transactions; compaction is skipped while the file is busy)."""
    outcome = PruneOutcome()
    if not path.is_file():
        return outcome
    db = sqlite3.connect(path, timeout=10)
    try:
        tables = [t for t in TABLES if t in _tables(db)]
        states: dict[bytes, str] = {}
        doomed: dict[str, list[bytes]] = {}
        for table in tables:
            doomed[table] = []
            for (raw,) in db.execute(f"SELECT DISTINCT path FROM {table}"):  # noqa: S608 - our own table names
                if not isinstance(raw, bytes):
                    continue
                state = states.get(raw) or states.setdefault(raw, path_state(raw))
                if state == "gone":
                    doomed[table].append(raw)
        outcome.gone_paths = sum(1 for state in states.values() if state == "gone")
        outcome.unreachable_paths = sum(1 for state in states.values() if state == "unreachable")
        for table, paths in doomed.items():
            outcome.gone[table] = sum(db.execute(f"SELECT COUNT(*) FROM {table} WHERE path = ?", (p,)).fetchone()[0]  # noqa: S608
                                      for p in paths)
        if keep_model is not None:
            for table in (t for t in MODEL_TABLES if t in tables):
                outcome.model[table] = db.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE model != ?", (keep_model,)).fetchone()[0]  # noqa: S608
        if dry_run or outcome.removed == 0:
            return outcome
        with db:
            for table, paths in doomed.items():
                db.executemany(f"DELETE FROM {table} WHERE path = ?", [(p,) for p in paths])  # noqa: S608
            if keep_model is not None:
                for table in (t for t in MODEL_TABLES if t in tables):
                    db.execute(f"DELETE FROM {table} WHERE model != ?", (keep_model,))  # noqa: S608
        try:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            outcome.compacted = True
        except sqlite3.OperationalError as exc:  # another cull has it open: the rows are gone, the space later
            outcome.note = f"not compacted now ({exc}); the space is reused by later scans"
    finally:
        db.close()
    return outcome
