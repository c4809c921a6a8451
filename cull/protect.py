"""Is a shot protected? Read every place where the user's rating, pick or accept can live.

A shot is one photo plus its RAW/JPEG partner; one shot gets one verdict.  For each file of the shot
the places are:

- the XMP embedded in the file (Lightroom writes ratings *into* JPEG/TIFF/DNG; cameras into RAWs):
  read with pyexiv2 when it is installed, and always by XMP packet scanning (the XMP spec's fallback
  for any format), so the default install sees embedded ratings too;
- ``NAME.EXT.xmp`` (darktable, digiKam);
- ``NAME.xmp`` (Lightroom, Bridge, Capture One, digiKam's "commercial programs" naming), beside a
  JPEG too, unless a RAW of the same name owns it.

A sidecar is opened only when it is a regular file of at most 64 MB (a FIFO would block, a link
to /dev/zero would never end).  A sidecar that is malformed or cannot be read holds no rating any
application could show; it is skipped here, and the XMP writer reports it as an error.
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from cull.errors import CullError, SidecarRefused
from cull.formats import is_raw
from cull.xmp import Packet, XmpError, user_protection

if TYPE_CHECKING:
    from cull.scan import PhotoResult

log = logging.getLogger(__name__)

USER_VERDICT = ("cull", "UserVerdict")  # a decision made in `cull review` (see cull.review.decisions)
DECISIONS = ("reject", "keep", "uncertain")

MAX_SIDECAR_BYTES = 64 * 1024 * 1024
SCAN_BYTES = 64 * 1024 * 1024  # embedded packets are looked for in the first 64 MB of a photo
MAX_PACKETS = 16
EMBEDDABLE = frozenset({".jpg", ".jpeg", ".jpe", ".tif", ".tiff", ".dng", ".png", ".webp"})


def adobe_sidecar(photo: Path) -> Path:
    return photo.with_suffix(".xmp")


def darktable_sidecar(photo: Path) -> Path:
    return photo.with_name(photo.name + ".xmp")


def raw_owns_adobe_sidecar(photo: Path, partner: Path | None = None) -> bool:
    """Whether ``NAME.xmp`` beside a non-RAW ``photo`` belongs to a RAW of the same name instead."""
    if is_raw(photo):
        return False
    if partner is not None and is_raw(partner) and partner.stem == photo.stem:
        return True
    if not adobe_sidecar(photo).exists():
        return False
    stem = photo.stem.lower()
    try:
        names = os.listdir(photo.parent)
    except OSError:
        return False
    return any(Path(n).stem.lower() == stem and is_raw(Path(n)) for n in names)


def sidecar_places(photo: Path, partner: Path | None = None) -> list[Path]:
    """The sidecar names that belong to ``photo`` (existing or not): darktable's, then Adobe's."""
    places = [darktable_sidecar(photo)]
    if not raw_owns_adobe_sidecar(photo, partner):
        places.append(adobe_sidecar(photo))
    return list(dict.fromkeys(places))


def read_sidecar(path: Path) -> bytes | None:
    """The bytes of a sidecar, or None when there is none.

    Raises SidecarRefused for something that is not a regular file (FIFO, device, folder) or is
    over 64 MB, and OSError when it cannot be read."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        raise SidecarRefused(f"not a regular file ({_kind(info.st_mode)}); left alone")
    if info.st_size > MAX_SIDECAR_BYTES:
        raise SidecarRefused(f"XMP sidecar of {info.st_size / 1e6:.0f} MB is over the 64 MB cull reads; left alone")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # never blocks, even if swapped for a FIFO
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise SidecarRefused("not a regular file; left alone")
        data = fh.read(MAX_SIDECAR_BYTES + 1)
    if len(data) > MAX_SIDECAR_BYTES:
        raise SidecarRefused("XMP sidecar is over the 64 MB cull reads; left alone")
    return data


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def load_pyexiv2() -> ModuleType | None:
    """The pyexiv2 module, or None when the ``[embed]`` extra is not installed."""
    try:
        import pyexiv2
    except ImportError:
        return None
    return pyexiv2


def read_embedded(photo: Path) -> bytes | None:
    """The XMP packet inside ``photo`` through pyexiv2. Raises CullError (also when pyexiv2 is missing)."""
    pyexiv2 = load_pyexiv2()
    if pyexiv2 is None:
        raise CullError("--embed needs pyexiv2: pip install 'cull-focus[embed]'")
    try:
        with pyexiv2.Image(str(photo)) as image:
            text = image.read_raw_xmp()
    except Exception as exc:  # noqa: BLE001 - exiv2 raises RuntimeError with its own message
        raise CullError(f"cannot read embedded XMP: {exc}") from None
    return text.encode("utf-8") if text and text.strip() else None


def scan_packets(photo: Path) -> list[bytes]:
    """XMP packets found by scanning the first 64 MB of a file for ``<x:xmpmeta ... </x:xmpmeta>``."""
    packets: list[bytes] = []
    try:
        fd = os.open(photo, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return packets
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return packets
        end = min(info.st_size, SCAN_BYTES)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            for opening, closing in ((b"<x:xmpmeta", b"</x:xmpmeta>"), (b"<x:xapmeta", b"</x:xapmeta>")):
                at = data.find(opening, 0, end)
                while at >= 0 and len(packets) < MAX_PACKETS:
                    stop = data.find(closing, at, min(end, at + MAX_SIDECAR_BYTES))
                    if stop < 0:
                        break
                    packets.append(data[at:stop + len(closing)])
                    at = data.find(opening, stop, end)
    return packets


def embedded_packets(photo: Path) -> list[bytes]:
    """Every XMP packet inside ``photo`` that cull can find (pyexiv2 when installed, and a scan)."""
    found: list[bytes] = []
    if photo.suffix.lower() in EMBEDDABLE and load_pyexiv2() is not None:
        try:
            packet = read_embedded(photo)
        except CullError as exc:
            log.info("%s: %s; scanning the file for XMP instead", photo, exc)
        else:
            if packet is not None:
                found.append(packet)
    return found + scan_packets(photo)


def file_protection(photo: Path, partner: Path | None = None) -> str | None:
    """Why ``photo`` itself (its sidecars and embedded XMP) must not be marked rejected, or None."""
    for place in sidecar_places(photo, partner):
        try:
            data = read_sidecar(place)
            if data is None:
                continue
            reason = user_protection(Packet(data))
        except (SidecarRefused, XmpError, OSError) as exc:
            # no application can show a rating from it either; the writer reports it as an error
            log.info("%s: not read for the user's rating: %s", place, exc)
            continue
        if reason:
            return reason
    for packet in embedded_packets(photo):
        try:
            reason = user_protection(Packet(packet))
        except XmpError as exc:
            log.info("%s: an embedded XMP packet is unreadable (%s)", photo, exc)
            continue
        if reason:
            return reason
    return None


def shot_protection(photo: Path, partner: Path | None) -> str | None:
    """Why the shot (``photo`` and its RAW/JPEG ``partner``) must never be marked or treated as
    rejected: "user rated it 3 stars", "user picked it (flagged)", "user accepted it (digiKam pick
    label)", an XMP that cannot be read ... or None when nothing protects it."""
    for member, other in ((photo, partner), (partner, photo)):
        if member is not None:
            reason = file_protection(member, other)
            if reason:
                return reason
    return None


def read_user_verdict(photo: Path, partner: Path | None = None) -> str | None:
    """The decision recorded in ``photo``'s sidecars by an earlier review, or None."""
    for sidecar in sidecar_places(photo, partner):
        try:
            data = read_sidecar(sidecar)  # regular files only, size-capped (never blocks on a FIFO)
        except (OSError, CullError):
            continue
        if data is None:
            continue
        if b"UserVerdict" not in data:
            continue
        try:
            value = Packet(data).get(USER_VERDICT)
        except XmpError:
            continue
        if value in DECISIONS:
            return value
    return None


def apply_user_verdicts(results: Sequence[PhotoResult]) -> list[PhotoResult]:
    """``results`` with each shot's decision from `cull review` in place of cull's verdict.

    A hook for callers that act on verdicts (scan's report and XMP writer, `cull move`): with it,
    a photo the user left uncertain or kept is never rejected or moved, and one the user rejected
    is treated as a reject. Reads only sidecars; results without a user decision are returned as is.
    """
    from cull.decide import Decision, Verdict

    out = []
    for result in results:
        user = None
        if result.decision is not None:
            user = read_user_verdict(result.path, result.partner) or (
                read_user_verdict(result.partner, result.path) if result.partner else None)
        if user is not None and result.decision is not None and user != result.decision.verdict.value:
            result = replace(result, decision=Decision(Verdict(user), f"your decision in cull review (cull said {result.decision.verdict.value})"))
        out.append(result)
    return out
