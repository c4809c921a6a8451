"""The photo head (cull.card.PhotoHead): a logistic model over a photo's patch outputs, fitted on the
training photos, that adds a third way to keep and a second way to reject (cull.decide.verdict_for,
Thresholds.head_keep / head_reject).

The network's patch embedding (the dense layer both heads read) becomes a model output
(add_embedding_output); every training photo is scored the way a scan scores a doubtful photo (every
selected patch), described by cull.score.photo_features and labelled by its folder; fit_head fits an
L2-regularised logistic regression on them (Newton's method, numpy only).
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cull.card import ModelCard, PhotoHead
from cull.score import head_value

EMBEDDING_OUTPUT = "embedding"
HEAD_TOP = 8  # the best-scoring patches whose embeddings are averaged (besides all patches')
L2_CHOICES = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)  # ridge on the standardised weights: choose_l2 picks one by cross-validation


def add_embedding_output(src: Path, dst: Path, score_output: str = "p_sharp") -> None:
    """Copy the ONNX model ``src`` to ``dst`` with one more output, EMBEDDING_OUTPUT: the tensor the score
    head's MatMul reads (Sigmoid <- Add <- MatMul <- embedding).  The other outputs are computed as before."""
    import onnx

    model = onnx.load(str(src))
    graph = model.graph
    if EMBEDDING_OUTPUT in {o.name for o in graph.output}:  # already there: the file as it is
        if Path(src).resolve() != Path(dst).resolve():
            shutil.copyfile(src, dst)
        return
    producer = {out: node for node in graph.node for out in node.output}
    node = producer[score_output]
    while node.op_type != "MatMul":
        node = producer[node.input[0]]
    graph.node.append(onnx.helper.make_node("Identity", [node.input[0]], [EMBEDDING_OUTPUT], name="embedding_output"))
    graph.output.append(onnx.helper.make_tensor_value_info(EMBEDDING_OUTPUT, onnx.TensorProto.FLOAT, [None, None]))
    onnx.checker.check_model(model)
    tmp = dst.with_suffix(".onnx.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, dst)


def _photo_rows(args: tuple[list[tuple[Path, bool]], ModelCard, str, int]) -> list[tuple[NDArray[np.float64], bool]]:
    from cull.analyse import score_every_patch
    from cull.decode import UnreadableImage, decode_gray
    from cull.patches import select_patches
    from cull.score import OnnxScorer, photo_features

    photos, card, output, top = args
    scorer = OnnxScorer(card, embedding_output=output)
    rows = []
    for path, sharp in photos:
        try:
            patches = select_patches(decode_gray(path, card.analysis.long_side), card.analysis)
        except UnreadableImage:
            continue
        if len(patches) >= card.analysis.min_patches:
            rows.append((photo_features(score_every_patch(patches.pixels, scorer), card.aggregate_k, top), sharp))
    return rows


def folder_features(folder: Path, card: ModelCard, workers: int, output: str = EMBEDDING_OUTPUT,
                    top: int = HEAD_TOP) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """(features, in focus?) of every labelled photo under ``folder`` (cull eval layout) with enough
    texture, every selected patch scored by ``card``'s model (which must have ``output``)."""
    from cull.evaluate import labelled_photos

    photos = [(p.path, p.sharp) for p in labelled_photos(folder)]
    parts = [(photos[i :: max(1, workers)], card, output, top) for i in range(max(1, workers))]
    with ProcessPoolExecutor(max(1, workers), mp_context=get_context("spawn")) as pool:
        rows = [row for part in pool.map(_photo_rows, parts) for row in part]
    return np.stack([f for f, _ in rows]), np.array([s for _, s in rows])


def choose_l2(features: NDArray[np.float64], sharp: NDArray[np.bool_], choices: tuple[float, ...] = L2_CHOICES,
              folds: int = 5, seed: int = 0) -> tuple[float, dict[float, float]]:
    """The ridge of ``choices`` with the lowest held-out mean log-loss over ``folds`` random folds of the
    training photos, and every choice's loss.  Pure."""
    fold = np.random.default_rng(seed).integers(0, folds, len(features))
    losses = {}
    for l2 in choices:
        total = 0.0
        for k in range(folds):
            head = fit_head(features[fold != k], sharp[fold != k], l2)
            z = np.array([head_value(head, row) for row in features[fold == k]])
            y = sharp[fold == k]
            total += float(np.sum(np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * ~y))
        losses[l2] = round(total / len(features), 6)
    return min(losses, key=lambda l2: losses[l2]), losses


def fit_head(features: NDArray[np.float64], sharp: NDArray[np.bool_], l2: float,
             top: int = HEAD_TOP, output: str = EMBEDDING_OUTPUT, steps: int = 50) -> PhotoHead:
    """Logistic regression of ``sharp`` on standardised ``features``: mean log-loss + ``l2`` * |w|^2 / 2
    (the bias is not penalised), by Newton's method.  Pure."""
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature: left as is (its weight stays ~0)
    x = np.hstack([(features - mean) / scale, np.ones((len(features), 1))])
    y = sharp.astype(np.float64)
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        gradient = x.T @ (p - y) / len(y) + penalty * w
        hessian = (x * (p * (1 - p) / len(y))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return PhotoHead(output, top, tuple(mean.round(8)), tuple(scale.round(8)), tuple(w[:-1].round(8)), round(float(w[-1]), 8))


def describe(head: PhotoHead, l2: float, losses: dict[float, float], photos: int) -> dict[str, Any]:
    """What the card says about the head beside its numbers."""
    return {
        "fitted_on": f"{photos} training photos (the training split's photo folder), every selected patch scored",
        "l2": l2, "l2_cross_validated_log_loss": {str(k): v for k, v in losses.items()},
        "features": "cull.score.photo_features: log-odds of the mean of the k best patch scores, the kind head's mean "
                    f"class probabilities, mean patch score, share >= 0.5, mean of the {head.top} best, log(patches), "
                    f"the mean embedding of the {head.top} best-scoring patches and of all scored patches",
        "model": "logistic regression on standardised features, Newton's method (train/head.py)",
    }
