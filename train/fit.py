"""Train a focus network on patch sets (TensorFlow / Keras)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cull.patches import network_input
from train.degrade import KINDS
from train.model import build_model

log = logging.getLogger(__name__)


def prepare(patches: dict[str, NDArray], variant: str) -> tuple[NDArray[np.float32], dict[str, NDArray]]:
    x = network_input(patches["x"].astype(np.float32) / 255.0)
    y: dict[str, NDArray] = {"p_sharp": patches["sharp"].astype(np.float32)[:, None]}
    if variant == "focus":
        y["kind"] = patches["kind"].astype(np.int32)
    return x, y


def sample_weights(patches: dict[str, NDArray], motion_weight: float = 1.0) -> NDArray[np.float32]:
    """Per-patch loss weights: ``motion_weight`` for blurred patches of shaken photos, 1 for the rest."""
    shaken = (patches["sharp"] == 0) & (patches["kind"] == KINDS.index("motion"))
    return np.where(shaken, motion_weight, 1.0).astype(np.float32)


def teacher_scores(model_path: Path, patches: dict[str, NDArray], batch: int = 256) -> NDArray[np.float32]:
    """P(in focus) that an exported focus network gives each patch (the soft targets of distillation)."""
    from train.data import focus_scores

    out = [focus_scores(model_path, patches["x"][start : start + batch].astype(np.float32) / 255.0)
           for start in range(0, len(patches["x"]), batch)]
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def distilled_targets(labels: NDArray[np.float32], teacher: NDArray[np.float32], weight: float) -> NDArray[np.float32]:
    """The focus head's (N, 1) targets under distillation: labels blended with the teacher's scores."""
    if len(teacher) != len(labels):
        raise ValueError(f"{len(teacher)} teacher scores for {len(labels)} training patches")
    blend = (1.0 - weight) * labels.reshape(-1) + weight * teacher.astype(np.float32).reshape(-1)
    return blend.astype(np.float32)[:, None]


def _augment(x, y, w):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    x = tf.image.random_flip_left_right(x)
    x = tf.image.random_flip_up_down(x)
    x = tf.image.rot90(x, k=tf.random.uniform([], 0, 4, dtype=tf.int32))
    return x, y, w


def load_onnx_weights(model: Any, path: Path) -> None:
    """Warm start: copy the weights of an exported focus network (same architecture, as written by
    export_onnx) into ``model``: Conv kernels (O, I, kh, kw) -> (kh, kw, I, O), a depthwise Conv
    (group > 1) and the 1x1 Conv after it -> one SeparableConv2D, MatMul + Add pairs to the Dense
    layers, in graph order.  Raises ValueError when the shapes do not fit."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = list(graph.node)
    found: list[list[NDArray]] = []
    depthwise: NDArray | None = None  # waiting for its pointwise half
    for i, node in enumerate(nodes):
        if node.op_type == "Conv":  # (an all-zero bias may have been folded away by the exporter)
            kernel = init[node.input[1]]
            bias = init[node.input[2]] if len(node.input) > 2 else np.zeros(kernel.shape[0], kernel.dtype)
            group = next((a.i for a in node.attribute if a.name == "group"), 1)
            if group > 1:  # (C * m, 1, kh, kw) -> (kh, kw, C, m); its own bias is 0 in a SeparableConv2D
                depthwise = kernel.reshape(group, -1, *kernel.shape[2:]).transpose(2, 3, 0, 1)
            elif depthwise is not None:
                found.append([depthwise, kernel.transpose(2, 3, 1, 0), bias])
                depthwise = None
            else:
                found.append([kernel.transpose(2, 3, 1, 0), bias])
        elif node.op_type == "MatMul" and node.input[1] in init:
            kernel = init[node.input[1]]
            adds = [n for n in nodes[i + 1:] if n.op_type == "Add" and node.output[0] in n.input]
            biases = [init[x] for n in adds for x in n.input if x in init]
            found.append([kernel, biases[0] if biases else np.zeros(kernel.shape[1], kernel.dtype)])
    layers = {tuple(tuple(w.shape) for w in layer.get_weights()): layer
              for layer in model.layers if type(layer).__name__ in ("Conv2D", "SeparableConv2D", "Dense")}
    shapes = [tuple(tuple(w.shape) for w in weights) for weights in found]
    if sorted(shapes) != sorted(layers) or len(set(shapes)) != len(shapes):
        raise ValueError(f"{path}: weights {sorted(shapes)} do not fit the network's {sorted(layers)}")
    for shape, weights in zip(shapes, found):  # every weighted layer has a distinct shape here
        layers[shape].set_weights(weights)


def train_model(
    train: dict[str, NDArray],
    val: dict[str, NDArray],
    *,
    variant: str = "focus",
    kernel: int = 3,
    epochs: int = 12,
    batch_size: int = 64,
    seed: int = 0,
    threads: int = 2,
    verbose: int = 2,
    init: Path | None = None,
    learning_rate: float = 1e-3,
    filters: tuple[int, ...] = (32, 64, 64),
    stride: int = 1,
    motion_weight: float = 1.0,
    separable: bool = False,
    teacher: NDArray[np.float32] | None = None,
    distil_weight: float = 0.5,
) -> tuple[Any, dict[str, Any]]:
    """Fit a model; returns (keras model with the best validation weights, training history).

    ``init``: start from the weights of an exported model (fine-tuning) instead of random ones.
    ``motion_weight``: the loss weight of blurred patches of shaken photos, in both heads' losses
    (1: every patch alike); validation loss, and so early stopping, stays unweighted.
    ``teacher``: another network's P(in focus) per training patch (teacher_scores); the focus head then
    learns ``(1 - distil_weight) * label + distil_weight * teacher`` (distillation), validation stays on
    the labels."""
    import keras
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow was already initialised in this process (e.g. by a test)
        log.info("keeping TensorFlow's existing thread settings")
    keras.utils.set_random_seed(seed)
    x_train, y_train = prepare(train, variant)
    if teacher is not None:
        y_train["p_sharp"] = distilled_targets(y_train["p_sharp"], teacher, distil_weight)
    x_val, y_val = prepare(val, variant)
    data = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train, sample_weights(train, motion_weight)))
        .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
        .map(_augment, num_parallel_calls=1)
        .batch(batch_size)
        .prefetch(2)
    )
    model = build_model(variant, kernel, x_train.shape[1], filters=tuple(filters), stride=stride, separable=separable)
    if init is not None:
        load_onnx_weights(model, init)
    losses: dict[str, Any] = {"p_sharp": keras.losses.BinaryCrossentropy()}
    weights = {"p_sharp": 1.0}
    metrics: dict[str, Any] = {"p_sharp": [keras.metrics.BinaryAccuracy(name="acc")]}
    if variant == "focus":
        losses["kind"] = keras.losses.SparseCategoricalCrossentropy()
        weights["kind"] = 0.3
        metrics["kind"] = [keras.metrics.SparseCategoricalAccuracy(name="acc")]
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=losses, loss_weights=weights, metrics=metrics)
    callbacks = [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_lr=1e-5),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, restore_best_weights=True),
    ]
    started = time.monotonic()
    history = model.fit(
        data, validation_data=(x_val, y_val), epochs=epochs, callbacks=callbacks, verbose=verbose
    )
    record: dict[str, Any] = {k: [float(v) for v in values] for k, values in history.history.items()}
    record["seconds"] = round(time.monotonic() - started, 1)
    record["epochs_run"] = len(record.get("loss", []))
    return model, record


def patch_metrics(models: Sequence[Any], patches: dict[str, NDArray], variant: str) -> dict[str, float]:
    """Patch-level accuracy per class at 0.5 (the study's measure), from the mean score of the Keras
    models (one, or the members of an average, as their averaged export gives it)."""
    x, _ = prepare(patches, variant)
    p = np.mean([np.asarray(m.predict(x, batch_size=256, verbose=0)["p_sharp"]).reshape(-1) for m in models], axis=0)
    sharp = patches["sharp"].astype(bool)
    correct = (p >= 0.5) == sharp
    return {
        "n": int(len(p)),
        "accuracy": float(correct.mean()),
        "accuracy_sharp": float(correct[sharp].mean()) if sharp.any() else float("nan"),
        "accuracy_blurred": float(correct[~sharp].mean()) if (~sharp).any() else float("nan"),
    }
