"""Look inside the score cache and trim it: rows of photos that are gone, rows of other models.

The cache only ever grows while a library changes: a photo deleted or moved away leaves its row, and
a new model leaves every row of the old one.  Nothing here touches a photo or a sidecar; a row removed
only means that photo is analysed again if it ever comes back.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

TABLES = ("scores_v2", "footprints_v1", "xmp_facts_v1")
MODEL_TABLES = ("scores_v2", "footprints_v1")
CHECKPOINT_WAIT_MS = 1000
OLDER_TABLES = ("scores",)  # written by an older cull (text paths), never read since: dropped with --other-models


@dataclass(frozen=True)
class CacheContents:
    """What one cache file holds: its size, score rows per model fingerprint, other rows."""

    path: Path
    size_bytes: int
    scores_by_model: dict[str, int]
    footprints: int
    xmp_facts: int
    older_rows: int = 0  # scores in an older cull's table (OLDER_TABLES), which nothing reads any more


@dataclass
class PruneOutcome:
    """Rows removed per reason (``gone``: the file is missing from a folder that exists; ``model``:
    scored by another model, or kept in an older cull's table), paths kept because their folder is missing (a drive not mounted,
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


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection.  Where SQLite cannot open the file read-only the ordinary way (a WAL
    cache in a folder this user cannot write: the shared-memory file cannot be made), the file is
    read as immutable: what a writer left in the WAL file is then not seen, but nothing can be
    writing there either."""
    uri = path.absolute().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True)


def _count(db: sqlite3.Connection, table: str, where: str = "", *args: object) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table} {where}", args).fetchone()[0])  # noqa: S608 - our own table names


def _no_cache_yet(path: Path) -> bool:
    """Whether there is no cache file at ``path`` yet.  Raises NotADirectoryError when its folder
    (``CULL_CACHE_DIR``) is a file, a link to nothing or a loop, as a scan says it."""
    if path.is_file():
        return False
    if os.path.lexists(path.parent) and not path.parent.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "not a folder: a file, or a link to nothing or to itself", str(path.parent))
    return True


def describe_cache(path: Path) -> CacheContents | None:
    """The contents of the cache at ``path`` (None: there is no cache yet), read-only."""
    if _no_cache_yet(path):
        return None
    db = _open_readonly(path)
    try:
        tables = _tables(db)
        by_model = dict(db.execute("SELECT model, COUNT(*) FROM scores_v2 GROUP BY model").fetchall()) if "scores_v2" in tables else {}
        prints = _count(db, "footprints_v1") if "footprints_v1" in tables else 0
        facts = _count(db, "xmp_facts_v1") if "xmp_facts_v1" in tables else 0
        older = sum(_count(db, table) for table in OLDER_TABLES if table in tables)
    finally:
        db.close()
    size = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
    return CacheContents(path, size, by_model, prints, facts, older)


def _folder_state(folder: bytes) -> str:
    """``gone`` when ``folder`` is a folder with something in it; ``unreachable`` when it is missing,
    cannot be listed, or is empty: a drive that is not mounted leaves its mount point as an empty
    folder, and the photos that were at the top of that drive must keep their rows."""
    try:
        with os.scandir(folder) as entries:
            return "gone" if next(entries, None) is not None else "unreachable"
    except OSError:
        return "unreachable"


def path_state(raw: bytes, folders: dict[bytes, str] | None = None) -> str:
    """``present``, ``gone`` (missing from a folder that exists and is not empty) or ``unreachable``
    (its folder is missing, empty, or cannot be looked into: kept, it may come back with its drive;
    also a path cull could not have written, relative or with a NUL byte).  ``folders``: the
    states of the folders seen so far (each folder is looked into once)."""
    if not os.path.isabs(raw) or b"\0" in raw:
        return "unreachable"
    try:
        os.lstat(raw)
        return "present"
    except FileNotFoundError:
        pass
    except OSError:  # a folder on the way that is a file, or that this user cannot search
        return "unreachable"
    folders = {} if folders is None else folders
    parent = os.path.dirname(raw)
    state = folders.get(parent)
    if state is None:
        state = folders[parent] = _folder_state(parent)
    return state


def cache_failure_hint(exc: BaseException) -> str | None:
    """What to tell the user about a cache that could not be read or pruned, when it is not damaged
    (None: it may be damaged)."""
    text = str(exc).lower()
    if isinstance(exc, NotADirectoryError):
        return " (CULL_CACHE_DIR, or the user cache folder, must be a folder; nothing was changed)"
    if isinstance(exc, PermissionError) or "readonly" in text or "read-only" in text or "unable to open" in text:
        return " (the cache file or its folder is read-only for this user; nothing was changed)"
    if "locked" in text or "busy" in text:
        return " (another cull is writing it; try again when it is done; nothing was changed)"
    return None


def prune_cache(path: Path, keep_model: str | None = None, dry_run: bool = False) -> PruneOutcome:
    """Remove the rows of files that are gone and, with ``keep_model`` (a card fingerprint), every
    score of another model and the tables of an older cull; then compact the file.  ``dry_run``
    counts and changes nothing (the file is opened read-only).  Every removal is one transaction:
    an interrupted prune leaves the cache as it was.  Safe beside a running scan (SQLite locking;
    compaction is skipped while the file is busy)."""
    outcome = PruneOutcome()
    if _no_cache_yet(path):
        return outcome
    db = _open_readonly(path) if dry_run else sqlite3.connect(path, timeout=10)
    db.isolation_level = None  # transactions only where this code begins them
    try:
        present = _tables(db)
        tables = [t for t in TABLES if t in present]
        older = [t for t in OLDER_TABLES if t in present] if keep_model is not None else []
        states: dict[bytes, str] = {}
        folders: dict[bytes, str] = {}
        for table in tables:
            for (raw,) in db.execute(f"SELECT DISTINCT path FROM {table}"):  # noqa: S608 - our own table names
                if isinstance(raw, bytes) and raw not in states:
                    states[raw] = path_state(raw, folders)
        outcome.gone_paths = sum(1 for state in states.values() if state == "gone")
        outcome.unreachable_paths = sum(1 for state in states.values() if state == "unreachable")
        db.execute("CREATE TEMP TABLE doomed (path BLOB PRIMARY KEY)")
        db.execute("BEGIN")  # touches only the temporary table: no lock on the cache
        db.executemany("INSERT INTO temp.doomed VALUES (?)", ((raw,) for raw, state in states.items() if state == "gone"))
        db.execute("COMMIT")
        gone = "WHERE path IN (SELECT path FROM temp.doomed)"
        for table in tables:
            outcome.gone[table] = _count(db, table, gone)
        if keep_model is not None:
            for table in (t for t in MODEL_TABLES if t in tables):
                outcome.model[table] = _count(db, table, "WHERE model != ?", keep_model)
            for table in older:
                outcome.model[table] = _count(db, table)
        if dry_run or (outcome.removed == 0 and not older):
            return outcome
        db.execute("BEGIN IMMEDIATE")  # one transaction: all of it or nothing (Ctrl-C, a crash)
        try:
            for table in tables:
                db.execute(f"DELETE FROM {table} {gone}")  # noqa: S608
            if keep_model is not None:
                for table in (t for t in MODEL_TABLES if t in tables):
                    db.execute(f"DELETE FROM {table} WHERE model != ?", (keep_model,))  # noqa: S608
            for table in older:
                db.execute(f"DROP TABLE {table}")  # noqa: S608
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        db.execute("DROP TABLE temp.doomed")
        try:
            db.execute("VACUUM")
        except sqlite3.OperationalError as exc:  # another cull has it open: the rows are gone, the space later
            outcome.note = f"not compacted now ({exc}); the space is reused by later scans"
            return outcome
        outcome.compacted = True
        db.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")  # a reader holding on would cost the full 10 s
        busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy is not None and busy[0]:
            outcome.note = f"another program is reading the cache: {path.name}-wal shrinks once it lets go"
    finally:
        db.close()
    return outcome
