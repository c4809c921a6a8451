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


def decide(photo: PhotoScore, thresholds: Thresholds, min_patches: int) -> Decision:
    """Keep when a sharp region is found; reject only on clear, sufficient evidence of blur."""
    if photo.score is None or photo.patches < min_patches:
        return Decision(Verdict.UNCERTAIN, f"too little texture to judge ({photo.patches} usable patches)")
    if photo.score >= thresholds.keep:
        return Decision(Verdict.KEEP, "sharp region found")
    if photo.score < thresholds.reject:
        return Decision(Verdict.REJECT, f"no sharp region ({photo.kind or 'blur'})")
    return Decision(Verdict.UNCERTAIN, "focus evidence is weak")
