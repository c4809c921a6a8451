"""Focus assist: score a preview frame the way the saved still will be scored, and decide when to shoot.

The still is a JPEG that screening decodes through libjpeg's DCT scaling and then shrinks to the
analysis scale (cull.decode). The assist brings every frame to that same scale by the same two steps,
so its verdict agrees with the still's: judging a 640x480 preview instead would see a 12 MP frame at
less than half the scale, where moderate blur no longer shows, and call a soft still IN FOCUS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from cull.analyse import score_two_pass
from cull.camera.sources import Frame
from cull.card import ModelCard, Thresholds
from cull.decide import Verdict, decide
from cull.decode import SCALE_TOLERANCE, draft_request, reduce_long_side, to_gray_array
from cull.patches import select_patches
from cull.score import PhotoScore, Scorer, aggregate


@dataclass(frozen=True)
class FrameScore:
    photo: PhotoScore
    verdict: Verdict
    sharp_boxes: list[tuple[int, int, int]] = field(default_factory=list)  # (y, x, size) in frame pixels
    model_seconds: float = 0.0

    @property
    def in_focus(self) -> bool:
        return self.verdict is Verdict.KEEP


def dct_factor(size: tuple[int, int], long_side: int) -> int:
    """The reduction libjpeg's DCT scaling applies when a JPEG of ``size`` is decoded for analysis at
    ``long_side`` (PIL ``draft`` picks the largest of 1, 2, 4, 8 that keeps the requested size)."""
    width, height = size
    want_w, want_h = draft_request(size, long_side)
    ratio = min(width // want_w, height // want_h)
    return next(f for f in (8, 4, 2, 1) if ratio >= f)


def frame_to_gray(frame: Frame, long_side: int) -> NDArray[np.float32]:
    """A frame (RGB or gray uint8) -> gray at the analysis scale, reduced as a JPEG still of the same
    pixels would be: DCT-scaling factor first (a box reduction), then the antialiased shrink."""
    image = Image.fromarray(frame)
    if image.mode != "L":
        image = image.convert("L")
    factor = dct_factor(image.size, long_side)
    if factor > 1:
        image = image.reduce(factor)
    return to_gray_array(reduce_long_side(image, long_side, SCALE_TOLERANCE))


def score_frame(frame: Frame, card: ModelCard, scorer: Scorer, thresholds: Thresholds) -> FrameScore:
    """Score one preview frame with the card's patch logic and two-pass scoring; decide as for a photo.

    Only the most textured half of the card's patches is scored (a doubtful frame costs half the
    model time). The frame's score is then a lower bound of what all the patches would give (the
    mean of the best k can only rise with more patches), so IN FOCUS still means the still is kept;
    a frame in focus is proven by its first few patches anyway.  The card's steady path rests on a
    mean over every patch, which a part does not bound, and so does its photo head: they apply only when every
    patch was scored."""
    gray = frame_to_gray(frame, card.analysis.long_side)
    scale = frame.shape[1] / gray.shape[1]
    patches = select_patches(gray, card.analysis)
    budget = max(card.analysis.max_patches // 2, card.analysis.first_pass)
    started = time.perf_counter()
    scores = score_two_pass([patches.pixels[:budget]], card, scorer)[0] if len(patches) else None
    model_seconds = time.perf_counter() - started
    photo = PhotoScore(None, 0) if scores is None else aggregate(scores, card.aggregate_k, scorer.kind_labels, card.head)
    if len(patches) > budget:
        thresholds = replace(thresholds, steady_keep=None, max_motion=None, head_keep=None, head_reject=None,
                             head_reject_below=None)
    verdict = decide(photo, thresholds, card.analysis.min_patches).verdict
    boxes = []
    if scores is not None:
        size = int(card.analysis.patch_size * scale)
        for (y, x), p in zip(patches.origins, scores.sharp):  # the patches that were scored
            if p >= 0.5:
                boxes.append((int(y * scale), int(x * scale), size))
    return FrameScore(photo, verdict, boxes, model_seconds)


class AutoCapture:
    """Fire once the frame has been in focus for ``frames`` frames in a row; fire again only after
    focus was lost and regained (one shot per composition)."""

    def __init__(self, frames: int = 5) -> None:
        if frames < 1:
            raise ValueError("auto capture needs at least one in-focus frame")
        self.frames = frames
        self.run = 0
        self.armed = True

    def update(self, in_focus: bool) -> bool:
        if not in_focus:
            self.run = 0
            self.armed = True
            return False
        self.run += 1
        if self.armed and self.run >= self.frames:
            self.armed = False
            return True
        return False
