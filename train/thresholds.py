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
