"""Cached rescan of an unchanged archive-size tree: files/s and peak RSS of `cull scan`.

    python benchmarks/archive_rescan.py [--dir DIR] [--files 100000] [--workers N]

The tree (made once, cached in DIR/archive-N): N small JPEGs (320x240), 1,000 per folder, every 10th
blurred; they are hard links to 10 prototype files (distinct paths, so distinct cache entries and
sidecars; no disk cost).  The cache is filled honestly and fast: a real cold `cull scan` of the first
folder, then every other path gets the cached score of the path in that folder linked to the same
prototype (same bytes, so the same score), under its own key (absolute path, size, mtime_ns, model).
Then, as fresh processes with default options: a first rescan (it also writes the XMP sidecars of the
uncertain and rejected photos the fill did not write), a second one (a sidecar cull has just written is
modified "now", too recent for its stamp to be trusted on a file system with 2-second times, so this
rescan reads each such sidecar once and records it), and the measured rescan of the unchanged tree
(XMP on: every verdict is checked against its sidecar, which costs a stat and a look-up in the fact
cache beside the scores, no read, for a sidecar unchanged since cull wrote or read it), plus one with
--no-xmp.  Compare an older checkout in the same load: python OLD/benchmarks/archive_rescan.py ...
Targets: rescan >= 5,000 files/s, peak RSS (whole process tree) < 500 MB.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageFilter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cull.cache import ScoreCache, file_key  # noqa: E402
from cull.card import load_card  # noqa: E402
from cull.runner import default_workers  # noqa: E402
from scan_throughput import EXAMPLES, timed_process  # noqa: E402

PER_FOLDER = 1000
SUMMARY = re.compile(r"^(\d+) files?: .*\((\d+) from cache\)", re.M)


def make_tree(root: Path, count: int) -> list[Path]:
    """``count`` hard links to 10 prototypes (every 10th blurred), 1,000 per folder; kept between runs."""
    protos = root.with_name(root.name + "-prototypes")  # outside the tree
    if not root.with_name(root.name + ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(protos, ignore_errors=True)
        protos.mkdir(parents=True)
        root.mkdir()
        base = [Image.open(p).convert("RGB").resize((320, 240)) for p in EXAMPLES if "_" not in p.stem]
        for k in range(10):
            image = base[k % len(base)].rotate(90 * (k // len(base)) % 360)
            (image.filter(ImageFilter.GaussianBlur(4)) if k == 0 else image).save(protos / f"p{k}.jpg", quality=85)
        for i in range(count):
            folder = root / f"{i // PER_FOLDER:03d}"
            if i % PER_FOLDER == 0:
                folder.mkdir()
            os.link(protos / f"p{i % 10}.jpg", folder / f"f{i:06d}.jpg")
        (root.with_name(root.name + ".complete")).write_text(str(count))
    return [root / f"{i // PER_FOLDER:03d}" / f"f{i:06d}.jpg" for i in range(count)]


def run(args: list[str], cache: Path) -> tuple[float, int, str]:
    """Wall time, peak RSS (kB, whole process tree) and stdout of one cull command."""
    timed = timed_process([sys.executable, "-m", "cull", *args], {**os.environ, "CULL_CACHE_DIR": str(cache)},
                          capture=True, interval=0.2)
    if timed.code not in (0, 1):
        raise SystemExit(f"cull {' '.join(args)} failed ({timed.code}): {timed.stderr[-2000:]}")
    return timed.seconds, timed.peak_kb, timed.stdout


def fill_cache(paths: list[Path], cache: Path, workers: int) -> float:
    """A real cold scan of the first folder, then the same scores for the other links of each prototype."""
    started = time.perf_counter()
    run(["scan", str(paths[0].parent), "--no-xmp", "--show", "none", "--workers", str(workers)], cache)
    card = load_card()
    with ScoreCache(cache / "scores.sqlite", card.fingerprint) as db:
        seeds = {}
        for path in paths[:PER_FOLDER]:
            score = db.get(path.absolute(), file_key(path))  # type: ignore[arg-type]
            if score is None:
                raise SystemExit(f"the cold scan cached no score for {path}")
            seeds.setdefault(path.stat().st_ino, score)
        for path in paths[PER_FOLDER:]:
            key = file_key(path)
            db.put(path.absolute(), key, seeds[path.stat().st_ino])  # type: ignore[arg-type]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "cull-bench")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()

    root = args.dir / f"archive-{args.files}"
    print(f"preparing {args.files} small JPEGs (hard links) in {root} ...", flush=True)
    paths = make_tree(root, args.files)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        fill = fill_cache(paths, cache, args.workers)
        print(f"cache filled in {fill:.1f} s (cold scan of {PER_FOLDER} files + {len(paths) - PER_FOLDER} entries)", flush=True)
        scan = ["scan", str(root), "--show", "none", "--workers", str(args.workers)]
        load_before = os.getloadavg()
        first, first_rss, _ = run(scan, cache)
        settle, settle_rss, _ = run(scan, cache)
        rescan, rescan_rss, out = run(scan, cache)
        no_xmp, no_xmp_rss, out2 = run([*scan, "--no-xmp"], cache)
        load_after = os.getloadavg()
    n = len(paths)
    for text in (out, out2):
        match = SUMMARY.search(text)
        if match is None or int(match.group(1)) != n or int(match.group(2)) != n:
            raise SystemExit(f"the rescan did not take all {n} photos from the cache: {text[-400:]}")
    print(f"\n{n} files, {args.workers} workers; load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'first rescan (writes XMP)':32} {first:7.1f} s  {n / first:8.0f} files/s   peak RSS {first_rss / 1024:4.0f} MB")
    print(f"{'second rescan (settles the facts)':32} {settle:7.1f} s  {n / settle:8.0f} files/s   peak RSS {settle_rss / 1024:4.0f} MB")
    print(f"{'rescan, unchanged tree':32} {rescan:7.1f} s  {n / rescan:8.0f} files/s   peak RSS {rescan_rss / 1024:4.0f} MB")
    print(f"{'rescan, --no-xmp':32} {no_xmp:7.1f} s  {n / no_xmp:8.0f} files/s   peak RSS {no_xmp_rss / 1024:4.0f} MB")
    print("(wall time of the whole command, start-up included; targets >= 5,000 files/s, RSS < 500 MB)")


if __name__ == "__main__":
    main()
