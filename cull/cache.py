"""Score cache in SQLite under the user cache folder: a rescan of an unchanged library decodes nothing.

Keyed by absolute path (as bytes: ``os.fsencode``, so names that are not valid UTF-8 work), size,
mtime_ns and the model card's fingerprint (ONNX hash + analysis + aggregation), so an edited file, a
new model or a card that scores differently is always rescored.  Only successful scores are cached
(errors may be transient, e.g. permissions).  A cache that cannot be opened only costs speed: one
warning, and the scan goes on without it.
"""

from __future__ import annotations

import json
import logging
import errno
import os
import sqlite3
import time
from pathlib import Path
from typing import TypeVar

from platformdirs import user_cache_dir

from cull.bursts import Footprint
from cull.fsutil import FileKey, file_key  # noqa: F401 - also cull.cache.file_key for callers
from cull.score import PhotoScore

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS scores_v2 (
    path BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    model TEXT NOT NULL,
    score REAL,
    patches INTEGER NOT NULL,
    kind TEXT,
    sharp_share REAL NOT NULL,
    motion REAL,
    head REAL,
    PRIMARY KEY (path, model)
)
"""
# A scores_v2 table written before ``motion`` existed gains the column (its rows are of older card
# fingerprints, never read again: cull.card.PHOTO_SCORE_FIELDS); one written before ``head`` gains that
# (its rows hold no head value, which only a card with a photo head, and so another fingerprint, has).
SCORE_COLUMNS = ("path", "size", "mtime_ns", "model", "score", "patches", "kind", "sharp_share", "motion", "head")
ADDED_COLUMNS = ("motion", "head")
FOOTPRINTS = """
CREATE TABLE IF NOT EXISTS footprints_v1 (
    path BLOB NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    model TEXT NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (path, model)
)
"""


FACTS = """
CREATE TABLE IF NOT EXISTS xmp_facts_v1 (
    path BLOB PRIMARY KEY,
    stamp TEXT NOT NULL,
    facts TEXT NOT NULL
)
"""


def default_cache_path() -> Path:
    """$CULL_CACHE_DIR/scores.sqlite, else the platform's user cache folder."""
    folder = os.environ.get("CULL_CACHE_DIR") or user_cache_dir("cull")
    return Path(folder) / "scores.sqlite"


SETUP_SECONDS = 30.0  # how long opening the cache waits for another cull that is creating it
_warned: set[str] = set()  # one warning per unusable cache file (or failing update of one) and process


def _warn_once(key: str, message: str, *args: object) -> None:
    """Log ``message`` the first time ``key`` comes up in this process (a full disk fails every flush)."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message, *args)



class _SqliteFile:
    """One SQLite file of the cache folder: opened read-only or created (WAL, with its tables);
    ``flush`` writes what is pending, ``close`` flushes first. An unusable file leaves ``_db`` None."""

    _db: sqlite3.Connection | None = None

    @staticmethod
    def _connect(path: Path, readonly: bool, *tables: str) -> sqlite3.Connection | None:
        """Raises sqlite3.Error or OSError; None for a read-only cache that does not exist yet."""
        if readonly:
            return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True) if path.is_file() else None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # mkdir's "File exists" for a file, a dangling link or a link loop there
            raise NotADirectoryError(errno.ENOTDIR, "not a folder: a file, or a link to nothing or to itself",
                                     str(path.parent)) from None
        db = sqlite3.connect(path)
        deadline = time.monotonic() + SETUP_SECONDS
        while True:
            try:
                if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    db.execute("PRAGMA journal_mode=WAL")
                for table in tables:
                    db.execute(table)
                return db
            except sqlite3.OperationalError as exc:
                # Two scans creating the cache at once: switching to WAL needs the file to itself, and
                # SQLite answers "locked" at once (no busy wait) where waiting could deadlock. Retry.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.05)
            except sqlite3.Error:
                db.close()
                raise

    def flush(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_Store = TypeVar("_Store", bound=_SqliteFile)


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}  # noqa: S608 - our own table name


def _add_columns(db: sqlite3.Connection, names: list[str]) -> None:
    """Give an older cull's scores_v2 the columns it lacks (another cull may just have added them)."""
    for name in names:
        try:
            with db:
                db.execute(f"ALTER TABLE scores_v2 ADD COLUMN {name} REAL")  # noqa: S608 - our own column names
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


class ScoreCache(_SqliteFile):
    """A small wrapper over one SQLite file. ``readonly`` never creates or writes anything."""

    def __init__(self, path: Path, model: str, readonly: bool = False) -> None:
        """``model``: the card's fingerprint (cull.card.ModelCard.fingerprint)."""
        self.model = model
        self.path = path
        self.readonly = readonly
        self._pending: list[tuple[object, ...]] = []
        self._pending_prints: list[tuple[object, ...]] = []
        self._head = "head"  # the column read for PhotoScore.head
        try:
            self._db = self._connect(path, readonly, SCHEMA, FOOTPRINTS)
            missing = [] if self._db is None else [c for c in ADDED_COLUMNS if c not in _columns(self._db, "scores_v2")]
            if self._db is not None and missing:
                if not readonly:
                    _add_columns(self._db, missing)
                elif "motion" in missing:  # an older cull's cache: it holds no score of this card anyway
                    self._db.close()
                    self._db = None
                else:  # read as written: no head values
                    self._head = "NULL"
        except (sqlite3.Error, OSError) as exc:  # a broken cache only costs speed
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            _warn_once(str(path), "score cache %s unusable (%s); scanning without it", path, reason)

    def get(self, path: Path, key: FileKey) -> PhotoScore | None:
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                f"SELECT score, patches, kind, sharp_share, motion, {self._head} FROM scores_v2 "  # noqa: S608
                "WHERE path = ? AND model = ? AND size = ? AND mtime_ns = ?",
                (os.fsencode(path), self.model, key[0], key[1]),
            ).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else PhotoScore(*row)

    def put(self, path: Path, key: FileKey, photo: PhotoScore) -> None:
        if self._db is None or self.readonly:
            return
        self._pending.append((os.fsencode(path), key[0], key[1], self.model, photo.score, photo.patches, photo.kind,
                              photo.sharp_share, photo.motion, photo.head))
        if len(self._pending) >= 256:
            self.flush()

    def get_footprint(self, path: Path, key: FileKey) -> Footprint | None:
        """The burst footprint stored with the score (cull.bursts), or None."""
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT data FROM footprints_v1 WHERE path = ? AND model = ? AND size = ? AND mtime_ns = ?",
                (os.fsencode(path), self.model, key[0], key[1]),
            ).fetchone()
            return None if row is None else Footprint.from_bytes(row[0])
        except (sqlite3.Error, ValueError):  # a table from an older cull, or damaged data: recompute
            return None

    def put_footprint(self, path: Path, key: FileKey, footprint: Footprint) -> None:
        if self._db is None or self.readonly:
            return
        self._pending_prints.append((os.fsencode(path), key[0], key[1], self.model, footprint.to_bytes()))
        if len(self._pending_prints) >= 256:
            self.flush()

    def flush(self) -> None:
        if self._db is None or not (self._pending or self._pending_prints):
            return
        try:
            with self._db:
                self._db.executemany(f"INSERT OR REPLACE INTO scores_v2 ({', '.join(SCORE_COLUMNS)}) "  # noqa: S608
                                     f"VALUES ({', '.join('?' * len(SCORE_COLUMNS))})", self._pending)
                self._db.executemany("INSERT OR REPLACE INTO footprints_v1 VALUES (?, ?, ?, ?, ?)", self._pending_prints)
        except sqlite3.Error as exc:
            _warn_once(f"scores {self.path}", "could not update the score cache: %s", exc)
        self._pending.clear()
        self._pending_prints.clear()


RACY_SECONDS = 2.5  # FAT/exFAT keep mtime in 2 s steps (and ctime is the creation time there)


def stamp_of(info: os.stat_result) -> str | None:
    """What identifies one version of a file's content: device, inode, size, mtime_ns and ctime_ns
    (any write, rename over, chmod or touch changes it; ctime cannot be set back by a user tool).
    None for a file modified in the last RACY_SECONDS (or in the future): on a file system with
    coarse times a second edit in the same tick would keep the stamp, so such a file is read."""
    if time.time() - info.st_mtime < RACY_SECONDS:
        return None
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


class FactCache(_SqliteFile):
    """What cull learnt about the content of an XMP sidecar or a photo's XMP, keyed by the file's
    stamp (``stamp_of``): a rescan that finds the same stamp need not open the file again.

    Facts are a small JSON dict (e.g. ``merged``: the hash of the verdict payload whose merge is a
    no-op; ``protection``: the user's rating/pick found; ``user_verdict``). A stamp that differs
    drops every fact of the file. Same SQLite file as the scores (own table); an unusable cache
    only costs speed. ``readonly`` never writes."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._seen: dict[bytes, tuple[str, dict[str, object]]] = {}
        self._folders: set[bytes] = set()  # folders whose rows were all read at once
        self._dirty: set[bytes] = set()
        try:
            self._db = self._connect(path, readonly, FACTS)
        except (sqlite3.Error, OSError) as exc:
            log.info("XMP fact cache %s unusable (%s); reading every sidecar", path, exc)

    def _row(self, key: bytes) -> tuple[str, dict[str, object]] | None:
        if key in self._seen:
            return self._seen[key]
        folder = key.rpartition(b"/")[0] + b"/"
        if self._db is None or folder in self._folders:
            return None
        self._folders.add(folder)
        try:  # the rows of the files right in this folder, in one query (BLOB order: a range)
            rows = self._db.execute(
                "SELECT path, stamp, facts FROM xmp_facts_v1 WHERE path >= ? AND path < ? AND instr(substr(path, ?), X'2F') = 0",
                (folder, folder[:-1] + b"0", len(folder) + 1)).fetchall()
        except sqlite3.Error:  # an older or damaged table: read the files
            return None
        for path, stamp, text in rows:
            try:
                facts = json.loads(text)
            except ValueError:
                continue
            if isinstance(path, bytes) and isinstance(facts, dict) and path not in self._seen:
                self._seen[path] = (stamp, facts)
        return self._seen.get(key)

    def get(self, path: Path, stamp: str) -> dict[str, object]:
        """The facts known for ``path`` at ``stamp`` (empty when none, or the file changed since)."""
        row = self._row(os.fsencode(path.absolute()))
        return dict(row[1]) if row is not None and row[0] == stamp else {}

    def put(self, path: Path, stamp: str, **facts: object) -> None:
        """Add ``facts`` for ``path`` at ``stamp`` (the facts of another stamp are dropped)."""
        if self.readonly:
            return
        key = os.fsencode(path.absolute())
        row = self._row(key)
        known = dict(row[1]) if row is not None and row[0] == stamp else {}
        known.update(facts)
        self._seen[key] = (stamp, known)
        self._dirty.add(key)
        if len(self._dirty) >= 512:
            self.flush()

    def forget(self, path: Path) -> None:
        """Drop what is known of ``path`` (e.g. written by a path the cache cannot stamp)."""
        self.put(path, "")

    def flush(self) -> None:
        if self._db is None or self.readonly or not self._dirty:
            self._dirty.clear()
            return
        rows = [(key, *self._seen[key]) for key in self._dirty]
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO xmp_facts_v1 VALUES (?, ?, ?)",
                                     [(key, stamp, json.dumps(facts)) for key, stamp, facts in rows])
        except sqlite3.Error as exc:
            _warn_once(f"facts {self.path}", "could not update the XMP fact cache: %s", exc)
        self._dirty.clear()
