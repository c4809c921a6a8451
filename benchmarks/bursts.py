"""Synthetic burst benchmark: grouping and rank-1 accuracy of `cull scan --bursts`, and what it costs.

    python benchmarks/bursts.py [--scenes 36] [--seed 0] [--workers 2]

Builds a burst library from the shared sharp photos (benchmarks/burst_library.py: hand-held
frames 0.3 s apart, two scenes interleaved, one sharp frame per burst beside focus misses, camera
shake, or a shallow-focus frame; lone photos), then in one run, each as a fresh process:
`cull eval --bursts` (grouping: same-burst pairs grouped, wrong merges, bursts mixing scenes;
ranking: rank 1 is the sharp frame, per kind), a cold `cull scan` without and with `--bursts`
(the price of scoring every patch), and a cached rescan with `--bursts` (no decoding).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.burst_library import KINDS, make_library  # noqa: E402

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sharp"


def cull(*args: str, cache: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    env = {**os.environ, "CULL_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "cull", *args], capture_output=True, text=True, env=env)
    return time.perf_counter() - started, proc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=36)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    scenes = (sorted((SHARED / "urban100").glob("*")) + sorted((SHARED / "sunhays80").glob("*")))[: args.scenes]
    with tempfile.TemporaryDirectory() as tmp:
        library, out = Path(tmp) / "bursts", Path(tmp) / "eval.json"
        specs = make_library(library, scenes, seed=args.seed)
        photos = sum(1 for _ in library.rglob("*.jpg"))
        j = ("--workers", str(args.workers))
        eval_time, proc = cull("eval", str(library), "--bursts", "--json", str(out), *j, cache=Path(tmp) / "c0")
        if proc.returncode not in (0, 1):
            print(proc.stdout, proc.stderr)
            return 1
        report = json.loads(out.read_text())
        plain, _ = cull("scan", str(library), "--no-xmp", "--no-cache", *j, cache=Path(tmp) / "c1")
        cold, _ = cull("scan", str(library), "--no-xmp", "--bursts", *j, cache=Path(tmp) / "c2")
        warm, rescan = cull("scan", str(library), "--no-xmp", "--bursts", *j, cache=Path(tmp) / "c2")
    per_kind = {kind: [s for s in specs if s.kind == kind] for kind in KINDS}
    missed = {kind: sum(1 for m in report["rank1_misses"] if f"_{kind}/" in m) for kind in KINDS}
    print(f"{photos} photos, {report['true_bursts']} bursts ({', '.join(f'{len(v)} {k}' for k, v in per_kind.items())}), "
          f"{args.scenes - len(specs)} lone photos; seed {args.seed}; {args.workers} workers")
    print("| measure | result |\n|---|---|")
    print(f"| same-burst pairs grouped | {report['pairs_grouped']}/{report['same_burst_pairs']} |")
    print(f"| wrong merges / bursts mixing two scenes | {report['wrong_merges']} / {report['mixed_bursts']} |")
    for kind in KINDS:
        n = len(per_kind[kind])
        print(f"| rank 1 = the sharp frame, others {kind} | {n - missed[kind]}/{n} |")
    print(f"| cold scan without / with --bursts | {plain:.1f} s / {cold:.1f} s ({cold / plain:.2f}x) |")
    cached = "all from cache" if f"({photos} from cache)" in rescan.stdout else rescan.stdout.strip().splitlines()[-1]
    print(f"| cached rescan with --bursts | {warm:.1f} s ({cached}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
