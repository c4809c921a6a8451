"""Bursts: group the frames of one moment and rank them by how sharp the *same* scene content is.

Pure functions on what the analysis already computed, so grouping and ranking cost no decoding:

- a **signature** per photo: its analysis-scale gray image shrunk to a small, contrast-normalised
  thumbnail (insensitive to blur, so a soft and a sharp frame of one scene still look alike);
- the **patch map** per photo: where its scored patches lie (analysis-scale origins) and their scores.

Grouping: frames of the same camera whose capture times lie within ``gap`` seconds and whose
signatures match (normalised correlation after the best small shift) form a burst; a frame joins the
most similar open burst, so interleaved scenes stay apart and a burst never spans two scenes.

Ranking: every frame is aligned to the burst's reference frame (phase correlation of signatures),
its patches are mapped to the reference's tile grid, and frames are compared on the tiles that all of
them scored: the same places of the same scene. Ties go to the frame with the larger share of its
scene in focus. Ranking never rejects anything by itself (see ``soften_verdicts``).
"""

from __future__ import annotations

import hashlib
import json
import functools
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from cull.capture import CAPTURE_VERSION

SIGNATURE_SIDE = 96  # long side of the signature thumbnail, pixels
MAX_SHIFT = 0.2  # largest camera shift between frames of one burst, as a share of the image
DEFAULT_GAP = 2.0  # seconds between consecutive frames of one burst
MIN_SIMILARITY = 0.5  # normalised correlation of aligned signatures for "the same scene"
# Frames timed by their file's modification time (no EXIF capture time: exports, scans, web images)
# have a weak time gate: a folder copied at once shares one time.  Unrelated photos of the shared set
# reach 0.78 (6945 pairs; 1.6 % of them 0.5 or more), shifted and blurred frames of one scene 0.85+.
MIN_SIMILARITY_MTIME = 0.8
WEAK_TIMES = ("mtime", "modified")  # times that say when a file was written, not when the frame was taken
MAX_OPEN_BURSTS = 8  # a frame is compared with the bursts most recently extended (interleaved scenes)
TIE = 0.02  # common-region scores closer than this are a tie (broken by the share in focus)
CLEARLY_SOFTER = 0.15  # --keep-best: this much below the best frame's common score means "softer"
SHARP_REGION = 0.9  # --keep-best: a shared region where a frame scores this and the best frame clearly less
# --keep-best demotes a frame only when it and the best kept frame look alike at least this much: the
# grouping's 0.5 lets unrelated photos of one size through (1-8 % of pairs on four photo sets, a horizon
# landscape against another up to 0.86, a mesa against a fence 0.86); frames of one scene shifted by 1-6 %
# and blurred by 0.7-3 px reach 0.85-0.99 (5th percentile 0.92, 32 photos of urban100 and kodak24).
# A pair under it stays as it was: in-focus priority.
DEMOTE_SIMILARITY = 0.9
SOFTER_REASON = "a sharper frame exists in this burst"


@dataclass(frozen=True)
class Footprint:
    """What the analysis of one photo leaves for the burst stages (cached with its score).

    ``signature`` is stored as int8 (signature × 32), ``origins``/``scores`` cover every selected
    patch (a scan with bursts scores them all, no early exit), capture data comes from EXIF.
    """

    camera: str | None
    time: float | None
    time_source: str
    signature: NDArray[np.int8]
    scale: float
    origins: NDArray[np.int32]
    scores: NDArray[np.float32]
    patch_size: int = 64
    ctime_ns: int | None = None  # the file's status-change time when the capture data was read (None: unknown)
    capture_version: int = CAPTURE_VERSION  # how the capture data was read (cull.capture.CAPTURE_VERSION)

    def to_bytes(self) -> bytes:
        header = json.dumps({
            "camera": self.camera, "time": self.time, "time_source": self.time_source, "scale": self.scale,
            "shape": list(self.signature.shape), "n": int(len(self.scores)), "patch": self.patch_size,
            "ctime_ns": self.ctime_ns, "capture": self.capture_version,
        }).encode()
        return b"".join([
            struct.pack("<I", len(header)), header, self.signature.astype(np.int8).tobytes(),
            self.origins.astype("<i4").tobytes(), self.scores.astype("<f4").tobytes(),
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> Footprint:
        """Raises ValueError for data that is not a footprint."""
        try:
            (length,) = struct.unpack_from("<I", data)
            header = json.loads(data[4 : 4 + length])
            at = 4 + length
            shape, n = tuple(header["shape"]), int(header["n"])
            size = int(np.prod(shape))
            signature = np.frombuffer(data, np.int8, size, at).reshape(shape)
            origins = np.frombuffer(data, "<i4", 2 * n, at + size).reshape(n, 2).astype(np.int32)
            scores = np.frombuffer(data, "<f4", n, at + size + 8 * n).astype(np.float32)
            return cls(header["camera"], header["time"], header["time_source"], signature, float(header["scale"]),
                       origins, scores, int(header["patch"]), header.get("ctime_ns"), int(header.get("capture", 1)))
        except (struct.error, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a burst footprint: {exc}") from None


def footprint(gray: NDArray[np.float32], origins: NDArray[np.int32], scores: NDArray[np.float32],
              capture: tuple[str | None, float | None, str], patch_size: int) -> Footprint:
    """A photo's footprint from its analysis-scale gray image, scored patches and capture data."""
    sig, scale = signature(gray)
    quantised = np.clip(np.round(sig * 32.0), -127, 127).astype(np.int8)
    camera, time, source = capture
    return Footprint(camera, time, source, quantised, scale, origins.astype(np.int32), scores.astype(np.float32), patch_size)


def frame(key: str | Path, print_: Footprint) -> Frame:
    """The Frame of photo ``key`` for grouping and ranking."""
    return Frame(str(key), print_.camera, print_.time, print_.time_source,
                 print_.signature.astype(np.float32) / 32.0, print_.scale, print_.origins, print_.scores,
                 print_.patch_size)


@dataclass(frozen=True)
class Frame:
    """What the burst stages need to know about one photo (all cheap, all cacheable)."""

    key: str  # the photo's path, as reported
    camera: str | None
    time: float | None  # seconds; None: no usable capture time (never grouped)
    time_source: str  # "exif" or "mtime": frames are only grouped with frames of the same source
    signature: NDArray[np.float32]  # see signature()
    scale: float  # analysis-scale pixels per signature pixel
    origins: NDArray[np.int32]  # (N, 2) analysis-scale top-left (y, x) of the scored patches
    scores: NDArray[np.float32]  # (N,) P(in focus) of those patches
    patch_size: int = 64


@dataclass(frozen=True)
class Ranked:
    """One frame's place in its burst."""

    key: str
    burst: str
    rank: int  # 1 = sharpest
    size: int
    common_score: float  # mean patch score on the regions every frame of the burst shows
    in_focus_share: float  # share of its scored patches at P(in focus) >= 0.5
    common_patches: int
    common_cells: tuple[float, ...] = ()  # its score on each of those regions, in one order for the whole burst


def signature(gray: NDArray[np.float32], side: int = SIGNATURE_SIDE) -> tuple[NDArray[np.float32], float]:
    """(thumbnail, scale): ``gray`` box-averaged to ``side`` px on its long side, zero mean, unit std."""
    height, width = gray.shape
    factor = max(1, math.ceil(max(height, width) / side))
    h, w = height // factor, width // factor
    if h == 0 or w == 0:
        return np.zeros((1, 1), np.float32), float(factor)
    small = gray[: h * factor, : w * factor].reshape(h, factor, w, factor).mean(axis=(1, 3))
    small = small - small.mean()
    return (small / max(float(small.std()), 1e-6)).astype(np.float32), float(factor)


def align(reference: NDArray[np.float32], other: NDArray[np.float32]) -> tuple[int, int, float]:
    """(dy, dx, similarity): ``other`` shows ``reference``'s content moved by (dy, dx) signature pixels.

    Phase correlation finds the shift (within MAX_SHIFT); similarity is the normalised correlation
    of the overlapping parts after that shift (1.0 = identical, about 0 = unrelated). Signatures of
    different shapes (another orientation, aspect or, mostly, pixel size) are not the same scene: similarity 0.
    """
    if reference.shape != other.shape or min(reference.shape) < 4:
        return 0, 0, 0.0
    cross = np.fft.fft2(other) * np.conj(np.fft.fft2(reference))
    cross /= np.maximum(np.abs(cross), 1e-9)
    surface = np.real(np.fft.ifft2(cross))
    height, width = reference.shape
    limit_y, limit_x = max(1, int(height * MAX_SHIFT)), max(1, int(width * MAX_SHIFT))
    best = (0, 0, -2.0)
    for dy, dx in _peak_candidates(surface, limit_y, limit_x):
        ncc = _overlap_correlation(reference, other, dy, dx)
        if ncc > best[2]:
            best = (dy, dx, ncc)
    return best[0], best[1], max(best[2], 0.0)


def _peak_candidates(surface: NDArray[np.float64], limit_y: int, limit_x: int, count: int = 3) -> list[tuple[int, int]]:
    """The ``count`` highest points of the correlation ``surface`` within the allowed shifts, as (dy, dx)."""
    allowed, dys, dxs = _shift_window(surface.shape, limit_y, limit_x)
    values = surface.ravel()[allowed]  # only the allowed shifts are sorted (a sixth of the surface)
    best = np.argsort(values)[::-1][:count]
    return [(int(dys[i]), int(dxs[i])) for i in best if np.isfinite(values[i])] or [(0, 0)]


@functools.lru_cache(maxsize=32)
def _shift_window(shape: tuple[int, ...], limit_y: int, limit_x: int) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """The flat indices of a correlation surface of ``shape`` whose shifts are within the limits, in
    order, and the (dy, dx) each stands for (the surface wraps: the upper half of an axis is negative)."""
    height, width = shape
    ys = np.arange(height)
    xs = np.arange(width)
    ys = np.where(ys > height // 2, ys - height, ys)
    xs = np.where(xs > width // 2, xs - width, xs)
    allowed = np.flatnonzero((np.abs(ys)[:, None] <= limit_y) & (np.abs(xs)[None, :] <= limit_x))
    return allowed, ys[allowed // width], xs[allowed % width]


def _overlap_correlation(reference: NDArray[np.float32], other: NDArray[np.float32], dy: int, dx: int) -> float:
    height, width = reference.shape
    ref = reference[max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
    oth = other[max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)]
    if ref.size < 16:
        return 0.0
    a = ref - ref.mean()
    b = oth - oth.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


def group_bursts(frames: Sequence[Frame], gap: float = DEFAULT_GAP, min_similarity: float = MIN_SIMILARITY) -> list[list[int]]:
    """Indices of ``frames`` grouped into bursts of two or more, each in capture order.

    A frame joins the most similar burst of the same camera (and time source) whose latest frame is
    at most ``gap`` seconds older and looks like it; otherwise it starts a new one. Frames without a
    capture time are never grouped; frames timed by their file's modification time must look alike
    by MIN_SIMILARITY_MTIME at least.  A frame is compared with the MAX_OPEN_BURSTS bursts most recently
    extended, so grouping stays linear in the number of frames (a folder of unrelated photos copied at
    once has every frame within the gap of every other).
    """
    if gap < 0:
        raise ValueError("the burst gap must be zero or more seconds")
    order = sorted((i for i, f in enumerate(frames) if f.time is not None), key=lambda i: (frames[i].time, frames[i].key))
    bursts: list[list[int]] = []
    recent: list[list[int]] = []  # open bursts, the most recently extended last
    for index in order:
        frame = frames[index]
        recent = [b for b in recent if frame.time - frames[b[-1]].time <= gap]  # type: ignore[operator]  # timed
        floor = max(min_similarity, MIN_SIMILARITY_MTIME) if frame.time_source in WEAK_TIMES else min_similarity
        best, best_similarity = None, floor
        for burst in recent:
            last = frames[burst[-1]]
            if (last.camera, last.time_source) != (frame.camera, frame.time_source):
                continue
            similarity = min(align(frames[b].signature, frame.signature)[2] for b in (burst[0], burst[-1]))
            if similarity >= best_similarity:
                best, best_similarity = burst, similarity
        if best is None:
            best = [index]
            bursts.append(best)
        else:
            best.append(index)
            recent.remove(best)
        recent.append(best)
        del recent[:-MAX_OPEN_BURSTS]  # never compared again: a burst leaves the window only unextended
    return [b for b in bursts if len(b) > 1]


def rank_burst(frames: Sequence[Frame], burst_id: str) -> list[Ranked]:
    """Rank the frames of one burst (rank 1 = sharpest), comparing the same regions in each."""
    reference = max(range(len(frames)), key=lambda i: (len(frames[i].scores), -i))
    ref = frames[reference]
    maps: list[dict[tuple[int, int], float]] = []
    for frame in frames:
        dy, dx, _ = align(ref.signature, frame.signature)
        shift = np.array([dy * frame.scale, dx * frame.scale])
        cells: dict[tuple[int, int], float] = {}
        for (y, x), score in zip(frame.origins, frame.scores):
            cell = (int(round((y - shift[0]) / frame.patch_size)), int(round((x - shift[1]) / frame.patch_size)))
            cells[cell] = max(score, cells.get(cell, 0.0))
        maps.append(cells)
    common = sorted(set.intersection(*(set(m) for m in maps))) if maps else []
    rows = []
    for frame, cells in zip(frames, maps):
        shared = tuple(float(cells[c]) for c in common) if len(common) >= 3 else ()
        if shared:
            value = float(np.mean(shared))
        else:  # too little shared texture to compare regions: fall back to each frame's best patches
            value = float(np.mean(np.sort(frame.scores)[-3:])) if len(frame.scores) else 0.0
        share = float(np.mean(frame.scores >= 0.5)) if len(frame.scores) else 0.0
        rows.append((frame.key, value, share, shared))
    order = _order_with_ties([(value, share, key) for key, value, share, _ in rows])
    return [
        Ranked(rows[i][0], burst_id, rank + 1, len(frames), rows[i][1], rows[i][2], len(common), rows[i][3])
        for rank, i in enumerate(order)
    ]


def _order_with_ties(rows: list[tuple[float, float, str]]) -> list[int]:
    """Indices by common score, best first; frames within TIE of a group's best are ordered by share in focus."""
    by_score = sorted(range(len(rows)), key=lambda i: (-rows[i][0], rows[i][2]))
    order: list[int] = []
    while by_score:
        top = rows[by_score[0]][0]
        tied = [i for i in by_score if top - rows[i][0] < TIE]
        order += sorted(tied, key=lambda i: (-rows[i][1], -rows[i][0], rows[i][2]))
        by_score = [i for i in by_score if i not in tied]
    return order


def find_bursts(frames: Sequence[Frame], gap: float = DEFAULT_GAP, min_similarity: float = MIN_SIMILARITY) -> dict[str, Ranked]:
    """Group and rank: ``{frame key: Ranked}`` for every frame that belongs to a burst."""
    ranked: dict[str, Ranked] = {}
    for members in group_bursts(frames, gap, min_similarity):
        for row in rank_burst([frames[i] for i in members], burst_id(frames[members[0]].key)):
            ranked[row.key] = row
    return ranked


def burst_id(first_frame: str) -> str:
    """A burst's id, from its first frame in capture order (absolute path): the same on every rescan
    and whatever else was scanned with it, and distinct across folders (a catalogue filter on
    ``cull:Burst`` never mixes two bursts, as per-scan numbers did)."""
    digest = hashlib.sha256(os.path.abspath(first_frame).encode("utf-8", "surrogateescape")).hexdigest()
    return f"burst-{digest[:8]}"


def clearly_softer(row: Ranked, best: Ranked) -> bool:
    """True when ``row`` is clearly softer than ``best``, a better-ranked frame of its burst (for --keep-best),
    and nowhere sharp where ``best`` is clearly soft: a frame focused on another plane (the subject rather
    than the background, which has more regions) holds something the best frame lacks, and stays."""
    if row.key == best.key or row.rank <= best.rank or best.common_score - row.common_score < CLEARLY_SOFTER:
        return False
    return not any(own >= SHARP_REGION and own - other >= CLEARLY_SOFTER
                   for own, other in zip(row.common_cells, best.common_cells))


def same_scene(a: Frame, b: Frame) -> bool:
    """Whether two frames look alike enough for one to be demoted against the other (DEMOTE_SIMILARITY)."""
    return align(a.signature, b.signature)[2] >= DEMOTE_SIMILARITY
