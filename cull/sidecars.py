"""Write verdicts into XMP files: sidecars beside each photo, or (``--embed``) inside the photo.

Which application reads what (README, "Where the verdicts show"):
- Lightroom reads ``IMG_0001.xmp`` beside a proprietary RAW, and the XMP *inside* JPEG/TIFF/DNG/HEIC
  files (never a sidecar for those).  darktable and digiKam read ``IMG_0001.CR2.xmp`` /
  ``IMG_0001.JPG.xmp`` sidecars (and embedded XMP on import).  An existing ``IMG_0001.xmp`` beside a
  JPEG (Capture One's naming) is updated rather than shadowed by a second sidecar.

One shot, one verdict: a reject is written nowhere when the user rated, picked or accepted the
shot in *any* of its places (``cull.protect``); the conflict is reported once per shot, and no new
sidecar is created for it.  Every write is atomic (temp file in the same folder, fsync, rename) and
keeps the file's mode and owner; a sidecar cull creates gets the ordinary mode (umask).  A file
the user cannot write, locked read-only, or owned by another user is never replaced; a malformed
existing packet is reported and never overwritten.

A scan's rescan of an unchanged tree opens no sidecar (``write_results`` with the fact cache): for
every file it wrote or checked, cull records the file's stamp (inode, size, mtime, ctime) and the hash
of the verdict it merged; the same stamp and the same verdict mean the merge would change nothing.
Any edit of the file since (a rating added in Lightroom) changes the stamp and takes the full path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from cull import __version__
from cull.cache import FactCache, default_cache_path, stamp_of
from cull.errors import CullError, NotWritable
from cull.formats import is_raw
from cull.fsutil import atomic_write_bytes, file_key, fsync_dir, host_tag, temp_prefix, unlink_quietly, write_through
from cull.protect import (
    EMBEDDABLE,
    PROTECTION_FACT,
    USER_VERDICT_FACT,
    Places,
    _exists,
    adobe_sidecar,
    darktable_sidecar,
    embeds_cull_fields,
    existing_name,
    load_pyexiv2,
    read_embedded,
    read_sidecar,
    scan_packets,
    shot_protection,
    shot_user_labels,
    sidecar_places,
    sidecar_protection,
    sidecar_user_verdict,
)
from cull.xmp import CULL_FIELDS, Packet, Verdict, XmpError, clear, has_cull_fields, merge, same_content

if TYPE_CHECKING:
    from cull.scan import PhotoResult

__all__ = [
    "EMBEDDABLE", "SidecarStyle", "Target", "WriteOutcome", "XmpOptions", "XmpSummary", "adobe_sidecar",
    "clear_photo", "darktable_sidecar", "embedding_available", "existing_targets", "read_embedded",
    "link_target_folders", "remove_stale_temps", "targets_for", "write_embedded", "write_results", "write_target", "write_verdict",
]

log = logging.getLogger(__name__)

# cull's own temporary names: fsutil's ".NAME@HOST.PID-XXXXXXXX.cull-tmp" and write_embedded's
# ".NAME@HOST.PID-XXXXXXXX.cull-tmp.EXT"; older cull wrote ".NAME.PID-XXXXXXXX.cull-tmp[.EXT]" and,
# before that, ".NAME.XXXXXXXX.cull-tmp[.EXT]"
TEMP_NAME = re.compile(r"^\..+?(?:@([A-Za-z0-9-]{1,32}))?\.(?:(\d+)-)?[a-z0-9_]{8}\.cull-tmp(\.[A-Za-z0-9]{1,10})?$",
                       re.DOTALL)  # a name may hold a newline
OTHER_HOST_STALE_SECONDS = 24 * 3600  # another machine's temp: its process cannot be asked, its age can


class SidecarStyle(str, Enum):
    ADOBE = "adobe"  # IMG_0001.xmp (Lightroom, Bridge, Capture One)
    DARKTABLE = "darktable"  # IMG_0001.CR2.xmp (darktable, digiKam)
    BOTH = "both"


@dataclass(frozen=True)
class XmpOptions:
    embed: bool = False
    sidecar_style: SidecarStyle = SidecarStyle.ADOBE
    label: str = "Yellow"


@dataclass(frozen=True)
class Target:
    path: Path  # the sidecar, or the photo itself when embedded
    embedded: bool = False
    ours_only: bool = False  # the other place of an earlier run with or without --embed: updated only if it holds cull's fields


@dataclass(frozen=True)
class WriteOutcome:
    target: Path
    action: str  # written | unchanged | removed | restored | error
    detail: str | None = None
    embedded: bool = False  # the XMP block inside the photo, not a sidecar

    def describe(self) -> str:
        """One line for the user: "removed XMP from PHOTO" for an embedded block, "removed SIDECAR"."""
        if self.action == "error":
            return f"error: {self.target}: {self.detail}"
        if self.embedded:
            verb = {"removed": "removed XMP from", "restored": "restored XMP in", "written": "wrote XMP into"}
            return f"{verb.get(self.action, self.action)} {self.target}"
        return f"{self.action:8} {self.target}"


def embedding_available() -> bool:
    """Whether ``--embed`` can work (the ``[embed]`` extra, pyexiv2, is installed)."""
    return load_pyexiv2() is not None


def targets_for(photo: Path, options: XmpOptions, partner: Path | None = None, places: Places | None = None) -> list[Target]:
    """Where the verdict of ``photo`` goes (see the module docstring). ``places``: one listing per folder."""
    suffix = photo.suffix.lower()
    if is_raw(photo) and suffix != ".dng":
        style = options.sidecar_style
        adobe, darktable = (existing_name(p, photo, places) for p in (adobe_sidecar(photo), darktable_sidecar(photo)))
        paths = []
        if style in (SidecarStyle.ADOBE, SidecarStyle.BOTH):
            paths.append(adobe)
        if style in (SidecarStyle.DARKTABLE, SidecarStyle.BOTH) or _exists(darktable, places):
            paths.append(darktable)
        if style == SidecarStyle.DARKTABLE and _exists(adobe, places):
            paths.append(adobe)  # an existing Lightroom sidecar is kept in step
        return [Target(p) for p in dict.fromkeys(paths)]
    existing = [] if places is not None and not places.any_sidecar(photo) else [
        p for p in (existing_name(place, photo, places) for place in sidecar_places(photo, partner, places))
        if (places is None or places.may_exist(p)) and os.path.lexists(p)]
    if options.embed and suffix in EMBEDDABLE:  # and sidecars an earlier scan without --embed marked, kept in step
        return [Target(photo, embedded=True), *(Target(p, ours_only=True) for p in existing)]
    sidecars = [Target(p) for p in existing] or [Target(darktable_sidecar(photo))]
    if suffix in EMBEDDABLE and embedding_available() and embeds_cull_fields(photo, places):
        sidecars.append(Target(photo, embedded=True, ours_only=True))  # an earlier scan's --embed, kept in step
    return sidecars


def existing_targets(photo: Path, places: Places | None = None) -> list[Target]:
    """Every place cull may have written for ``photo`` (for clearing). The photo's own XMP block
    only when pyexiv2 is installed (without it cull cannot have embedded anything).  ``places``:
    one listing per folder over many photos."""
    places = places or Places()
    found = [Target(p) for p in dict.fromkeys(existing_name(place, photo, places) for place in
                                               (adobe_sidecar(photo), darktable_sidecar(photo))) if p.is_file()]
    if photo.suffix.lower() in EMBEDDABLE and photo.is_file() and embedding_available():
        found.append(Target(photo, embedded=True))
    return found


# --- I/O -------------------------------------------------------------------------------------

def write_embedded(photo: Path, packet: bytes | None) -> None:
    """Rewrite only the XMP block of ``photo`` (image data untouched), on a copy, then rename.
    ``packet`` None removes the block."""
    if packet is None and photo.suffix.lower() == ".webp":
        # exiv2's clear_xmp leaves a WebP's XMP chunk in place: drop the chunk ourselves
        atomic_write_bytes(photo, strip_webp_xmp(photo.read_bytes()))
        return
    pyexiv2 = load_pyexiv2()
    if pyexiv2 is None:
        raise CullError("--embed needs pyexiv2: pip install 'cull-focus[embed]'")
    suffix = photo.suffix  # the name cull chose the photo by (an EMBEDDABLE one): a link's target may be named anyhow
    photo = write_through(photo)  # a linked photo: its file gets the block, the link stays a link
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(photo), suffix=".cull-tmp" + suffix, dir=photo.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copy2(photo, tmp)
        with pyexiv2.Image(str(tmp)) as image:
            if packet is None:
                image.clear_xmp()
            else:
                image.modify_raw_xmp(packet.decode("utf-8"))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, photo)
        fsync_dir(photo.parent)
    except BaseException as exc:
        unlink_quietly(tmp)
        if isinstance(exc, (OSError, CullError)):
            raise
        if isinstance(exc, Exception):
            raise CullError(f"cannot write embedded XMP: {exc}") from None
        raise


def strip_webp_xmp(data: bytes) -> bytes:
    """A WebP file without its ``XMP `` chunk (and the XMP flag of ``VP8X`` cleared). A ``VP8X``
    header left with no flag and one image chunk is dropped too, giving back the simple format.
    Raises CullError for a file that is not a well-formed RIFF WebP."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise CullError("not a RIFF WebP file; XMP left in place")
    chunks: list[tuple[bytes, bytes]] = []
    at = 12
    while at + 8 <= len(data):
        kind, size = data[at:at + 4], int.from_bytes(data[at + 4:at + 8], "little")
        body = data[at + 8:at + 8 + size]
        if len(body) != size:
            raise CullError("truncated WebP chunk; XMP left in place")
        chunks.append((kind, body))
        at += 8 + size + (size & 1)
    kept = [(k, b) for k, b in chunks if k != b"XMP "]
    for i, (kind, body) in enumerate(kept):
        if kind == b"VP8X" and body:
            kept[i] = (kind, bytes([body[0] & ~0x04]) + body[1:])
    if kept and kept[0][0] == b"VP8X" and kept[0][1][:1] == b"\x00" and len(kept) == 2 and kept[1][0] in (b"VP8 ", b"VP8L"):
        kept = kept[1:]
    out = b"".join(k + len(b).to_bytes(4, "little") + b + (b"\x00" if len(b) & 1 else b"") for k, b in kept)
    return b"RIFF" + (len(out) + 4).to_bytes(4, "little") + b"WEBP" + out


def _read(target: Target, places: Places | None = None) -> bytes | None:
    return read_embedded(target.path) if target.embedded else read_sidecar(target.path, places)


def created_by_cull(data: bytes | None) -> bool:
    """A packet cull wrote from nothing (cull's fields, no user original kept inside)."""
    if data is None or not has_cull_fields(data):
        return False
    try:
        packet = Packet(data)
    except XmpError:
        return False
    return (packet.get(("cull", "Verdict")) is not None and packet.get(("cull", "Original")) is None
            and packet.get(("cull", "Existed")) is None)


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(path: Path, ours: bool = False) -> os.stat_result | None:
    """Refuse (NotWritable) a file this user must not replace: no write permission for this user
    (``os.access``), no write bit at all (locked on purpose, even for root), owned by another user
    (a rename would take it over), or in a folder this user cannot write (or, for root, one
    without write bits). ``ours``: a sidecar cull
    created itself, whose mode never locks cull out. Returns the file's stat (None: no file yet).
    A symbolic link is judged by the file it names, which is what a write replaces (write_through)."""
    try:
        path = write_through(path)
    except OSError as exc:
        raise NotWritable(exc.strerror or str(exc)) from None
    folder = path.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise NotWritable(f"permission denied (folder {folder} is not writable); not modified")
    if os.geteuid() == 0 and not os.stat(folder).st_mode & 0o222:  # locked on purpose: root too keeps out
        raise NotWritable(f"read-only folder {folder} (no write bits); not modified")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if info.st_uid != os.geteuid() and os.geteuid() != 0:
        raise NotWritable(f"belongs to another user (uid {info.st_uid}); replacing it would take it over; not modified")
    if ours and info.st_uid == os.geteuid():
        return info
    if not info.st_mode & 0o222:
        raise NotWritable("read-only file; not modified")
    if not os.access(path, os.W_OK):
        raise NotWritable("no write permission for this user; not modified")
    return info


def _restore_owner(path: Path, before: os.stat_result) -> None:
    """After a rename: give the file back its owner and group (root may; a group we belong to)."""
    try:
        now = os.stat(path)
        if (now.st_uid, now.st_gid) != (before.st_uid, before.st_gid):
            os.chown(path, before.st_uid if os.geteuid() == 0 else -1, before.st_gid)
    except OSError as exc:
        log.warning("%s: could not keep its owner/group: %s", path, exc.strerror or exc)


def write_target(target: Target, data: bytes | None, ours: bool = False) -> str:
    """Write ``data`` to ``target`` (None: remove the sidecar, or the photo's XMP block), after
    ``check_writable``. Returns the action: written, restored or removed.
    A sidecar that is a symbolic link is never removed: the link is the user's, and removing it
    would leave cull's XMP in the file it names; that file gets an empty packet instead."""
    before = check_writable(target.path, ours)
    if before is not None and before.st_nlink > 1 and (data is not None or target.embedded):
        log.warning("%s has %d hard links: cull writes a new file and renames it into place (atomic), so its "
                    "other names keep the previous XMP", target.path, before.st_nlink)
    if data is None and not target.embedded and target.path.is_symlink():
        atomic_write_bytes(target.path, Packet(None).serialize())
        if before is not None:
            _restore_owner(target.path, before)
        return "removed"
    if target.embedded:
        write_embedded(target.path, data)
    elif data is None:
        target.path.unlink()
        fsync_dir(target.path.parent)
    else:
        atomic_write_bytes(target.path, data)
        if before is None or ours:
            os.chmod(target.path, 0o666 & ~_umask())  # a sidecar of ours: the ordinary mode, never the photo's
    if before is not None and data is not None:
        _restore_owner(target.path, before)
    return "written" if data is not None else "removed"


def _verify_cleared(target: Target) -> None:
    """After removing cull's XMP: read it back, never claim a removal that did not happen."""
    left = _read(target)
    if left is None or not has_cull_fields(left):
        return
    packet = Packet(left)  # cull's namespace may stay for the user's own review decision (cull:UserVerdict)
    if any(packet.get(("cull", field)) is not None for field in CULL_FIELDS):
        raise CullError("cull's XMP is still in the file after removing it (this format keeps it); left as is")


class _Read(Enum):
    SHOT = "read the shot's places"


READ_SHOT = _Read.SHOT
MERGED_FACT = "merged"


def payload_hash(verdict: Verdict, reason: str | None, embedded: bool, held: frozenset[str] = frozenset()) -> str:
    """What one merge depends on besides the file's bytes: the verdict's fields, the shot's
    protection, the target kind, and cull's version (its merge rules)."""
    fields = [__version__, verdict.verdict, verdict.score, verdict.kind, verdict.model, verdict.label,
              list(verdict.burst) if verdict.burst is not None else None, reason, embedded, sorted(held)]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]


def _no_op(target: Target, payload: str, places: Places | None) -> tuple[bool, str | None, str | None]:
    """(known no-op, conflict, stamp): whether the file is unchanged since cull merged ``payload``."""
    info = places.regular(target.path) if places is not None else None
    if info is None or places is None or places.facts is None:
        return False, None, None
    stamp = stamp_of(info)
    if stamp is None:
        return False, None, None
    merged = places.facts.get(target.path, stamp).get(MERGED_FACT)
    if isinstance(merged, list) and len(merged) == 2 and merged[0] == payload:
        return True, merged[1], stamp
    return False, None, stamp


def _remember(target: Target, payload: str, conflict: str | None, places: Places | None,
              stamp: str | None, written: bytes | None = None) -> None:
    """Record that merging ``payload`` into ``target`` is a no-op (at ``stamp``, or the stamp after
    cull's write, with what the written sidecar says for protect's readers)."""
    if places is None or places.facts is None:
        return
    if written is not None:
        info = places.regular(target.path)
        stamp = stamp_of(info) if info is not None else None
        if stamp is None:
            return
        facts: dict[str, object] = {MERGED_FACT: [payload, conflict]}
        if not target.embedded:
            try:
                facts[PROTECTION_FACT] = sidecar_protection(written)
                facts[USER_VERDICT_FACT] = sidecar_user_verdict(written)
            except XmpError:
                pass
        places.facts.put(target.path, stamp, **facts)
    elif stamp is not None:
        places.facts.put(target.path, stamp, **{MERGED_FACT: [payload, conflict]})


def write_verdict(
    photo: Path, verdict: Verdict, options: XmpOptions, *, partner: Path | None = None,
    protection: str | None | _Read = READ_SHOT, places: Places | None = None, held: frozenset[str] = frozenset(),
) -> tuple[list[WriteOutcome], str | None]:
    """Merge ``verdict`` into every XMP target of ``photo``. Returns outcomes and the reason the
    shot was not marked rejected (the user's rating, pick or accept), if any.

    ``protection``: READ_SHOT (default) reads every place of the shot (``cull.protect.shot_protection``
    of ``photo`` and ``partner``); a string or None passes what was already found for the shot.
    ``places``: one listing per folder and the fact cache (an unchanged file is not read again)."""
    if verdict.verdict == "reject" and protection is READ_SHOT:
        protection = shot_protection(photo, partner, places)
    reason = protection if isinstance(protection, str) and verdict.verdict == "reject" else None
    outcomes: list[WriteOutcome] = []
    conflict = reason
    # a kept photo with no sidecar name in its folder's listing: nothing to create or update
    quiet = places is not None and verdict.verdict == "keep" and verdict.burst is None and not places.any_sidecar(photo)
    targets = targets_for(photo, options, partner, places)
    for target in targets:
        if quiet and not target.embedded:
            outcomes.append(WriteOutcome(target.path, "unchanged"))
            continue
        payload = payload_hash(verdict, reason, target.embedded, held)
        try:
            no_op, known_conflict, stamp = _no_op(target, payload, places)
            if no_op:
                conflict = conflict or known_conflict
                outcomes.append(WriteOutcome(target.path, "unchanged", embedded=target.embedded))
                continue
            existing = _read(target, places)
            if target.ours_only and not has_cull_fields(existing):
                _remember(target, payload, None, places, stamp)
                outcomes.append(WriteOutcome(target.path, "unchanged", embedded=target.embedded))
                continue
            if existing is None and ((verdict.verdict == "keep" and verdict.burst is None) or reason):
                # no new sidecar for a kept or protected photo (no clutter, nothing that could shadow the user's);
                # a kept frame of a burst gets one: its rank is what --bursts was asked for
                outcomes.append(WriteOutcome(target.path, "unchanged", embedded=target.embedded))
                continue
            if verdict.verdict == "keep" and verdict.burst is None and not has_cull_fields(existing):
                _remember(target, payload, None, places, stamp)
                outcomes.append(WriteOutcome(target.path, "unchanged", embedded=target.embedded))
                continue
            if verdict.verdict == "keep" and verdict.burst is None and not target.embedded:
                # an earlier verdict (or burst place) of cull's is here: undone as `cull xmp clear` would, so a
                # kept photo ends with no sidecar of cull's, or the user's sidecar as it was
                kept = clear(existing)  # type: ignore[arg-type]  # has_cull_fields: not None
                action = write_target(target, kept, ours=created_by_cull(existing))
                if places is not None:
                    places.noted(target.path, exists=kept is not None)
                    if kept is not None:
                        _remember(target, payload, None, places, None, written=kept)
                outcomes.append(WriteOutcome(target.path, action))
                continue
            result = merge(existing, verdict, protected=reason, held=held)
            conflict = conflict or result.conflict
            if existing is not None and same_content(existing, result.packet):
                _remember(target, payload, result.conflict, places, stamp)
                outcomes.append(WriteOutcome(target.path, "unchanged", embedded=target.embedded))
                continue
            action = write_target(target, result.packet, ours=not target.embedded and created_by_cull(existing))
            if places is not None:
                places.noted(target.path, exists=True)
                _remember(target, payload, result.conflict, places, None, written=result.packet)
            outcomes.append(WriteOutcome(target.path, action, embedded=target.embedded))
        except XmpError as exc:
            outcomes.append(WriteOutcome(target.path, "error", f"existing XMP left untouched: {exc}", target.embedded))
        except (OSError, CullError) as exc:
            if target.embedded and options.embed and not isinstance(exc, OSError):  # a file exiv2 cannot write into
                sidecar, _ = write_verdict(photo, verdict, replace(options, embed=False), partner=partner,
                                           protection=reason, places=places)
                written = [o.target.name for o in sidecar if o.action in ("written", "removed", "restored")]
                instead = f"the verdict went to its sidecar instead ({', '.join(written)})" if written else "nothing else written"
                outcomes.append(WriteOutcome(target.path, "error", f"cannot embed XMP in this file ({_describe(exc)}); "
                                             f"{instead}", True))
                outcomes += sidecar
                continue
            outcomes.append(WriteOutcome(target.path, "error", _describe(exc), target.embedded))
    other_places = {target.path for target in targets if target.ours_only}  # counted only when they change
    return [o for o in outcomes if not (o.action == "unchanged" and o.target in other_places)], conflict


def clear_photo(photo: Path, places: Places | None = None) -> list[WriteOutcome]:
    """Remove what cull wrote for ``photo``: restore replaced values, drop sidecars cull created,
    remove the XMP block cull embedded (checked by reading it back)."""
    outcomes = []
    for target in existing_targets(photo, places):
        try:
            existing = _read(target)
            if existing is None:
                continue
            kept = clear(existing)
            if kept is existing or kept == existing:
                continue
            write_target(target, kept, ours=not target.embedded and created_by_cull(existing))
            if target.embedded:
                _verify_cleared(target)
            outcomes.append(WriteOutcome(target.path, "removed" if kept is None else "restored", embedded=target.embedded))
        except XmpError as exc:
            outcomes.append(WriteOutcome(target.path, "error", f"existing XMP left untouched: {exc}", target.embedded))
        except (OSError, CullError) as exc:
            outcomes.append(WriteOutcome(target.path, "error", _describe(exc), target.embedded))
    return outcomes


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        return f"permission denied ({exc.filename or 'read-only file or folder'})"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}"
    return str(exc)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OverflowError:
        return False
    return True


def remove_stale_temps(folders: Iterable[Path], started: float) -> list[Path]:
    """Remove cull's own temporary files (``.NAME@HOST.PID-XXXXXXXX.cull-tmp[.EXT]``) left in
    ``folders`` by a run that was killed: made before ``started`` (this run's start: a time.time()) by
    a process of this machine that is no longer running, or, made on another machine sharing the folder
    (whose processes cannot be checked from here), more than a day before. Returns what was removed."""
    removed = []
    here = host_tag()
    for folder in dict.fromkeys(folders):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = TEMP_NAME.match(name)
            if not match:
                continue  # not ours
            host, pid = match.group(1), match.group(2)
            elsewhere = host is not None and host != here
            if not elsewhere and pid and _process_alive(int(pid)):
                continue  # a concurrent cull run is still writing it
            made_before = started - OTHER_HOST_STALE_SECONDS if elsewhere else started
            path = folder / name
            try:
                info = os.lstat(path)
                if stat.S_ISREG(info.st_mode) and info.st_ctime < made_before:
                    path.unlink()
                    removed.append(path)
                    log.info("removed %s, left by an interrupted cull run", path)
            except OSError:
                continue
    return removed


@dataclass
class XmpSummary:
    written: int = 0
    unchanged: int = 0
    errors: list[tuple[Path, str]] = field(default_factory=list)
    conflicts: list[tuple[Path, str]] = field(default_factory=list)  # one per protected shot
    protected: dict[Path, str] = field(default_factory=dict)  # a rejected shot's path -> why it is not marked (cull.protect)
    embedded: list[Path] = field(default_factory=list)  # photos whose own XMP block was rewritten (image data untouched)
    stale_removed: list[Path] = field(default_factory=list)  # temp files of an interrupted run, removed


def write_results(
    results: Sequence[PhotoResult], options: XmpOptions, model_version: str, *,
    use_cache: bool = True, cache_path: Path | None = None,
) -> XmpSummary:
    """Write every decided shot's verdict into the XMP of its photo and partner; errors are per file.
    A protected shot (``cull.protect``) gets no reject anywhere and one conflict line.

    Each folder is listed once; with ``use_cache`` the fact cache (``cache_path``, default: the score
    cache's file) spares reading the files that did not change since cull last merged the same verdict."""
    facts = FactCache(cache_path or default_cache_path()) if use_cache else None
    try:
        return _write_results(results, options, model_version, Places(facts))
    finally:
        if facts is not None:
            facts.close()


def _write_results(results: Sequence[PhotoResult], options: XmpOptions, model_version: str, places: Places) -> XmpSummary:
    summary = XmpSummary()
    started = time.time()
    summary.stale_removed = remove_stale_temps((r.path.parent for r in results), started)
    written: list[Path] = []
    for result in results:
        if result.decision is None:
            continue
        if result.judged is not None and file_key(result.path) != result.judged:
            # moved away (a `cull move` running beside this scan), replaced or edited since it was judged:
            # writing now would leave a sidecar without its photo, or a copy of the user's sidecar that
            # `cull undo` later finds in its way
            summary.errors.append((result.path, "gone or changed since it was judged, while the scan ran: not marked; scan it again"))
            continue
        score, kind = (result.photo.score, result.photo.kind) if result.photo is not None else (None, None)
        burst = (result.burst.burst, result.burst.rank, result.burst.size) if result.burst is not None else None
        verdict = Verdict(result.decision.verdict.value, score, kind, model_version, options.label, burst)
        protection = shot_protection(result.path, result.partner, places) if verdict.verdict == "reject" else None
        if protection:
            summary.protected[result.path] = protection
            summary.conflicts.append((result.path, f"{protection}: not marked rejected"))
        held = shot_user_labels(result.path, result.partner, places) if verdict.verdict == "uncertain" else frozenset()
        for photo, partner in ((result.path, result.partner), (result.partner, result.path)):
            if photo is None:
                continue
            outcomes, _conflict = write_verdict(photo, verdict, options, partner=partner, protection=protection,
                                                places=places, held=held)
            for outcome in outcomes:
                if outcome.action == "error":
                    summary.errors.append((outcome.target, outcome.detail or "error"))
                elif outcome.action in ("written", "removed", "restored"):  # the sidecar changed: an earlier verdict undone too
                    summary.written += 1
                    written.append(outcome.target)
                    if outcome.embedded:
                        summary.embedded.append(photo)
                else:
                    summary.unchanged += 1
    summary.stale_removed += remove_stale_temps(link_target_folders(written), started)
    return summary


def link_target_folders(paths: Iterable[Path]) -> list[Path]:
    """The folders of the files that symbolic links among ``paths`` name, where a write through a
    link keeps its temporary file, other than the links' own folders (swept with the photos).  A run
    killed while writing through a link left its temp there; the run that rewrites the file removes it."""
    folders: dict[Path, None] = {}
    for path in paths:
        if path.is_symlink():
            try:
                folder = Path(os.path.realpath(path, strict=True)).parent
            except OSError:
                continue
            if folder != path.parent.resolve():
                folders[folder] = None
    return list(folders)
