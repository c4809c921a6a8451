"""Which files are photos, and which of them are camera RAW."""

from __future__ import annotations

from pathlib import Path

RAW_EXTENSIONS = frozenset(
    ".cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .raf .orf .rw2 .rwl .pef .ptx .dng .srw .3fr .fff "
    ".iiq .kdc .dcr .mrw .mos .mef .erf .x3f .raw .gpr".split()
)
JPEG_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif", ".avif"})
RASTER_EXTENSIONS = JPEG_EXTENSIONS | HEIF_EXTENSIONS | frozenset({".png", ".tif", ".tiff", ".webp", ".bmp"})
PHOTO_EXTENSIONS = RAW_EXTENSIONS | RASTER_EXTENSIONS


def is_raw(path: Path) -> bool:
    return path.suffix.lower() in RAW_EXTENSIONS


def is_photo(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_EXTENSIONS
