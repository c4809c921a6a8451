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
HEAD_REASON = "sharp region found by the photo head"  # kept through the card's photo head
HEAD_REJECT_REASON = "no sharp region, and the photo head agrees"  # rejected through the card's photo head


def decide(photo: PhotoScore, thresholds: Thresholds, min_patches: int) -> Decision:
    """Keep when a sharp region is found; reject only on clear, sufficient evidence of blur."""
    if photo.score is None or photo.patches < min_patches:
        hint = "; the image is flat, too dark or bright, or smaller than one patch" if photo.patches == 0 else ""
        return Decision(Verdict.UNCERTAIN, f"too little texture to judge ({photo.patches} usable patches{hint})")
    verdict = verdict_for(photo.score, photo.motion, thresholds, photo.head)
    if verdict is Verdict.KEEP:
        if photo.score >= thresholds.keep:
            return Decision(verdict, "sharp region found")
        return Decision(verdict, STEADY_REASON if _steady(photo.score, photo.motion, thresholds) else HEAD_REASON)
    if verdict is Verdict.REJECT:
        if thresholds.reject_min_patches is not None and photo.patches < thresholds.reject_min_patches:
            return Decision(Verdict.UNCERTAIN, f"too few textured patches to reject ({photo.patches}; this card's lowered "
                                               f"texture threshold asks for {thresholds.reject_min_patches})")
        blur = _blur_kind(photo.kind)
        if photo.score >= thresholds.reject:
            return Decision(verdict, f"{HEAD_REJECT_REASON} ({blur})" if blur else HEAD_REJECT_REASON)
        return Decision(verdict, f"no sharp region ({blur or f'score {photo.score:.3f} under {thresholds.reject:.3f}'})")
    return Decision(verdict, "focus evidence is weak")


def _blur_kind(kind: str | None) -> str | None:
    """The kind head's label as a kind of blur: None when the head names none, or calls the patches sharp
    (a calibrated card can reject what the head calls sharp: "no sharp region (sharp)" would read wrong)."""
    return None if kind is None or kind == "sharp" else kind


def verdict_for(score: float, motion: float | None, thresholds: Thresholds, head: float | None = None) -> Verdict:
    """The verdict for a photo score (and the kind head's mean P(motion), the photo head's value: None
    without them). Pure.

    Keep at ``keep``; with the card's steady path, also at ``steady_keep`` when ``motion`` is at most
    ``max_motion``; with its photo head, also when ``head`` reaches ``head_keep``.  A photo under
    ``reject`` is never kept.  Reject under ``reject``; with the photo head, also under
    ``head_reject_below`` when ``head`` is under ``head_reject`` too (and no way to keep applies)."""
    headed = thresholds.head_keep is not None and head is not None and head >= thresholds.head_keep
    if score >= thresholds.keep or _steady(score, motion, thresholds) or (headed and score >= thresholds.reject):
        return Verdict.KEEP
    if score < thresholds.reject or _head_rejects(score, head, thresholds):
        return Verdict.REJECT
    return Verdict.UNCERTAIN


def _head_rejects(score: float, head: float | None, thresholds: Thresholds) -> bool:
    return (thresholds.head_reject is not None and thresholds.head_reject_below is not None and head is not None
            and head < thresholds.head_reject and score < thresholds.head_reject_below)


def _steady(score: float, motion: float | None, thresholds: Thresholds) -> bool:
    return (thresholds.steady_keep is not None and thresholds.max_motion is not None and motion is not None
            and score >= thresholds.steady_keep and motion <= thresholds.max_motion)
