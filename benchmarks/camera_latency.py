"""Per-frame latency of `cull camera` (grab -> score -> display line) with the replay source, one core.

    python benchmarks/camera_latency.py [--frames 60]

Replays JPEG frames made from the bundled examples at native resolution (alternately in and out of
focus) through the same code path as the live command (ReplaySource -> score_frame -> render_line)
with a single-threaded onnxruntime session, and prints the latency per frame (in-focus, out-of-focus,
p95) and the share spent in the model. Frame sizes: a webcam at 640x480 and 1280x720 (its stills
are those frames, scored as they are), and the gray 1440x1080 lores stream the Raspberry Pi source
asks for with the 12 MP HQ camera (its stills' analysis scale, scaled by the camera's ISP). Grab includes decoding the replayed JPEG, which a live
camera does not pay. Target: <= 50 ms per frame on one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from cull.camera.assist import score_frame  # noqa: E402
from cull.camera.sources import ReplaySource  # noqa: E402
from cull.camera.ui import render_line  # noqa: E402
from cull.card import load_card  # noqa: E402
from cull.score import OnnxScorer  # noqa: E402


def make_frames(folder: Path, size: tuple[int, int], count: int, mode: str = "RGB") -> Path:
    """Frames at native resolution (mosaics of the example photos, no upscaling), saved as JPEG like an
    MJPEG stream; even frames in focus (sharp examples), odd frames out of focus (blurred ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    examples = sorted((REPO / "examples" / "photos").glob("*.jpg"))
    sharp = [Image.open(p).convert("RGB") for p in examples if "_" not in p.stem]
    soft = [Image.open(p).convert("RGB") for p in examples if "_" in p.stem]
    for i in range(count):
        tiles = sharp if i % 2 == 0 else soft
        frame = Image.new("RGB", size)
        for n, (y, x) in enumerate((y, x) for y in range(0, size[1], 500) for x in range(0, size[0], 500)):
            frame.paste(tiles[(i + n) % len(tiles)], (x, y))
        frame.convert(mode).save(folder / f"frame_{i:04d}.jpg", quality=90)
    return folder


def measure(folder: Path, size: tuple[int, int], card, scorer) -> dict[str, float]:  # type: ignore[no-untyped-def]
    thresholds = card.thresholds_for("lenient")
    source = ReplaySource(folder)
    frames = source.frames()
    latencies, model = [], []
    while True:
        started = time.perf_counter()
        try:
            rgb = next(frames)  # grab
        except StopIteration:
            break
        result = score_frame(rgb, card, scorer, thresholds)  # score
        render_line(result, 0.0)  # display
        latencies.append(time.perf_counter() - started)
        model.append(result.model_seconds)
    lat = np.array(latencies) * 1000
    sharp, soft = lat[4::2], lat[5::2]  # skip warm-up frames
    return {"mean": float(lat[4:].mean()), "sharp": float(sharp.mean()), "soft": float(soft.mean()),
            "p95": float(np.percentile(lat[4:], 95)), "model_share": float(np.sum(model[4:]) / np.sum(latencies[4:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    card = load_card()
    scorer = OnnxScorer(card, threads=1)
    print(f"replay source, one onnxruntime thread, {args.frames} frames per size (first 4 are warm-up)")
    with tempfile.TemporaryDirectory() as tmp:
        for size, mode in (((640, 480), "RGB"), ((1280, 720), "RGB"), ((1440, 1080), "L")):
            folder = make_frames(Path(tmp) / f"{size[0]}x{size[1]}", size, args.frames, mode)
            r = measure(folder, size, card, scorer)
            verdict = "meets" if r["p95"] <= 50 else "MISSES"
            print(f"{size[0]}x{size[1]} {'gray' if mode == 'L' else 'RGB'}: mean {r['mean']:.1f} ms per frame ({1000 / r['mean']:.0f} fps): in-focus frames "
                  f"{r['sharp']:.1f} ms, out-of-focus frames {r['soft']:.1f} ms, p95 {r['p95']:.1f} ms; model "
                  f"{100 * r['model_share']:.0f} % of it; p95 {verdict} the 50 ms target")


if __name__ == "__main__":
    main()
