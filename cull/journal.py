"""An append-only, fsynced journal of file moves, so an interrupted move can be finished or undone.

One JSON object per line.  ``intent`` is written (and fsynced) before a file moves, ``done`` after
it has arrived and been verified; ``undo-done`` after it has been put back.  Reading tolerates a
torn last line (a crash mid-write).

Paths are journalled absolute, so ``cull undo`` works from any working directory.  Journals are
named ``move-<sequence>-<time>.jsonl``; the sequence is taken under the target's lock, so "the last
move" is well defined even for many moves within one second.  ``target_lock`` is an exclusive
``flock`` on ``<target>/.cull-journal/lock`` that ``move``, ``undo`` and recovery hold while they
work, so two runs into one target never interleave.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cull.errors import MoveError

log = logging.getLogger(__name__)

JOURNAL_DIR = ".cull-journal"
LOCK_NAME = "lock"
_NEW_NAME = re.compile(r"^move-(\d{6,})-\d{8}-\d{6}\.jsonl$")
_OLD_NAME = re.compile(r"^move-\d{8}-\d{6}-[0-9a-f]{6}\.jsonl$")  # before sequence numbers: older than any new one


@dataclass
class Step:
    src: Path
    dst: Path
    size: int
    sha256: str
    mtime_ns: int
    shot: str
    done: bool = False
    undone: bool = False
    undo_failed: str | None = None
    journalled: str = ""  # ``dst`` as the intent wrote it: later records name the step so, whatever rebase reads it as

    @property
    def key(self) -> str:
        return self.journalled or str(self.dst)


def _dumps(record: dict[str, Any]) -> str:
    # ensure_ascii escapes lone surrogates (names that are not valid UTF-8, surrogate-escaped by
    # os.fsdecode) as \udcXX, which json.loads gives back unchanged: such names round-trip exactly
    return json.dumps(record, ensure_ascii=True)


class Journal:
    def __init__(self, path: Path, base: Path | None = None) -> None:
        self.path = path
        self.base = base  # folder that relative paths of an old (pre-absolute) journal are relative to
        self.moved: list[tuple[Path, Path]] = []  # (old folder, where it is now), deepest first: see rebase

    def rebase(self, moved: dict[Path, Path]) -> None:
        """Read the journalled paths under each old folder (a key) as under its new place (its value):
        a library renamed, or a drive mounted at another path, since the move."""
        self.moved = sorted(moved.items(), key=lambda item: len(item[0].parts), reverse=True)

    @classmethod
    def create(cls, target: Path, root: Path) -> Journal:
        """A new journal with the next sequence number. Call with ``target_lock(target)`` held."""
        folder = target / JOURNAL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        seq = max((sequence(p) for p in folder.glob("move-*.jsonl")), default=0) + 1
        while True:
            path = folder / f"move-{seq:06d}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
                break
            except FileExistsError:
                seq += 1
        journal = cls(path)
        journal.append({"op": "begin", "seq": seq, "root": str(root), "target": str(target), "time": time.time(),
                        "root_id": folder_id(root)})
        return journal

    def append(self, record: dict[str, Any]) -> None:
        line = _dumps(record) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        out = []
        with open(self.path, encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break  # a torn last line from a crash: everything before it stands
                if not isinstance(record, dict):
                    break
                out.append(record)
        return out

    def header(self) -> dict[str, Any]:
        records = self.records()
        return records[0] if records else {}

    def _path(self, text: str) -> Path:
        path = Path(text)
        if not path.is_absolute() and self.base is not None:
            path = self.base / path
        for old, new in self.moved:
            if path.is_relative_to(old):
                return new / path.relative_to(old)
        return path

    def steps(self) -> list[Step]:
        steps: dict[Path, Step] = {}  # by destination, as read now (records written before and after a rebase meet)
        for r in self.records():
            op = r.get("op")
            dst = self._path(r["dst"]) if isinstance(r.get("dst"), str) else None
            if op == "intent" and dst is not None:
                steps[dst] = Step(self._path(r["src"]), dst, r["size"], r["sha256"], r["mtime_ns"], r["shot"],
                                  journalled=r["dst"])
            elif dst in steps and op == "done":
                steps[dst].done = True
            elif dst in steps and op == "undo-done":
                steps[dst].undone = True
            elif dst in steps and op == "undo-failed":
                steps[dst].undo_failed = r.get("reason")
        return list(steps.values())

    def shot_plans(self) -> dict[str, list[tuple[Path, Path, tuple[int, int] | None]]]:
        """Every shot's full plan (src, dst, (size, mtime_ns) of src when planned; None in journals
        older than that), journalled before its first file moved."""
        return {r["shot"]: [(self._path(move[0]), self._path(move[1]), (move[2], move[3]) if len(move) == 4 else None)
                            for move in r["moves"]]
                for r in self.records() if r.get("op") == "shot"}

    def finished(self) -> bool:
        return any(r.get("op") == "end" for r in self.records())

    def undone(self) -> bool:
        return any(r.get("op") == "undo-end" for r in self.records())


def folder_id(folder: Path | str) -> list[int] | None:
    """(device, inode) of a folder, which a rename keeps: tells a renamed library from a new folder
    made under its old name (None when it cannot be read)."""
    try:
        info = os.stat(folder)
    except OSError:
        return None
    return [info.st_dev, info.st_ino]


def same_folder(recorded: object, folder: Path | str) -> bool | None:
    """Whether ``folder`` is the folder whose folder_id was ``recorded``: None when that cannot be
    told (nothing recorded, an unreadable folder, or another device: a drive mounted again may get
    another device number, so only the same device is compared)."""
    now = folder_id(folder)
    if not (isinstance(recorded, list) and len(recorded) == 2 and all(isinstance(v, int) for v in recorded)) or now is None:
        return None
    if recorded[0] != now[0]:
        return None
    return recorded[1] == now[1]


def sequence(path: Path) -> int:
    """A journal's place in the order of moves (0 for journals older than sequence numbers)."""
    match = _NEW_NAME.match(path.name)
    return int(match.group(1)) if match else 0


def _old_base(header: dict[str, Any], target: Path) -> Path | None:
    """Where an old journal's relative paths started: its target as typed, matched against ``target``."""
    typed = Path(str(header.get("target", "")))
    if not header or typed.is_absolute() or ".." in typed.parts or not typed.parts:
        return None
    parts = Path(os.path.normpath(typed)).parts
    if parts == (".",):
        return target
    if target.parts[-len(parts):] != parts:
        return None
    return Path(*target.parts[: -len(parts)]) if len(target.parts) > len(parts) else Path("/")


def journals(target: Path) -> list[Journal]:
    """Journals under a move target, oldest first (by sequence number)."""
    folder = target / JOURNAL_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.glob("move-*.jsonl") if _NEW_NAME.match(p.name) or _OLD_NAME.match(p.name)]
    absolute = Path(os.path.abspath(target))
    out = []
    for path in sorted(found, key=lambda p: (sequence(p), p.name)):
        journal = Journal(path)
        if sequence(path) == 0:
            journal.base = _old_base(journal.header(), absolute)
        out.append(journal)
    return out


# --- the target lock ----------------------------------------------------------------------------

_held: dict[str, tuple[int, int]] = {}  # lock file -> (fd, depth): re-entrant within one process
_held_guard = threading.Lock()


class TargetBusy(MoveError):
    """Another cull move or undo holds the target's lock (``target_lock`` with ``wait=False``)."""


@contextmanager
def target_lock(target: Path, wait: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of a move target (created if needed); wait while another process has it
    (``wait=False``: raise TargetBusy instead, for a caller that must not stall, the camera).

    Re-entrant within a process (one thread moves at a time; it is not a lock between threads).  On release the lock file (and the folders it needed, when empty)
    is removed again, so a move that moved nothing leaves no trace.
    """
    key = os.path.abspath(target / JOURNAL_DIR / LOCK_NAME)
    with _held_guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                fd, depth = _held[key]
                _held[key] = (fd, depth - 1)
        return
    absolute = Path(os.path.abspath(target))
    created = [p for p in [absolute, *absolute.parents] if not p.exists()]  # deepest first
    fd = _acquire(Path(key), wait)
    with _held_guard:
        _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _held_guard:
            del _held[key]
        try:
            os.unlink(key)  # still holding the lock: a waiter on this file notices and retries
            for folder in [target / JOURNAL_DIR, *created]:
                folder.rmdir()  # only when empty
        except OSError:
            pass
        os.close(fd)


def _acquire(path: Path, wait: bool = True) -> int:
    waited = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # the folder was removed by a releasing holder: make it again
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if not wait:
                    raise TargetBusy(f"another cull move or undo into {path.parent.parent} is running") from None
                if not waited:
                    waited = True
                    log.warning("waiting for another cull move or undo into %s to finish", path.parent.parent)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            os.close(fd)
            raise
        if same:
            return fd
        os.close(fd)  # the holder removed the file as it let go: lock the current one
