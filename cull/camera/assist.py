"""Focus assist: score a preview frame exactly as `cull scan` scores a photo, and decide when to shoot."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from cull.analyse import score_two_pass
from cull.card import ModelCard, Thresholds
from cull.decide import Verdict, decide
from cull.decode import reduce_long_side, to_gray_array
from cull.patches import network_input, select_patches
from cull.score import PhotoScore, Scorer, aggregate


@dataclass(frozen=True)
class FrameScore:
    photo: PhotoScore
    verdict: Verdict
    sharp_boxes: list[tuple[int, int, int]] = field(default_factory=list)  # (y, x, size) of sharp patches
    model_seconds: float = 0.0


def frame_to_gray(rgb: NDArray[np.uint8], long_side: int) -> NDArray[np.float32]:
    """RGB preview frame -> gray at the analysis scale, through the same conversion as decode."""
    return to_gray_array(reduce_long_side(Image.fromarray(rgb), long_side))


def score_frame(rgb: NDArray[np.uint8], card: ModelCard, scorer: Scorer, thresholds: Thresholds) -> FrameScore:
    import time

    gray = frame_to_gray(rgb, card.analysis.long_side)
    scale = rgb.shape[1] / gray.shape[1]
    patches = select_patches(gray, card.analysis)
    started = time.perf_counter()
    scores = score_two_pass([network_input(patches.pixels)], card, scorer)[0] if len(patches) else None
    model_seconds = time.perf_counter() - started
    if scores is None:
        photo = PhotoScore(None, 0)
    else:
        photo = aggregate(scores, card.aggregate_k, scorer.kind_labels)
    verdict = decide(photo, thresholds, card.analysis.min_patches).verdict
    boxes = []
    if scores is not None:
        size = int(card.analysis.patch_size * scale)
        for (y, x), p in zip(patches.origins, scores.sharp):  # the patches that were scored
            if p >= 0.5:
                boxes.append((int(y * scale), int(x * scale), size))
    return FrameScore(photo, verdict, boxes, model_seconds)


def render_line(frame: FrameScore, fps: float, width: int = 20) -> str:
    """The live terminal line: score, a bar, IN FOCUS / soft, frames per second."""
    score = frame.photo.score
    if score is None:
        return f"focus  --   [{'?' * width}] no detail to judge   {fps:5.1f} fps"
    filled = int(round(score * width))
    state = {Verdict.KEEP: "IN FOCUS", Verdict.UNCERTAIN: "soft?", Verdict.REJECT: "soft"}[frame.verdict]
    return f"focus {score:4.2f} [{'#' * filled}{'-' * (width - filled)}] {state:8} {fps:5.1f} fps"


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
