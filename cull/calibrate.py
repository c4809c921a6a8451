"""`cull calibrate`: fit a card's thresholds (and patch texture threshold) to a user's own labelled photos.

Other domains (microscopy, scans, low-contrast scenes) have other score statistics: the shipped
thresholds may leave every sharp photo *uncertain* although the scores still separate the classes.
From a folder laid out like `cull eval` (``sharp*/`` and ``*blur*/``), every photo is scored with the
base card's model (full scoring, as production sees it), thresholds are fitted with in-focus
priority, and a new card pointing at the same ONNX model is written.

Rules (pure, see fit_thresholds):
  * keep: in the gap between the highest blurred and the lowest sharp score (midpoint in logit
    space, raised towards the blurred scores' 99th percentile, never above the lowest sharp score)
    when the classes separate, else just above the highest blurred score;
  * reject: below a fraction of the lowest sharp score (lenient 0.5, normal 0.7, strict 0.85), but
    at most the logit midpoint between the highest blurred score and ``keep``: no labelled sharp
    photo is rejected, with a margin, and a photo in the empty gap between the classes is
    *uncertain*, not rejected;
  * no steady path (the shipped card's second way to keep, fitted on its own validation photos:
    a user's domain gets one keep threshold).
Expected rates are leave-one-out (each photo judged by thresholds fitted without it) with exact
Clopper-Pearson intervals, because the samples are small.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cull.card import CARD_FORMAT, STRICTNESS_LEVELS, ModelCard, Thresholds, default_card_path, file_sha256, load_card
from cull.decide import verdict_for
from cull.errors import DatasetError, ModelError
from cull.evaluate import LabelledPhoto, analyse_labelled, label_warnings, labelled_tree, raw_judging_below
from cull.fsutil import atomic_write_text
from cull.report import display_path, json_object

log = logging.getLogger(__name__)

MIN_PER_CLASS = 5  # fewer usable photos in a class than this: refuse
RECOMMENDED_PER_CLASS = 10  # fewer than this: warn
REJECT_FRACTIONS = {"lenient": 0.5, "normal": 0.7, "strict": 0.85}  # of the lowest sharp score
TEXTURE_FACTORS = (1.0, 0.6, 0.36, 1.6)  # candidate min_std, as multiples of the base card's
MIN_TEXTURE = 0.009  # the lowest min_std tried (0.36 x the shipped card's): below it, JPEG noise passes for texture
REJECT_EVIDENCE_PATCHES = 16  # usable patches a card with a lowered texture threshold needs to reject a photo
CONFIDENCE = 0.95
BLURRED_Z = 2.326  # keep sits at least at the blurred scores' 99th percentile (logit-normal fit)
_EPS = 1e-6


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with a two-sided Clopper-Pearson interval (printed widened to whole percents)."""

    k: int
    n: int
    low: float
    high: float

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a"
        return f"{self.k}/{self.n} ({math.floor(100 * self.low)}-{math.ceil(100 * self.high)}%)"


@dataclass(frozen=True)
class Scored:
    """One labelled photo's score under a candidate card (None: unreadable or too little texture)."""

    path: Path
    sharp: bool
    score: float | None
    error: str | None = None
    motion: float | None = None  # the kind head's mean P(motion): the base card's steady path needs it
    head: float | None = None  # the photo head's value: the base card's head path needs it
    patches: int = 0  # usable patches (a card with a lowered texture threshold rejects only on enough of them)


@dataclass
class Calibration:
    """What calibrate() found; ``card`` is the fitted card (not yet written)."""

    folder: Path
    base: ModelCard
    card: ModelCard
    scored: list[Scored]
    rates: dict[str, dict[str, Rate]]  # strictness -> sharp_kept / sharp_rejected / blurred_flagged / blurred_rejected
    base_rates: dict[str, dict[str, Rate]]  # the base card's thresholds and texture, same photos
    texture_tried: dict[float, int] = field(default_factory=dict)  # min_std -> leave-one-out right decisions
    warnings: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Scored]:
        return [s for s in self.scored if s.error is not None]


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided binomial interval for ``k`` successes in ``n`` trials. Raises ValueError."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    alpha = (1.0 - confidence) / 2

    def tail_ge(p: float) -> float:  # P(X >= k)
        return sum(_binom_pmf(i, n, p) for i in range(k, n + 1))

    def tail_le(p: float) -> float:  # P(X <= k)
        return sum(_binom_pmf(i, n, p) for i in range(0, k + 1))

    low = 0.0 if k == 0 else _bisect(lambda p: tail_ge(p) - alpha)  # increasing in p
    high = 1.0 if k == n else _bisect(lambda p: alpha - tail_le(p))  # tail_le decreases in p
    return low, high


def _binom_pmf(i: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0 if i == 0 else 0.0
    if p >= 1.0:
        return 1.0 if i == n else 0.0
    log_pmf = math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p)
    return math.exp(log_pmf)


def _bisect(increasing: Callable[[float], float]) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if increasing(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _logit(p: float) -> float:
    p = min(max(p, _EPS), 1 - _EPS)
    return math.log(p / (1 - p))


def fit_thresholds(sharp_scores: Sequence[float], blurred_scores: Sequence[float]) -> dict[str, Thresholds]:
    """Thresholds per strictness from labelled scores, with in-focus priority. Pure.

    ``keep`` is the logit midpoint between the highest blurred and the lowest sharp score, raised to
    the blurred scores' 99th percentile (logit-normal fit) when that is higher, but never above the
    lowest sharp score (which is kept: rounding to 1e-6 never lifts ``keep`` past it); when the classes
    overlap it sits just above the highest blurred score.  ``reject`` is a fraction of the lowest sharp
    score, but at most the logit midpoint between the highest blurred score and ``keep``: photos in the
    gap between the classes stay *uncertain*, and no labelled sharp photo is rejected.  Raises
    ValueError on an empty class or a score outside [0, 1].
    """
    if not sharp_scores or not blurred_scores:
        raise ValueError("need scores for both sharp and blurred photos")
    if any(not 0.0 <= s <= 1.0 for s in (*sharp_scores, *blurred_scores)):
        raise ValueError("scores must lie in [0, 1]")
    s_min, b_max = float(min(sharp_scores)), float(max(blurred_scores))
    keep = _sigmoid((_logit(b_max) + _logit(s_min)) / 2)
    logits = [_logit(b) for b in blurred_scores]
    if len(logits) >= 3:  # unseen blurred photos may score higher than these few: their 99th percentile
        mean = sum(logits) / len(logits)
        sd = math.sqrt(sum((x - mean) ** 2 for x in logits) / (len(logits) - 1))
        keep = max(keep, _sigmoid(mean + BLURRED_Z * sd))
    if b_max < s_min:  # separated: b_max < keep <= s_min, on the 1e-6 grid where one fits
        keep = min(keep, s_min) if b_max < min(keep, s_min) else s_min
        keep = next((k for k in (_ceil6(keep), _floor6(keep)) if b_max < k <= s_min), keep)
    else:  # overlap: just above the highest blurred score
        keep = _ceil6(min(1.0, b_max + _EPS))
    gap = min(_sigmoid((_logit(b_max) + _logit(keep)) / 2), keep)  # the middle of the empty gap below keep
    out = {}
    for name in STRICTNESS_LEVELS:
        reject = min(REJECT_FRACTIONS[name] * s_min, gap)
        rounded = min(_floor6(reject), keep)
        # down to 1e-6, unless that would spare the highest blurred photo that ``reject`` rejects
        out[name] = Thresholds(keep=keep, reject=rounded if rounded > b_max or reject <= b_max else reject)
    return out


def _ceil6(value: float) -> float:
    return math.ceil(value * 1e6) / 1e6


def _floor6(value: float) -> float:
    return math.floor(value * 1e6) / 1e6


def _verdict(photo: Scored, thresholds: Thresholds) -> str:
    if photo.score is None:
        return "uncertain"
    verdict = verdict_for(photo.score, photo.motion, thresholds, photo.head).value
    least = thresholds.reject_min_patches
    return "uncertain" if verdict == "reject" and least is not None and photo.patches < least else verdict


Fit = Callable[[Sequence[float], Sequence[float]], dict[str, Thresholds]]


def card_fit(base: ModelCard, min_std: float) -> Fit:
    """fit_thresholds for a card made from ``base`` with texture threshold ``min_std``: where ``min_std`` is
    below the base card's, a photo is rejected only on REJECT_EVIDENCE_PATCHES usable patches (a flatter
    sharp photo than any labelled one, which the base card left *uncertain* for want of texture, is not
    rejected on a few weak patches; a base card calibrated so keeps its rule).  A reject above the base
    card's is allowed (the labelled photos are the user's domain; the shipped card's own reject follows the
    same rule on its validation photos) and calibrate() warns of it."""
    inherited = [t.reject_min_patches for t in base.thresholds.values() if t.reject_min_patches is not None]
    lowered = round(min_std, 6) < round(base.analysis.min_std, 6)
    least = max([*inherited, *([REJECT_EVIDENCE_PATCHES] if lowered else [])], default=None)  # a calibrated base's stays

    def fit(sharp: Sequence[float], blurred: Sequence[float]) -> dict[str, Thresholds]:
        return {name: dataclasses.replace(t, reject_min_patches=least) for name, t in fit_thresholds(sharp, blurred).items()}

    return fit


def rates_for(labels: Sequence[bool], verdicts: Sequence[str]) -> dict[str, Rate]:
    """sharp_kept, sharp_rejected, blurred_flagged, blurred_rejected with intervals. Pure."""
    sharp = [v for l, v in zip(labels, verdicts) if l]
    blurred = [v for l, v in zip(labels, verdicts) if not l]

    def rate(k: int, n: int) -> Rate:
        return Rate(k, n, *clopper_pearson(k, n))

    return {
        "sharp_kept": rate(sharp.count("keep"), len(sharp)),
        "sharp_rejected": rate(sharp.count("reject"), len(sharp)),
        "blurred_flagged": rate(len(blurred) - blurred.count("keep"), len(blurred)),
        "blurred_rejected": rate(blurred.count("reject"), len(blurred)),
    }


def leave_one_out(scored: Sequence[Scored], fit: Fit = fit_thresholds) -> dict[str, list[str]]:
    """Per strictness, each usable photo's verdict under thresholds fitted (by ``fit``) without it. Pure.

    Photos without a score (too little texture) are *uncertain*, as in production.
    """
    usable = [s for s in scored if s.error is None]
    sharp = sorted((s.score, i) for i, s in enumerate(usable) if s.sharp and s.score is not None)
    blurred = [(s.score, i) for i, s in enumerate(usable) if not s.sharp and s.score is not None]
    # the fit uses the lowest sharp score and all blurred scores: leaving out a sharp photo other
    # than the lowest changes nothing, so those share one fit
    fits: dict[int, dict[str, Thresholds] | None] = {}
    verdicts: dict[str, list[str]] = {name: [] for name in STRICTNESS_LEVELS}
    for i, photo in enumerate(usable):
        key = i if (not photo.sharp or (sharp and sharp[0][1] == i)) else -1
        if key not in fits:
            s_rest = [v for v, j in sharp if j != i]
            b_rest = [v for v, j in blurred if j != i]
            fits[key] = fit(s_rest, b_rest) if s_rest and b_rest else None
        fitted = fits[key]
        for name in STRICTNESS_LEVELS:
            verdicts[name].append("uncertain" if fitted is None else _verdict(photo, fitted[name]))
    return verdicts


def _score_photos(photos: list[LabelledPhoto], card: ModelCard, workers: int, progress: Any) -> list[Scored]:
    """Full scoring (no early stop), so the fitted scores are those production computes for doubtful photos."""
    full = dataclasses.replace(card, analysis=dataclasses.replace(card.analysis, first_pass=card.analysis.max_patches))
    found: dict[Path, Scored] = {}
    for photo, analysis in analyse_labelled(photos, full, workers=workers):
        if analysis.photo is None:
            found[photo.path] = Scored(photo.path, photo.sharp, None, analysis.error or "unreadable")
        else:
            enough = analysis.photo.patches >= card.analysis.min_patches
            found[photo.path] = Scored(photo.path, photo.sharp, analysis.photo.score if enough else None,
                                       motion=analysis.photo.motion, head=analysis.photo.head,
                                       patches=analysis.photo.patches)
        if progress is not None:
            progress.update(1)
    return [found[p.path] for p in photos]


def _with_texture(card: ModelCard, min_std: float) -> ModelCard:
    return dataclasses.replace(card, analysis=dataclasses.replace(card.analysis, min_std=round(min_std, 6)))


def _right(scored: Sequence[Scored], fit: Fit = fit_thresholds) -> int:
    """Leave-one-out right decisions at lenient (sharp kept + blurred rejected); a rejected sharp photo costs 10."""
    verdicts = leave_one_out(scored, fit)["lenient"]
    usable = [s for s in scored if s.error is None]
    right = sum((v == "keep") if s.sharp else (v == "reject") for s, v in zip(usable, verdicts))
    return right - 10 * sum(s.sharp and v == "reject" for s, v in zip(usable, verdicts))


def _scored_per_class(scored: Sequence[Scored]) -> tuple[int, int]:
    """How many sharp and blurred photos have a score."""
    usable = [s for s in scored if s.error is None and s.score is not None]
    return sum(s.sharp for s in usable), sum(not s.sharp for s in usable)


def choose_texture(tried: dict[float, list[Scored]], base_std: float, fits: dict[float, Fit] | None = None) -> float:
    """Among the min_std values under which at least MIN_PER_CLASS photos of each class score, the one
    whose scores give the most right leave-one-out decisions; on a tie the base value, then the one
    scoring more photos, then the one closest to the base value.  When none scores enough, the one
    scoring the most (the caller refuses). Pure."""
    base_std = round(base_std, 6)
    counts = {m: _scored_per_class(s) for m, s in tried.items()}
    enough = [m for m in tried if min(counts[m]) >= MIN_PER_CLASS]

    def closeness(m: float) -> float:
        return -abs(math.log(max(m, _EPS) / max(base_std, _EPS)))

    if not enough:
        return max(tried, key=lambda m: (min(counts[m]), sum(counts[m]), m == base_std, closeness(m)))
    rights = {m: _right(tried[m], (fits or {}).get(m, fit_thresholds)) for m in enough}
    return max(enough, key=lambda m: (rights[m], m == base_std, sum(counts[m]), closeness(m)))


Copies = list[tuple[LabelledPhoto, LabelledPhoto]]  # (a copy left out, the photo it copies)


def count_photos(folder: Path, judge_raw_below: int = 0) -> tuple[list[LabelledPhoto], list[Scored], int, int, Copies]:
    """The labelled photos, what could not be read under the labelled folders (as unscored errors), how
    many photos are sharp / blurred, and the copies left out. Raises DatasetError when too few."""
    photos, unreadable = labelled_tree(folder, judge_raw_below)
    photos, copies = drop_copies(photos)
    n_sharp = sum(p.sharp for p in photos)
    n_blurred = len(photos) - n_sharp
    if min(n_sharp, n_blurred) < MIN_PER_CLASS:
        raise DatasetError(
            f"{display_path(folder)}: {n_sharp} sharp and {n_blurred} blurred photos; calibration needs at least "
            f"{MIN_PER_CLASS} of each ({RECOMMENDED_PER_CLASS} or more recommended)"
        )
    return photos, [Scored(p.path, p.sharp, None, why) for p, why in unreadable], n_sharp, n_blurred, copies


def drop_copies(photos: list[LabelledPhoto]) -> tuple[list[LabelledPhoto], Copies]:
    """The photos less later copies of one file (hard link) or of its bytes within a class, and those,
    each with the photo it copies: a copy is no new example, and counting it would let one photo pass
    MIN_PER_CLASS and narrow the leave-one-out intervals."""
    kept: list[LabelledPhoto] = []
    copies: Copies = []
    by_file: dict[tuple[bool, int, int], LabelledPhoto] = {}
    by_size: dict[tuple[bool, int], list[LabelledPhoto]] = {}
    digests: dict[Path, str] = {}

    def digest(photo: LabelledPhoto) -> str:
        if photo.path not in digests:
            digests[photo.path] = file_sha256(photo.path)
        return digests[photo.path]

    for photo in photos:
        try:
            info = photo.path.stat()
            twin = by_file.get((photo.sharp, info.st_dev, info.st_ino)) or next(
                (q for q in by_size.get((photo.sharp, info.st_size), []) if digest(q) == digest(photo)), None)
        except OSError:  # scored, and reported, as it is
            kept.append(photo)
            continue
        if twin is not None:
            copies.append((photo, twin))
            continue
        kept.append(photo)
        by_file[(photo.sharp, info.st_dev, info.st_ino)] = photo
        by_size.setdefault((photo.sharp, info.st_size), []).append(photo)
    return kept, copies


def calibrate(
    folder: Path, base: ModelCard, *, workers: int = 1, fit_texture: bool = True, progress: Any = None
) -> Calibration:
    """Score ``folder``'s labelled photos with ``base``'s model and fit a calibrated card.

    With ``fit_texture`` a few patch texture thresholds (``analysis.min_std``) are tried and, among
    those under which MIN_PER_CLASS photos of each class score, the one with the most right
    leave-one-out decisions kept (see choose_texture).  Raises DatasetError when a class has fewer
    than MIN_PER_CLASS usable photos (shots: a RAW+JPEG pair counts once).
    """
    photos, unreadable, n_sharp, n_blurred, copies = count_photos(folder, raw_judging_below(base))
    candidates = sorted({max(base.analysis.min_std * f, min(MIN_TEXTURE, base.analysis.min_std))
                         for f in (TEXTURE_FACTORS if fit_texture else (1.0,))})
    if progress is not None:
        progress.total = len(photos) * len(candidates)
        progress.refresh()
    tried: dict[float, list[Scored]] = {}
    for min_std in candidates:
        tried[round(min_std, 6)] = _score_photos(photos, _with_texture(base, min_std), workers, progress)
    fits = {m: card_fit(base, m) for m in tried}
    best = choose_texture(tried, base.analysis.min_std, fits)
    rights = {m: _right(s, fits[m]) for m, s in tried.items()}
    scored = tried[best] + unreadable

    warnings = label_warnings(folder, [s.error or "" for s in unreadable])
    if copies:
        named = ", ".join(f"{display_path(c.path)} = {display_path(o.path)}" for c, o in copies[:3])
        warnings.append(f"{len(copies)} photo(s) are copies (same file or same bytes) of another photo of their class, "
                        f"counted once: {named}" + (", ..." if len(copies) > 3 else ""))
    usable = [s for s in scored if s.error is None]
    sharp = [s.score for s in usable if s.sharp and s.score is not None]
    blurred = [s.score for s in usable if not s.sharp and s.score is not None]
    if min(len(sharp), len(blurred)) < MIN_PER_CLASS:
        tried_note = (f" at any texture threshold tried (min_std {', '.join(f'{m:g}' for m in tried)})" if fit_texture
                      else f" at the base card's texture threshold (min_std {best:g}); other texture thresholds were "
                           "not tried (--keep-texture)")
        raise DatasetError(
            f"{display_path(folder)}: only {len(sharp)} sharp and {len(blurred)} blurred photos could be scored "
            f"(unreadable or too little texture){tried_note}; calibration needs at least {MIN_PER_CLASS} of each"
            + "".join([f"; {display_path(s.path)}: {s.error or 'too little texture'}" for s in scored if s.score is None][:3])
        )
    if min(len(sharp), len(blurred)) < RECOMMENDED_PER_CLASS:
        warnings.append(f"few examples ({len(sharp)} sharp, {len(blurred)} blurred scored of {n_sharp} + {n_blurred}): "
                        f"the rates below are rough; {RECOMMENDED_PER_CLASS} or more of each are recommended")
    if min(sharp) <= max(blurred):
        overlap = sum(s <= max(blurred) for s in sharp)
        suspects = sorted((s for s in usable if not s.sharp and s.score is not None and s.score >= min(sharp)),
                          key=lambda s: -(s.score or 0.0))
        named = ", ".join(f"{display_path(s.path)} ({s.score:.3f})" for s in suspects[:5])
        warnings.append(f"the classes overlap: the lowest sharp score {min(sharp):.3f} is not above the highest blurred "
                        f"score {max(blurred):.3f}; {overlap} sharp photo(s) will be uncertain, not kept. Blurred photos "
                        f"scoring like sharp ones (mislabelled?): {named}")
    unscored = [s for s in usable if s.score is None]
    if unscored:
        named = ", ".join(f"{display_path(s.path)} ({'sharp' if s.sharp else 'blurred'})" for s in unscored[:5])
        warnings.append(f"{len(unscored)} photo(s) had too little texture to score: they stay uncertain ({named}"
                        + (", ..." if len(unscored) > 5 else "") + ")")

    thresholds = fits[best](sharp, blurred)
    card = dataclasses.replace(_with_texture(base, best), thresholds=thresholds)
    labels = [s.sharp for s in usable]
    loo = leave_one_out(scored, fits[best])
    rates = {name: rates_for(labels, loo[name]) for name in STRICTNESS_LEVELS}
    lost = sorted({s.path for name in STRICTNESS_LEVELS for s, v in zip(usable, loo[name]) if s.sharp and v == "reject"})
    if lost:
        warnings.append(f"left out of the fit, {len(lost)} sharp photo(s) would be rejected: "
                        f"{', '.join(display_path(p) for p in lost[:5])}; a sharp photo like them would be lost: "
                        "add more sharp photos like them, or use a more lenient strictness")
    base_scored = [s for s in tried[round(base.analysis.min_std, 6)] if s.error is None]
    base_rates = {
        name: rates_for([s.sharp for s in base_scored], [_verdict(s, base.thresholds_for(name)) for s in base_scored])
        for name in STRICTNESS_LEVELS
    }
    base_keeps_all = base_rates["lenient"]["sharp_kept"].k == base_rates["lenient"]["sharp_kept"].n
    bolder = [f"{name} {thresholds[name].reject:.3f} (base {base.thresholds_for(name).reject:.3f})" for name in STRICTNESS_LEVELS
              if thresholds[name].reject > base.thresholds_for(name).reject]
    if bolder and base_keeps_all:  # not a shifted domain: the base card judges these sharp photos well already
        warnings.append(f"the base card keeps all your sharp photos, and this card rejects more readily than it "
                        f"({', '.join(bolder)}): a sharp photo scoring well below your lowest labelled sharp one "
                        f"({min(sharp):.3f}) may be rejected; include your hardest sharp photos (shallow depth of field, "
                        "low light, small subjects), or keep the base card")
    worse = [name for name in STRICTNESS_LEVELS
             if rates[name]["sharp_kept"].k < base_rates[name]["sharp_kept"].k
             and rates[name]["blurred_flagged"].k <= base_rates[name]["blurred_flagged"].k]
    if worse:
        warnings.append(f"on these photos the calibrated card keeps fewer sharp photos than the base card ({', '.join(worse)}) "
                        "and flags no more blurred ones: the base card may serve you better")
    return Calibration(Path(folder), base, card, scored, rates, base_rates, rights, warnings)


def card_json(calibration: Calibration, base_path: Path, out: Path) -> dict[str, Any]:
    """The calibrated card's JSON: the base card's, with the new thresholds, texture threshold, model
    path (relative when the model sits beside or below the card, else absolute) and a note."""
    raw = json.loads(base_path.read_text(encoding="utf-8"))
    card = calibration.card
    model = card.model_path.resolve()
    folder = out.resolve().parent
    relative = model.is_relative_to(folder) and not out.is_symlink()  # through a link: read from two folders
    model_file = os.path.relpath(model, folder) if relative else str(model)
    sharp = [s.score for s in calibration.scored if s.sharp and s.score is not None]
    blurred = [s.score for s in calibration.scored if not s.sharp and s.score is not None]
    for key in ("metrics", "threshold_fit", "threshold_fit_steady", "refit", "previous_model"):
        raw.pop(key, None)  # the base card's figures and fits belong to its thresholds, not these
    raw.pop("photo_head", None)  # fitted on the base card's training photos, not this domain: no head path
    raw.update(
        model_file=model_file,
        sha256=card.sha256,
        version=f"{calibration.base.version}+cal-{dt.date.today():%Y%m%d}",
        analysis={**raw["analysis"], "min_std": card.analysis.min_std},
        thresholds={name: t.as_dict() for name, t in card.thresholds.items()},
        calibration={
            "note": f"thresholds fitted by `cull calibrate` on {len(sharp)} sharp and {len(blurred)} blurred photos "
                    f"of {calibration.folder.resolve()}; model and analysis otherwise as {calibration.base.version}",
            "folder": str(calibration.folder.resolve()),
            "date": f"{dt.date.today():%Y-%m-%d}",
            "base_version": calibration.base.version,
            "base_thresholds": {n: t.as_dict() for n, t in calibration.base.thresholds.items()},
            "base_min_std": calibration.base.analysis.min_std,
            "texture_tried": {str(k): v for k, v in calibration.texture_tried.items()},
            "sharp_scores": [round(s, 4) for s in sorted(sharp)],
            "blurred_scores": [round(s, 4) for s in sorted(blurred)],
            "reject_fractions": REJECT_FRACTIONS,
            "leave_one_out": {n: {k: dataclasses.asdict(r) for k, r in rates.items()} for n, rates in calibration.rates.items()},
            "warnings": calibration.warnings,
        },
    )
    return raw


def base_card_path(model: Path | None) -> Path:
    """The .json card meant by ``--model`` (a card, or the .onnx beside its card; None: the shipped one)."""
    path = default_card_path() if model is None else Path(model)
    return path.with_suffix(".json") if path.suffix.lower() == ".onnx" else path


def is_calibrated_card(path: Path) -> bool:
    """Whether ``path`` holds a card written by `cull calibrate` (which a later calibration may replace)."""
    raw = json_object(path)
    return raw is not None and raw.get("format") == CARD_FORMAT and isinstance(raw.get("calibration"), dict)


def write_card(calibration: Calibration, base_path: Path, out: Path) -> ModelCard:
    """Write the calibrated card atomically and read it back. Raises ModelError (or OSError)."""
    if file_sha256(calibration.card.model_path) != calibration.card.sha256:
        raise ModelError(f"{calibration.card.model_path} no longer matches its card's sha256")
    atomic_write_text(out, json.dumps(card_json(calibration, base_path, out), indent=2) + "\n")
    return load_card(out)


_LABELS = (("sharp_kept", "sharp kept"), ("sharp_rejected", "sharp rejected"),
           ("blurred_flagged", "blurred flagged"), ("blurred_rejected", "blurred rejected"))


def _threshold(value: float) -> str:
    """A threshold as the card stores it: 6 decimals, or all of them when it is not on that grid."""
    return f"{value:.6f}" if round(value, 6) == value else repr(float(value))


def format_calibration(calibration: Calibration) -> str:
    """A plain-text summary: scores, texture threshold, thresholds, expected rates (before and after)."""
    cal, base = calibration, calibration.base
    sharp = sorted(s.score for s in cal.scored if s.sharp and s.score is not None)
    blurred = sorted(s.score for s in cal.scored if not s.sharp and s.score is not None)
    t = cal.card.thresholds
    groups: dict[bool, set[str]] = {True: set(), False: set()}
    for s in cal.scored:
        try:
            groups[s.sharp].add(s.path.relative_to(cal.folder).parts[0] + "/")
        except (ValueError, IndexError):
            continue
    lines = [
        f"{display_path(cal.folder)}: {len(sharp)} sharp, {len(blurred)} blurred photos scored with {base.version}",
        f"  classes: sharp from {', '.join(display_path(g) for g in sorted(groups[True])) or '-'}; "
        f"blurred from {', '.join(display_path(g) for g in sorted(groups[False])) or '-'}",
        f"  scores: sharp {sharp[0]:.3f}-{sharp[-1]:.3f}, blurred {blurred[0]:.3f}-{blurred[-1]:.3f}"
        + ("  (separated)" if blurred[-1] < sharp[0] else "  (OVERLAP)"),
        f"  texture threshold (min_std): {cal.card.analysis.min_std:g}"
        + (f" (was {base.analysis.min_std:g})" if cal.card.analysis.min_std != base.analysis.min_std else " (unchanged)"),
        f"  keep at or above {_threshold(t['lenient'].keep)}; reject below: "
        + ", ".join(f"{n} {_threshold(t[n].reject)}" for n in STRICTNESS_LEVELS),
        "",
        f"expected rates, leave-one-out (each photo judged by thresholds fitted without it), "
        f"{100 * CONFIDENCE:.0f}% Clopper-Pearson intervals:",
        f"  {'':9}" + "".join(f"{label:>20}" for _, label in _LABELS),
    ]
    for name in STRICTNESS_LEVELS:
        lines.append(f"  {name:9}" + "".join(f"{str(cal.rates[name][key]):>20}" for key, _ in _LABELS))
    lines += ["", f"with the base card's thresholds ({base.version}, same photos):"]
    for name in STRICTNESS_LEVELS:
        lines.append(f"  {name:9}" + "".join(f"{str(cal.base_rates[name][key]):>20}" for key, _ in _LABELS))
    return "\n".join(lines)  # per-photo errors: the caller reports them (Calibration.errors)
