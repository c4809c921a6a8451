"""Run the focus network on patches and turn patch scores into one photo score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from cull.card import ModelCard
from cull.errors import ModelError


MOTION = "motion"  # the kind head's label for camera shake / motion blur


@dataclass(frozen=True)
class PatchScores:
    """Per-patch outputs: ``sharp`` (N,) P(in focus); ``kind`` (N, K) class probabilities or None."""

    sharp: NDArray[np.float32]
    kind: NDArray[np.float32] | None = None


class Scorer(Protocol):
    """Anything that scores a (N, P, P, 1) standardised batch. Tests may pass a fake one."""

    kind_labels: tuple[str, ...]

    def score(self, batch: NDArray[np.float32]) -> PatchScores: ...


class OnnxScorer:
    """The shipped model through onnxruntime; one session, built once, reused for every batch."""

    def __init__(self, card: ModelCard, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(card.model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"cannot load model {card.model_path}: {exc}") from None
        names = {o.name for o in self.session.get_outputs()}
        wanted = [card.score_output] + ([card.kind_output] if card.kind_output else [])
        if not set(wanted) <= names:
            raise ModelError(f"{card.model_path} lacks outputs {sorted(set(wanted) - names)} named by its card")
        self._outputs = wanted
        self._input = card.input_name
        self.kind_labels = card.kind_labels if card.kind_output else ()

    def score(self, batch: NDArray[np.float32]) -> PatchScores:
        if len(batch) == 0:
            return PatchScores(np.zeros(0, np.float32), None)
        results = self.session.run(self._outputs, {self._input: batch})
        sharp = np.asarray(results[0], dtype=np.float32).reshape(-1)
        kind = np.asarray(results[1], dtype=np.float32) if len(results) > 1 else None
        return PatchScores(sharp, kind)


@dataclass(frozen=True)
class PhotoScore:
    """One photo's evidence: ``score`` = P(in focus) of its sharpest region (None: no usable patch)."""

    score: float | None
    patches: int
    kind: str | None = None
    sharp_share: float = 0.0  # share of scored patches that look in focus (p >= 0.5)
    motion: float | None = None  # the kind head's mean P(motion blur) over the scored patches (None: no such head)


def aggregate(scores: PatchScores, k: int, kind_labels: tuple[str, ...] = ()) -> PhotoScore:
    """Mean of the ``k`` best patch scores: any clearly sharp region keeps the photo.

    The blur kind is the most likely class averaged over the patches, and ``motion`` that average's
    motion-blur probability (both None without a kind head naming them).
    """
    n = len(scores.sharp)
    if n == 0:
        return PhotoScore(None, 0)
    top = np.sort(scores.sharp)[::-1][: max(1, min(k, n))]
    kind = motion = None
    if scores.kind is not None and kind_labels:
        mean = scores.kind.mean(axis=0)
        kind = kind_labels[int(np.argmax(mean))]
        if MOTION in kind_labels:
            motion = float(mean[kind_labels.index(MOTION)])
    return PhotoScore(float(top.mean()), n, kind, float((scores.sharp >= 0.5).mean()), motion)
