"""Run the focus network on patches and turn patch scores into one photo score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from cull.card import ModelCard, PhotoHead
from cull.errors import ModelError


MOTION = "motion"  # the kind head's label for camera shake / motion blur


@dataclass(frozen=True)
class PatchScores:
    """Per-patch outputs: ``sharp`` (N,) P(in focus); ``kind`` (N, K) class probabilities or None;
    ``embedding`` (N, E) the network's patch embedding (only for a card with a photo head) or None."""

    sharp: NDArray[np.float32]
    kind: NDArray[np.float32] | None = None
    embedding: NDArray[np.float32] | None = None


class Scorer(Protocol):
    """Anything that scores a (N, P, P, 1) standardised batch. Tests may pass a fake one."""

    kind_labels: tuple[str, ...]

    def score(self, batch: NDArray[np.float32]) -> PatchScores: ...


class OnnxScorer:
    """The shipped model through onnxruntime; one session, built once, reused for every batch."""

    def __init__(self, card: ModelCard, threads: int = 1, embedding_output: str | None = None) -> None:
        """``embedding_output``: also return that output as PatchScores.embedding (default: the one the
        card's photo head reads, if it has one)."""
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
        embedding = embedding_output or (card.head.output if card.head else None)
        wanted = [card.score_output] + ([card.kind_output] if card.kind_output else []) + ([embedding] if embedding else [])
        if not set(wanted) <= names:
            raise ModelError(f"{card.model_path} lacks outputs {sorted(set(wanted) - names)} named by its card")
        _check_input(self.session, card)
        self._outputs = wanted
        self._kind = bool(card.kind_output)
        self._input = card.input_name
        self.kind_labels = card.kind_labels if card.kind_output else ()

    def score(self, batch: NDArray[np.float32]) -> PatchScores:
        if len(batch) == 0:
            return PatchScores(np.zeros(0, np.float32), None)
        results = [np.asarray(r, dtype=np.float32) for r in self.session.run(self._outputs, {self._input: batch})]
        sharp = results[0].reshape(-1)
        kind = results[1] if self._kind else None
        embedding = results[-1].reshape(len(sharp), -1) if len(results) > 1 + self._kind else None
        return PatchScores(sharp, kind, embedding)


def _check_input(session: Any, card: ModelCard) -> None:
    """Raise ModelError when the card's input name or patch size is not the model's (every photo would
    fail in inference, each with onnxruntime's message)."""
    inputs = {i.name: i.shape for i in session.get_inputs()}
    if card.input_name not in inputs:
        raise ModelError(f"{card.model_path} has no input {card.input_name!r} named by its card (it has {sorted(inputs)})")
    shape = inputs[card.input_name]
    size = card.analysis.patch_size
    if len(shape) == 4 and any(isinstance(side, int) and side != size for side in shape[1:3]):
        raise ModelError(f"{card.model_path} takes {shape[1]}x{shape[2]} patches, its card says patch_size {size}")


@dataclass(frozen=True)
class PhotoScore:
    """One photo's evidence: ``score`` = P(in focus) of its sharpest region (None: no usable patch)."""

    score: float | None
    patches: int
    kind: str | None = None
    sharp_share: float = 0.0  # share of scored patches that look in focus (p >= 0.5)
    motion: float | None = None  # the kind head's mean P(motion blur) over the scored patches (None: no such head)
    head: float | None = None  # the card's photo head: log-odds that the photo is in focus (None: no head)


def aggregate(scores: PatchScores, k: int, kind_labels: tuple[str, ...] = (), head: PhotoHead | None = None) -> PhotoScore:
    """Mean of the ``k`` best patch scores: any clearly sharp region keeps the photo.

    The blur kind is the most likely class averaged over the patches, and ``motion`` that average's
    motion-blur probability (both None without a kind head naming them).  With a photo ``head`` (and
    patch embeddings) also the head's value over photo_features.
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
    value = None
    if head is not None and scores.embedding is not None:
        value = head_value(head, photo_features(scores, k, head.top))
    return PhotoScore(float(top.mean()), n, kind, float((scores.sharp >= 0.5).mean()), motion, value)


def photo_features(scores: PatchScores, k: int, top: int) -> NDArray[np.float64]:
    """What a photo head reads (needs ``scores.embedding``): the log-odds of the mean of the ``k`` best
    patch scores; the mean class probabilities of the kind head (where there is one); the mean patch
    score, the share of patches at 0.5 or more, the mean of the ``top`` best scores and log(patches);
    then the mean embedding of the ``top`` best-scoring patches and the mean embedding of all of them."""
    assert scores.embedding is not None
    sharp = scores.sharp.astype(np.float64)
    order = np.argsort(-sharp, kind="stable")
    best = float(np.clip(sharp[order[:k]].mean(), 1e-6, 1 - 1e-6))
    parts = [np.array([np.log(best / (1 - best))])]
    if scores.kind is not None:
        parts.append(scores.kind.mean(axis=0, dtype=np.float64))
    parts.append(np.array([sharp.mean(), (sharp >= 0.5).mean(), sharp[order[:top]].mean(), np.log(len(sharp))]))
    embedding = scores.embedding.astype(np.float64)
    parts += [embedding[order[:top]].mean(axis=0), embedding.mean(axis=0)]
    return np.concatenate(parts)


def head_value(head: PhotoHead, features: NDArray[np.float64]) -> float:
    """The photo head's log-odds for one photo's features (raises ModelError on a size mismatch)."""
    if len(features) != len(head.weights):
        raise ModelError(f"the card's photo head takes {len(head.weights)} features, this model gives {len(features)}")
    standard = (features - np.asarray(head.mean)) / np.asarray(head.scale)
    return float(standard @ np.asarray(head.weights) + head.bias)
