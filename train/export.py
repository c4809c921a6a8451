"""Export a Keras focus model to ONNX with tf2onnx, check parity, and write its model card.

tf2onnx.convert.from_keras fails on Keras 3 (KeyError on a keras_tensor name); converting a
tf.function that wraps the model works and matches Keras to ~1e-7 (shared/NOTES.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from cull.card import CARD_FORMAT, AnalysisSpec, analysis_dict, file_sha256
from train.degrade import KINDS
from train.model import architecture

OPSET = 17
PARITY_TOLERANCE = 1e-4


def export_onnx(model: Any, path: Path, patch_size: int) -> None:
    import tensorflow as tf
    import tf2onnx

    spec = [tf.TensorSpec([None, patch_size, patch_size, 1], tf.float32, name="patches")]
    function = tf.function(lambda x: model(x, training=False), autograph=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".onnx.tmp")
    proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=OPSET)
    # tf2onnx names the traced function in the graph's doc string with a counter of the functions this
    # process traced before ("__inference_<lambda>_405"): the same network gave another file (and sha256)
    # in a build that trained in the same process.  The file holds the network only.
    proto.graph.doc_string = "converted by tf2onnx from the Keras focus model"
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, path)


def parity(model: Any, path: Path, x: NDArray[np.float32]) -> float:
    """Largest |Keras - onnxruntime| over the outputs for batch ``x``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    onnx_out = dict(zip(names, session.run(names, {"patches": x})))
    keras_out = model(x, training=False)
    return max(float(np.abs(np.asarray(keras_out[n]) - onnx_out[n]).max()) for n in names)


def write_card(
    onnx_path: Path,
    *,
    version: str,
    variant: str,
    kernel: int,
    spec: AnalysisSpec,
    aggregate_k: int,
    thresholds: dict[str, dict[str, float]],
    extra: dict[str, Any] | None = None,
    filters: tuple[int, ...] = (32, 64, 64),
    stride: int = 1,
    separable: bool = False,
    members: int = 1,
    photo_head: dict[str, Any] | None = None,
) -> Path:
    """Write focus.json next to the model (atomically), recording the model file's sha256 (and the photo
    head, train/head.py, where one was fitted)."""
    card: dict[str, Any] = {
        "format": CARD_FORMAT,
        "model_file": onnx_path.name,
        "sha256": file_sha256(onnx_path),
        "version": version,
        "architecture": architecture(variant, kernel, tuple(filters), stride, separable, members),
        "input": {
            "name": "patches",
            "shape": [None, spec.patch_size, spec.patch_size, 1],
            "dtype": "float32",
            "preprocess": "gray (ITU-R 601 luma of the decoded 8-bit image) in [0,1], each patch "
            "standardised: (p - mean) / max(std, 0.02)",
        },
        "analysis": analysis_dict(spec),
        "patch_logic": ("centred grid of non-overlapping patch_size tiles" if spec.tile_step == spec.patch_size
                        else "centred grid of patch_size tiles every tile_stride px (overlapping)")
        + " at the analysis scale; tiles "
        "with std < min_std, mean outside [dark_mean, bright_mean] or > max_clipped clipped pixels are "
        "skipped; the rest are ranked by gradient energy and the first max_patches scored; the first_pass "
        "best patches are scored first and a photo whose best k already reach the highest keep threshold "
        "is not scored further (same verdict, less work)",
        "aggregate": {"method": "mean of the k best patch scores (any sharp region keeps)", "k": aggregate_k},
        "outputs": {"score": "p_sharp"},
        "thresholds": thresholds,
    }
    if variant == "focus":
        card["kind"] = {"output": "kind", "labels": list(KINDS)}
    if photo_head:
        card["photo_head"] = photo_head
    card.update(extra or {})
    path = onnx_path.with_suffix(".json")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
