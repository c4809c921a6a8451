"""`cull move` / `cull undo`: move whole shots aside and put them back. Nothing is ever deleted.

A shot moves whole: the photo, its RAW/JPEG partner and every sidecar and companion.  Each file is
journalled (fsynced) before it moves; on one filesystem it is renamed, across filesystems it is
copied, fsynced, verified (size and sha256) and only then removed at the source.  Name collisions
at the target get a per-shot suffix (IMG_0001_1.CR2 with IMG_0001_1.xmp ...), never an overwrite.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cull.card import file_sha256 as sha256_of
from cull.discover import CULLED_DIR, Shot, is_hidden_or_system
from cull.errors import CullError
from cull.fsutil import fsync_dir
from cull.journal import JOURNAL_DIR, Journal, Step, journals

log = logging.getLogger(__name__)

# Companions named after the whole file name (IMG_0001.CR2.xmp) or after the stem (IMG_0001.xmp).
BY_NAME = (".xmp", ".dop", ".pp3", ".on1", ".acr")
BY_STEM = (".xmp", ".thm", ".aae", ".dop", ".pp3", ".cos")
PARTIAL = ".cull-partial"


class MoveError(CullError):
    """A move cannot start (bad target, nothing to undo ...)."""


@dataclass(frozen=True)
class PlannedMove:
    src: Path
    dst: Path
    shot: str


@dataclass
class MovePlan:
    moves: list[PlannedMove] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def shots(self) -> int:
        return len({m.shot for m in self.moves})


@dataclass
class MoveResult:
    moved: list[PlannedMove] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    bytes: int = 0
    journal: Path | None = None

    @property
    def shots(self) -> int:
        return len({m.shot for m in self.moved})


# --- planning (reads the file system, changes nothing) -------------------------------------------

def default_target(root: Path) -> Path:
    return root / CULLED_DIR


def validate_target(root: Path, target: Path) -> None:
    """Refuse targets that would be rescanned, that contain the library, or that are symlinks."""
    root_real, target_real = root.resolve(), target.resolve()
    if target.is_symlink():
        raise MoveError(f"target {target} is a symbolic link; refusing to move files through it")
    if root_real == target_real or root_real.is_relative_to(target_real):
        raise MoveError(f"target {target} contains the folder being culled; choose another")
    if target_real.is_relative_to(root_real):
        first = target_real.relative_to(root_real).parts[0]
        if not is_hidden_or_system(first):
            raise MoveError(
                f"target {target} is inside {root} and would be rescanned; use {default_target(root)} "
                "(skipped by scans) or a folder outside"
            )


def companions(photo: Path, listing: dict[str, str]) -> list[Path]:
    """Sidecars and companions of ``photo`` present in its folder (``listing``: lower name -> name)."""
    found = []
    wanted = [photo.name.lower() + ext for ext in BY_NAME] + [photo.stem.lower() + ext for ext in BY_STEM]
    for lower in wanted:
        if lower in listing and lower != photo.name.lower():
            found.append(photo.parent / listing[lower])
    return found


def shot_files(shot: Shot) -> list[Path]:
    members = [shot.path] + ([shot.partner] if shot.partner else [])
    try:
        listing = {name.lower(): name for name in os.listdir(shot.path.parent)}
    except OSError:
        listing = {}
    files: list[Path] = []
    for member in members:
        files.append(member)
        files += companions(member, listing)
    return list(dict.fromkeys(files))


def _suffixed(name: str, stem: str, n: int) -> str:
    if n == 0:
        return name
    if name.lower().startswith(stem.lower()):
        return f"{name[:len(stem)]}_{n}{name[len(stem):]}"
    base, dot, ext = name.partition(".")
    return f"{base}_{n}{dot}{ext}"


def plan_moves(shots: Iterable[Shot], root: Path, target: Path) -> MovePlan:
    """Where each file of each shot goes; collisions get the smallest free per-shot suffix."""
    plan = MovePlan()
    root_real = root.resolve()
    claimed: set[Path] = set()
    for shot in shots:
        files = shot_files(shot)
        bad = [(f, reason) for f in files if (reason := _refusal(f, root, root_real))]
        if bad:
            plan.refused += bad
            continue
        folder = target / shot.path.parent.relative_to(root)
        n = 0
        while True:
            dsts = [folder / _suffixed(f.name, shot.path.stem, n) for f in files]
            if not any(d in claimed or os.path.lexists(d) for d in dsts):
                break
            n += 1
        claimed.update(dsts)
        plan.moves += [PlannedMove(f, d, str(shot.path)) for f, d in zip(files, dsts)]
    return plan


def _refusal(path: Path, root: Path, root_real: Path) -> str | None:
    if path.is_symlink():
        return "is a symbolic link; cull moves only real files"
    try:
        path.relative_to(root)
    except ValueError:
        return f"is outside {root}"
    if not path.resolve().is_relative_to(root_real):
        return f"reached through a symbolic link that leads outside {root}"
    if not path.is_file():
        return "is not a regular file"
    return None


# --- moving -------------------------------------------------------------------------------------

def same_device(src: Path, dst_folder: Path) -> bool:
    return src.stat().st_dev == dst_folder.stat().st_dev


def _place(src: Path, dst: Path, sha256: str, size: int, mtime_ns: int) -> None:
    """Move one file without ever overwriting: rename, or copy + fsync + verify + remove across devices."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination already exists", str(dst))
    if same_device(src, dst.parent):
        try:
            os.link(src, dst)  # fails if dst exists: no race can make us overwrite
            os.unlink(src)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            os.rename(src, dst)  # file systems without hard links (FAT, exFAT)
    else:
        partial = dst.with_name(f".{dst.name}{PARTIAL}")
        try:
            shutil.copy2(src, partial)
            with open(partial, "rb+") as fh:
                os.fsync(fh.fileno())
            if partial.stat().st_size != size or sha256_of(partial) != sha256:
                raise OSError(errno.EIO, "copy does not match the original (size or sha256)", str(dst))
            os.utime(partial, ns=(time.time_ns(), mtime_ns))
            os.link(partial, dst)  # no-clobber: raises if something took the name meanwhile
            os.unlink(partial)
        except BaseException:
            if partial.exists():
                partial.unlink()
            raise
        fsync_dir(dst.parent)
        os.unlink(src)
    fsync_dir(dst.parent)
    fsync_dir(src.parent)


def execute(plan: MovePlan, root: Path, target: Path, on_file: Callable[[PlannedMove], None] | None = None) -> MoveResult:
    """Carry out a plan, journalling every step. A shot that fails part-way is put back whole."""
    result = MoveResult()
    if not plan.moves:
        return result
    target.mkdir(parents=True, exist_ok=True)
    journal = Journal.create(target, root)
    result.journal = journal.path
    delay = float(os.environ.get("CULL_MOVE_STEP_DELAY", "0") or 0)  # tests use it to kill mid-move
    by_shot: dict[str, list[PlannedMove]] = {}
    for move in plan.moves:
        by_shot.setdefault(move.shot, []).append(move)
    for shot, moves in by_shot.items():
        done: list[tuple[PlannedMove, Step]] = []
        # the whole shot's plan first: after a crash, recovery can finish (or undo) the shot as a whole
        journal.append({"op": "shot", "shot": shot, "moves": [[str(m.src), str(m.dst)] for m in moves]})
        try:
            for move in moves:
                step = _move_one(journal, move.src, move.dst, shot, delay)
                done.append((move, step))
                if on_file:
                    on_file(move)
        except OSError as exc:
            reason = describe_os_error(exc)
            result.failed.append((moves[len(done)].src, reason))
            journal.append({"op": "failed", "dst": str(moves[len(done)].dst), "reason": reason})
            for _move, step in reversed(done):  # never leave half a shot behind
                try:
                    _place(step.dst, step.src, step.sha256, step.size, step.mtime_ns)
                    journal.append({"op": "undo-done", "dst": str(step.dst)})
                except OSError as back:
                    result.failed.append((step.dst, f"could not be put back: {describe_os_error(back)}"))
            continue
        result.moved += [m for m, _ in done]
        result.bytes += sum(s.size for _, s in done)
    journal.append({"op": "end", "time": time.time()})
    return result


def _move_one(journal: Journal, src: Path, dst: Path, shot: str, delay: float = 0.0) -> Step:
    """Journal the intent (fsynced), move, verify, journal done."""
    info = src.stat()
    step = Step(src, dst, info.st_size, sha256_of(src), info.st_mtime_ns, shot)
    journal.append({"op": "intent", "src": str(src), "dst": str(dst), "size": step.size,
                    "sha256": step.sha256, "mtime_ns": step.mtime_ns, "shot": shot})
    if delay:
        time.sleep(delay)
    _place(src, dst, step.sha256, step.size, step.mtime_ns)
    journal.append({"op": "done", "dst": str(dst)})
    return step


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the target device"
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return f"permission denied or read-only ({exc.filename or 'target'})"
    if isinstance(exc, FileExistsError):
        return f"{exc.filename} already exists (not overwritten)"
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


# --- recovery and undo --------------------------------------------------------------------------

@dataclass
class UndoResult:
    restored: int = 0
    bytes: int = 0
    left: list[tuple[Path, str]] = field(default_factory=list)
    journals: list[Path] = field(default_factory=list)


def _settle(step: Step) -> str:
    """Where an interrupted step's file really is: 'src', 'dst' or 'both' (copy not yet removed)."""
    partial = step.dst.with_name(f".{step.dst.name}{PARTIAL}")
    if partial.exists():
        partial.unlink()  # our own incomplete copy; the source is intact
    at_src, at_dst = step.src.exists(), step.dst.exists()
    if at_src and at_dst:
        return "both"
    return "dst" if at_dst else "src"


def finish_interrupted(target: Path) -> int:
    """Roll forward any move that was cut off (crash, kill -9): complete its journalled steps."""
    completed = 0
    for journal in journals(target):
        if journal.finished() or journal.undone():
            continue
        for step in journal.steps():
            if step.done or step.undone:
                continue
            where = _settle(step)
            if where == "both" and sha256_of(step.dst) == step.sha256 == sha256_of(step.src):
                step.src.unlink()  # the verified copy arrived; only the source removal was missing
            elif where == "src":
                _place(step.src, step.dst, step.sha256, step.size, step.mtime_ns)
            journal.append({"op": "done", "dst": str(step.dst), "recovered": True})
            completed += 1
        journalled = {step.dst for step in journal.steps()}
        for shot, moves in journal.shot_plans().items():  # files of a cut-off shot not yet started
            for src, dst in moves:
                if dst not in journalled and src.is_file() and not os.path.lexists(dst):
                    _move_one(journal, src, dst, shot)
                    completed += 1
        journal.append({"op": "end", "time": time.time(), "recovered": True})
    return completed


def undo(target: Path, everything: bool = False) -> UndoResult:
    """Put back what the last move (or every move) took. A taken original place is reported, and
    the file stays in the target."""
    pending = [j for j in journals(target) if not j.undone()]
    if not pending:
        raise MoveError(f"nothing to undo in {target}")
    result = UndoResult()
    for journal in reversed(pending if everything else pending[-1:]):
        result.journals.append(journal.path)
        for step in reversed(journal.steps()):
            if step.undone:
                continue
            where = _settle(step)
            if where == "src":
                journal.append({"op": "undo-done", "dst": str(step.dst), "note": "had not moved"})
                continue
            if where == "both":
                if sha256_of(step.dst) == step.sha256 == sha256_of(step.src):
                    step.dst.unlink()  # an identical verified copy of a source that never left
                    journal.append({"op": "undo-done", "dst": str(step.dst)})
                else:
                    reason = f"{step.src} is taken by another file; left at {step.dst}"
                    result.left.append((step.dst, reason))
                    journal.append({"op": "undo-failed", "dst": str(step.dst), "reason": reason})
                continue
            try:
                _place(step.dst, step.src, step.sha256, step.size, step.mtime_ns)
                os.utime(step.src, ns=(time.time_ns(), step.mtime_ns))
                if sha256_of(step.src) != step.sha256:
                    raise OSError(errno.EIO, "restored file does not match its journalled sha256", str(step.src))
            except OSError as exc:
                reason = describe_os_error(exc)
                result.left.append((step.dst, reason))
                journal.append({"op": "undo-failed", "dst": str(step.dst), "reason": reason})
                continue
            journal.append({"op": "undo-done", "dst": str(step.dst)})
            result.restored += 1
            result.bytes += step.size
        _prune_empty(target, journal)
        if not any(r.get("op") == "undo-failed" for r in journal.records()):
            journal.append({"op": "undo-end", "time": time.time()})
    return result


def _prune_empty(target: Path, journal: Journal) -> None:
    """Remove the empty folders the move created under the target (never anything with content)."""
    folders = sorted({s.dst.parent for s in journal.steps()}, key=lambda p: len(p.parts), reverse=True)
    for folder in folders:
        while folder != target and folder.is_relative_to(target) and folder.name != JOURNAL_DIR:
            try:
                folder.rmdir()
            except OSError:
                break
            folder = folder.parent
