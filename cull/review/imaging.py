"""Pictures for the review page: colour thumbnails, the focus heat map and 100 % crops.

The score cache keeps scores, not patch positions, so a photo's detail is computed when it is
first asked for: the same reduced decode and patch selection as ``cull scan`` (``cull.decode``,
``cull.patches``), every selected patch scored with the card's model, then the crops of the
sharpest and softest scored patches cut from a full-resolution decode, pixel for pixel.
"""

from __future__ import annotations

import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from cull.analyse import score_every_patch
from cull.card import ModelCard
from cull.decode import HEIF_AVAILABLE, decode_gray, describe_decode_error, open_checked, tiff_preview
from cull.errors import UnreadableImage
from cull.formats import HEIF_EXTENSIONS, SNIFF_BYTES, is_raw, sniff, tiff_holds_raw
from cull.patches import select_patches
from cull.score import Scorer

log = logging.getLogger(__name__)

THUMB_SIDE = 360
CROP_MIN = 256  # a crop shows at least this many pixels a side (more when the patch covers more)


def open_color(path: Path, long_side: int | None, judged_side: int | None = None) -> Image.Image:
    """The photo in RGB, EXIF-oriented; reduced cheaply towards ``long_side`` (None: full size).

    The decoder is chosen by content, as ``cull scan`` chooses it (a JPEG named .NEF is a JPEG, a DNG
    named .tif a RAW).  JPEG uses DCT scaling, RAW its embedded preview where the scan judged that
    preview: one of at least ``judged_side`` (the analysis scale; default ``long_side``) or half the
    sensor, else a demosaic, so the detail shows the picture that was judged (a 1:1 preview is a crop
    of the 4:3 sensor).  The result may still be larger than ``long_side``. Raises UnreadableImage."""
    try:
        if _is_raw_content(path):
            image = _open_raw_color(path, long_side, judged_side or long_side)
        else:
            if path.suffix.lower() in HEIF_EXTENSIONS and not HEIF_AVAILABLE:
                raise UnreadableImage("HEIC/HEIF needs pillow-heif: pip install 'cull-focus[heic]'")
            image = open_checked(path, long_side, draft_mode="RGB")  # cull's per-format pixel limit
            image = ImageOps.exif_transpose(image) or image
        return image if image.mode == "RGB" else image.convert("RGB")
    except UnreadableImage:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a per-file error
        raise UnreadableImage(describe_decode_error(exc)) from exc


def _is_raw_content(path: Path) -> bool:
    """Whether a scan decodes ``path`` as camera RAW (cull.decode.open_reduced): a RAW name whose content
    is no JPEG, PNG or WebP, or a TIFF holding RAW data under any name."""
    with open(path, "rb") as fh:
        kind = sniff(fh.read(SNIFF_BYTES))
    if is_raw(path):
        return kind not in ("jpeg", "png", "webp")
    return kind == "tiff" and tiff_holds_raw(path)


_RAW_FLIP = {3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}


def _open_raw_color(path: Path, long_side: int | None, judged_side: int | None) -> Image.Image:
    import rawpy

    with rawpy.imread(str(path)) as raw:
        sensor_long = max(raw.sizes.width, raw.sizes.height)
        need = sensor_long // 2 if judged_side is None else min(judged_side, sensor_long // 2)
        preview = tiff_preview(path, long_side, need, draft_mode="RGB")  # the one a scan reads first
        if preview is not None:
            transpose = _RAW_FLIP.get(raw.sizes.flip)
            return preview.transpose(transpose) if transpose is not None else preview
        try:
            thumb = raw.extract_thumb()
            if thumb.format == rawpy.ThumbFormat.JPEG:
                with Image.open(io.BytesIO(bytes(thumb.data)), formats=["JPEG"]) as header:
                    size = header.size
                if max(size) >= need:
                    preview = open_checked(io.BytesIO(bytes(thumb.data)), long_side, draft_mode="RGB")
                    transpose = _RAW_FLIP.get(raw.sizes.flip)
                    return preview.transpose(transpose) if transpose is not None else preview
        except rawpy.LibRawError:
            pass
        rgb = raw.postprocess(half_size=long_side is not None, use_camera_wb=True, output_bps=8)
        return Image.fromarray(np.array(rgb, copy=True))


def encode(image: Image.Image, fmt: str = "JPEG", quality: int = 85) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, "JPEG", quality=quality, optimize=False)
    else:
        image.save(buffer, fmt)
    return buffer.getvalue()


def thumbnail(path: Path, side: int = THUMB_SIDE) -> bytes:
    """A JPEG thumbnail, long side at most ``side``. Raises UnreadableImage."""
    image = open_color(path, side)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    return encode(image, quality=80)


def heat_colour(p: float) -> tuple[int, int, int]:
    """P(in focus) -> red (soft) through amber to green (sharp)."""
    p = float(min(1.0, max(0.0, p)))
    if p < 0.5:
        return 220, int(60 + 300 * p), 40
    return int(220 - 380 * (p - 0.5)), 210, int(40 + 60 * (p - 0.5))


@dataclass(frozen=True)
class Crop:
    which: str  # sharpest | softest
    score: float
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the full-resolution photo
    png: bytes


@dataclass(frozen=True)
class Detail:
    """A photo's focus evidence: view image and overlay share one size (the analysis scale)."""

    width: int
    height: int
    full_size: tuple[int, int]
    view_jpeg: bytes
    overlay_png: bytes
    crops: tuple[Crop, ...]
    scores: tuple[float, ...]
    patch: int


def overlay(shape: tuple[int, int], origins: NDArray[np.int32], scores: NDArray[np.float32], size: int) -> Image.Image:
    """RGBA heat map: each scored patch a translucent square in its colour, the rest transparent; where
    patches overlap (a card with a tile stride below the patch size) the sharper one is drawn on top."""
    layer = np.zeros((shape[0], shape[1], 4), np.uint8)
    for index in np.argsort(scores, kind="stable"):
        (y, x), p = origins[index], scores[index]
        r, g, b = heat_colour(float(p))
        layer[y : y + size, x : x + size] = (r, g, b, 120)
        layer[y : y + size, x, 3] = layer[y : y + size, x + size - 1, 3] = 230  # outline
        layer[y, x : x + size, 3] = layer[y + size - 1, x : x + size, 3] = 230
    return Image.fromarray(layer, "RGBA")


def crop_box(origin: tuple[int, int], patch: int, scale: tuple[float, float], full: tuple[int, int]) -> tuple[int, int, int, int]:
    """The full-resolution box around a patch at analysis ``origin`` (y, x): the patch's own area,
    at least CROP_MIN a side, centred on it, inside the photo."""
    sx, sy = scale
    cx, cy = (origin[1] + patch / 2) * sx, (origin[0] + patch / 2) * sy
    width = min(full[0], max(CROP_MIN, round(patch * sx)))
    height = min(full[1], max(CROP_MIN, round(patch * sy)))
    left = int(min(max(0, round(cx - width / 2)), full[0] - width))
    top = int(min(max(0, round(cy - height / 2)), full[1] - height))
    return left, top, left + width, top + height


def compute_detail(path: Path, card: ModelCard, scorer: Scorer) -> Detail:
    """Decode, select and score patches, build the heat map and crops. Raises UnreadableImage."""
    spec = card.analysis
    gray = decode_gray(path, spec.long_side)
    height, width = gray.shape
    patches = select_patches(gray, spec)
    sharp = score_every_patch(patches.pixels, scorer).sharp
    full = open_color(path, None, judged_side=spec.long_side)  # the picture the scan judged, at full size
    view = full.resize((width, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    scale = (full.width / width, full.height / height)
    crops: list[Crop] = []
    if len(sharp):
        order = np.argsort(-sharp, kind="stable")
        picks = [("sharpest", int(order[0]))]
        if len(sharp) > 1:
            picks.append(("softest", int(order[-1])))
        for which, index in picks:
            y, x = (int(v) for v in patches.origins[index])
            box = crop_box((y, x), spec.patch_size, scale, full.size)
            crops.append(Crop(which, float(sharp[index]), box, encode(full.crop(box), "PNG")))
    layer = overlay((height, width), patches.origins, sharp, spec.patch_size)
    _outline_crops(layer, [c.box for c in crops], scale)
    return Detail(width, height, full.size, encode(view, quality=88), encode(layer, "PNG"), tuple(crops),
                  tuple(round(float(s), 3) for s in sharp), spec.patch_size)


def _outline_crops(layer: Image.Image, boxes: list[tuple[int, int, int, int]], scale: tuple[float, float]) -> None:
    """Mark where the crops come from: a white frame per crop box, in analysis coordinates."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(layer)
    for left, top, right, bottom in boxes:
        draw.rectangle((left / scale[0], top / scale[1], right / scale[0] - 1, bottom / scale[1] - 1),
                       outline=(255, 255, 255, 255), width=2)


class LruCache:
    """A small thread-safe memory cache of computed pictures (per item id)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[object, object] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[object, threading.Lock] = {}

    def get_or_build(self, key: object, build: Callable[[], object]) -> object:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            lock = self._building.setdefault(key, threading.Lock())
        with lock:  # one build per key, even when the page asks twice at once
            with self._lock:
                if key in self._data:
                    return self._data[key]
            value = build()
            with self._lock:
                self._data[key] = value
                self._building.pop(key, None)
                while len(self._data) > self.capacity:
                    self._data.popitem(last=False)
            return value
