"""Overhead of `cull scan --ray local` against the local worker pool, on the same files in one run.

    python benchmarks/cluster_overhead.py [--dir DIR] [--files 200] [--workers N] [--repeat 2]

Uses the 24 MP JPEGs of benchmarks/scan_throughput.py (made once, cached in DIR/mosaic).  Runs
`cull scan --no-cache --no-xmp` as fresh processes, pool and Ray interleaved (best of --repeat each),
and checks that both give the same report.  Prints two overheads:
  - scan phase (the time the summary line reports: discovery + analysis + decisions), the cost of
    running the analysis as Ray tasks once a cluster is there (target <= 15 %), and
  - end to end, which also counts starting a local Ray runtime (a fixed cost of seconds that a
    standing cluster does not pay per scan), and
  - end to end against a standing cluster: a head started once with `ray start --head` on 127.0.0.1
    (token auth, --workers CPUs), joined by every scan with `--ray 127.0.0.1:PORT`, as an archive
    runs it (target <= 15 %).  The pool is timed again, interleaved, while that head stands.
Also prints photos/s/core for both, and the load average before and after (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cull.runner import default_workers  # noqa: E402
from scan_throughput import bench_env, make_large_jpegs  # noqa: E402
from tests.rayhead import head_env, start_head, stop_head  # noqa: E402

SUMMARY = re.compile(r"in ([0-9.]+) s \(")


RAY_ENV = bench_env(head_env())  # loopback only, token authentication; compiled bytecode as installed


def run_scan(folder: Path, workers: int, report: Path, ray: str | None) -> tuple[float, float]:
    """(wall seconds of the whole command, seconds of the scan phase from its summary line)."""
    args = [sys.executable, "-m", "cull", "scan", str(folder), "--no-cache", "--no-xmp", "--show", "none",
            "--workers", str(workers), "--report", str(report)] + (["--ray", ray] if ray else [])
    env = RAY_ENV
    started = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    match = SUMMARY.search(done.stdout)
    if match is None:
        raise SystemExit(f"no summary line in: {done.stdout[-500:]}")
    return wall, float(match.group(1))


def rows(report: Path) -> dict[str, tuple[object, object]]:
    return {r["path"]: (r["score"], r["verdict"]) for r in map(json.loads, report.read_text().splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "cull-bench")
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--repeat", type=int, default=2, help="best of N interleaved runs of each")
    args = parser.parse_args()

    print(f"preparing {args.files} JPEGs of 24 MP in {args.dir / 'mosaic'} (cached between runs) ...", flush=True)
    paths = make_large_jpegs(args.dir / "mosaic", args.files)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"  # exactly these files (the cache folder may hold more)
        folder.mkdir()
        for path in paths:
            os.link(path, folder / path.name)  # same file system: no copy
        load_before = os.getloadavg()
        pool: list[tuple[float, float]] = []
        ray: list[tuple[float, float]] = []
        for i in range(args.repeat):
            pool.append(run_scan(folder, args.workers, Path(tmp) / "pool.jsonl", ray=None))
            ray.append(run_scan(folder, args.workers, Path(tmp) / "ray.jsonl", ray="local"))
            print(f"run {i + 1}: pool {pool[-1][0]:.1f} s ({pool[-1][1]:.1f} s scan), "
                  f"ray local {ray[-1][0]:.1f} s ({ray[-1][1]:.1f} s scan)", flush=True)
        standing_pool: list[tuple[float, float]] = []
        standing: list[tuple[float, float]] = []
        temp_dir = tempfile.mkdtemp(prefix="rayb", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        head, port = start_head(args.workers, temp_dir, RAY_ENV)
        time.sleep(3)  # the raylet and its workers come up after the GCS port opens
        try:
            for i in range(args.repeat):
                standing_pool.append(run_scan(folder, args.workers, Path(tmp) / "pool2.jsonl", ray=None))
                standing.append(run_scan(folder, args.workers, Path(tmp) / "head.jsonl", ray=f"127.0.0.1:{port}"))
                print(f"run {i + 1}: pool {standing_pool[-1][0]:.1f} s, standing head {standing[-1][0]:.1f} s "
                      f"({standing[-1][1]:.1f} s scan)", flush=True)
        finally:
            stop_head(head)
            shutil.rmtree(temp_dir, ignore_errors=True)
        load_after = os.getloadavg()
        same = all(rows(Path(tmp) / "pool.jsonl") == rows(Path(tmp) / name) for name in ("ray.jsonl", "head.jsonl"))

    n, cores = len(paths), args.workers
    pool_wall, pool_scan = min(w for w, _ in pool), min(s for _, s in pool)
    ray_wall, ray_scan = min(w for w, _ in ray), min(s for _, s in ray)
    print(f"\n{n} files of 24 MP, {cores} workers / Ray CPUs; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after (os.cpu_count() = {os.cpu_count()})")
    print(f"{'':24} {'scan phase':>12} {'end to end':>12}  photos/s/core (scan phase)")
    print(f"{'local pool':24} {pool_scan:10.1f} s {pool_wall:10.1f} s  {n / pool_scan / cores:6.2f}")
    print(f"{'--ray local':24} {ray_scan:10.1f} s {ray_wall:10.1f} s  {n / ray_scan / cores:6.2f}")
    print(f"\nRay overhead, scan phase  = {100 * (ray_scan / pool_scan - 1):+5.1f} %   (target <= 15 %)")
    print(f"Ray overhead, end to end  = {100 * (ray_wall / pool_wall - 1):+5.1f} %   "
          f"(includes starting the local runtime: {ray_wall - ray_scan - (pool_wall - pool_scan):.1f} s more start-up)")
    head_wall, head_scan = min(w for w, _ in standing), min(s for _, s in standing)
    pool2_wall = min(w for w, _ in standing_pool)
    print(f"{'--ray HEAD (standing)':24} {head_scan:10.1f} s {head_wall:10.1f} s  {n / head_scan / cores:6.2f}"
          f"   (pool again beside it: {pool2_wall:.1f} s)")
    print(f"Ray overhead, end to end, standing cluster = {100 * (head_wall / pool2_wall - 1):+5.1f} %   (target <= 15 %)")
    print(f"verdicts and scores identical (pool, --ray local, --ray HEAD): {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
