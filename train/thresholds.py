"""Choose decision thresholds on validation photo scores (pure; leans to keep)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

# Largest share of sharp validation photos each strictness may reject.
FALSE_REJECT_TARGETS = {"strict": 0.02, "normal": 0.005}
LENIENT_MARGIN = 0.5  # lenient rejects only below half the lowest sharp validation score
BLURRED_KEPT_TARGET = 0.02  # at most this share of blurred validation photos may be "keep"


def fit_thresholds(sharp_scores: Sequence[float], blurred_scores: Sequence[float]) -> dict[str, dict[str, float]]:
    """Per strictness, ``reject`` (below: reject) and ``keep`` (at or above: keep).

    ``reject`` is set so at most FALSE_REJECT_TARGETS of sharp photos fall below it; ``keep`` so at
    most BLURRED_KEPT_TARGET of blurred photos reach it; keep >= reject always.  Raises ValueError
    on empty input.
    """
    sharp = np.sort(np.asarray(sharp_scores, dtype=np.float64))
    blurred = np.sort(np.asarray(blurred_scores, dtype=np.float64))
    if sharp.size == 0 or blurred.size == 0:
        raise ValueError("need validation scores for both sharp and blurred photos")
    keep = float(np.quantile(blurred, 1 - BLURRED_KEPT_TARGET, method="higher"))
    keep = min(1.0, keep + 1e-6)
    rejects = {name: float(sharp[int(np.floor(target * sharp.size))]) for name, target in FALSE_REJECT_TARGETS.items()}
    rejects["lenient"] = float(sharp[0] * LENIENT_MARGIN)
    return {
        name: {"keep": round(max(keep, reject), 6), "reject": round(reject, 6)}
        for name, reject in sorted(rejects.items())
    }


# The steady path (cull.card.Thresholds.steady_keep / max_motion): a second way to keep, for photos whose
# patches the kind head does not take for shake.  Shaken photos are what score high while blurred and so
# set ``keep``; a photo without signs of shake can be kept at a lower score, as long as no blurred
# validation photo below the motion cap reaches it.
STEADY_SCORE_MARGIN = 0.02  # steady_keep: this far above the highest such blurred validation score
STEADY_MOTION_MARGIN = 0.03  # max_motion: this far below the cap that keeps the most sharp validation photos
MOTION_CAPS = np.round(np.arange(0.05, 0.6001, 0.01), 2)


def fit_steady(
    sharp: Sequence[tuple[float, float]], blurred: Sequence[tuple[float, float]], keep: float, floor: float
) -> dict[str, float] | None:
    """``{"steady_keep": s, "max_motion": m}`` from validation (score, mean P(motion)) pairs, or None.

    For each motion cap, the lowest steady_keep that keeps no more blurred photos than ``keep`` does
    (STEADY_SCORE_MARGIN above the highest blurred score under the cap, never below ``floor``, the
    highest reject threshold); the cap that keeps the most sharp photos below ``keep`` wins (the
    lowest such cap), lowered by STEADY_MOTION_MARGIN, and its steady_keep is worked out again.
    None when no cap gains a sharp photo.  Pure.
    """

    def steady_keep(cap: float) -> float:
        under = [score for score, motion in blurred if motion <= cap and score < keep]
        return round(min(keep, max(floor, max(under, default=0.0) + STEADY_SCORE_MARGIN)), 6)

    def gained(cap: float) -> int:
        threshold = steady_keep(cap)
        return sum(1 for score, motion in sharp if threshold <= score < keep and motion <= cap)

    gains = [gained(float(cap)) for cap in MOTION_CAPS]
    if max(gains, default=0) == 0:
        return None
    cap = round(float(MOTION_CAPS[gains.index(max(gains))]) - STEADY_MOTION_MARGIN, 6)
    if gained(cap) == 0:
        return None
    return {"steady_keep": steady_keep(cap), "max_motion": cap}


# The photo head's path (cull.card.PhotoHead, Thresholds.head_keep): a third way to keep, for photos whose
# patch outputs taken together (train/head.py) look in focus.  It may keep no blurred validation photo that
# the other paths leave unkept.
HEAD_MARGIN = 0.5  # head_keep: this far (log-odds) above the highest such blurred validation photo's head value


def fit_head_keep(
    sharp: Sequence[tuple[float, float | None, float]], blurred: Sequence[tuple[float, float | None, float]],
    lenient: dict[str, float],
) -> float | None:
    """head_keep from validation (score, mean P(motion), head value) triples and the fitted lenient
    thresholds: HEAD_MARGIN above the highest head value of a blurred photo that ``keep`` and the steady
    path leave unkept and lenient does not reject; None when that keeps no sharp photo more.  Pure."""
    from cull.card import Thresholds
    from cull.decide import Verdict, verdict_for

    thresholds = Thresholds.from_dict(lenient)

    def undecided(score: float, motion: float | None) -> bool:
        return verdict_for(score, motion, thresholds) is Verdict.UNCERTAIN

    open_blurred = [head for score, motion, head in blurred if undecided(score, motion)]
    head_keep = round(max(open_blurred, default=float("-inf")) + HEAD_MARGIN, 6)
    if head_keep == float("-inf") or not any(undecided(s, m) and h >= head_keep for s, m, h in sharp):
        return None
    return head_keep


# The photo head's reject path (Thresholds.head_reject / head_reject_below): a photo that the next stricter
# setting rejects on its score is rejected already when the photo head, too, rates it as blurred as no sharp
# validation photo is, by a margin.  A wrongly rejected sharp photo is lost, so the margin is twice head_keep's.
HEAD_REJECT_MARGIN = 1.0  # head_reject: this far (log-odds) below the lowest sharp validation photo's head value
STRICTER = {"lenient": "normal", "normal": "strict"}  # strict has no stricter setting: no head reject path


def fit_head_reject(
    sharp: Sequence[tuple[float, float | None, float]], blurred: Sequence[tuple[float, float | None, float]],
    fitted: dict[str, dict[str, float]],
) -> dict[str, dict[str, float]]:
    """Per strictness (of ``fitted``, the thresholds with any steady and head keep paths), the head reject
    path ``{"head_reject": h, "head_reject_below": the stricter setting's reject}`` from validation
    (score, mean P(motion), head value) triples: ``h`` is HEAD_REJECT_MARGIN under the lowest head value of
    a sharp photo scoring under the highest keep threshold (one at or above it is kept at every strictness,
    and a scan stops scoring it early, so its head value is not the one fitted on), so the path rejects no
    sharp validation photo; a strictness it would reject no blurred photo more at is left out.  Pure."""
    from cull.card import Thresholds
    from cull.decide import Verdict, verdict_for

    sure_keep = max(t["keep"] for t in fitted.values())
    heads = [head for score, _, head in sharp if score < sure_keep]
    if not heads:
        return {}
    head_reject = round(min(heads) - HEAD_REJECT_MARGIN, 6)
    paths = {}
    for name, stricter in STRICTER.items():
        if name not in fitted or stricter not in fitted:
            continue
        below = fitted[stricter]["reject"]
        if not fitted[name]["reject"] < below <= fitted[name]["keep"]:
            continue
        path = {"head_reject": head_reject, "head_reject_below": below}
        before, after = Thresholds.from_dict(fitted[name]), Thresholds.from_dict({**fitted[name], **path})
        gained = sum(1 for score, motion, head in blurred
                     if verdict_for(score, motion, after, head) is Verdict.REJECT
                     and verdict_for(score, motion, before, head) is not Verdict.REJECT)
        if gained:
            paths[name] = path
    return paths
