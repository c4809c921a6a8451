"""Decode a photo straight to a small gray array at the model's analysis scale.

JPEG uses libjpeg's DCT scaling (PIL ``draft``) so a 24 MP file is never decoded at full size;
RAW uses the embedded preview, falling back to a half-size demosaic when the preview is too small.
"""

from __future__ import annotations

import ctypes
import importlib.util
import io
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import IO, Any, TextIO
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, __version__ as PILLOW_VERSION

from cull.errors import UnreadableImage
from cull.formats import SNIFF_BYTES, is_raw, sniff, tiff_data_beyond_end, tiff_holds_raw, tiff_ifds

log = logging.getLogger(__name__)

# Pixel limits, checked by cull itself after Image.open and before any pixel is decoded (Pillow's own
# check only raises above twice its global limit, and cull leaves that global alone).  A baseline
# JPEG is decoded DCT-scaled (1/8 at most), so a 400 MP panorama costs little; every other format
# (and progressive JPEG) is decoded in full, about 3-6 bytes per pixel plus the gray copy: a
# 100 MP RGB PNG peaks at about 0.6 GB per worker; 16-bit, float and alpha images at the limit
# about 1.4-1.65 GB (their conversion to gray makes full-size copies).
MAX_PIXELS_SCALED = 400_000_000
MAX_PIXELS_FULL = 100_000_000
MAX_PIXELS = MAX_PIXELS_SCALED  # the largest accepted anywhere (kept for callers)
# A progressive JPEG is decoded once per scan over every coefficient of the image: cameras and editors
# write about 10 scans, a crafted file thousands (3000 scans of 100 MP: 52 s in one worker).
MAX_JPEG_SCANS = 100
# MPO is how Pillow names a camera JPEG that carries a second, preview picture (CIPA multi-picture
# format), opened by its JPEG reader: a JPEG in every other respect (DCT scaling, limits).
JPEG_FORMATS = ("JPEG", "MPO")

try:  # HEIC only where pillow-heif is installed (the [heic] extra)
    from pillow_heif import register_heif_opener

    register_heif_opener()
    HEIF_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the environment
    HEIF_AVAILABLE = False

# The Pillow readers cull opens files with (AVIF where this Pillow has it, HEIF where pillow-heif
# registered it), JPEG first: a JPEG opens without loading Pillow's other plugins.  Any other reader is
# never tried: Pillow would hand a PostScript file named .jpg to Ghostscript.
PHOTO_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "GIF", "BMP") + (
    ("AVIF",) if importlib.util.find_spec("PIL.AvifImagePlugin") else ()) + (("HEIF",) if HEIF_AVAILABLE else ())

GrayImage = NDArray[np.float32]
GrayLevels = NDArray[np.uint8] | NDArray[np.float32]  # 8-bit levels, or float32 in [0, 1]
UNIT = np.float32(1.0 / 255.0)  # one 8-bit gray level in [0, 1]


def decode_gray(path: Path, long_side: int) -> GrayImage:
    """Return the photo as float32 gray in [0, 1], EXIF-oriented, long side <= ``long_side``.

    The file's content decides the decoder: a ``.nef`` that is really a JPEG is read as a JPEG.
    Raises UnreadableImage with a one-line reason for anything that is not a decodable photo.
    """
    return to_unit(decode_levels(path, long_side))


def decode_levels(path: Path, long_side: int) -> GrayLevels:
    """decode_gray without the conversion to float: 8-bit gray (0-255) as decoded, or float32 in [0, 1]
    for 16/32-bit sources; ``to_unit`` turns either into decode_gray's array, bit for bit.  Patch
    selection reads it as it is: no full-size float copy of the photo (6 MB at the analysis scale)."""
    path = Path(path)
    try:
        with _content_warnings_logged(path):
            image = open_reduced(path, long_side)
            return gray_levels(reduce_long_side(image, long_side, SCALE_TOLERANCE))
    except UnreadableImage:
        raise
    except MemoryError:
        raise UnreadableImage("not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error
        raise UnreadableImage(describe_decode_error(exc)) from exc


@contextmanager
def _content_warnings_logged(path: Path) -> Iterator[None]:
    """Pillow's warnings about a file's content ("Corrupt EXIF data ...") go to the debug log with the
    file's name instead of raw to the terminal (cull has no per-file warning channel; the photo is
    still judged).  Other warnings are shown as before."""
    with warnings.catch_warnings():
        warnings.filterwarnings("always", category=UserWarning, module=r"PIL\.")  # each file's own, not once
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            if issubclass(category, UserWarning):
                log.debug("%s: %s", path, message)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


HEIF_NEEDED = "HEIC/HEIF needs pillow-heif: pip install 'cull-focus[heic]'"


def open_reduced(path: Path, long_side: int) -> Image.Image:
    """Open any supported photo as a PIL image, decoded no larger than needed (not yet gray)."""
    if path.stat().st_size == 0:
        raise UnreadableImage("empty file (0 bytes)")
    with open(path, "rb") as fh:
        kind = sniff(fh.read(SNIFF_BYTES))
    if is_raw(path):
        if kind in ("jpeg", "png", "webp"):  # named like a RAW, but it is not one
            log.info("%s is a %s file despite its name; decoding it as such", path, kind.upper())
            return _open_raster(path, long_side, kind)
        try:
            return _open_raw(path, long_side)
        except DamagedRaw:
            raise  # its small TIFF thumbnail would be judged instead: "too little texture", no error
        except UnreadableImage:
            if kind is None or (kind == "tiff" and tiff_holds_raw(path)):
                raise  # a RAW's TIFF container: its first image is a preview, not the photo
            try:  # a TIFF/BMP/GIF container that LibRaw refuses may still be a plain image
                return _open_raster(path, long_side, kind)
            except Exception:  # noqa: BLE001 - report LibRaw's reason, the file claims to be RAW
                log.debug("not a plain %s either", kind, exc_info=True)
            raise
    if kind == "heif" and not HEIF_AVAILABLE:  # by content: a JPEG named .heic is read as a JPEG
        raise UnreadableImage(HEIF_NEEDED)
    if kind == "tiff" and tiff_holds_raw(path):  # a DNG, NEF ... under a raster name: its first image is only a preview
        log.info("%s holds camera RAW data despite its name; decoding it as RAW", path)
        return _open_raw(path, long_side)  # LibRaw's refusal stands: the first image is only a preview
    return _open_raster(path, long_side, kind)


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


def pixel_limit(image_format: str | None, progressive: bool = False) -> int:
    """How many pixels cull accepts for this format.  A baseline JPEG decodes DCT-scaled in a few
    rows of memory; a progressive one (or a baseline one whose colours come in separate scans) still
    holds every DCT coefficient (2 bytes per sample), so it gets the full-decode limit."""
    return MAX_PIXELS_SCALED if image_format in JPEG_FORMATS and not progressive else MAX_PIXELS_FULL


def check_pixels(image: Image.Image) -> JpegLayout | None:
    """Refuse an image whose declared size is over its format's limit, or a JPEG with more scans than
    MAX_JPEG_SCANS, before any pixel is decoded.  A JPEG's layout is returned (None: not a JPEG, or
    not parseable here)."""
    width, height = image.size
    fp = getattr(image, "fp", None)
    layout = jpeg_layout(fp) if image.format in JPEG_FORMATS and fp is not None else None
    if layout is None and image.format in JPEG_FORMATS and (image.info.get("progressive") or image.info.get("progression")):
        # unparsed here: Pillow's word, and every scan marker in the file (an EXIF thumbnail's end marker
        # would stop _count_scans early)
        layout = JpegLayout(True, True, _scans_anywhere(fp) if fp is not None else 0)
    buffered = layout is not None and layout.buffered
    kind = image.format or "this format"
    if buffered and layout is not None:
        kind = f"progressive {kind}" if layout.progressive else f"{kind} with colours in separate scans"
    check_size(width, height, pixel_limit(image.format, buffered), kind)
    if layout is not None and layout.scans > MAX_JPEG_SCANS:
        raise UnreadableImage(f"JPEG with {layout.scans} scans refused (each is decoded over the whole image; "
                              f"cameras and editors write about 10, cull accepts up to {MAX_JPEG_SCANS})")
    return layout


def check_size(width: int, height: int, limit: int, kind: str) -> None:
    """Refuse a picture of more than ``limit`` pixels, naming the ``kind`` of image the limit is for."""
    if width * height > limit:
        raise UnreadableImage(
            f"image too large to analyse safely ({width}x{height} = {width * height / 1e6:.0f} MP; "
            f"the limit for {kind} is {limit // 1_000_000} MP)"
        )


@dataclass(frozen=True)
class JpegLayout:
    """How a JPEG stream's scans are laid out: ``buffered`` when libjpeg must hold every coefficient
    (progressive, or a sequential frame whose first scan carries fewer components than the frame);
    ``scans`` of a progressive one counted from its first scan to its end marker (else 1);
    ``arithmetic`` for arithmetic-coded frames (SOF9-11, SOF13-15); ``data_start``: where the first
    scan's marker is (0 where unknown)."""

    progressive: bool
    buffered: bool
    scans: int
    arithmetic: bool = False
    data_start: int = 0


def jpeg_layout(fh: IO[bytes], chunk: int = 1 << 20) -> JpegLayout | None:
    """Read a JPEG's marker segments up to its first scan (skipping over APP data by seeking), and
    for a progressive one count its scans; the file position is restored.  None: not parseable
    here (Pillow's decoder will say why)."""
    try:
        saved = fh.tell()
    except (OSError, ValueError):
        return None
    try:
        fh.seek(0)
        if fh.read(2) != b"\xff\xd8":
            return None
        components = 0
        progressive = arithmetic = False
        for _ in range(10_000):  # marker segments before the first scan
            head = fh.read(4)
            if len(head) < 4:
                return None
            if head[0] != 0xFF:  # stray bytes between segments: libjpeg skips them to the next marker
                fh.seek(-3, os.SEEK_CUR)
                continue
            marker, length = head[1], int.from_bytes(head[2:4], "big")
            if marker == 0xFF:  # fill byte before a marker
                fh.seek(-3, os.SEEK_CUR)
                continue
            if length < 2:
                return None
            if marker in _SOF:
                frame = fh.read(length - 2)
                if len(frame) < 6:
                    return None
                components, progressive = frame[5], marker in (0xC2, 0xC6, 0xCA, 0xCE)
                arithmetic = marker in _ARITHMETIC_SOF
                continue
            if marker == 0xDA:
                first = fh.read(1)
                in_scan = first[0] if first else 0
                start = fh.tell() - 5
                if not progressive:
                    return JpegLayout(False, 0 < in_scan < components, 1, arithmetic, start)
                return JpegLayout(True, True, _count_scans(fh, start, chunk), arithmetic, start)
            fh.seek(length - 2, os.SEEK_CUR)
        return None
    except (OSError, ValueError):
        return None
    finally:
        fh.seek(saved)


def _scans_anywhere(fh: IO[bytes]) -> int:
    """Every scan marker in the file, the file position restored (0 where it cannot be read)."""
    try:
        saved = fh.tell()
        try:
            return _count_scans(fh, 0, stop_at_end=False)
        finally:
            fh.seek(saved)
    except (OSError, ValueError):
        return 0


def _count_scans(fh: IO[bytes], start: int, chunk: int = 1 << 20, stop_at_end: bool = True) -> int:
    """SOS markers from ``start`` (the first scan, past the APP segments) up to the first EOI: data
    after the image (a motion photo's video, an MPF preview) and APP payloads are not counted."""
    fh.seek(max(0, start))
    scans, tail = 0, b""
    while block := fh.read(chunk):
        data = tail + block
        end = data.find(b"\xff\xd9") if stop_at_end else -1
        scans += data[: end if end >= 0 else len(data)].count(b"\xff\xda")
        if end >= 0:
            break
        tail = data[-1:] if data[-1:] == b"\xff" else b""
    return scans


@contextmanager
def _own_pixel_check() -> Iterator[None]:
    """Open without Pillow's global bomb check (cull checks per format, see check_pixels)."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def open_checked(source: Path | IO[bytes], long_side: int | None, draft_mode: str = "L") -> Image.Image:
    """Image.open + cull's pixel limit (check_pixels) + a reduced decode (JPEG: DCT scaling towards
    ``long_side``, in ``draft_mode``; None: full size); the image is loaded.  Raises UnreadableImage
    for an image over the limit, Pillow's errors otherwise."""
    with _own_pixel_check():
        image = Image.open(source, formats=PHOTO_FORMATS)
        try:
            if image.format == "TIFF":
                _seek_main_page(image)
            layout = check_pixels(image)
            if layout is not None and image.fp is not None:
                refuse_unfinished_jpeg(image.fp, layout.data_start)
                if layout.arithmetic:
                    _decode_in_one_piece(image)
            if image.format in JPEG_FORMATS and long_side is not None:
                image.draft(draft_mode, draft_request(image.size, long_side))
            image.load()
        except BaseException:
            image.close()
            raise
    return image


def _decode_in_one_piece(image: ImageFile.ImageFile) -> None:
    """Hand libjpeg an arithmetic-coded JPEG in one block: its arithmetic decoder cannot suspend for more
    data, and Pillow feeds the decoder 64 KB at a time (a longer file read as a "broken data stream")."""
    fp = image.fp
    assert fp is not None
    saved = fp.tell()
    size = fp.seek(0, os.SEEK_END)
    fp.seek(saved)
    image.decodermaxblock = max(image.decodermaxblock, size)


ZERO_TAIL = 1024  # a JPEG ending in this many zero bytes is looked at for an end marker


def refuse_unfinished_jpeg(fh: IO[bytes], data_start: int) -> None:
    """Refuse a JPEG whose image data gives way to zero bytes before its end marker: a preallocated copy
    or download that stopped part-way.  libjpeg decodes the zeros as image data without a word (grey
    blocks, judged as the photo).  Only the file's last ZERO_TAIL bytes are read, unless all are zero;
    zeros after an end marker (padding) are fine.  The file position is restored."""
    saved = fh.tell()
    try:
        size = fh.seek(0, os.SEEK_END)
        zeros_from = _zero_run_start(fh, size)
        if size - zeros_from < ZERO_TAIL or _has_end_marker(fh, data_start, zeros_from):
            return
    finally:
        fh.seek(saved)
    raise UnreadableImage(f"incomplete file (its image data turns into zero bytes after {round(100 * zeros_from / size)} % "
                          "of the file: an unfinished copy or download)")


def _zero_run_start(fh: IO[bytes], end: int) -> int:
    """Where the run of zero bytes that ends the file at ``end`` begins (``end``: no such run)."""
    chunk = ZERO_TAIL
    while end > 0:
        start = max(0, end - chunk)
        fh.seek(start)
        kept = len(fh.read(end - start).rstrip(b"\0"))
        if kept:
            return start + kept
        end, chunk = start, 1 << 20
    return 0


def _has_end_marker(fh: IO[bytes], start: int, end: int, chunk: int = 1 << 20) -> bool:
    """Whether an end-of-image marker lies between ``start`` and ``end``, searched from the end (the
    entropy-coded data never holds one, so the first found is real)."""
    while end - start >= 2:
        low = max(start, end - chunk)
        fh.seek(low)
        if fh.read(end - low).rfind(b"\xff\xd9") >= 0:
            return True
        end = low + 1  # a marker split across the two reads
        if low == start:
            break
    return False


MAX_TIFF_PAGES = 64  # pages of a multi-page TIFF looked at for the photo


def _seek_main_page(image: Image.Image) -> None:
    """Go to a TIFF's photo: its largest page not marked as a reduced-resolution version (NewSubfileType
    bit 0) or a transparency mask (bit 2), among those Pillow can read; a file whose first page is a small
    preview is judged by the full image after it."""
    best, best_area = 0, -1
    for index in range(MAX_TIFF_PAGES):
        try:
            image.seek(index)
        except EOFError:
            break
        except Exception:  # noqa: BLE001 - a page Pillow cannot read (a mask, float16 ...) is not the photo
            log.debug("TIFF page %d skipped", index, exc_info=True)
            if index == 0:
                raise
            continue
        area = page_rank(index, int(image.tag_v2.get(254, 0) or 0), image.size)  # type: ignore[attr-defined]
        if area > best_area:
            best, best_area = index, area
    image.seek(best)


def page_rank(index: int, subfile_type: int, size: tuple[int, int]) -> int:
    """How a TIFF page ranks as the photo (the largest wins, the first of equals): its area; 0 for a
    reduced-resolution version (NewSubfileType bit 0), -1 for a transparency mask (bit 2) after page 0."""
    if subfile_type & 4 and index:
        return -1
    return size[0] * size[1] * (not subfile_type & 1)


def _open_raster(path: Path, long_side: int, kind: str | None) -> Image.Image:
    try:
        return _orient(open_checked(path, long_side))
    except (UnidentifiedImageError, ValueError):  # Pillow knows no mode for the layout, or no raw mode
        image = _open_tiff_layout(path) if kind == "tiff" else None
        if image is None:
            raise
    return image


# TIFF layouts Pillow has no mode for (float RGB as darktable and Photoshop export at 32 bits, float16,
# gray + alpha beyond 8 bits, 32-bit and signed RGB) are read with tifffile: gray and RGB, any sample type.
_TIFF_COLOURS = {0: "gray (white is zero)", 1: "gray", 2: "RGB", 3: "palette", 4: "mask", 5: "CMYK", 6: "YCbCr",
                 8: "CIELab", 32803: "CFA", 32844: "LogL", 32845: "LogLuv", 34892: "linear raw"}
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2 weights, as Pillow's convert("L")
_TIFF_ORIENTATION = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
                     5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                     8: Image.Transpose.ROTATE_90}  # as ImageOps.exif_transpose turns what Pillow reads


def _open_tiff_layout(path: Path) -> Image.Image | None:
    """A TIFF whose layout Pillow cannot read, through tifffile: its photo page (page_rank) as float
    gray in [0, 1] ('F'), upright, within cull's full-decode limit; None where tifffile cannot parse the
    file either.  UnreadableImage naming the layout where cull cannot read it."""
    import tifffile

    logging.getLogger("tifffile").setLevel(logging.CRITICAL)  # its complaints about odd tags
    try:
        tif = tifffile.TiffFile(path)
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads either: Pillow's reason stands
        log.debug("tifffile cannot parse %s", path, exc_info=True)
        return None
    with tif:
        page = _tiff_photo_page(tif)
        if page is None:
            return None
        layout = tiff_layout(page)
        readable = page.photometric in (1, 2) and page.axes in ("YX", "YXS", "SYX") and _sample_kind(page) in ("u", "i", "f")
        if not readable:  # gray and RGB only (Pillow reads CMYK, YCbCr, palette ... where it can)
            raise UnreadableImage(f"TIFF layout cull cannot read ({layout})")
        check_size(page.imagewidth, page.imagelength, MAX_PIXELS_FULL, f"{layout} TIFF")
        turn = _TIFF_ORIENTATION.get(int(page.tags.valueof(274, 1) or 1))
        gray = tiff_gray(_tiff_planes(page, layout), page.photometric == 2, tuple(int(e) for e in page.extrasamples))
    image = Image.fromarray(gray, mode="F")
    return image.transpose(turn) if turn is not None else image


def _tiff_photo_page(tif: Any) -> Any:
    """The page of a TiffFile that is the photo, by page_rank among the first MAX_TIFF_PAGES."""
    best, best_rank = None, -1
    try:
        for index, page in enumerate(tif.pages):
            if index >= MAX_TIFF_PAGES:
                break
            rank = page_rank(index, int(page.subfiletype), (page.imagewidth, page.imagelength))
            if rank > best_rank:
                best, best_rank = page, rank
    except Exception:  # noqa: BLE001 - a broken IFD chain: the pages before it
        log.debug("TIFF pages after a broken one skipped", exc_info=True)
    return best


def tiff_layout(page: Any) -> str:
    """A TIFF page's layout in words: "32-bit float RGB", "16-bit gray + alpha" ..."""
    kind = {"f": " float", "i": " signed"}.get(_sample_kind(page), "")
    colour = _TIFF_COLOURS.get(int(page.photometric), f"photometric {int(page.photometric)}")
    extras = tuple(int(e) for e in page.extrasamples)
    extra = " + alpha" if extras[:1] in ((1,), (2,)) else f" + {len(extras)} extra samples" if extras else ""
    return f"{page.bitspersample}-bit{kind} {colour}{extra}"


def _sample_kind(page: Any) -> str:
    """A TIFF page's sample type as numpy's kind ("u", "i", "f" ...; "" where tifffile has no dtype for it)."""
    return page.dtype.kind if page.dtype is not None else ""


def _tiff_planes(page: Any, layout: str) -> list[NDArray[Any]]:
    """A TIFF page's sample planes (gray or R, G, B, then any extra samples), decoded by tifffile;
    UnreadableImage where it cannot."""
    try:
        samples = page.asarray()
        if page.axes == "YX":
            return [samples]
        return list(samples if page.axes == "SYX" else np.moveaxis(samples, -1, 0))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many types for odd or broken data
        if "imagecodecs" in str(exc):  # LZW, JPEG, floating-point predictor ...: not in tifffile itself
            coding = f"{page.compression.name} compression"
            if page.predictor > 1:
                coding += f", {page.predictor.name} predictor"
            raise UnreadableImage(f"cannot decode this {layout} TIFF ({coding}) without the imagecodecs package: "
                                  "pip install imagecodecs") from None
        raise UnreadableImage(f"cannot decode this {layout} TIFF: {exc}") from None


def tiff_gray(planes: list[NDArray[Any]], rgb: bool, extra_samples: tuple[int, ...]) -> NDArray[np.float32]:
    """Sample planes (gray or R, G, B, then any extra samples) -> float32 gray in [0, 1], scaled as
    flatten scales float and integer gray; an alpha plane lays the picture over mid-gray as Pillow's
    RGBA and LA are (associated alpha: already multiplied in).  ``planes`` is emptied once read, so
    that the samples are freed before the gray is scaled."""
    colours = 3 if rgb else 1
    floating = planes[0].dtype.kind == "f"
    gray = _luminance(planes[:colours])
    alpha = _opacity(planes[colours]) if extra_samples[:1] in ((1,), (2,)) else None
    planes.clear()
    levels = float_levels(gray) if floating else int_levels(gray)
    if alpha is not None:
        if extra_samples[0] == 2:
            levels *= alpha
        levels += np.float32(128.0) * (1 - alpha)
    return np.multiply(levels, UNIT, dtype=np.float32)


def _luminance(colours: list[NDArray[Any]], strip: int = 1024) -> NDArray[np.float32]:
    """Gray, or R, G and B weighted as Pillow's convert("L") weighs them, in float32 and in the samples'
    own units; in strips of rows, with no full-size temporary per colour."""
    weights: tuple[float, ...] = _LUMA if len(colours) == 3 else (1.0,)
    gray = np.zeros(colours[0].shape, np.float32)
    for top in range(0, len(gray), strip):
        for plane, weight in zip(colours, weights):
            gray[top:top + strip] += np.multiply(plane[top:top + strip], np.float32(weight), dtype=np.float32)
    return gray


def _opacity(plane: NDArray[Any]) -> NDArray[np.float32]:
    """An alpha plane as opacity in [0, 1] (integer: its type's maximum is opaque; float: 1.0)."""
    opaque = 1.0 if plane.dtype.kind == "f" else float(np.iinfo(plane.dtype).max)
    return np.clip(np.multiply(plane, np.float32(1.0 / opaque), dtype=np.float32), 0, 1)


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


# LibRaw's sizes.flip: 3 = upside down, 5 = turn 90 degrees counter-clockwise, 6 = clockwise to view.
_RAW_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


class DamagedRaw(UnreadableImage):
    """A RAW file LibRaw found truncated or corrupt: not to be replaced by a thumbnail beside its data."""


def _open_raw(path: Path, long_side: int) -> Image.Image:
    failure: UnreadableImage | None = None
    with _c_stderr_captured() as said:
        try:
            image = _read_raw(path, long_side)
        except UnreadableImage as exc:
            failure = exc
    damage = next((line for line in said[0].splitlines() if any(m in line for m in LIBRAW_DAMAGE)), None)
    if damage is not None:  # LibRaw refuses a truncated file, or reads on past corrupt data filling in zeros
        raise DamagedRaw(f"damaged or truncated RAW file (LibRaw: {damage.rsplit(': ', 1)[-1].strip()})")
    if failure is not None:
        raise failure
    return image


LIBRAW_DAMAGE = ("Unexpected end of file", "Corrupt data")  # what LibRaw prints (to stderr) for a damaged file


@contextmanager
def _c_stderr_captured() -> Iterator[list[str]]:
    """Collect what C code writes to file descriptor 2 while the block runs (LibRaw reports a damaged
    file there, and only there); the list holds it once the block has ended.  Nothing reaches the
    terminal unformatted."""
    said: list[str] = [""]
    with _STDERR_LOCK:  # one redirection at a time: threads (cull review) would restore each other's
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no usable descriptor 2: nothing to capture
            yield said
            return
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield said
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                sink.seek(0)
                said[0] = sink.read(1 << 16).decode("utf-8", "replace")


_STDERR_LOCK = threading.Lock()


def _read_raw(path: Path, long_side: int) -> Image.Image:
    import rawpy  # imported lazily: LibRaw is only needed for RAW files

    try:
        with rawpy.imread(str(path)) as raw:
            sensor_long = max(raw.sizes.width, raw.sizes.height)
            need = min(long_side, sensor_long // 2)
            preview = tiff_preview(path, long_side, need)
            if preview is None:
                preview = _raw_preview(raw, long_side)
            if preview is not None and max(preview.size) >= need:
                if tiff_data_beyond_end(path):  # the preview survived, the sensor data was cut off
                    raise DamagedRaw("damaged or truncated RAW file (its image data ends early)")
                transpose = _RAW_FLIP.get(raw.sizes.flip)
                return preview.transpose(transpose) if transpose is not None else preview
            if raw.sizes.width * raw.sizes.height > MAX_PIXELS_SCALED * 4:  # half size: a quarter of it
                raise UnreadableImage(f"RAW sensor too large to demosaic safely ({raw.sizes.width}x{raw.sizes.height})")
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
            return Image.fromarray(np.array(rgb, copy=True))
    except rawpy.LibRawError as exc:
        raise UnreadableImage(describe_libraw_error(exc, path)) from None


def describe_libraw_error(exc: BaseException, path: Path) -> str:
    """Why LibRaw refused a file, in words (LibRaw's own texts are terse: "Input/output error")."""
    import rawpy

    detail = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    ext = path.suffix.upper().lstrip(".") or "RAW"
    if isinstance(exc, (rawpy.LibRawFileUnsupportedError, rawpy.LibRawIOError)):
        preview = embedded_jpeg_size(path)
        if preview is not None:  # a camera RAW LibRaw does not know (a new model or a pruned file)
            version = ".".join(map(str, rawpy.libraw_version))
            return (f"LibRaw {version} cannot open this {ext} file (a variant it does not support, or corrupt), "
                    f"although it holds a {preview[0]}x{preview[1]} JPEG preview; cull reads RAW previews through LibRaw")
        return "not a RAW file LibRaw can read (unsupported or corrupt)"
    if isinstance(exc, rawpy.LibRawDataError):
        return f"the {ext} file's image data is corrupt or truncated (LibRaw: {detail})"
    if isinstance(exc, (rawpy.LibRawTooBigError, rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError)):
        return f"the {ext} file is too large for LibRaw to decode here ({detail})"
    return f"LibRaw cannot read this {ext} file ({type(exc).__name__}: {detail})"


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_DECODABLE_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended and progressive Huffman: what libjpeg decodes
_ARITHMETIC_SOF = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # SOF9-11, SOF13-15: arithmetic-coded frames


def jpeg_frame(data: bytes, start: int = 0) -> tuple[int, int, int] | None:
    """(SOF marker, width, height) of the JPEG stream starting at ``start`` (its SOI), from the
    marker segments before the frame header; None when ``data`` holds no such header there."""
    if data[start:start + 3] != b"\xff\xd8\xff":
        return None
    pos = start + 2
    while pos + 9 <= len(data) and data[pos] == 0xFF:
        marker, length = data[pos + 1], int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker in _SOF:
            height, width = int.from_bytes(data[pos + 5:pos + 7], "big"), int.from_bytes(data[pos + 7:pos + 9], "big")
            return (marker, width, height) if width and height else None
        if length < 2 or marker == 0xDA:
            return None
        pos += 2 + length
    return None


def embedded_jpeg_size(path: Path, limit: int = 64 << 20) -> tuple[int, int] | None:
    """(width, height) of the largest JPEG embedded in the first ``limit`` bytes of a file, from the
    frame headers only; None when there is none (for error messages: nothing is decoded)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit)
    except OSError:
        return None
    best: tuple[int, int] | None = None
    start = data.find(b"\xff\xd8\xff")
    for _ in range(256):  # candidates
        if start < 0:
            break
        frame = jpeg_frame(data, start)
        if frame is not None and (best is None or frame[1] * frame[2] > best[0] * best[1]):
            best = frame[1], frame[2]
        start = data.find(b"\xff\xd8\xff", start + 3)
    return best


def tiff_preview(path: Path, long_side: int | None, need: int = 0, draft_mode: str = "L") -> Image.Image | None:
    """The largest baseline JPEG preview that a TIFF-based RAW (DNG, NEF, CR2, ARW, PEF, ...) names
    in its IFDs or SubIFDs, read straight from the file (no copy through LibRaw, whose
    extract_thumb() costs about as much as decoding the preview at 1/4 scale).  None when the
    container is not TIFF-like or names no such JPEG with a long side of at least ``need`` (judged
    from its frame header, before decoding): the caller falls back to LibRaw."""
    try:
        with open(path, "rb") as fh:
            with tiff_ifds(fh, path.name) as ifds:
                spans = _jpeg_spans(ifds or [])
            best: tuple[int, int, int, int] | None = None  # (pixels, offset, length, long side)
            for offset, length in spans:
                fh.seek(offset)
                frame = jpeg_frame(fh.read(65536))
                if frame is not None and frame[0] in _DECODABLE_SOF and (best is None or frame[1] * frame[2] > best[0]):
                    best = frame[1] * frame[2], offset, length, max(frame[1], frame[2])
            if best is None or best[3] < need:
                return None
            return open_checked(FileWindow(fh, best[1], best[2]), long_side, draft_mode)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - an odd container or a broken preview: LibRaw's way decides
        log.debug("no TIFF-named JPEG preview in %s", path, exc_info=True)
        return None


class FileWindow(io.RawIOBase):
    """``length`` bytes of an open file from ``start``, as a file of their own (no copy): Pillow
    decodes an embedded JPEG straight from the RAW file."""

    def __init__(self, fh: IO[bytes], start: int, length: int) -> None:
        super().__init__()
        self._fh, self._start, self._length = fh, start, length
        fh.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._fh.tell() - self._start

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: self._length}[whence]
        self._fh.seek(self._start + max(0, base + offset))
        return self.tell()

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        left = max(0, self._length - self.tell())
        view = memoryview(buffer)[: min(len(buffer), left)]
        return self._fh.readinto(view) if len(view) else 0  # type: ignore[attr-defined]


def _jpeg_spans(ifds: list[Any]) -> list[tuple[int, int]]:
    """(offset, length) of every single-strip JPEG and JPEGInterchangeFormat stream in the IFDs."""
    spans = []
    for ifd in ifds:
        tags = ifd.tags
        if 513 in tags and 514 in tags:  # JPEGInterchangeFormat, ...Length
            spans.append((_first(tags[513].value), _first(tags[514].value)))
        if int(ifd.compression) in (6, 7) and len(ifd.dataoffsets) == 1 and ifd.databytecounts[0] > 0:
            spans.append((int(ifd.dataoffsets[0]), int(ifd.databytecounts[0])))
    return spans


def _first(value: object) -> int:
    """A TIFF tag's single number (tifffile gives a tuple for some counts and types)."""
    number = value[0] if isinstance(value, (tuple, list)) else value
    return int(number)  # type: ignore[arg-type]


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
            return open_checked(io.BytesIO(thumb.data), long_side)
        if thumb.format == rawpy.ThumbFormat.BITMAP:
            return Image.fromarray(np.array(thumb.data, copy=True))
    except Exception:  # noqa: BLE001 - a broken preview falls back to demosaicing
        log.debug("unusable embedded preview", exc_info=True)
    return None


SCALE_TOLERANCE = 1.1  # DCT scaling landing within 10 % of the analysis scale is used as is


def reduce_long_side(image: Image.Image, long_side: int, tolerance: float = 1.0) -> Image.Image:
    """Shrink (never enlarge) so that max(width, height) <= long_side * tolerance, antialiased."""
    image = flatten(image)
    width, height = image.size
    if max(width, height) <= long_side * tolerance:
        return image
    scale = long_side / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def flatten(image: Image.Image) -> Image.Image:
    """Any PIL mode -> 'L' (8-bit gray) or 'F' (float gray, for 16/32-bit sources)."""
    mode = image.mode
    if mode == "L":
        return image
    if mode == "F":
        return Image.fromarray(float_levels(np.asarray(image, dtype=np.float32)), mode="F")
    if mode.startswith("I"):  # I, I;16, I;16B, I;16L ...
        return Image.fromarray(int_levels(np.asarray(image, dtype=np.float32)), mode="F")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("L")


def float_levels(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """Float gray -> 0..255 (float32).  Usually 0..1 (scientific / HDR TIFF); 0..255 or 0..65535 also seen."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    top = float(values.max(initial=0.0))
    peak = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0 if top <= 65535.0 else top
    return np.clip(values * np.float32(255.0 / peak), 0, 255).astype(np.float32)


def int_levels(values: NDArray[np.float32]) -> NDArray[np.float32]:
    """Integer gray (as float32) -> 0..255 (float32), by the sensor's bit depth, not the container's:
    10-, 12- and 14-bit data (microscopy, astronomy, machine vision) stored in 16-bit files came out nearly
    black, every tile under dark_mean.  Signed data is shifted to start at 0; beyond 16 bits the image's
    own maximum is white."""
    low = float(values.min(initial=0.0))
    if low < 0:
        values = values - np.float32(low)
    top = float(values.max(initial=0.0))
    peak = next((2.0**bits - 1 for bits in (8, 10, 12, 14, 16) if top <= 2.0**bits - 1), top)
    return np.clip(values * np.float32(255.0 / peak), 0, 255).astype(np.float32)


def to_gray_array(image: Image.Image) -> GrayImage:
    """8-bit ('L') or float ('F', 0-255) gray -> float32 in [0, 1], converted and scaled in one pass."""
    return to_unit(gray_levels(image))


def gray_levels(image: Image.Image) -> GrayLevels:
    """8-bit ('L') gray -> its uint8 levels as they are; float ('F', 0-255) -> float32 in [0, 1]."""
    pixels = gray_pixels(image)
    if pixels.ndim != 2:
        raise UnreadableImage(f"unexpected image layout {pixels.shape}")
    return pixels if pixels.dtype == np.uint8 else np.multiply(pixels, UNIT, dtype=np.float32)


class _ArrowSchema(ctypes.Structure):
    _fields_ = [("format", ctypes.c_char_p), ("name", ctypes.c_char_p), ("metadata", ctypes.c_char_p),
                ("flags", ctypes.c_int64), ("n_children", ctypes.c_int64)]  # the rest is not read


class _ArrowArray(ctypes.Structure):
    _fields_ = [("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
                ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64), ("buffers", ctypes.POINTER(ctypes.c_void_p))]


_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype = ctypes.c_void_p
_capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
_ARROW_GRAY: dict[str, tuple[bytes, np.dtype[Any]]] = {  # mode -> Arrow format, dtype
    "L": (b"C", np.dtype(np.uint8)), "F": (b"f", np.dtype(np.float32))}
# Pillow 11.2-12.x export an image mapped over a buffer (Image.fromarray, an uncompressed TIFF or BMP it
# maps from disk) or an empty one through a NULL block pointer (a crash), and the unaligned block start
# where PILLOW_ALIGNMENT pads rows (wrong pixels); 13 exports the aligned rows or refuses.
ARROW_EXPORT_SAFE = int(PILLOW_VERSION.split(".")[0]) >= 13


def gray_pixels(image: Image.Image) -> NDArray[Any]:
    """np.asarray(image) for an 'L' or 'F' image, copied straight from the image's memory through the
    Arrow C data interface Pillow exports (11.2+): np.asarray goes through tobytes, which packs line by
    line (1.7 ms for a 1500x1000 photo, against 0.05 ms).  The same array, bit for bit; np.asarray
    where the export is missing, unsafe (Pillow before 13: ARROW_EXPORT_SAFE) or not one plain block
    (other modes, a huge image), and for an empty image."""
    wanted = _ARROW_GRAY.get(image.mode)
    export = getattr(image, "__arrow_c_array__", None)
    if wanted is None or export is None or not ARROW_EXPORT_SAFE or 0 in image.size:
        return np.asarray(image)
    try:
        schema_capsule, array_capsule = export()
    except ValueError:  # "Image rows are not contiguous in memory": several blocks
        return np.asarray(image)
    schema = _ArrowSchema.from_address(_capsule_pointer(schema_capsule, b"arrow_schema"))
    array = _ArrowArray.from_address(_capsule_pointer(array_capsule, b"arrow_array"))
    width, height = image.size
    fmt, dtype = wanted
    if (schema.format != fmt or schema.n_children or array.n_children or array.n_buffers != 2 or array.offset
            or array.null_count or array.length != width * height or not array.buffers[1]):
        return np.asarray(image)
    data = (ctypes.c_char * (width * height * dtype.itemsize)).from_address(array.buffers[1])
    pixels = np.frombuffer(memoryview(data), dtype).reshape(height, width).copy()  # the capsules (and memory) live to here
    del schema_capsule, array_capsule  # their destructors release the export
    return pixels


def to_unit(levels: NDArray[Any], out: NDArray[np.floating] | None = None) -> GrayImage:
    """Gray levels (gray_levels) -> float32 in [0, 1], or into ``out`` if given.  8-bit levels are scaled
    by 1/255 in float32, one rounding that every path shares, so a photo's patches are the same numbers
    whether it was converted whole or strip by strip; float levels are already in [0, 1] (copied)."""
    if levels.dtype == np.uint8:
        return np.multiply(levels, UNIT, out=out, dtype=np.float32)
    if out is None:
        return levels.astype(np.float32, copy=False)
    np.copyto(out, levels)
    return out

