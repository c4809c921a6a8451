"""The model card: everything cull needs to know about a model, read from the JSON next to the .onnx.

The card carries the analysis scale, the patch logic, the aggregation and the decision
thresholds, so that the product never hard-codes them: a retrained model ships its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from cull.errors import ModelError
from cull.fsutil import file_sha256  # noqa: F401 - also cull.card.file_sha256 for callers

CARD_FORMAT = 1
STRICTNESS_LEVELS = ("lenient", "normal", "strict")
# What a cached photo score holds (cull.score.PhotoScore): part of the fingerprint, so scores cached
# before a field was added (2: ``motion``) are analysed again rather than decided without it.  (``head``
# needs no step: it is None without a photo head, and a card with one has the head in its fingerprint.)
PHOTO_SCORE_FIELDS = 2


@dataclass(frozen=True)
class AnalysisSpec:
    """How a photo is reduced and cut into patches before the network sees it."""

    long_side: int = 1440  # photos are reduced so their long side is at most this (never enlarged)
    patch_size: int = 64
    max_patches: int = 64
    min_patches: int = 4  # fewer textured patches than this: too little evidence -> uncertain
    min_std: float = 0.025  # a patch flatter than this (gray 0..1) is sky / wall: skipped
    dark_mean: float = 0.04  # a patch darker than this on average is skipped
    bright_mean: float = 0.97  # ... or brighter
    max_clipped: float = 0.3  # a patch with more than this share of clipped pixels is skipped
    first_pass: int = 8  # score this many best patches first; if they already prove "keep", stop there
    tile_stride: int | None = None  # tile grid step, px, dividing patch_size (None: patch_size, tiles side by side)

    @property
    def tile_step(self) -> int:
        return self.tile_stride or self.patch_size


@dataclass(frozen=True)
class Thresholds:
    """Photo score (P(in focus)) cut points: >= keep -> keep, < reject -> reject, else uncertain.

    A second, optional way to keep (a card fitted on validation photos may set it): a score of at
    least ``steady_keep`` keeps a photo whose patches show little sign of shake, i.e. whose kind
    head's mean P(motion) is at most ``max_motion`` (a shaken photo is what scores high while blurred).
    A third (with the card's PhotoHead): a photo head value of at least ``head_keep`` keeps a photo
    that ``reject`` does not reject.  And a second way to reject (with the photo head too): a photo
    scoring under ``head_reject_below`` (a stricter setting's reject) whose head value is under
    ``head_reject`` (below every sharp validation photo's that the score alone does not keep, by a
    margin): two signs of blur, not one.
    """

    keep: float
    reject: float
    steady_keep: float | None = None
    max_motion: float | None = None
    head_keep: float | None = None
    head_reject: float | None = None
    head_reject_below: float | None = None
    reject_min_patches: int | None = None  # fewer usable patches than this: never rejected (a calibrated card's lowered texture threshold)

    def __post_init__(self) -> None:
        for name in ("keep", "reject", "steady_keep", "max_motion"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ModelError(f"{name} must be a number, got {value!r}")
        if not 0.0 <= self.reject <= self.keep <= 1.0:
            raise ModelError(f"thresholds must satisfy 0 <= reject <= keep <= 1, got {self}")
        if (self.steady_keep is None) != (self.max_motion is None):
            raise ModelError(f"steady_keep and max_motion go together, got {self}")
        if self.steady_keep is not None and self.max_motion is not None and not (
            self.reject <= self.steady_keep <= self.keep and 0.0 <= self.max_motion <= 1.0
        ):
            raise ModelError(f"thresholds must satisfy reject <= steady_keep <= keep and 0 <= max_motion <= 1, got {self}")
        for name in ("head_keep", "head_reject"):  # log-odds: any finite number
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)):
                raise ModelError(f"{name} must be a finite number, got {value!r}")
        if (self.head_reject is None) != (self.head_reject_below is None):
            raise ModelError(f"head_reject and head_reject_below go together, got {self}")
        least = self.reject_min_patches
        if least is not None and (isinstance(least, bool) or not isinstance(least, int) or least < 1):
            raise ModelError(f"reject_min_patches must be a whole number of at least 1, got {least!r}")
        below = self.head_reject_below
        if below is not None and (isinstance(below, bool) or not isinstance(below, (int, float))):
            raise ModelError(f"head_reject_below must be a number, got {below!r}")
        if below is not None and not self.reject <= below <= self.keep:
            raise ModelError(f"thresholds must satisfy reject <= head_reject_below <= keep, got {self}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Thresholds:
        """From the card's JSON form (as_dict); raises ModelError on a bad value."""
        return cls(**raw)

    def as_dict(self) -> dict[str, float]:
        """The card's JSON form (the optional paths only where set)."""
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class PhotoHead:
    """A logistic model over a photo's patch outputs (cull.score.photo_features), fitted on training
    photos: its value (log-odds that the photo is in focus) is a third way to keep (Thresholds.head_keep)
    and a second way to reject (Thresholds.head_reject).

    ``output`` names the network's patch embedding; ``top``: how many best-scoring patches' embeddings
    are averaged (besides all patches'); features are standardised by ``mean`` and ``scale``."""

    output: str
    top: int
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    weights: tuple[float, ...]
    bias: float

    def __post_init__(self) -> None:
        sizes = {len(self.mean), len(self.scale), len(self.weights)}
        if len(sizes) != 1 or self.top < 1 or any(v <= 0 for v in self.scale):
            raise ModelError("photo_head needs mean, scale and weights of one length, positive scales and top >= 1")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PhotoHead:
        return cls(str(raw["output"]), int(raw["top"]), tuple(map(float, raw["mean"])), tuple(map(float, raw["scale"])),
                   tuple(map(float, raw["weights"])), float(raw["bias"]))

    def as_dict(self) -> dict[str, Any]:
        return {"output": self.output, "top": self.top, "mean": list(self.mean), "scale": list(self.scale),
                "weights": list(self.weights), "bias": self.bias}


@dataclass(frozen=True)
class ModelCard:
    """Parsed focus.json (see models/README or train/export.py for how it is written)."""

    model_path: Path
    sha256: str
    version: str
    analysis: AnalysisSpec
    aggregate_k: int
    thresholds: dict[str, Thresholds]
    input_name: str = "patches"
    score_output: str = "p_sharp"
    kind_output: str | None = None
    kind_labels: tuple[str, ...] = ()
    head: PhotoHead | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """sha256 over everything that shapes a photo's score: the ONNX file's hash, the analysis
        (scale, patch logic, first pass), the aggregation, the input/output names and ``sure_keep``
        (a photo whose first patches reach it is scored no further, so its stored score is a lower
        bound that only a card with the same bound may reuse).  The other thresholds are left out
        (they only turn a score into a verdict), so the score cache keys on this."""
        scoring: dict[str, Any] = {
            "model": self.sha256, "analysis": analysis_dict(self.analysis), "aggregate_k": self.aggregate_k,
            "input": self.input_name, "score": self.score_output, "kind": self.kind_output,
            "kind_labels": list(self.kind_labels), "photo_score": PHOTO_SCORE_FIELDS,
            "early_stop_at": round(self.sure_keep, 9),
        }
        if self.head is not None:
            scoring["head"] = self.head.as_dict()
        return hashlib.sha256(json.dumps(scoring, sort_keys=True).encode()).hexdigest()

    @property
    def sure_keep(self) -> float:
        """A score at or above this is "keep" at every strictness: more patches cannot change that."""
        return max(t.keep for t in self.thresholds.values())

    def thresholds_for(self, strictness: str) -> Thresholds:
        try:
            return self.thresholds[strictness]
        except KeyError:
            raise ModelError(
                f"model card has no thresholds for strictness {strictness!r} "
                f"(has: {', '.join(self.thresholds)})"
            ) from None


def default_card_path() -> Path:
    """The shipped card: models/focus.json (installed as the data package cull._models)."""
    return Path(str(resources.files("cull._models").joinpath("focus.json")))


def check_strictness_order(thresholds: dict[str, Thresholds], path: Path) -> None:
    """A photo head reject path rejects only what the next stricter setting rejects too: its score bound
    at most that setting's reject, or within that setting's own head path (it stands for "rejected one
    setting early when the head agrees").  Raises ModelError naming the card: a hand-edited one could make
    lenient reject what normal leaves uncertain.  (Plain reject thresholds are the editor's own choice.)"""
    for lower, higher in zip(STRICTNESS_LEVELS, STRICTNESS_LEVELS[1:]):
        a, b = thresholds[lower], thresholds[higher]
        if a.head_reject is None or a.head_reject_below is None or a.head_reject_below <= b.reject:
            continue  # every way to keep needs a score of at least b.reject: b rejects all of it
        if b.head_reject is None or b.head_reject_below is None or not (
            a.head_reject <= b.head_reject and a.head_reject_below <= b.head_reject_below
            and a.head_reject_below <= b.keep  # nor may b keep any of it some other way
            and (b.steady_keep is None or a.head_reject_below <= b.steady_keep)
            and (b.head_keep is None or a.head_reject <= b.head_keep)
        ):
            raise ModelError(f"{path}: {lower}'s photo head reject path (under {a.head_reject_below}, head under "
                             f"{a.head_reject}) rejects photos {higher} does not")


MAX_VERSION_CHARS = 200  # a card's version is written into every photo's XMP (cull:Model)


def load_card(path: Path | None = None, *, verify: bool = True) -> ModelCard:
    """Read a model card. ``path`` may be the .json card or the .onnx beside it.

    Raises ModelError when the card or model is missing, malformed, or (with ``verify``)
    the model file's sha256 differs from the one the card records.
    """
    path = default_card_path() if path is None else Path(path)
    if path.suffix.lower() == ".onnx":
        path = path.with_suffix(".json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if path != default_card_path():  # a card the user named: most likely a typo
            raise ModelError(f"no model card at {path} (no such file)") from None
        raise ModelError(
            f"no model card at {path}; build the model with `python -m train` (needs the [train] extra)"
        ) from None
    except UnicodeDecodeError:  # a photo or another binary file given as --model
        raise ModelError(f"{path} is not a model card (a JSON file written by `python -m train` or `cull calibrate`)") from None
    except (OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested deeper than the parser goes
        raise ModelError(f"cannot read model card {path}: {exc or type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise ModelError(f"{path}: malformed model card (a JSON {type(raw).__name__}, not an object)")
    try:
        if raw.get("format") != CARD_FORMAT:
            raise ModelError(f"{path}: unsupported card format {raw.get('format')!r}")
        model_path = _model_beside(path, raw["model_file"], raw.get("sha256") if verify else None)
        analysis = AnalysisSpec(**raw["analysis"])
        thresholds = {name: _thresholds(path, name, t) for name, t in raw["thresholds"].items()}
        kind = raw.get("kind") or {}
        card = ModelCard(
            model_path=model_path,
            sha256=raw["sha256"],
            version=raw["version"],
            analysis=analysis,
            aggregate_k=_whole(raw["aggregate"]["k"], "aggregate.k"),
            thresholds=thresholds,
            input_name=raw["input"]["name"],
            score_output=raw["outputs"]["score"],
            kind_output=kind.get("output"),
            kind_labels=tuple(kind.get("labels", ())),
            head=PhotoHead.from_dict(raw["photo_head"]) if raw.get("photo_head") else None,
            extra={k: v for k, v in raw.items() if k not in _PARSED_KEYS},
        )
    # AttributeError: a list or string where an object belongs; OverflowError: Infinity where a count belongs
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        if isinstance(exc, ModelError):
            raise
        raise ModelError(f"{path}: malformed model card ({type(exc).__name__}: {exc})") from None
    if not isinstance(card.version, str) or not card.version or len(card.version) > MAX_VERSION_CHARS:
        raise ModelError(f"{path}: malformed model card (version must be a name of 1-{MAX_VERSION_CHARS} characters)")
    validate_analysis(card.analysis, card.aggregate_k, path)
    missing = [s for s in STRICTNESS_LEVELS if s not in card.thresholds]
    if missing:
        raise ModelError(f"{path}: thresholds missing for {', '.join(missing)}")
    for name in ("head_keep", "head_reject"):
        if card.head is None and any(getattr(t, name) is not None for t in card.thresholds.values()):
            raise ModelError(f"{path}: thresholds name {name} but the card has no photo_head")
    check_strictness_order(card.thresholds, path)
    if not model_path.is_file():
        raise ModelError(f"model file {model_path} named by {path} does not exist")
    if verify and file_sha256(model_path) != card.sha256:
        calibration = card.extra.get("calibration")
        folder = calibration.get("folder") if isinstance(calibration, dict) else None
        if isinstance(folder, str):  # a calibrated card, and cull's model changed since (an upgrade)
            raise ModelError(f"{path} was calibrated for another model than {model_path} (an upgrade of cull?): "
                             f"run `cull calibrate {folder} --out {path}` again")
        raise ModelError(f"{model_path} does not match the sha256 in its card {path}; rebuild or re-export")
    return card


def _model_beside(card: Path, model_file: str, sha256: object = None) -> Path:
    """The model a card names: beside the card as given, or beside the file a link to the card leads to
    (a content-addressed store links each file on its own); where both hold a file, the one whose sha256
    is the card's (``sha256``), else the one beside the card as given."""
    given = card.parent / model_file
    real = Path(os.path.realpath(card)).parent / model_file
    found = [path for path in dict.fromkeys((given, real)) if path.is_file()]
    if len(found) > 1 and isinstance(sha256, str):
        found.sort(key=lambda path: file_sha256(path) != sha256)
    return found[0] if found else given


def _whole(value: Any, name: str) -> int:
    """A whole number of the card (``"3"`` or 2.9 would be taken as another number than meant)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    return value


def _thresholds(path: Path, strictness: str, raw: Any) -> Thresholds:
    """One strictness's thresholds; a mistake in them names the card and the strictness."""
    try:
        return Thresholds.from_dict(raw)
    except ModelError as exc:
        raise ModelError(f"{path}: {strictness} thresholds: {exc}") from None


def validate_analysis(spec: AnalysisSpec, k: int, source: Path | str = "model card") -> None:
    """Raise ModelError when the analysis settings contradict each other.

    ``first_pass`` must cover both ``k`` and ``min_patches``: otherwise the early stop of the two-pass
    scoring would leave a sure keep with too few patches, i.e. *uncertain*.
    """
    problems = []
    for setting in fields(spec):  # a hand-edited card may hold "8" or true where a number belongs
        value, default = getattr(spec, setting.name), setting.default
        whole = isinstance(default, int) or default is None  # tile_stride: a whole number when set
        if value is None and default is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            problems.append(f"{setting.name} must be {'a whole number' if whole else 'a number'}, got {value!r}")
    if problems:
        raise ModelError(f"{source}: invalid analysis settings: {'; '.join(problems)}")
    if spec.long_side < 1 or spec.patch_size < 1:
        problems.append("long_side and patch_size must be positive")
    elif spec.tile_stride is not None and not (1 <= spec.tile_stride <= spec.patch_size and spec.patch_size % spec.tile_stride == 0):
        problems.append(f"tile_stride must divide patch_size ({spec.patch_size}), got {spec.tile_stride}")
    if k < 1:
        problems.append(f"aggregate.k must be at least 1, got {k}")
    if not 1 <= spec.min_patches <= spec.max_patches:
        problems.append(f"need 1 <= min_patches <= max_patches, got {spec.min_patches} and {spec.max_patches}")
    if spec.first_pass < max(k, spec.min_patches):
        problems.append(f"first_pass ({spec.first_pass}) must be at least max(aggregate.k, min_patches) "
                        f"= {max(k, spec.min_patches)}")
    if not 0.0 <= spec.dark_mean < spec.bright_mean <= 1.0:
        problems.append("need 0 <= dark_mean < bright_mean <= 1")
    if not 0.0 <= spec.max_clipped <= 1.0 or not 0.0 <= spec.min_std <= 1.0:  # NaN fails both
        problems.append("need 0 <= max_clipped <= 1 and 0 <= min_std <= 1")
    if problems:
        raise ModelError(f"{source}: invalid analysis settings: {'; '.join(problems)}")


_PARSED_KEYS = {"format", "model_file", "sha256", "version", "analysis", "thresholds", "aggregate", "input", "outputs", "kind",
                "photo_head"}


def analysis_dict(spec: AnalysisSpec) -> dict[str, Any]:
    """The card's JSON form of ``spec``; a setting left unset (``tile_stride``) is left out, so
    cards, and the score cache's keys, from before it existed stay as they were."""
    return {name: value for name, value in asdict(spec).items() if value is not None}
