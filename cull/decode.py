"""Decode a photo straight to a small gray array at the model's analysis scale.

JPEG uses libjpeg's DCT scaling (PIL ``draft``) so a 24 MP file is never decoded at full size;
RAW uses the embedded preview, falling back to a half-size demosaic when the preview is too small.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from cull.errors import UnreadableImage
from cull.formats import HEIF_EXTENSIONS, is_raw

log = logging.getLogger(__name__)

# Panoramas and 100 MP files are legitimate photos; DCT scaling keeps them cheap.  Above this
# many pixels a file is refused with a clear reason rather than risk exhausting memory.
MAX_PIXELS = 400_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

try:  # HEIC only where pillow-heif is installed (the [heic] extra)
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIF_AVAILABLE = False

GrayImage = NDArray[np.float32]


def decode_gray(path: Path, long_side: int) -> GrayImage:
    """Return the photo as float32 gray in [0, 1], EXIF-oriented, long side <= ``long_side``.

    Raises UnreadableImage with a one-line reason for anything that is not a decodable photo.
    """
    path = Path(path)
    try:
        if is_raw(path):
            image = _open_raw(path, long_side)
        else:
            if path.suffix.lower() in HEIF_EXTENSIONS and not HEIF_AVAILABLE:
                raise UnreadableImage("HEIC/HEIF needs pillow-heif: pip install 'cull[heic]'")
            image = _open_raster(path, long_side)
        return to_gray_array(reduce_long_side(image, long_side, SCALE_TOLERANCE))
    except UnreadableImage:
        raise
    except MemoryError:
        raise UnreadableImage("not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error
        raise UnreadableImage(describe_decode_error(exc)) from exc


def describe_decode_error(exc: BaseException) -> str:
    """A short, human reason for a decoder exception."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, FileNotFoundError):
        return "file not found (broken link or removed during the scan)"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image file (unrecognised format)"
    if "truncated" in text.lower():
        return "truncated file (image data ends early)"
    if isinstance(exc, Image.DecompressionBombError):
        return f"image too large to analyse safely (over {MAX_PIXELS // 1_000_000} MP)"
    return f"cannot decode: {text}"


def _open_raster(path: Path, long_side: int) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        if path.stat().st_size == 0:
            raise UnreadableImage("empty file (0 bytes)")
        image = Image.open(path)
        try:
            if image.format == "JPEG":
                image.draft("L", draft_request(image.size, long_side))
            image.load()
        except BaseException:
            image.close()
            raise
    return _orient(image)


def draft_request(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """The size to ask libjpeg for: DCT scaling then picks the smallest scale at least this big."""
    width, height = size
    factor = min(1.0, long_side / max(width, height))
    return max(1, int(np.ceil(width * factor))), max(1, int(np.ceil(height * factor)))


def _orient(image: Image.Image) -> Image.Image:
    try:
        if image.getexif().get(0x0112, 1) in (0, 1):  # upright: no copy
            return image
        return ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
        log.debug("ignoring unreadable EXIF orientation", exc_info=True)
        return image


_RAW_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def _open_raw(path: Path, long_side: int) -> Image.Image:
    import rawpy  # imported lazily: LibRaw is only needed for RAW files

    if path.stat().st_size == 0:
        raise UnreadableImage("empty file (0 bytes)")
    try:
        with rawpy.imread(str(path)) as raw:
            sensor_long = max(raw.sizes.width, raw.sizes.height)
            need = min(long_side, sensor_long // 2)
            preview = _raw_preview(raw, long_side)
            if preview is not None and max(preview.size) >= need:
                transpose = _RAW_FLIP.get(raw.sizes.flip)
                return preview.transpose(transpose) if transpose is not None else preview
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
            return Image.fromarray(np.array(rgb, copy=True))
    except rawpy.LibRawError as exc:
        raise UnreadableImage(f"LibRaw cannot read this RAW file ({type(exc).__name__}: {exc})") from None


def _raw_preview(raw: object, long_side: int) -> Image.Image | None:
    import rawpy

    try:
        thumb = raw.extract_thumb()  # type: ignore[attr-defined]
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            image = Image.open(io.BytesIO(thumb.data))
            image.draft("L", draft_request(image.size, long_side))
            image.load()
            return image
        if thumb.format == rawpy.ThumbFormat.BITMAP:
            return Image.fromarray(np.array(thumb.data, copy=True))
    except Exception:  # noqa: BLE001 - a broken preview falls back to demosaicing
        log.debug("unusable embedded preview", exc_info=True)
    return None


SCALE_TOLERANCE = 1.1  # DCT scaling landing within 10 % of the analysis scale is used as is


def reduce_long_side(image: Image.Image, long_side: int, tolerance: float = 1.0) -> Image.Image:
    """Shrink (never enlarge) so that max(width, height) <= long_side * tolerance, antialiased."""
    image = _flatten(image)
    width, height = image.size
    if max(width, height) <= long_side * tolerance:
        return image
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _flatten(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 'L' (8-bit gray) or 'F' (float gray, for 16/32-bit sources)."""
    mode = image.mode
    if mode in ("L", "F"):
        return image
    if mode.startswith("I"):  # I, I;16, I;16B, I;16L ...
        values = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if values.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(values / peak * 255.0, 0, 255).astype(np.float32), mode="F")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("L")


def to_gray_array(image: Image.Image) -> GrayImage:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 2:
        raise UnreadableImage(f"unexpected image layout {array.shape}")
    return array * np.float32(1.0 / 255.0)
