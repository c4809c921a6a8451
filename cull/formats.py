"""Which files are photos, and which of them are camera RAW."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

RAW_EXTENSIONS = frozenset(
    ".cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .raf .orf .rw2 .rwl .pef .ptx .dng .srw .3fr .fff "
    ".iiq .kdc .dcr .mrw .mos .mef .erf .x3f .raw .gpr".split()
)
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})  # need pillow-heif (the [heic] extra)
AVIF_EXTENSIONS = frozenset({".avif"})  # Pillow >= 11.2 reads AVIF itself (pillow-heif too, where installed)
RASTER_EXTENSIONS = (
    JPEG_EXTENSIONS | HEIF_EXTENSIONS | AVIF_EXTENSIONS | frozenset({".png", ".tif", ".tiff", ".webp", ".bmp"})
)
PHOTO_EXTENSIONS = RAW_EXTENSIONS | RASTER_EXTENSIONS


def is_raw(path: Path) -> bool:
    return path.suffix.lower() in RAW_EXTENSIONS


SNIFF_BYTES = 64  # enough for every signature below, an ISO-BMFF ftyp box's brands included
# ISO-BMFF brands (ftyp box) of HEIF stills and sequences (HEVC or generic), and of AVIF (AV1)
HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"})
AVIF_BRANDS = frozenset({b"avif", b"avis"})


def sniff(head: bytes) -> str | None:
    """The container a file's first bytes (SNIFF_BYTES of them) announce: "jpeg", "png", "webp", "gif",
    "bmp", "tiff", "heif", "avif" or None.

    TIFF is ambiguous: most camera RAW formats (CR2, NEF, ARW, DNG, PEF ...) are TIFF containers too.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    brands = ftyp_brands(head)
    if brands & AVIF_BRANDS:  # AVIF is HEIF with AV1 pictures: its files name mif1 too
        return "avif"
    if brands & HEIF_BRANDS:
        return "heif"
    return None


def ftyp_brands(head: bytes) -> frozenset[bytes]:
    """The major and compatible brands of an ISO-BMFF file's leading ftyp box, as far as ``head`` holds
    them (empty for anything else)."""
    if head[4:8] != b"ftyp":
        return frozenset()
    size = int.from_bytes(head[:4], "big")
    end = min(len(head), size) if size >= 16 else len(head)
    return frozenset({head[8:12]} | {head[i:i + 4] for i in range(16, end - 3, 4)})


def is_photo(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_EXTENSIONS


MAX_IFDS = 64  # a RAW has a handful of IFDs; a multi-page scan stops being walked here


@contextmanager
def tiff_ifds(fh: BinaryIO, name: str) -> Iterator[list[Any] | None]:
    """The IFDs of a TIFF-based file (TIFF, DNG, NEF, CR2, ARW, PEF ...) while it is open: the IFD
    chain and each one's SubIFDs (where NEF and DNG keep previews and raw data), as tifffile pages;
    None when tifffile cannot parse the container or finds no IFD (an ORF/RW2 magic, a broken chain).
    ``name`` is for tifffile's messages (a file opened from a descriptor has none).  RAW IFDs often
    lack what a TIFF needs; tifffile's complaints about that are silenced."""
    try:
        import tifffile
    except ImportError:  # pragma: no cover - a dependency
        yield None
        return
    logging.getLogger("tifffile").setLevel(logging.CRITICAL)
    try:
        tif = tifffile.TiffFile(fh, name=name)
    except Exception:  # noqa: BLE001 - tifffile raises many types for odd containers
        yield None
        return
    with tif:
        try:
            ifds: list[Any] = []
            for index, page in enumerate(tif.pages):
                if index >= MAX_IFDS:
                    break
                ifds += [page, *(getattr(page, "pages", None) or [])]
        except Exception:  # noqa: BLE001
            ifds = []
        yield ifds or None


RAW_PHOTOMETRICS = frozenset({32803, 34892})  # CFA, LinearRaw: sensor data, not a picture


def tiff_holds_raw(path: Path) -> bool:
    """Whether a TIFF container holds camera RAW data (an IFD or SubIFD of CFA or linear raw samples, as
    DNG, NEF, ARW, PEF, KDC ... keep them): its first image is then a preview, never the photo.  A DNG
    version tag alone is not enough (tools that copy every tag leave it on plain TIFFs).  A Canon CR2
    says so in its header ("CR", version 2, at byte 8): its raw IFD names no CFA layout."""
    try:
        with open(path, "rb") as fh:
            if fh.read(11)[8:] == b"CR\x02":
                return True
        with open(path, "rb") as fh, tiff_ifds(fh, str(path)) as ifds:
            return bool(ifds) and any(int(getattr(p, "photometric", 0) or 0) in RAW_PHOTOMETRICS for p in ifds or ())
    except (OSError, ValueError, TypeError):
        return False


def tiff_data_beyond_end(path: Path) -> bool:
    """Whether any IFD or SubIFD of a TIFF-based file (DNG, NEF, CR2, ARW ...) names strips or tiles
    that lie past the file's end: a copy cut short, whose preview near the start still decodes while
    the sensor data at the end is gone.  False where the container does not parse."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh, tiff_ifds(fh, str(path)) as ifds:
            for ifd in ifds or ():
                ends = [int(o) + int(n) for o, n in zip(ifd.dataoffsets, ifd.databytecounts) if int(n)]
                if ends and max(ends) > size:
                    return True
    except (OSError, ValueError, TypeError):
        return False
    return False
