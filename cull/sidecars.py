"""Write verdicts into XMP files: sidecars beside each photo, or (``--embed``) inside the photo.

Which application reads what (README, "Where the verdicts show"):
- Lightroom reads ``IMG_0001.xmp`` beside a proprietary RAW, and the XMP *inside* JPEG/TIFF/DNG/HEIC
  files (never a sidecar for those).  darktable and digiKam read ``IMG_0001.CR2.xmp`` /
  ``IMG_0001.JPG.xmp`` sidecars (and embedded XMP on import).
Every write is atomic (temp file in the same folder, fsync, rename) and keeps permissions; a
malformed existing packet is reported and never overwritten.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from cull.errors import CullError
from cull.fsutil import atomic_write_bytes, fsync_dir, unlink_quietly
from cull.formats import is_raw
from cull.xmp import Verdict, XmpError, clear, has_cull_fields, merge, same_content

log = logging.getLogger(__name__)

EMBEDDABLE = frozenset({".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".dng", ".png", ".webp"})


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


@dataclass(frozen=True)
class WriteOutcome:
    target: Path
    action: str  # written | unchanged | removed | restored | error
    detail: str | None = None


def adobe_sidecar(photo: Path) -> Path:
    return photo.with_suffix(".xmp")


def darktable_sidecar(photo: Path) -> Path:
    return photo.with_name(photo.name + ".xmp")


def targets_for(photo: Path, options: XmpOptions) -> list[Target]:
    """Where the verdict of ``photo`` goes (see the module docstring)."""
    suffix = photo.suffix.lower()
    if is_raw(photo) and suffix != ".dng":
        style = options.sidecar_style
        paths = []
        if style in (SidecarStyle.ADOBE, SidecarStyle.BOTH):
            paths.append(adobe_sidecar(photo))
        if style in (SidecarStyle.DARKTABLE, SidecarStyle.BOTH) or darktable_sidecar(photo).exists():
            paths.append(darktable_sidecar(photo))
        if style == SidecarStyle.DARKTABLE and adobe_sidecar(photo).exists():
            paths.append(adobe_sidecar(photo))
        return [Target(p) for p in dict.fromkeys(paths)]
    if options.embed and suffix in EMBEDDABLE:
        return [Target(photo, embedded=True)]
    return [Target(darktable_sidecar(photo))]


def existing_targets(photo: Path) -> list[Target]:
    """Every place cull may have written for ``photo`` (for clearing)."""
    found = [Target(p) for p in dict.fromkeys([adobe_sidecar(photo), darktable_sidecar(photo)]) if p.is_file()]
    if photo.suffix.lower() in EMBEDDABLE and photo.is_file():
        found.append(Target(photo, embedded=True))
    return found


# --- I/O -------------------------------------------------------------------------------------

def _pyexiv2():  # type: ignore[no-untyped-def]
    try:
        import pyexiv2
    except ImportError:
        raise CullError("--embed needs pyexiv2: pip install 'cull[embed]'") from None
    return pyexiv2


def read_embedded(photo: Path) -> bytes | None:
    pyexiv2 = _pyexiv2()
    try:
        with pyexiv2.Image(str(photo)) as image:
            text = image.read_raw_xmp()
    except Exception as exc:  # noqa: BLE001 - exiv2 raises RuntimeError with its own message
        raise CullError(f"cannot read embedded XMP: {exc}") from None
    return text.encode("utf-8") if text and text.strip() else None


def write_embedded(photo: Path, packet: bytes | None) -> None:
    """Rewrite only the XMP block of ``photo`` (image data untouched), on a copy, then rename."""
    pyexiv2 = _pyexiv2()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{photo.name}.", suffix=".cull-tmp" + photo.suffix, dir=photo.parent)
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


def _refuse_read_only(path: Path) -> None:
    """A file without write permission was locked on purpose: never replace it (rename would)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return
    if not mode & 0o222:
        raise PermissionError(13, "read-only file; not modified", str(path))


def _read(target: Target) -> bytes | None:
    if target.embedded:
        return read_embedded(target.path)
    try:
        return target.path.read_bytes()
    except FileNotFoundError:
        return None


def write_verdict(photo: Path, verdict: Verdict, options: XmpOptions) -> tuple[list[WriteOutcome], str | None]:
    """Merge ``verdict`` into every XMP target of ``photo``. Returns outcomes and any rating conflict."""
    outcomes: list[WriteOutcome] = []
    conflict = None
    for target in targets_for(photo, options):
        try:
            existing = _read(target)
            if verdict.verdict == "keep" and not has_cull_fields(existing):
                # a kept photo gets no new sidecar (no clutter); only an earlier cull verdict is undone
                outcomes.append(WriteOutcome(target.path, "unchanged"))
                continue
            result = merge(existing, verdict)
            conflict = conflict or result.conflict
            if existing is not None and same_content(existing, result.packet):
                outcomes.append(WriteOutcome(target.path, "unchanged"))
                continue
            _refuse_read_only(target.path)
            if target.embedded:
                write_embedded(target.path, result.packet)
            else:
                atomic_write_bytes(target.path, result.packet, like=None if existing is not None else photo)
            outcomes.append(WriteOutcome(target.path, "written"))
        except XmpError as exc:
            outcomes.append(WriteOutcome(target.path, "error", f"existing XMP left untouched: {exc}"))
        except (OSError, CullError) as exc:
            outcomes.append(WriteOutcome(target.path, "error", _describe(exc)))
    return outcomes, conflict


def clear_photo(photo: Path) -> list[WriteOutcome]:
    """Remove what cull wrote for ``photo``: restore replaced values, drop sidecars cull created."""
    outcomes = []
    for target in existing_targets(photo):
        try:
            existing = _read(target)
            if existing is None:
                continue
            kept = clear(existing)
            if kept is existing or kept == existing:
                continue
            _refuse_read_only(target.path)
            if kept is None:
                if target.embedded:
                    write_embedded(target.path, None)
                else:
                    target.path.unlink()
                outcomes.append(WriteOutcome(target.path, "removed"))
            else:
                if target.embedded:
                    write_embedded(target.path, kept)
                else:
                    atomic_write_bytes(target.path, kept)
                outcomes.append(WriteOutcome(target.path, "restored"))
        except XmpError as exc:
            outcomes.append(WriteOutcome(target.path, "error", f"existing XMP left untouched: {exc}"))
        except (OSError, CullError) as exc:
            outcomes.append(WriteOutcome(target.path, "error", _describe(exc)))
    return outcomes


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PermissionError):
        if exc.strerror and "read-only file" in exc.strerror:
            return exc.strerror
        return f"permission denied ({exc.filename or 'read-only file or folder'})"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}"
    return str(exc)


@dataclass
class XmpSummary:
    written: int = 0
    unchanged: int = 0
    errors: list[tuple[Path, str]] | None = None
    conflicts: list[tuple[Path, str]] | None = None
    embedded: list[Path] | None = None  # photos whose own XMP block was rewritten (image data untouched)

    def __post_init__(self) -> None:
        self.errors = self.errors or []
        self.conflicts = self.conflicts or []
        self.embedded = self.embedded or []


def write_results(results: list, options: XmpOptions, model_version: str) -> XmpSummary:  # type: ignore[type-arg]
    """Write every decided photo's verdict (and its partner's) into XMP; errors are per file."""
    summary = XmpSummary()
    for result in results:
        if result.decision is None:
            continue
        verdict = Verdict(result.verdict.value, result.photo.score, result.photo.kind, model_version, options.label)
        for photo in (result.path, result.partner):
            if photo is None:
                continue
            outcomes, conflict = write_verdict(photo, verdict, options)
            if conflict:
                summary.conflicts.append((photo, f"{conflict}: not marked rejected"))  # type: ignore[union-attr]
            for outcome in outcomes:
                if outcome.action == "error":
                    summary.errors.append((outcome.target, outcome.detail or "error"))  # type: ignore[union-attr]
                elif outcome.action == "written":
                    summary.written += 1
                    if outcome.target == photo:
                        summary.embedded.append(photo)  # type: ignore[union-attr]
                else:
                    summary.unchanged += 1
    return summary
