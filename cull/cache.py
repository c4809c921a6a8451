"""Score cache in SQLite under the user cache folder: a rescan of an unchanged library decodes nothing.

Keyed by absolute path (as bytes: ``os.fsencode``, so names that are not valid UTF-8 work), size,
mtime_ns and the model card's fingerprint (ONNX hash + analysis + aggregation), so an edited file, a
new model or a card that scores differently is always rescored.  Only successful scores are cached
(errors may be transient, e.g. permissions).  A cache that cannot be opened only costs speed: one
warning, and the scan goes on without it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from platformdirs import user_cache_dir

from cull.bursts import Footprint
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
    PRIMARY KEY (path, model)
)
"""
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


def default_cache_path() -> Path:
    """$CULL_CACHE_DIR/scores.sqlite, else the platform's user cache folder."""
    folder = os.environ.get("CULL_CACHE_DIR") or user_cache_dir("cull")
    return Path(folder) / "scores.sqlite"


_warned: set[str] = set()  # one warning per unusable cache file and process

FileKey = tuple[int, int]  # (size, mtime_ns)


def file_key(path: Path) -> FileKey | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


class ScoreCache:
    """A small wrapper over one SQLite file. ``readonly`` never creates or writes anything."""

    def __init__(self, path: Path, model: str, readonly: bool = False) -> None:
        """``model``: the card's fingerprint (cull.card.ModelCard.fingerprint)."""
        self.model = model
        self.readonly = readonly
        self._pending: list[tuple[object, ...]] = []
        self._pending_prints: list[tuple[object, ...]] = []
        self._db: sqlite3.Connection | None = None
        try:
            if readonly:
                if path.is_file():
                    self._db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute(SCHEMA)
                self._db.execute(FOOTPRINTS)
        except (sqlite3.Error, OSError) as exc:  # a broken cache only costs speed
            if str(path) not in _warned:
                _warned.add(str(path))
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                log.warning("score cache %s unusable (%s); scanning without it", path, reason)
            if self._db is not None:
                self._db.close()
            self._db = None

    def get(self, path: Path, key: FileKey) -> PhotoScore | None:
        if self._db is None:
            return None
        try:
            row = self._db.execute(
                "SELECT score, patches, kind, sharp_share FROM scores_v2 "
                "WHERE path = ? AND model = ? AND size = ? AND mtime_ns = ?",
                (os.fsencode(path), self.model, key[0], key[1]),
            ).fetchone()
        except sqlite3.Error:
            return None
        return None if row is None else PhotoScore(row[0], row[1], row[2], row[3])

    def put(self, path: Path, key: FileKey, photo: PhotoScore) -> None:
        if self._db is None or self.readonly:
            return
        self._pending.append((os.fsencode(path), key[0], key[1], self.model, photo.score, photo.patches, photo.kind, photo.sharp_share))
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
                self._db.executemany("INSERT OR REPLACE INTO scores_v2 VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._pending)
                self._db.executemany("INSERT OR REPLACE INTO footprints_v1 VALUES (?, ?, ?, ?, ?)", self._pending_prints)
        except sqlite3.Error as exc:
            log.warning("could not update the score cache: %s", exc)
        self._pending.clear()
        self._pending_prints.clear()

    def close(self) -> None:
        self.flush()
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ScoreCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
