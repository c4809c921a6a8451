"""Per-frame latency of `cull camera` (grab -> score -> display line) with the replay source, one core.

    python benchmarks/camera_latency.py [--frames 60]

Replays frames made from the bundled examples at 640x480 and 1280x720 through the same code path as
the live command (ReplaySource -> score_frame -> render_line) with a single-threaded onnxruntime
session, and prints mean / median / p95 latency per frame and the share spent in the model.
Target: <= 50 ms per frame on one core.
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

from cull.camera.assist import render_line, score_frame  # noqa: E402
from cull.camera.sources import ReplaySource  # noqa: E402
from cull.card import load_card  # noqa: E402
from cull.score import OnnxScorer  # noqa: E402


def make_frames(folder: Path, size: tuple[int, int], count: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    examples = sorted((REPO / "examples" / "photos").glob("*.jpg"))
    for i in range(count):
        image = Image.open(examples[i % len(examples)]).convert("RGB").resize(size, Image.Resampling.BICUBIC)
        image.save(folder / f"frame_{i:04d}.png")
    return folder


def measure(folder: Path, size: tuple[int, int], card, scorer) -> dict[str, float]:  # type: ignore[no-untyped-def]
    thresholds = card.thresholds_for("lenient")
    source = ReplaySource(folder, preview_size=size)
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
    lat = np.array(latencies[3:]) * 1000  # skip warm-up frames
    return {"mean": lat.mean(), "median": float(np.median(lat)), "p95": float(np.percentile(lat, 95)),
            "model_share": float(np.sum(model[3:]) / np.sum(latencies[3:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    args = parser.parse_args()
    card = load_card()
    scorer = OnnxScorer(card, threads=1)
    print(f"replay source, one onnxruntime thread, {args.frames} frames per size (first 3 are warm-up)")
    with tempfile.TemporaryDirectory() as tmp:
        for size in ((640, 480), (1280, 720)):
            folder = make_frames(Path(tmp) / f"{size[0]}x{size[1]}", size, args.frames)
            r = measure(folder, size, card, scorer)
            verdict = "meets" if r["mean"] <= 50 else "MISSES"
            print(f"{size[0]}x{size[1]}: mean {r['mean']:.1f} ms, median {r['median']:.1f} ms, p95 {r['p95']:.1f} ms "
                  f"per frame ({1000 / r['mean']:.0f} fps); model {100 * r['model_share']:.0f} % of it; "
                  f"{verdict} the 50 ms target")


if __name__ == "__main__":
    main()
