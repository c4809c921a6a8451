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

The soft-library worst case (--soft-files, default --files): 24 MP JPEGs that are all mildly
defocused, so no photo is proven sharp by its first patches and all 64 are scored.  Timed against
the cheapest possible decode (DCT 1/8, no scoring) in the same run, with the float model and with an
int8 copy (train/quantize.py, through a card pointing at it); the verdicts of both are compared.
Target: soft scan >= 0.7x the DCT 1/8 floor with verdicts unchanged.  --soft-only skips the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cull.card import load_card  # noqa: E402
from cull.runner import default_workers  # noqa: E402

EXAMPLES = sorted((REPO / "examples" / "photos").glob("*.jpg"))


def make_large_jpegs(folder: Path, count: int, size: tuple[int, int] = (6000, 4000), soft: float = 0.0) -> list[Path]:
    """24 MP photos that are sharp at full resolution (mosaics of native-resolution Kodak tiles with
    a little sensor grain), like a real library; every 10th is defocused.  ``soft`` > 0: every photo
    is mildly defocused instead (Gaussian sigma ``soft`` px at full resolution): a soft library."""
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
            if soft > 0:
                image = image.filter(ImageFilter.GaussianBlur(soft * float(rng.uniform(0.8, 1.25))))
            elif i % 10 == 0:
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
import numpy as np
from PIL import Image
from cull.decode import decode_gray

def decode(path):
    if __DCT8__:  # the cheapest decode of a JPEG there is: libjpeg's 1/8 DCT scaling, gray
        with Image.open(path) as image:
            image.draft("L", (image.width // 8, image.height // 8))
            return np.asarray(image.convert("L")).shape
    return decode_gray(Path(path), __LONG_SIDE__).shape

if __name__ == "__main__":
    with ProcessPoolExecutor(__WORKERS__, mp_context=get_context("spawn")) as pool:
        list(pool.map(decode, sorted(Path(sys.argv[1]).glob("*.jpg")), chunksize=2))
"""


def decode_floor(folder: Path, workers: int, long_side: int, dct8: bool = False) -> float:
    """The same reduced decode (or, with ``dct8``, the cheapest: DCT 1/8) in the same spawn pool,
    as a fresh process like `cull scan`."""
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "floor.py"
        script.write_text(FLOOR_SCRIPT.replace("__LONG_SIDE__", str(long_side)).replace("__WORKERS__", str(workers))
                          .replace("__DCT8__", str(dct8)))
        timed = timed_process([sys.executable, str(script), str(folder)], {**os.environ, "PYTHONPATH": str(REPO)})
        if timed.code != 0:
            raise SystemExit(f"the decode floor script failed with exit code {timed.code}")
        return timed.seconds


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


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc/PID/task/TID/children); [] once it has gone."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                found.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return found


def _tree_rss_kb(root_pid: int) -> int:
    """Resident memory of a process and all its descendants (kB).  Walks only that tree, so a
    watcher polling it costs ~0.1 ms a poll (the whole-/proc walk it replaces cost ~5 ms, a tenth of
    a core at 20 polls/s, taken from the command it was timing)."""
    total, tree, frontier = 0, {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/status") as fh:
                total += next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            pass
        for child in _children(pid):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return total


# Compiled bytecode for every timed command, as an installed package has it (pip compiles at install):
# with PYTHONDONTWRITEBYTECODE set (as on this project's machines) each process would compile every
# module it imports from source, a cost that grows with the number of modules, so cull's side paid more
# of it than the floor scripts'.  Written once (by the first run) to a folder of its own, not the repo.
PYCACHE = Path(tempfile.gettempdir()) / "cull-bench-pycache"


def bench_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with bytecode written to and read from PYCACHE."""
    env = {key: value for key, value in (os.environ if env is None else env).items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


class Timed(NamedTuple):
    seconds: float  # wall time
    peak_kb: int  # peak RSS of the whole process tree
    code: int
    stdout: str = ""  # with capture=True
    stderr: str = ""


def timed_process(command: list[str], env: dict[str, str] | None = None, capture: bool = False,
                  interval: float = 0.05) -> Timed:
    """Wall time, peak RSS (polled every ``interval`` s) and exit code of one command; its output is
    discarded unless ``capture``.  Every timed command of the benchmarks (cull and the floors it is
    compared with) runs through here, so they share the watcher's small cost and the bytecode cache alike."""
    env = bench_env(env)
    output = subprocess.PIPE if capture else subprocess.DEVNULL
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=output, stderr=output, text=True)
    peak = 0

    def watch() -> None:
        nonlocal peak
        while proc.poll() is None:
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(interval)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    watcher.join()
    return Timed(elapsed, peak, proc.returncode, out or "", err or "")


def run_cull(args: list[str], cache: Path) -> tuple[float, int]:
    """Wall time and peak RSS (kB, whole process tree) of one cull command."""
    timed = timed_process([sys.executable, "-m", "cull", *args], {**os.environ, "CULL_CACHE_DIR": str(cache)})
    if timed.code not in (0, 1):
        raise SystemExit(f"cull {' '.join(args)} failed with exit code {timed.code}")
    return timed.seconds, timed.peak_kb


def int8_card(folder: Path) -> Path | None:
    """An int8 copy of the shipped model with a card beside it (train/quantize.py), built once."""
    try:
        from train.quantize import calibration_patches, photos_under, quantize_model, write_card_for
    except ImportError as exc:  # the [train] extra (onnx) is missing
        print(f"int8 run skipped: {exc}")
        return None
    shipped = load_card()
    card_path = folder / "focus-int8.json"
    if not card_path.exists() or load_card(card_path, verify=False).extra.get("quantization", {}).get("base_version") != shipped.version:
        sharp = REPO.parent / "shared" / "data" / "sharp"
        patches = calibration_patches(photos_under([sharp if sharp.is_dir() else REPO / "examples" / "photos"]), shipped.analysis)
        model = quantize_model(shipped.model_path, folder / "focus-int8.onnx", patches)
        write_card_for(model, shipped.model_path.with_suffix(".json"), card_path, note="benchmark copy")
    return card_path


def stage_costs(paths: list[Path], card_path: Path | None = None, rounds: int = 3) -> dict[str, float]:
    """Per soft photo, in this process on one core (best of ``rounds`` over ``paths``), in ms: the DCT 1/8
    decode, the analysis-scale decode, patch selection and the standardisation of its patches, and the
    network on 64 patches (in the scan's batches).  Says where a soft photo's time goes, and so what the
    0.7x target leaves the network."""
    from cull.analyse import BATCH_SIZE
    from cull.decode import decode_levels
    from cull.patches import network_input, select_patches
    from cull.score import OnnxScorer

    card = load_card(card_path)
    scorer = OnnxScorer(card, threads=1)
    best: dict[str, float] = {}
    for _ in range(rounds):
        spent = {"DCT 1/8 decode": 0.0, "analysis-scale decode": 0.0, "patch selection": 0.0, "network, 64 patches": 0.0}
        for path in paths:
            started = time.perf_counter()
            with Image.open(path) as image:
                image.draft("L", (image.width // 8, image.height // 8))
                np.asarray(image.convert("L"))
            middle = time.perf_counter()
            levels = decode_levels(path, card.analysis.long_side)  # as a scan decodes: 8-bit, selection converts
            decoded = time.perf_counter()
            x = network_input(select_patches(levels, card.analysis).pixels)
            selected = time.perf_counter()
            for i in range(0, len(x), BATCH_SIZE):
                scorer.score(x[i : i + BATCH_SIZE])
            scored = time.perf_counter()
            spent["DCT 1/8 decode"] += middle - started
            spent["analysis-scale decode"] += decoded - middle
            spent["patch selection"] += selected - decoded
            spent["network, 64 patches"] += (scored - selected) * 64 / max(1, len(x))
        for name, seconds in spent.items():
            best[name] = min(best.get(name, float("inf")), seconds * 1000 / len(paths))
    return best


def read_report(path: Path) -> dict[str, tuple[float | None, str | None]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {row["path"]: (row.get("score"), row.get("verdict")) for row in rows}


def soft_library(args: argparse.Namespace, workers: int) -> None:
    """The worst case: every photo doubtful, all 64 patches scored; float and int8 against DCT 1/8."""
    card = load_card()
    folder = args.dir / f"soft{args.soft_sigma:g}"
    print(f"preparing {args.soft_files} mildly defocused 24 MP JPEGs in {folder} (cached) ...", flush=True)
    paths = make_large_jpegs(folder, args.soft_files, soft=args.soft_sigma)
    n = len(paths)
    models: dict[str, Path | None] = {"float": None}
    if not args.no_int8:
        int8 = int8_card(args.dir / "int8")
        if int8 is not None:
            models["int8"] = int8
    times: dict[str, list[float]] = {"DCT 1/8 floor": [], "analysis-scale floor": [], **{f"scan {m}": [] for m in models}}
    reports: dict[str, dict[str, tuple[float | None, str | None]]] = {}
    for _ in range(args.repeat):  # interleaved, best of N: the machine is shared
        times["DCT 1/8 floor"].append(decode_floor(folder, workers, card.analysis.long_side, dct8=True))
        times["analysis-scale floor"].append(decode_floor(folder, workers, card.analysis.long_side))
        for name, model in models.items():
            with tempfile.TemporaryDirectory() as cache:
                report = Path(cache) / "scan.jsonl"
                extra = ["--model", str(model)] if model else []
                seconds, _ = run_cull(["scan", str(folder), "--workers", str(workers), "--no-xmp",
                                       "--report", str(report), *extra], Path(cache))
                times[f"scan {name}"].append(seconds)
                reports[name] = read_report(report)
    best = {name: min(values) for name, values in times.items()}
    floor8 = best["DCT 1/8 floor"]
    print(f"\nsoft library: {n} x 24 MP, all mildly defocused (sigma ~{args.soft_sigma:g} px), {workers} workers, "
          f"best of {args.repeat}")
    for name, seconds in best.items():
        print(f"{name:34} {seconds:7.2f} s  {n / seconds:7.1f} files/s   {floor8 / seconds:5.2f}x the DCT 1/8 floor")
    float_rows = reports["float"]
    doubtful = sum(1 for score, _ in float_rows.values() if score is not None and score < card.sure_keep)
    verdicts = [v for _, v in float_rows.values()]
    print(f"float verdicts: {verdicts.count('keep')} keep, {verdicts.count('uncertain')} uncertain, "
          f"{verdicts.count('reject')} reject; {doubtful}/{n} doubtful (score < {card.sure_keep:.3f}: all patches scored)")
    if "int8" in reports:
        changed = [p for p in float_rows if reports["int8"].get(p, (None, None))[1] != float_rows[p][1]]
        diffs = [abs((reports["int8"][p][0] or 0) - (float_rows[p][0] or 0)) for p in float_rows if p in reports["int8"]]
        print(f"int8 vs float: {len(changed)} verdicts changed (lenient), score max abs diff {max(diffs):.4f}")
    costs = stage_costs(paths[: min(n, 20)])
    print("per soft photo, one core, in process (ms): "
          + ", ".join(f"{name} {ms:.1f}" for name, ms in costs.items()))
    room = costs["DCT 1/8 decode"] / 0.7 - costs["analysis-scale decode"] - costs["patch selection"]
    print(f"0.7x of the DCT 1/8 decode leaves {room:.1f} ms per photo for the network and everything else "
          f"(start-up, results) after decoding and selecting; the network alone takes {costs['network, 64 patches']:.1f}")
    print(f"target: soft scan >= 0.7x the DCT 1/8 floor; measured float {floor8 / best['scan float']:.2f}x"
          + (f", int8 {floor8 / best['scan int8']:.2f}x" if "scan int8" in best else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "cull-bench")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--rss-files", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--soft-files", type=int, default=None, help="photos in the soft library (default: --files; 0 skips)")
    parser.add_argument("--soft-sigma", type=float, default=3.0, help="defocus of the soft library, px at 24 MP")
    parser.add_argument("--soft-only", action="store_true", help="only the soft-library worst case")
    parser.add_argument("--no-int8", action="store_true", help="soft library: skip the int8 model")
    parser.add_argument("--repeat", type=int, default=1, help="soft library: best of N interleaved runs")
    args = parser.parse_args()
    workers = args.workers
    if args.soft_files is None:
        args.soft_files = args.files
    if not args.soft_only:
        sharp_library(args, workers)
    if args.soft_files:
        soft_library(args, workers)


def sharp_library(args: argparse.Namespace, workers: int) -> None:
    card = load_card()
    print(f"preparing {args.files} JPEGs of 24 MP in {args.dir} (cached between runs) ...", flush=True)
    paths = make_large_jpegs(args.dir / "mosaic", args.files)
    n = len(paths)
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
