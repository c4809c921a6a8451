"""Turn a photo score into keep / uncertain / reject. Pure; leans to keep (in-focus priority)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from cull.card import Thresholds
from cull.score import PhotoScore


class Verdict(str, Enum):
    KEEP = "keep"
    UNCERTAIN = "uncertain"
    REJECT = "reject"


class Strictness(str, Enum):
    LENIENT = "lenient"
    NORMAL = "normal"
    STRICT = "strict"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str


STEADY_REASON = "sharp region found, no sign of shake"  # kept through the card's steady path


def decide(photo: PhotoScore, thresholds: Thresholds, min_patches: int) -> Decision:
    """Keep when a sharp region is found; reject only on clear, sufficient evidence of blur."""
    if photo.score is None or photo.patches < min_patches:
        return Decision(Verdict.UNCERTAIN, f"too little texture to judge ({photo.patches} usable patches)")
    verdict = verdict_for(photo.score, photo.motion, thresholds)
    if verdict is Verdict.KEEP:
        return Decision(verdict, "sharp region found" if photo.score >= thresholds.keep else STEADY_REASON)
    if verdict is Verdict.REJECT:
        return Decision(verdict, f"no sharp region ({photo.kind or 'blur'})")
    return Decision(verdict, "focus evidence is weak")


def verdict_for(score: float, motion: float | None, thresholds: Thresholds) -> Verdict:
    """The verdict for a photo score (and the kind head's mean P(motion), None without one). Pure.

    Keep at ``keep``; with the card's steady path, also at ``steady_keep`` when ``motion`` is at most
    ``max_motion`` (only keeps are added: what is rejected never depends on it)."""
    steady = (thresholds.steady_keep is not None and thresholds.max_motion is not None and motion is not None
              and score >= thresholds.steady_keep and motion <= thresholds.max_motion)
    if score >= thresholds.keep or steady:
        return Verdict.KEEP
    return Verdict.REJECT if score < thresholds.reject else Verdict.UNCERTAIN
