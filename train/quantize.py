"""Static int8 quantisation of the focus network (onnxruntime.quantization), calibrated on real patches.

    python -m train.quantize [--src models/focus.onnx] [--dst DIR/focus-int8.onnx] [--photos DIR ...]

``quantize_model`` is what `python -m train` calls after export; run as a script it writes a
quantised copy of a model plus a card beside it (for measurements: it never replaces the shipped model).
The second and third convolutions (most of the work) are quantised (QDQ, per-channel weights,
percentile activation ranges); the first convolution and the dense layers stay float (see float_nodes).  Measured on this project's AVX2 CPU (no VNNI) int8 is not faster than float: see
docs/calibrate.md (Speed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

from cull.card import AnalysisSpec, file_sha256
from cull.decode import decode_gray
from cull.errors import UnreadableImage
from cull.formats import is_photo
from cull.fsutil import atomic_write_text
from cull.patches import network_input, select_patches

log = logging.getLogger(__name__)

PERCENTILE = 99.999  # activation ranges from this percentile of the calibration activations (MinMax: outliers
# from near-flat standardised patches stretch the ranges and cost parity)

REPO = Path(__file__).resolve().parent.parent


def degraded(gray: NDArray[np.float32], rng: np.random.Generator) -> list[NDArray[np.float32]]:
    """A defocused and a shaken version of an analysis-scale gray image (calibration needs both classes)."""
    image = Image.fromarray(np.clip(gray * 255.0, 0, 255).astype(np.uint8))
    defocus = np.asarray(image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 4.0)))), np.float32) / 255.0
    length = int(rng.integers(5, 15))
    shaken = sum(np.roll(gray, s, axis=int(rng.integers(2))) for s in range(length)) / length
    return [defocus, np.asarray(shaken, np.float32)]


def calibration_patches(
    photos: Sequence[Path], spec: AnalysisSpec, per_image: int = 16, limit: int = 2048, seed: int = 0
) -> NDArray[np.float32]:
    """Network inputs (N, P, P, 1) from ``photos`` at the analysis scale: each photo sharp, defocused
    and shaken, its ``per_image`` most textured patches each (what production scores first)."""
    rng = np.random.default_rng(seed)
    batches: list[NDArray[np.float32]] = []
    total = 0
    for path in photos:
        try:
            gray = decode_gray(path, spec.long_side)
        except UnreadableImage as exc:
            log.warning("calibration: skipping %s (%s)", path, exc)
            continue
        for version in [gray.astype(np.float32), *degraded(gray.astype(np.float32), rng)]:
            pixels = select_patches(version, spec).pixels[:per_image]
            if len(pixels):
                batches.append(network_input(pixels))
                total += len(pixels)
        if total >= limit:
            break
    if not batches:
        raise ValueError("no calibration patches: none of the photos could be read or had texture")
    return np.concatenate(batches)[:limit]


def photos_under(folders: Sequence[Path], limit: int = 64, seed: int = 0) -> list[Path]:
    """Up to ``limit`` photos drawn evenly (seeded) from ``folders``."""
    found = sorted(p for folder in folders for p in Path(folder).rglob("*") if p.is_file() and is_photo(p))
    if len(found) > limit:
        found = [found[i] for i in sorted(np.random.default_rng(seed).choice(len(found), limit, replace=False))]
    return found


class _PatchReader:
    """onnxruntime CalibrationDataReader over an array of network inputs, in batches."""

    def __init__(self, input_name: str, patches: NDArray[np.float32], batch: int = 64) -> None:
        self._batches: Iterator[dict[str, NDArray[np.float32]]] = (
            {input_name: patches[i : i + batch]} for i in range(0, len(patches), batch)
        )

    def get_next(self) -> dict[str, NDArray[np.float32]] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        pass


def float_nodes(model_path: Path) -> list[str]:
    """Nodes kept in float: the first convolution (it sees the standardised input, whose fine steps
    carry the focus evidence), the dense layers (2 % of the multiply-adds) and the output heads, so
    scores keep their resolution near the thresholds; only the 2nd and 3rd convolutions (about 94 %
    of the work) become int8.  Measured on the shipped model: score max abs diff 0.029 on 48 photos
    this way, 0.041 with the dense layer in int8 as well, 0.05+ with MinMax ranges."""
    import onnx

    graph = onnx.load(str(model_path)).graph
    producer = {out: node for node in graph.node for out in node.output}
    keep = [n.name for n in graph.node if n.op_type == "Conv"][:1]
    keep += [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    for node in graph.node:  # an Add that completes a MatMul (bias) stays with it
        if node.op_type == "Add" and producer.get(node.input[0]) is not None and producer[node.input[0]].name in keep:
            keep.append(node.name)
    return keep


def quantize_model(
    src: Path, dst: Path, calibration: np.ndarray, *, fmt: str = "qdq", per_channel: bool = True
) -> Path:
    """Write a static int8 copy of ``src`` to ``dst`` (atomically) and return ``dst``.

    ``calibration``: network inputs (N, P, P, 1) float32 (see calibration_patches), used to fix the
    activation ranges.  ``fmt``: "qdq" (QuantizeLinear/DequantizeLinear pairs) or "qoperator"
    (QLinearConv...).  Raises ValueError on empty calibration data or an unknown format.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0:
        raise ValueError("calibration data is empty")
    formats = {"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}
    if fmt not in formats:
        raise ValueError(f"format must be one of {sorted(formats)}, not {fmt!r}")
    src, dst = Path(src), Path(dst)
    input_name = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        out = Path(tmp) / "quantized.onnx"
        quantize_static(
            str(prepared), str(out), _PatchReader(input_name, np.asarray(calibration, np.float32)),  # type: ignore[arg-type]
            quant_format=formats[fmt], per_channel=per_channel, weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.Percentile,
            op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=float_nodes(prepared),
            extra_options={"CalibPercentile": PERCENTILE},
        )
        dst.parent.mkdir(parents=True, exist_ok=True)
        staged = dst.with_name(f".{dst.name}.tmp")
        staged.write_bytes(out.read_bytes())
        os.replace(staged, dst)
    return dst


def write_card_for(model: Path, base_card: Path, out: Path, note: str = "") -> Path:
    """A card for ``model`` (beside it): ``base_card``'s settings, the new model's file and sha256."""
    raw = json.loads(Path(base_card).read_text(encoding="utf-8"))
    digest = file_sha256(model)
    model_file = os.path.relpath(Path(model).resolve(), Path(out).resolve().parent)
    raw.update(model_file=model_file, sha256=digest, version=f"{raw['version']}-int8-{digest[:8]}")
    raw["quantization"] = {"base_version": json.loads(Path(base_card).read_text())["version"], "note": note}
    atomic_write_text(Path(out), json.dumps(raw, indent=2) + "\n")
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    from cull.card import load_card

    parser = argparse.ArgumentParser(prog="python -m train.quantize", description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO / "models" / "focus.onnx")
    parser.add_argument("--dst", type=Path, default=Path(tempfile.gettempdir()) / "cull-int8" / "focus-int8.onnx")
    parser.add_argument("--photos", type=Path, action="append",
                        help="folders of sharp photos for calibration (default: ../shared/data/sharp)")
    parser.add_argument("--format", default="qdq", choices=["qdq", "qoperator"])
    parser.add_argument("--per-tensor", action="store_true", help="one scale per weight tensor, not per channel")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    card = load_card(args.src)
    photos = photos_under(args.photos or [REPO.parent / "shared" / "data" / "sharp"])
    patches = calibration_patches(photos, card.analysis)
    dst = quantize_model(args.src, args.dst, patches, fmt=args.format, per_channel=not args.per_tensor)
    card_path = write_card_for(dst, args.src.with_suffix(".json"), dst.with_suffix(".json"),
                               note=f"static int8 ({args.format}, {'per-tensor' if args.per_tensor else 'per-channel'}) "
                                    f"calibrated on {len(patches)} patches of {len(photos)} photos")
    log.info("wrote %s (%.0f kB, was %.0f kB) and %s", dst, dst.stat().st_size / 1e3, args.src.stat().st_size / 1e3, card_path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
