"""`cull move` / `cull undo`: move whole shots aside and put them back. Nothing is ever deleted.

A shot moves whole: the photo, its RAW/JPEG partner and every sidecar and companion.  Each file is
journalled (fsynced) before it moves; on one filesystem it is renamed, across filesystems it is
copied, fsynced, verified (size and sha256) and only then removed at the source.  Name collisions
at the target get a per-shot suffix (IMG_0001_1.CR2 with IMG_0001_1.xmp ...), never an overwrite.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from cull.discover import CULLED_DIR, Shot, is_hidden_or_system
from cull.errors import MoveError
from cull.formats import is_raw
from cull.fsutil import file_sha256 as sha256_of
from cull.fsutil import NAME_MAX, absolute, file_key, fsync_dir
from cull.journal import JOURNAL_DIR, Journal, Step, journals, same_folder, target_lock
from cull.protect import Places, has_twin, read_cull_verdict, read_user_verdict, shot_protection

if TYPE_CHECKING:
    from cull.card import ModelCard
    from cull.decide import Verdict
    from cull.scan import PhotoResult, ScanOptions

log = logging.getLogger(__name__)

# Companions named after the whole file name (IMG_0001.CR2.xmp) or after the stem (IMG_0001.xmp).
BY_NAME = (".xmp", ".dop", ".pp3", ".on1", ".acr")
BY_STEM = (".xmp", ".thm", ".aae", ".dop", ".pp3", ".cos")
PARTIAL = ".cull-partial"

__all__ = ["MoveError", "MoveOutcome", "MovePlan", "MoveResult", "PlannedMove", "Recovery", "UndoResult", "execute",
           "finish_interrupted", "move_rejects", "plan_moves", "undo", "validate_target"]


@dataclass(frozen=True)
class PlannedMove:
    src: Path
    dst: Path
    shot: str
    key: tuple[int, int] | None = None  # (size, mtime_ns) of src when the shot was judged and planned
    partner: Path | None = None  # the shot's partner: its files are listed again just before it moves


@dataclass
class MovePlan:
    moves: list[PlannedMove] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    protected: list[tuple[Path, str]] = field(default_factory=list)  # (shot, why the user's rating keeps it in place)

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
    """Refuse targets that would be rescanned, that contain the library, that are symlinks or files."""
    root_real, target_real = root.resolve(), target.resolve()
    if target.is_symlink():
        raise MoveError(f"target {target} is a symbolic link; refusing to move files through it")
    if os.path.lexists(target) and not target.is_dir():
        raise MoveError(f"target {target} exists and is not a folder; give a folder for --to")
    if root_real == target_real or root_real.is_relative_to(target_real):
        raise MoveError(f"target {target} contains the folder being culled; choose another")
    if target_real.is_relative_to(root_real):
        first = target_real.relative_to(root_real).parts[0]
        if not is_hidden_or_system(first):
            raise MoveError(
                f"target {target} is inside {root} and would be rescanned; use {default_target(root)} "
                "(skipped by scans) or a folder outside"
            )


def companions(photo: Path, places: Places, shot: Iterable[Path] = ()) -> list[Path]:
    """Sidecars and companions of ``photo`` present in its folder (``places``: its listing), also
    under names that differ only in case or Unicode normalisation.

    Companions named after the whole file (IMG_7.CR2.xmp) always belong to it.  Those named after
    the stem (IMG_7.xmp) are shared by every photo with that stem, so they go with ``photo`` only
    when its shot (``shot``: all the shot's files) holds every such photo, or holds the one RAW
    among them (an Adobe sidecar belongs to the RAW).  darktable's duplicates of the photo
    (IMG_7_01.CR2.xmp) go with it, unless a photo of that name is in the folder.  When another photo
    has the photo's name but for case (IMG_3.JPG beside IMG_3.jpg), only exact names are its own.
    """
    members = {p.name for p in shot} | {photo.name}
    twin = has_twin(photo, places.alike(photo) or [])
    wanted = [photo.name + ext for ext in BY_NAME]
    if _owns_stem(photo, places, members):
        wanted += [photo.stem + ext for ext in BY_STEM]
    found = [name for want in wanted for name in places.alike(photo.with_name(want)) or [] if not twin or name == want]
    found += places.duplicates(photo)
    return [photo.parent / name for name in dict.fromkeys(found) if name != photo.name]


def _owns_stem(photo: Path, places: Places, members: set[str]) -> bool:
    sharing = set(places.photos_by_stem(photo))
    if sharing <= members:
        return True
    raws = [name for name in sharing if is_raw(Path(name))]
    return len(raws) == 1 and raws[0] in members


def shot_files(shot: Shot, places: Places | None = None) -> list[Path]:
    """The shot's files: its photo, partner and their companions.  ``places``: one listing per folder
    over many shots."""
    places = places or Places()
    members = [shot.path] + ([shot.partner] if shot.partner else [])
    files: list[Path] = []
    for member in members:
        files.append(member)
        files += companions(member, places, members)
    return list(dict.fromkeys(files))


def _suffixed(names: list[str], stem: str, n: int) -> list[str]:
    """A shot's file names with the collision suffix ``_n`` after the photo's ``stem`` (n = 0: as they
    are).  Where a suffixed name would pass NAME_MAX, the stem is shortened alike in every name, so the
    shot's files still share one stem in the target."""
    if n == 0:
        return names
    cut = 0
    out = [_with_suffix(name, stem, n, cut) for name in names]
    while cut < len(stem) - 1 and any(len(os.fsencode(name)) > NAME_MAX for name in out):
        cut += 1
        out = [_with_suffix(name, stem, n, cut) for name in names]
    return out


def _with_suffix(name: str, stem: str, n: int, cut: int) -> str:
    if name.lower().startswith(stem.lower()):
        return f"{name[:len(stem) - cut]}_{n}{name[len(stem):]}"
    base, dot, ext = name.partition(".")
    return f"{base[:max(1, len(base) - cut)]}_{n}{dot}{ext}"


def plan_moves(shots: Iterable[Shot], root: Path, target: Path) -> MovePlan:
    """Where each file of each shot goes; collisions get the smallest free per-shot suffix.

    Planned paths are absolute, so the journal (and ``undo``) does not depend on the working folder.
    """
    plan = MovePlan()
    root, target = absolute(root), absolute(target)
    root_real = root.resolve()
    claimed: set[Path] = set()
    places = Places()  # each folder listed once
    for given in shots:
        shot = Shot(absolute(given.path), absolute(given.partner) if given.partner else None)
        # In-focus priority: a shot the user rated, picked or accepted (anywhere: sidecars, embedded XMP,
        # its partner) is never moved as a reject; it stays in place and is reported (cull.protect).
        if (why := shot_protection(shot.path, shot.partner, places)) is not None:
            plan.protected.append((shot.path, why))
            continue
        files = shot_files(shot, places)
        bad = [(f, reason) for f in files if (reason := _refusal(f, root, root_real))]
        if bad:
            plan.refused += bad
            continue
        folder = target / shot.path.parent.relative_to(root)
        n = 0
        while True:
            dsts = [folder / name for name in _suffixed([f.name for f in files], shot.path.stem, n)]
            if not any(d in claimed or os.path.lexists(d) for d in dsts):
                break
            n += 1
        claimed.update(dsts)
        plan.moves += [PlannedMove(f, d, str(shot.path), file_key(f), shot.partner) for f, d in zip(files, dsts)]
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
    if os.geteuid() == 0 and not os.stat(path.parent).st_mode & 0o222:  # locked on purpose: as scan's XMP writer
        return "is in a read-only folder (no write bits); not moved"
    return None


# --- moving -------------------------------------------------------------------------------------

def same_device(src: Path, dst_folder: Path) -> bool:
    return src.stat().st_dev == dst_folder.stat().st_dev


def _place(src: Path, dst: Path, sha256: str, size: int, mtime_ns: int) -> None:
    """Move one file without ever overwriting: rename, or copy + fsync + verify + remove across devices.
    A move that fails leaves the source where it was and nothing at the destination."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, "destination already exists", str(dst))
    if not same_device(src, dst.parent) or not _move_on_device(src, dst):
        _copy_across(src, dst, sha256, size, mtime_ns)
    fsync_dir(dst.parent)
    fsync_dir(src.parent)


def _move_on_device(src: Path, dst: Path) -> bool:
    """A hard link then an unlink (no race can make it overwrite), or a rename on file systems without
    hard links (FAT, exFAT).  False when the two places are different mounts after all (EXDEV: a bind
    mount or a container volume shares its file system's device number): the caller copies instead."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno == errno.EXDEV:
            return False
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        try:
            os.rename(src, dst)
        except OSError as again:
            if again.errno == errno.EXDEV:
                return False
            raise
        return True
    _remove_source(src, dst)
    return True


def partial_path(dst: Path) -> Path:
    """Where ``dst``'s copy is built across devices: ``.NAME.cull-partial``, or, where that would pass
    NAME_MAX, NAME shortened and marked with a hash of the whole name (names differing only at the end
    keep apart); a move or undo of a name close to the limit must not fail on its own temp file."""
    name = f".{dst.name}{PARTIAL}"
    if len(os.fsencode(name)) <= NAME_MAX:
        return dst.with_name(name)
    mark = "~" + hashlib.sha256(os.fsencode(dst.name)).hexdigest()[:12]
    room = NAME_MAX - 1 - len(mark) - len(PARTIAL)
    short = os.fsencode(dst.name)[:room].decode("utf-8", "ignore")  # whole characters: exFAT refuses a cut one
    return dst.with_name(f".{short}{mark}{PARTIAL}")


def _link_or_rename(src: Path, dst: Path) -> None:
    """Give ``src`` the name ``dst`` without overwriting: a hard link (raises if the name is taken) then an
    unlink, or, on file systems without hard links (FAT, exFAT: EPERM/ENOTSUP), a rename after checking
    that the name is free (the target's lock keeps other cull runs out meanwhile)."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(dst):
            raise FileExistsError(errno.EEXIST, "destination already exists", str(dst)) from exc
        os.rename(src, dst)
        return
    os.unlink(src)


def _copy_across(src: Path, dst: Path, sha256: str, size: int, mtime_ns: int) -> None:
    partial = partial_path(dst)
    try:
        try:
            shutil.copy2(src, partial)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:  # the copy's device is full: name it, not the file being copied
                raise OSError(errno.ENOSPC, exc.strerror, str(dst.parent)) from exc
            raise
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        if partial.stat().st_size != size or sha256_of(partial) != sha256:
            raise OSError(errno.EIO, "copy does not match the original (size or sha256)", str(dst))
        os.utime(partial, ns=(time.time_ns(), mtime_ns))
        _link_or_rename(partial, dst)  # no-clobber: raises if something took the name meanwhile
    except BaseException:
        if partial.exists():
            partial.unlink()
        raise
    fsync_dir(dst.parent)
    _remove_source(src, dst)


def _remove_source(src: Path, dst: Path) -> None:
    """Unlink ``src`` now that ``dst`` holds it; when that fails (a read-only folder, no permission) take
    ``dst`` away again, so a failed move leaves no second copy in the target."""
    try:
        os.unlink(src)
    except BaseException:
        os.unlink(dst)
        raise


def execute(plan: MovePlan, root: Path, target: Path, on_file: Callable[[PlannedMove], None] | None = None,
            wait: bool = True) -> MoveResult:
    """Carry out a plan, journalling every step, holding the target's lock (``wait=False``: raise
    journal.TargetBusy rather than wait for another move). A shot that fails part-way is put back whole."""
    result = MoveResult()
    if not plan.moves:
        return result
    root, target = absolute(root), absolute(target)
    with target_lock(target, wait):
        journal = Journal.create(target, root)
        result.journal = journal.path
        by_shot: dict[str, list[PlannedMove]] = {}
        for move in plan.moves:
            by_shot.setdefault(move.shot, []).append(move)
        places = Places()  # listed now, after the plan: a sidecar that appeared since is found
        for shot, moves in by_shot.items():
            _execute_shot(journal, shot, moves, result, on_file, places)
        journal.append({"op": "end", "time": time.time()})
    return result


def _execute_shot(journal: Journal, shot: str, moves: list[PlannedMove], result: MoveResult,
                  on_file: Callable[[PlannedMove], None] | None, places: Places | None = None) -> None:
    done: list[tuple[PlannedMove, Step]] = []
    # a file of the shot changed since it was planned (the user rated it in darktable, edited it): its
    # protection was read from the old version, so the shot is not moved now (a re-run judges it again)
    changed = [m.src for m in moves if m.key is not None and file_key(m.src) != m.key]
    # a sidecar that appeared since (Lightroom writes P.xmp on a RAW's first rating) is a change too
    planned = {m.src for m in moves}
    changed += [f for f in shot_files(Shot(Path(shot), moves[0].partner), places) if f not in planned]
    if changed:
        result.failed += [(src, "changed since this move judged it (rated or edited?): not moved; run cull move again")
                          for src in changed]
        return
    # the whole shot's plan first: after a crash, recovery can finish (or undo) the shot as a whole
    journal.append({"op": "shot", "shot": shot, "moves": [[str(m.src), str(m.dst), *(m.key or file_key(m.src) or ())] for m in moves]})
    try:
        for move in moves:
            step = _move_one(journal, move.src, move.dst, shot)
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
        return
    result.moved += [m for m, _ in done]
    result.bytes += sum(s.size for _, s in done)


def _move_one(journal: Journal, src: Path, dst: Path, shot: str) -> Step:
    """Journal the intent (fsynced), move, verify, journal done."""
    info = src.stat()
    step = Step(src, dst, info.st_size, sha256_of(src), info.st_mtime_ns, shot)
    journal.append({"op": "intent", "src": str(src), "dst": str(dst), "size": step.size,
                    "sha256": step.sha256, "mtime_ns": step.mtime_ns, "shot": shot})
    _place(src, dst, step.sha256, step.size, step.mtime_ns)
    journal.append({"op": "done", "dst": str(dst)})
    return step


def describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device" + (f" ({exc.filename})" if exc.filename else "")
    if isinstance(exc, PermissionError) or exc.errno == errno.EROFS:
        return f"permission denied or read-only ({_blocked_folder(exc) or exc.filename or 'target'})"
    if isinstance(exc, FileExistsError):
        return f"{exc.filename} already exists (not overwritten)"
    return f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")


def _blocked_folder(exc: OSError) -> str | None:
    """The folder that refused a link or rename (the destination's, for an undo into a read-only photo
    folder), rather than the file name the error carries first."""
    for name in (exc.filename2, exc.filename):
        if name:
            folder = os.path.dirname(os.path.abspath(os.fsdecode(name)))
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"folder {folder} is not writable"
    return None


# --- recovery and undo --------------------------------------------------------------------------

@dataclass
class Recovery:
    """What ``finish_interrupted`` did: file moves completed, journalled files found nowhere, and planned
    files that changed since (left in place)."""

    completed: int = 0
    missing: list[Path] = field(default_factory=list)
    changed: list[Path] = field(default_factory=list)  # planned files that are other files now: their shot put back
    rolled_back: int = 0  # files of such shots put back from the target
    stuck: list[tuple[Path, str]] = field(default_factory=list)  # files of such shots that could not go back, and why


@dataclass
class UndoResult:
    restored: int = 0
    bytes: int = 0
    left: list[tuple[Path, str]] = field(default_factory=list)  # still in the target, and why
    missing: list[tuple[Path, str]] = field(default_factory=list)  # in neither place (deleted from the target?)
    edited: list[Path] = field(default_factory=list)  # changed in the target since the move: put back as they are now
    journals: list[Path] = field(default_factory=list)
    earlier: int = 0  # files of older, not undone moves still in the target (plain undo takes only the last)
    other_roots: list[str] = field(default_factory=list)  # folders whose moves into a shared target were left alone
    recreated: list[Path] = field(default_factory=list)  # photo folders that were gone and were made again
    notes: list[str] = field(default_factory=list)  # worth saying, not a failure


def _settle(step: Step) -> str:
    """Where an interrupted step's file really is: 'src', 'dst', 'both' (copy not yet removed) or
    'neither' (moved or deleted by someone else, or an old journal's relative path)."""
    # our own copies cut off by a crash: a move's beside the target's file, an undo's beside the photo's
    # (there it may already be linked under the photo's name: then it is only a second name, and must go)
    for partial in (partial_path(step.dst), partial_path(step.src)):
        if partial.exists():
            partial.unlink()
    at_src, at_dst = step.src.exists(), step.dst.exists()
    if at_src and at_dst:
        return "both"
    return "dst" if at_dst else "src" if at_src else "neither"


def _nowhere(step: Step) -> str:
    reason = f"neither at {step.src} nor at {step.dst}"
    if not step.src.is_absolute():
        reason += " (an old journal with relative paths: run undo from the folder `cull move` ran in)"
    return reason


def finish_interrupted(target: Path) -> Recovery:
    """Roll forward any move that was cut off (crash, kill -9): complete its journalled steps.

    Holds the target's lock, so the journal of a move that is still running is never touched.
    """
    recovery = Recovery()
    if not (target / JOURNAL_DIR).is_dir():
        return recovery
    with target_lock(target):
        for journal in journals(target):
            if not (journal.finished() or journal.undone()):
                _roll_forward(journal, recovery)
    return recovery


def _roll_forward(journal: Journal, recovery: Recovery) -> None:
    """Finish the cut-off move's shots; a shot whose files not yet moved are other files now (a new card
    with the same numbers) is put back whole instead: it was judged as it was, and must not stay split."""
    changed = _changed_since_planned(journal)
    recovery.changed += [src for files in changed.values() for src in files]
    for step in journal.steps():
        if step.undone:
            continue
        if step.shot in changed:
            _roll_back(journal, step, recovery)
            continue
        if step.done:
            continue
        where = _settle(step)
        if where == "neither":
            log.warning("cannot finish moving %s: %s", step.src, _nowhere(step))
            recovery.missing.append(step.dst)
            journal.append({"op": "missing", "dst": str(step.dst)})
            continue
        if where == "both" and sha256_of(step.dst) == step.sha256 == sha256_of(step.src):
            step.src.unlink()  # the verified copy arrived; only the source removal was missing
        elif where == "src":
            _place(step.src, step.dst, step.sha256, step.size, step.mtime_ns)
        journal.append({"op": "done", "dst": str(step.dst), "recovered": True})
        recovery.completed += 1
    journalled = {step.dst for step in journal.steps()}
    for shot, moves in journal.shot_plans().items():  # files of a cut-off shot not yet started
        if shot in changed:
            continue
        for src, dst, _ in moves:
            if dst not in journalled and src.is_file() and not os.path.lexists(dst):
                _move_one(journal, src, dst, shot)
                recovery.completed += 1
    journal.append({"op": "end", "time": time.time(), "recovered": True})


def _changed_since_planned(journal: Journal) -> dict[str, list[Path]]:
    """Per cut-off shot, its files not yet moved whose size or time changed since the plan, or since the
    intent of the one in progress at the crash was journalled."""
    steps = journal.steps()
    journalled = {step.dst for step in steps}
    changed: dict[str, list[Path]] = {}
    for shot, moves in journal.shot_plans().items():
        files = [src for src, dst, planned in moves if dst not in journalled and planned is not None
                 and src.is_file() and not os.path.lexists(dst) and file_key(src) != planned]
        if files:
            changed[shot] = files
    for step in steps:  # the file in progress: its intent holds its size and time
        if (not step.done and not step.undone and step.src.is_file() and not os.path.lexists(step.dst)
                and file_key(step.src) != (step.size, step.mtime_ns)):
            changed.setdefault(step.shot, []).append(step.src)
    return changed


def _roll_back(journal: Journal, step: Step, recovery: Recovery) -> None:
    """Put one file of a shot that recovery does not finish back where it was; one that cannot go back
    stays in the target, said (``recovery.stuck``), for `cull undo` to take up."""
    try:
        where = _settle(step)
        if where == "neither":
            recovery.missing.append(step.dst)
            journal.append({"op": "missing", "dst": str(step.dst)})
            return
        if where == "dst":
            if os.path.lexists(step.src):  # another file (a link, a folder) holds the name
                raise FileExistsError(errno.EEXIST, "its place is taken", str(step.src))
            _put_back(step)
            recovery.rolled_back += 1
        elif where == "both":
            if not sha256_of(step.dst) == step.sha256 == sha256_of(step.src):
                raise FileExistsError(errno.EEXIST, "its place is taken by another file", str(step.src))
            step.dst.unlink()  # a verified copy of a source that never left
    except OSError as exc:
        recovery.stuck.append((step.dst, describe_os_error(exc)))
        return
    journal.append({"op": "undo-done", "dst": step.key, "recovered": True})


def undo(target: Path, everything: bool = False, root: Path | None = None, moved_from: Path | None = None) -> UndoResult:
    """Put back what the last move (or every move) took, holding the target's lock.

    ``root``: only moves made from that folder (a target several libraries share; see _belongs for a
    library renamed since, and ``moved_from``, its old path).  Shot by shot: a shot whose place is
    taken in part (a newer photo of the same name) stays whole in the target; a file found in neither
    place is reported as missing.  Either leaves the move open (undoable again).  A file changed in
    the target since the move is put back as it is now.  Raises MoveError when there is nothing to undo.
    """
    result = UndoResult()
    pending = [j for j in journals(target) if not j.undone()]
    if moved_from is not None and root is not None:
        made = [j for j in pending if isinstance(old := j.header().get("root"), str)
                and os.path.realpath(old) == os.path.realpath(moved_from)]
        if made and not any(_renamed_from(moved_from, absolute(root), same_folder(j.header().get("root_id"), absolute(root)))
                            for j in made):
            raise MoveError(f"--from {moved_from}: a folder with files in it, or {root} itself, inside it or around it; "
                            f"it cannot be the folder {root} was renamed from")
    verdicts = {j.path: _belongs(j, root, target, moved_from) for j in pending}
    mine = [j for j in pending if verdicts[j.path] is not None]
    others = [j for j in pending if verdicts[j.path] is None]
    result.other_roots = sorted({str(j.header().get("root", "?")) for j in others})
    if not mine:
        where = f" from {moved_from or root}" if root is not None and pending else ""
        raise MoveError(f"nothing to undo{where} in {target} (no cull move into it, or every move already undone)"
                        + _other_moves_hint(others, root, target))
    with target_lock(target):
        owned: list[tuple[Journal, dict[Path, Path]]] = []
        for candidate in journals(target):
            moved = None if candidate.undone() else _belongs(candidate, root, target, moved_from)
            if moved is not None:
                candidate.rebase(moved)
                owned.append((candidate, moved))
                if root is not None and same_folder(candidate.header().get("root_id"), absolute(root)) is False and not moved:
                    result.notes.append(f"{root} is not the folder the move {candidate.path.name} was made from (a copy, a "
                                        "folder made again, or a drive mounted again?): its files go back to their journalled paths")
        chosen = owned if everything else owned[-1:]
        renamed = RenamedFiles({step.dst for journal in journals(target) for step in journal.steps()} |
                               {step.dst for journal, _ in owned for step in journal.steps()})
        for journal, _ in reversed(chosen):
            result.journals.append(journal.path)
            _undo_journal(journal, absolute(target), result, renamed)
        older = [] if everything else owned[:-1]
        result.earlier = sum(1 for earlier, _ in older for step in earlier.steps() if not step.undone and step.dst.exists())
    return result


def _belongs(journal: Journal, root: Path | None, target: Path, moved_from: Path | None) -> dict[Path, Path] | None:
    """Whether ``journal`` is a move out of ``root`` into ``target``: None when it is not, else the
    folders its journalled paths must be read at now (old -> new; empty when nothing moved).

    - ``root`` at the journalled path: its move (as journalled; a copy or a folder made again there
      gets a note, not a refusal: FAT drives give folders new inode numbers on every mount).
    - A target inside the library (``_culled``) found at the same place under ``root``, not where it
      was journalled: the library moved with it.  Taken as a rename when the old path is gone and
      the journalled folder identity (device, inode) does not say otherwise, or when the identity
      says it is ``root`` (the old name made again since), or with ``--from``.
    - Any other move is ``root``'s only with ``moved_from`` naming its journalled path (a shared
      target: an inode can be reused by a new folder, so it never decides that alone)."""
    header = journal.header()
    recorded_root, recorded_target = header.get("root"), header.get("target")
    if not isinstance(recorded_root, str) or not isinstance(recorded_target, str):
        return {}  # a journal too old to say: as before
    old_root = Path(recorded_root) if os.path.isabs(recorded_root) or journal.base is None else journal.base / recorded_root
    if root is None:
        return {}
    new_root, here = absolute(root), absolute(target)
    named = moved_from is not None and os.path.realpath(old_root) == os.path.realpath(moved_from)
    if moved_from is not None and named and not _renamed_from(moved_from, new_root, same_folder(header.get("root_id"), new_root)):
        return None
    target_here = not os.path.isabs(recorded_target) or os.path.realpath(recorded_target) == os.path.realpath(here)
    moved: dict[Path, Path] = {}
    if not target_here:
        old_target = Path(recorded_target)
        if not old_target.is_relative_to(old_root) or here != new_root / old_target.relative_to(old_root):
            return None  # journalled elsewhere, and not a target that moves with its library
        moved[old_target] = here
    if os.path.realpath(old_root) == os.path.realpath(root):
        return moved
    if named:
        return {**moved, old_root: new_root}
    same = same_folder(header.get("root_id"), new_root)
    if not target_here and (same is True or (same is None and not os.path.lexists(old_root))):
        return {**moved, old_root: new_root}
    return None


def _renamed_from(old: Path, root: Path, same: bool | None = None) -> bool:
    """Whether ``old`` can be the folder ``root`` was renamed from: neither ``root`` nor inside it nor
    around it, and gone or an empty folder (made again), or anything when the journalled folder
    identity (``same``) says ``root`` is the library."""
    old_real, root_real = Path(os.path.realpath(old)), Path(os.path.realpath(root))
    if old_real == root_real or old_real.is_relative_to(root_real) or root_real.is_relative_to(old_real):
        return False
    return same is True or not os.path.lexists(old) or (old.is_dir() and not any(old.iterdir()))


def _other_moves_hint(others: list[Journal], root: Path | None, target: Path) -> str:
    """What to say of the moves in ``target`` that are not ``root``'s: whose they are, and ``--from``
    where it would take them."""
    if not others:
        return ""
    roots = sorted({str(j.header().get("root", "?")) for j in others})
    hint = f"; moves from {', '.join(roots)} are there"
    if root is None:
        return hint
    for journal in others:
        old = journal.header().get("root")
        if isinstance(old, str) and _belongs(journal, root, target, Path(old)) is not None:
            return hint + f" (if {old} is {root} now, renamed: add --from {old})"
    return hint


def _undo_journal(journal: Journal, target: Path, result: UndoResult, renamed: RenamedFiles) -> None:
    problems = len(result.left) + len(result.missing)
    shots: dict[str, list[Step]] = {}
    for step in reversed(journal.steps()):
        if not step.undone:
            shots.setdefault(step.shot, []).append(step)
    for steps in shots.values():
        try:
            settled = [_settle_for_undo(step, renamed, result) for step in steps]
        except OSError as exc:  # the places cannot even be looked at (a folder without permission)
            for step in steps:
                _leave(journal, step, describe_os_error(exc), result.left)
            continue
        _undo_shot(journal, settled, result)
    _prune_empty(target, journal)
    if len(result.left) + len(result.missing) == problems:  # everything of this move is back (or had never left)
        journal.append({"op": "undo-end", "time": time.time()})


def _settle_for_undo(step: Step, renamed: RenamedFiles, result: UndoResult) -> tuple[Step, str]:
    """The step and where its file is (_settle); a file found in neither place but renamed in the
    target folder is taken from there (RenamedFiles), and said."""
    where = _settle(step)
    if where == "neither" and (found := renamed.find(step)) is not None:
        result.notes.append(f"{found}: renamed in the target since the move; put back as {step.src}")
        return replace(step, dst=found), "dst"
    return step, where


class RenamedFiles:
    """Files a user renamed in the target: same size and sha256 as a journalled file, under a name no
    move placed (``placed``: every journalled destination in the target, of any move). Each folder is
    listed once and each candidate hashed once per undo, and only files of a missing step's size are read."""

    def __init__(self, placed: set[Path]) -> None:
        self.placed = placed
        self.taken: set[Path] = set()
        self._listed: dict[Path, list[tuple[Path, int]]] = {}
        self._hashes: dict[Path, str | None] = {}

    def find(self, step: Step) -> Path | None:
        for path, size in self._unplaced(step.dst.parent):
            if size == step.size and path not in self.taken and self._sha256(path) == step.sha256:
                self.taken.add(path)
                return path
        return None

    def _unplaced(self, folder: Path) -> list[tuple[Path, int]]:
        if folder not in self._listed:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                entries = []
            self._listed[folder] = [(Path(e.path), e.stat(follow_symlinks=False).st_size) for e in entries
                                    if not e.name.startswith(".") and e.is_file(follow_symlinks=False)
                                    and Path(e.path) not in self.placed]
        return self._listed[folder]

    def _sha256(self, path: Path) -> str | None:
        if path not in self._hashes:
            try:
                self._hashes[path] = sha256_of(path)
            except OSError:
                self._hashes[path] = None
        return self._hashes[path]


def _leave(journal: Journal, step: Step, reason: str, into: list[tuple[Path, str]]) -> None:
    into.append((step.dst, reason))
    journal.append({"op": "undo-failed", "dst": step.key, "reason": reason})


def _undo_shot(journal: Journal, settled: list[tuple[Step, str]], result: UndoResult) -> None:
    """Put one shot's files back, or leave the whole shot in the target when a place is taken."""
    in_target = any(where in ("dst", "both") for _, where in settled)
    try:
        taken = [step for step, where in settled
                 if (where == "both" and not (sha256_of(step.dst) == step.sha256 == sha256_of(step.src)))
                 or (where == "src" and step.done and in_target and not _is_moved_file(step))]  # another photo's
    except OSError as exc:  # a file that cannot be read to compare: the shot stays where it is
        for step, _ in settled:
            _leave(journal, step, describe_os_error(exc), result.left)
        return
    for step, where in settled:
        if where == "neither":
            _leave(journal, step, _nowhere(step) + " (deleted from the target?)", result.missing)
        elif step in taken and where == "src":  # gone from the target, and its name taken by another file
            _leave(journal, step, f"no longer in {step.dst.parent} (deleted from the target?), and {step.src} is another "
                   "file now", result.missing)
        elif taken and where in ("both", "dst"):
            reason = (f"{step.src} is taken by another file" if step in taken
                      else f"left with its shot: {', '.join(str(t.src) for t in taken)} is taken by another file")
            _leave(journal, step, reason, result.left)
        elif where == "src":  # it arrived once and is back in its place now (someone moved it back), or never left
            if step.done and not _is_moved_file(step):  # put back by hand and changed, or deleted and its name taken
                result.notes.append(f"{step.src}: not in the target; the file at its place is not the one moved "
                                    "(put back by hand and changed, or another file of that name): left as it is")
            journal.append({"op": "undo-done", "dst": step.key, "note": "already back in place" if step.done else "had not moved"})
        elif where == "both":
            step.dst.unlink()  # an identical verified copy of a source that never left
            result.notes.append(f"{step.src}: already in place, byte for byte; its identical copy in the target was removed")
            journal.append({"op": "undo-done", "dst": step.key})
        else:
            if not step.src.parent.is_dir() and step.src.parent not in result.recreated:
                result.recreated.append(step.src.parent)  # renamed or removed since the move: said, not silent
            try:
                edited = _put_back(step)
            except OSError as exc:
                _leave(journal, step, describe_os_error(exc), result.left)
                continue
            if edited:
                result.edited.append(step.src)
            journal.append({"op": "undo-done", "dst": step.key, **({"edited": True} if edited else {})})
            result.restored += 1
            result.bytes += step.size


def _is_moved_file(step: Step) -> bool:
    """Whether the file at ``step.src`` is the one the journal moved (size, then sha256).  An inode
    cannot tell: a file deleted from the target frees its inode for the next new file."""
    try:
        return step.src.stat().st_size == step.size and sha256_of(step.src) == step.sha256
    except OSError:
        return False


def _put_back(step: Step) -> bool:
    """Move ``step.dst`` back to ``step.src``, checked by sha256.  Returns whether it was changed in the
    target since the move: then it comes back as it is now, with its own modification time (an editor's
    change must look changed to darktable and to cull's cache); otherwise with the journalled one."""
    info = step.dst.stat()
    sha256 = sha256_of(step.dst)
    edited = (info.st_size, sha256) != (step.size, step.sha256)
    _place(step.dst, step.src, sha256, info.st_size, info.st_mtime_ns)
    if not edited:
        os.utime(step.src, ns=(time.time_ns(), step.mtime_ns))
    return edited


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


# --- the whole command --------------------------------------------------------------------------

@dataclass
class MoveOutcome:
    """Everything ``cull move`` did: recovery, photos not judged, the plan, and the moves (None: dry run)."""

    target: Path
    recovery: Recovery
    not_judged: list[tuple[Path, str]]
    plan: MovePlan
    result: MoveResult | None
    marked_elsewhere: list[Path] = field(default_factory=list)  # XMP says reject (an earlier scan), this move did not judge so

    @property
    def failed(self) -> bool:
        """True when something was not done (exit 1): unjudged photos, refusals, failed moves."""
        moved_failed = bool(self.result and self.result.failed)
        return bool(self.not_judged or self.plan.refused or self.recovery.missing or self.recovery.changed
                    or self.recovery.stuck or moved_failed)


def move_rejects(
    root: Path,
    target: Path,
    card: ModelCard,
    options: ScanOptions,
    wanted: frozenset[Verdict],
    on_total: Callable[[int], None] | None = None,
    on_result: Callable[[PhotoResult], None] | None = None,
) -> MoveOutcome:
    """Validate the target, finish an interrupted move, scan, plan and move the shots whose verdict
    is in ``wanted`` (with ``options.dry_run``: plan only, touch nothing).

    Holds the target's lock from recovery to the last move, so concurrent runs take turns.
    Raises MoveError for an unusable target, OSError when the target cannot be written.
    """
    from cull.scan import scan

    validate_target(root, target)
    scan_options = replace(options, exclude=tuple(options.exclude) + (target,))

    marked: list[Path] = []

    def plan_from_scan() -> tuple[list[tuple[Path, str]], MovePlan]:
        found = scan([root], card, scan_options, on_total=on_total, on_result=on_result)
        shots = [Shot(r.path, r.partner) for r in found.results if r.verdict in wanted]
        judged = {r.partner for r in found.results if r.verdict is not None}  # a damaged JPEG judged by its RAW
        places = Places()
        marked.extend(r.path for r in found.results if r.verdict is not None and r.verdict not in wanted
                      and read_cull_verdict(r.path, r.partner, places) == "reject"
                      and read_user_verdict(r.path, r.partner, places) is None)  # not a photo the user decided
        return [(p, why) for p, why in found.failures if p not in judged], plan_moves(shots, root, target)

    if options.dry_run:
        not_judged, plan = plan_from_scan()
        return MoveOutcome(target, Recovery(), not_judged, plan, None, marked)
    with target_lock(target):
        recovery = finish_interrupted(target)
        not_judged, plan = plan_from_scan()
        result = execute(plan, root, target)
    return MoveOutcome(target, recovery, not_judged, plan, result, marked)
