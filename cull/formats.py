"""Which files are photos, and which of them are camera RAW."""

from __future__ import annotations

from pathlib import Path

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


def sniff(head: bytes) -> str | None:
    """The container a file's first bytes announce: "jpeg", "png", "webp", "gif", "bmp", "tiff" or None.

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
    return None


def is_photo(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_EXTENSIONS
