"""When and with which camera a photo was taken (EXIF via exifread), for grouping bursts.

exifread reads EXIF from JPEG, TIFF, HEIC/WebP/PNG and the TIFF-based RAW formats (CR2, NEF, ARW,
DNG, ORF, RW2, PEF…). Where no capture time can be read, EXIF ModifyDate (``"modified"``) or the
file's modification time (``"mtime"``) stands in, and the result says so.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SERIAL_TAGS = ("EXIF BodySerialNumber", "MakerNote SerialNumber", "Image CameraSerialNumber", "MakerNote InternalSerialNumber",
                "MakerNote InternalSerialNumber ")  # exifread names Canon's with a trailing space
# What a cached capture reading is worth: 2 reads maker notes (exifread's details), where Nikon, Fuji,
# Olympus and Canon bodies keep their serial number; 3 tells a ModifyDate from a capture time; older
# readings are read again.
CAPTURE_VERSION = 3
_MAX_EXIF_READ = 64 * 1024 * 1024  # never read EXIF from a file larger than this (a RAW is well below)


@dataclass(frozen=True)
class Capture:
    """``camera``: make/model/serial when known (None: unknown camera); ``time``: seconds since the epoch."""

    camera: str | None
    time: float | None
    time_source: str  # "exif", "modified" (EXIF ModifyDate only) or "mtime" (or "none" when even stat failed)


def parse_exif_time(value: str, subsec: str | None = None) -> float | None:
    """'2024:05:01 10:11:12' (+ sub-second digits '25' = .25 s) -> seconds (naive local time as UTC)."""
    try:
        stamp = dt.datetime.strptime(value.strip().rstrip("\x00"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    seconds = stamp.replace(tzinfo=dt.timezone.utc).timestamp()
    digits = (subsec or "").strip().rstrip("\x00")[:9]  # nanoseconds at most; the rest is noise
    if digits.isascii() and digits.isdigit():  # "²" is a digit to str.isdigit, not to int()
        seconds += int(digits) / 10 ** len(digits)
    return seconds


def _maker_note_tags(handle: Any, path: Path) -> dict[str, object]:
    """The maker notes' tags (exifread's details), read apart: two bodies of one model are told apart by
    the serial that many Nikon, Fuji, Olympus and Canon bodies keep only there (where exifread knows the tag), and a maker note exifread
    cannot parse must not cost the capture time read without it."""
    import exifread

    try:
        handle.seek(0)
        return {k: v for k, v in exifread.process_file(handle, details=True, extract_thumbnail=False).items()
                if k.startswith("MakerNote ")}
    except Exception as exc:  # noqa: BLE001 - as above
        log.debug("no maker notes from %s: %s", path, exc)
        return {}


def _readable(serial: str) -> bool:
    """A serial number as text (a maker note exifread misreads gives control bytes)."""
    return serial.strip().isprintable() and any(c.isalnum() for c in serial)


def read_capture(path: Path) -> Capture:
    """Camera identity and capture time of ``path``; never raises (falls back to mtime)."""
    tags: dict[str, object] = {}
    try:
        if path.stat().st_size <= _MAX_EXIF_READ:
            import exifread

            logging.getLogger("exifread").setLevel(logging.ERROR)  # "Possibly corrupted field ...": EXIF is optional here

            with open(path, "rb") as handle:
                tags = exifread.process_file(handle, details=False, extract_thumbnail=False)
                if not any(t in tags for t in _SERIAL_TAGS) and "Image Make" in tags:
                    tags = {**tags, **_maker_note_tags(handle, path)}
    except Exception as exc:  # noqa: BLE001 - exifread raises many kinds on odd files; EXIF is optional here
        log.debug("no EXIF from %s: %s", path, exc)
    camera_parts = [str(tags[t]).strip() for t in ("Image Make", "Image Model") if t in tags]
    serial = next((str(tags[t]).strip() for t in _SERIAL_TAGS if t in tags and _readable(str(tags[t]))), None)
    if serial:
        camera_parts.append(serial)
    camera = " ".join(p for p in camera_parts if p) or None
    # DateTimeOriginal is when the shutter fired; Image DateTime (ModifyDate) only when the file was last
    # written (an export, a film scan): such frames are grouped as cautiously as those timed by the file
    for tag, sub, source in (("EXIF DateTimeOriginal", "EXIF SubSecTimeOriginal", "exif"),
                             ("Image DateTime", "EXIF SubSecTime", "modified")):
        original, subsec = tags.get(tag), tags.get(sub)
        when = parse_exif_time(str(original), str(subsec) if subsec is not None else None) if original else None
        if when is not None:
            return Capture(camera, when, source)
    try:
        return Capture(camera, os.stat(path).st_mtime, "mtime")
    except OSError:
        return Capture(camera, None, "none")
