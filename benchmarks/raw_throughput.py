"""RAW throughput: DNGs carrying a full-size JPEG preview, against the decode floor of that preview, in one run.

    python benchmarks/raw_throughput.py [--dir DIR] [--files 40] [--workers N]

Writes (once, cached in DIR/dng) a minimal DNG 1.4 per 24 MP JPEG of benchmarks/scan_throughput.py:
IFD0 is the full-size JPEG preview (NewSubFileType 1: the JPEG's bytes as they are), its SubIFD a
16-bit Bayer CFA of the same size (a sparse hole: cull never reads it when the preview is full size).
LibRaw opens them and extract_thumb() returns the preview, as with a camera's DNG.  Then times:
  1. the decode floor of the previews: the same JPEG bytes (the source JPEGs), the same reduced
     DCT-scaled decode in the same spawn pool, no scoring, as a fresh process,
  2. `cull scan` cold (fresh cache) over the DNGs, and 3. over the same JPEGs (for context),
and checks that the DNGs get the scores and verdicts of their previews.  Target: RAW >= 0.8x floor.
Also times one decode of the shared RAW sample (Kodak DC50 KDC: only a 64-byte thumbnail, so cull
demosaics it at half size) and of one DNG, in this process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cull.card import load_card  # noqa: E402
from cull.decode import decode_gray  # noqa: E402
from cull.runner import default_workers  # noqa: E402
from scan_throughput import decode_floor, make_large_jpegs, run_cull  # noqa: E402
from tests.rawfiles import write_dng  # noqa: E402

SHARED_RAW = REPO.parent / "shared" / "data" / "raw" / "RAW_KODAK_DC50.KDC"


def rows(report: Path) -> dict[str, tuple[object, object]]:
    return {Path(r["path"]).stem: (r["score"], r["verdict"]) for r in map(json.loads, report.read_text().splitlines())}


def per_file_ms(path: Path, long_side: int, repeat: int = 5) -> float:
    decode_gray(path, long_side)  # warm: imports, page cache
    started = time.perf_counter()
    for _ in range(repeat):
        decode_gray(path, long_side)
    return (time.perf_counter() - started) / repeat * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "cull-bench")
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeat", type=int, default=2,
                        help="best of N interleaved runs of each (the first run also warms the page cache)")
    args = parser.parse_args()
    card = load_card()
    long_side = card.analysis.long_side

    print(f"preparing {args.files} 24 MP JPEGs and DNGs with them as full-size previews in {args.dir} ...", flush=True)
    jpegs = make_large_jpegs(args.dir / "mosaic", args.files)
    (args.dir / "dng").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        stored = []
        for jpeg in jpegs:
            dng = args.dir / "dng" / f"{jpeg.stem}.dng"
            if not dng.exists():
                write_dng(jpeg, dng)
            stored.append((jpeg, dng))

        def fresh(kind: str, run: int) -> Path:
            """A new folder of hard links (exactly these files, no XMP from an earlier run)."""
            folder = Path(tmp) / f"{kind}{run}"
            folder.mkdir()
            for jpeg, dng in stored:
                source = jpeg if kind == "jpeg" else dng
                os.link(source, folder / source.name)
            return folder

        n = len(jpegs)
        load_before = os.getloadavg()
        floors, raws, plain, rss = [], [], [], 0
        for run in range(args.repeat):
            jpeg_dir, dng_dir = fresh("jpeg", run), fresh("dng", run)
            floors.append(decode_floor(jpeg_dir, args.workers, long_side))
            took, peak = run_cull(["scan", str(dng_dir), "--workers", str(args.workers), "--show", "none",
                                   "--report", str(Path(tmp) / "dng.jsonl")], Path(tmp) / f"cache-dng{run}")
            raws.append(took)
            rss = max(rss, peak)
            took, _ = run_cull(["scan", str(jpeg_dir), "--workers", str(args.workers), "--show", "none",
                                "--report", str(Path(tmp) / "jpeg.jsonl")], Path(tmp) / f"cache-jpeg{run}")
            plain.append(took)
            print(f"run {run + 1}: floor {floors[-1]:.2f} s, DNG {raws[-1]:.2f} s, JPEG {plain[-1]:.2f} s", flush=True)
        floor, raw, jpeg, raw_rss = min(floors), min(raws), min(plain), rss
        load_after = os.getloadavg()
        same = rows(Path(tmp) / "dng.jsonl") == rows(Path(tmp) / "jpeg.jsonl")
        dng_ms = per_file_ms(stored[0][1], long_side)
        jpeg_ms = per_file_ms(jpegs[0], long_side)
    kdc_ms = per_file_ms(SHARED_RAW, long_side) if SHARED_RAW.exists() else None

    print(f"\n{n} DNGs (24 MP, full-size JPEG preview), {args.workers} workers, best of {args.repeat}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'decode floor of the previews':34} {floor:7.2f} s  {n / floor:6.1f} files/s")
    print(f"{'cull scan, cold, DNG':34} {raw:7.2f} s  {n / raw:6.1f} files/s   peak RSS {raw_rss / 1024:.0f} MB")
    print(f"{'cull scan, cold, the same JPEGs':34} {jpeg:7.2f} s  {n / jpeg:6.1f} files/s")
    paired = sorted(f / r for f, r in zip(floors, raws))  # each run's own ratio: the machine's drift cancels
    print(f"\nRAW scan / decode floor of its preview = {floor / raw:4.2f}x best against best; per run "
          f"{', '.join(f'{x:.2f}' for x in paired)} (median {statistics.median(paired):.2f})   (target >= 0.8)")
    print(f"RAW scan / JPEG scan                   = {jpeg / raw:4.2f}x")
    print(f"DNG scores and verdicts equal to their previews': {'yes' if same else 'NO'}")
    print(f"\none decode, this process: DNG {dng_ms:.0f} ms, its preview as JPEG {jpeg_ms:.0f} ms"
          + (f", shared KDC sample (64-byte thumbnail: half-size demosaic) {kdc_ms:.0f} ms" if kdc_ms else ""))
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
