"""Scan throughput against references measured in the same run, on the same files and cores.

    python benchmarks/scan_throughput.py [--dir DIR] [--files 100] [--rss-files 10000]

Makes (once, cached) a folder of sharp 24 MP JPEGs (mosaics of the bundled Kodak photos at native
resolution; every 10th defocused), then times:
  1. decode-only floor: the same reduced (DCT-scaled) decode in the same spawn process pool, no
     scoring, started as a fresh process like `cull scan` (so start-up costs count on both sides)
  2. `cull scan` cold (fresh cache), 3. `cull scan` cached rescan,
  4. a naive full-resolution Laplacian-variance script (one process, as such scripts are written),
and peak RSS (the whole process tree) of a cold scan over --rss-files small photos.
Prints ratios; targets: cold >= 0.8x floor, >= 3x Laplacian, rescan >= 2000 files/s, RSS < 1 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cull.card import load_card  # noqa: E402
from cull.runner import default_workers  # noqa: E402

EXAMPLES = sorted((REPO / "examples" / "photos").glob("*.jpg"))


def make_large_jpegs(folder: Path, count: int, size: tuple[int, int] = (6000, 4000)) -> list[Path]:
    """24 MP photos that are sharp at full resolution (mosaics of native-resolution Kodak tiles with
    a little sensor grain), like a real library; every 10th is defocused."""
    from PIL import ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    tiles = [Image.open(p).convert("RGB") for p in EXAMPLES if "_" not in p.stem]
    paths = []
    for i in range(count):
        path = folder / f"big_{i:04d}.jpg"
        if not path.exists():
            rng = np.random.default_rng(i)
            canvas = Image.new("RGB", size)
            for y in range(0, size[1], 500):
                for x in range(0, size[0], 500):
                    tile = tiles[int(rng.integers(len(tiles)))].rotate(90 * int(rng.integers(4)))
                    canvas.paste(tile, (x, y))
            grain = rng.normal(0, 2.0, (size[1], size[0], 1)).astype(np.float32)
            pixels = np.clip(np.asarray(canvas, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            if i % 10 == 0:
                image = image.filter(ImageFilter.GaussianBlur(8))
            image.save(path.with_suffix(".tmp"), "JPEG", quality=90)
            os.replace(path.with_suffix(".tmp"), path)
        paths.append(path)
    return paths


def make_small_jpegs(folder: Path, count: int) -> None:
    """``count`` small photos in folders of 1000; every 10th is blurred, so a realistic share of the
    library gets verdicts written to XMP sidecars (and checked again on a rescan)."""
    from PIL import ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    base = Image.open(EXAMPLES[0]).convert("RGB").resize((320, 240))
    prototypes = {}
    for name, image in (("sharp", base), ("blurred", base.filter(ImageFilter.GaussianBlur(4)))):
        tmp = folder / f"proto_{name}.jpg"
        image.save(tmp, "JPEG", quality=85)
        prototypes[name] = tmp.read_bytes()
        tmp.unlink()
    for i in range(count):
        path = folder / f"{i // 1000:02d}" / f"small_{i:05d}.jpg"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(prototypes["blurred" if i % 10 == 0 else "sharp"])


FLOOR_SCRIPT = """
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from cull.decode import decode_gray

def decode(path):
    return decode_gray(Path(path), __LONG_SIDE__).shape

if __name__ == "__main__":
    with ProcessPoolExecutor(__WORKERS__, mp_context=get_context("spawn")) as pool:
        list(pool.map(decode, sorted(Path(sys.argv[1]).glob("*.jpg")), chunksize=2))
"""


def decode_floor(folder: Path, workers: int, long_side: int) -> float:
    """The same reduced decode in the same spawn pool, as a fresh process like `cull scan`."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "floor.py"
        script.write_text(FLOOR_SCRIPT.replace("__LONG_SIDE__", str(long_side)).replace("__WORKERS__", str(workers)))
        started = time.perf_counter()
        subprocess.run([sys.executable, str(script), str(folder)], check=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
        return time.perf_counter() - started


def naive_laplacian(paths: list[Path]) -> float:
    script = (
        "import sys, numpy as np\nfrom PIL import Image\n"
        "for p in sys.argv[1:]:\n"
        "    g = np.asarray(Image.open(p).convert('L'), dtype=np.float32)\n"
        "    lap = g[1:-1,:-2] + g[1:-1,2:] + g[:-2,1:-1] + g[2:,1:-1] - 4*g[1:-1,1:-1]\n"
        "    print(p, float(lap.var()) < 100)\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, *map(str, paths)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def _tree_rss_kb(root_pid: int) -> int:
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        rss[int(entry)] = int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(rss.get(pid, 0) for pid in tree)


def run_cull(args: list[str], cache: Path) -> tuple[float, int]:
    """Wall time and peak RSS (kB, whole process tree) of one cull command."""
    env = {**os.environ, "CULL_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "cull", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    peak = 0

    def watch() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    code = proc.wait()
    elapsed = time.perf_counter() - started
    watcher.join()
    if code not in (0, 1):
        raise SystemExit(f"cull {' '.join(args)} failed with exit code {code}")
    return elapsed, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "cull-bench")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rss-files", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    card = load_card()
    print(f"preparing {args.files} JPEGs of 24 MP in {args.dir} (cached between runs) ...", flush=True)
    paths = make_large_jpegs(args.dir / "mosaic", args.files)
    n = len(paths)
    workers = args.workers
    print(f"{n} files, {workers} workers, analysis long side {card.analysis.long_side} px\n", flush=True)

    floor = decode_floor(args.dir / "mosaic", workers, card.analysis.long_side)
    with tempfile.TemporaryDirectory() as cache:
        cold, cold_rss = run_cull(["scan", str(args.dir / "mosaic"), "--workers", str(workers)], Path(cache))
        cached, _ = run_cull(["scan", str(args.dir / "mosaic"), "--workers", str(workers)], Path(cache))
    laplacian = naive_laplacian(paths)

    rate = lambda seconds: n / seconds  # noqa: E731
    print(f"{'decode-only floor':34} {floor:7.2f} s  {rate(floor):7.1f} files/s")
    print(f"{'cull scan, cold':34} {cold:7.2f} s  {rate(cold):7.1f} files/s   peak RSS {cold_rss / 1024:.0f} MB")
    print(f"{'cull scan, cached rescan':34} {cached:7.2f} s  {rate(cached):7.1f} files/s (incl. start-up)")
    print(f"{'naive full-res Laplacian (1 proc)':34} {laplacian:7.2f} s  {rate(laplacian):7.1f} files/s")
    print()
    print(f"cold scan / decode floor      = {floor / cold:5.2f}x   (target >= 0.8)")
    print(f"cold scan / Laplacian script  = {laplacian / cold:5.2f}x   (target >= 3)")

    if args.rss_files:
        small = args.dir / f"mixed{args.rss_files}"
        make_small_jpegs(small, args.rss_files)
        with tempfile.TemporaryDirectory() as cache:
            t_cold, rss = run_cull(["scan", str(small), "--workers", str(workers)], Path(cache))
            t_rescan, rss2 = run_cull(["scan", str(small), "--workers", str(workers)], Path(cache))
        print(f"{args.rss_files} small photos: cold {t_cold:.1f} s, peak RSS {rss / 1024:.0f} MB (target < 1024); "
              f"cached rescan {t_rescan:.2f} s = {args.rss_files / t_rescan:.0f} files/s (target >= 2000), "
              f"peak RSS {rss2 / 1024:.0f} MB")


if __name__ == "__main__":
    main()
