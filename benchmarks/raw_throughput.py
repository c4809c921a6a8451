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
import struct
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from cull.card import load_card  # noqa: E402
from cull.decode import decode_gray  # noqa: E402
from cull.runner import default_workers  # noqa: E402
from scan_throughput import decode_floor, make_large_jpegs, run_cull  # noqa: E402

SHARED_RAW = REPO.parent / "shared" / "data" / "raw" / "RAW_KODAK_DC50.KDC"
BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10  # TIFF field types
_SIZE = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, SRATIONAL: 8}
Entry = tuple[int, int, object]  # (tag, type, values)


def _values(kind: int, values: object) -> bytes:
    if kind == ASCII:
        return str(values).encode("ascii") + b"\0"
    if kind == BYTE:
        return bytes(values)  # type: ignore[arg-type]
    if kind in (SHORT, LONG):
        return struct.pack(f"<{len(values)}{'H' if kind == SHORT else 'I'}", *values)  # type: ignore[arg-type]
    flat = [x for pair in values for x in pair]  # type: ignore[attr-defined]
    return struct.pack(f"<{len(flat)}{'I' if kind == RATIONAL else 'i'}", *flat)


def _ifd(entries: list[Entry], at: int) -> bytes:
    """One little-endian IFD placed at file offset ``at``, its out-of-line values right after it."""
    entries = sorted(entries, key=lambda e: e[0])
    table, extra = struct.pack("<H", len(entries)), b""
    extra_at = at + 2 + 12 * len(entries) + 4
    for tag, kind, values in entries:
        data = _values(kind, values)
        count = len(data) // _SIZE[kind]
        if len(data) <= 4:
            table += struct.pack("<HHI", tag, kind, count) + data.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, kind, count, extra_at + len(extra))
            extra += data + b"\0" * (len(data) % 2)
    return table + struct.pack("<I", 0) + extra


def write_dng(preview: Path, out: Path) -> None:
    """A minimal DNG 1.4 whose IFD0 is ``preview`` (a baseline JPEG) at full size and whose SubIFD is a
    same-size 16-bit RGGB CFA left as a hole (zeros if read; sparse on disk)."""
    jpeg = preview.read_bytes()
    with Image.open(preview) as image:
        width, height = image.size
    raw_bytes = width * height * 2
    identity = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]

    def ifd0(sub_at: int, jpeg_at: int) -> list[Entry]:
        return [
            (254, LONG, [1]), (256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [8, 8, 8]),
            (259, SHORT, [7]), (262, SHORT, [6]), (271, ASCII, "Cull"), (272, ASCII, "Benchmark DNG"),
            (273, LONG, [jpeg_at]), (274, SHORT, [1]), (277, SHORT, [3]), (278, LONG, [height]),
            (279, LONG, [len(jpeg)]), (284, SHORT, [1]), (330, LONG, [sub_at]),
            (50706, BYTE, [1, 4, 0, 0]), (50707, BYTE, [1, 1, 0, 0]), (50708, ASCII, "Cull Benchmark DNG"),
            (50721, SRATIONAL, identity), (50728, RATIONAL, [(1, 2), (1, 1), (1, 2)]), (50778, SHORT, [21]),
        ]

    def cfa(raw_at: int) -> list[Entry]:
        return [
            (254, LONG, [0]), (256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [16]), (259, SHORT, [1]),
            (262, SHORT, [32803]), (273, LONG, [raw_at]), (277, SHORT, [1]), (278, LONG, [height]),
            (279, LONG, [raw_bytes]), (284, SHORT, [1]), (33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2]),
            (50717, LONG, [65535]),
        ]

    sub_at = 8 + len(_ifd(ifd0(0, 0), 8))  # sizes do not depend on the offsets: lay out, then write
    jpeg_at = sub_at + len(_ifd(cfa(0), sub_at))
    raw_at = jpeg_at + len(jpeg) + len(jpeg) % 2
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"II*\0" + struct.pack("<I", 8) + _ifd(ifd0(sub_at, jpeg_at), 8) + _ifd(cfa(raw_at), sub_at))
        fh.write(jpeg + b"\0" * (len(jpeg) % 2))
        fh.truncate(raw_at + raw_bytes)
    os.replace(tmp, out)


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
    args = parser.parse_args()
    card = load_card()
    long_side = card.analysis.long_side

    print(f"preparing {args.files} 24 MP JPEGs and DNGs with them as full-size previews in {args.dir} ...", flush=True)
    jpegs = make_large_jpegs(args.dir / "mosaic", args.files)
    (args.dir / "dng").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        jpeg_dir, dng_dir = Path(tmp) / "jpeg", Path(tmp) / "dng"
        jpeg_dir.mkdir()
        dng_dir.mkdir()
        for jpeg in jpegs:
            dng = args.dir / "dng" / f"{jpeg.stem}.dng"
            if not dng.exists():
                write_dng(jpeg, dng)
            os.link(jpeg, jpeg_dir / jpeg.name)  # exactly these files, no copies
            os.link(dng, dng_dir / dng.name)
        n = len(jpegs)
        load_before = os.getloadavg()
        floor = decode_floor(jpeg_dir, args.workers, long_side)
        raw, raw_rss = run_cull(["scan", str(dng_dir), "--workers", str(args.workers), "--show", "none",
                                 "--report", str(Path(tmp) / "dng.jsonl")], Path(tmp) / "cache1")
        jpeg, _ = run_cull(["scan", str(jpeg_dir), "--workers", str(args.workers), "--show", "none",
                            "--report", str(Path(tmp) / "jpeg.jsonl")], Path(tmp) / "cache2")
        load_after = os.getloadavg()
        same = rows(Path(tmp) / "dng.jsonl") == rows(Path(tmp) / "jpeg.jsonl")
        dng_ms = per_file_ms(dng_dir / f"{jpegs[0].stem}.dng", long_side)
        jpeg_ms = per_file_ms(jpegs[0], long_side)
    kdc_ms = per_file_ms(SHARED_RAW, long_side) if SHARED_RAW.exists() else None

    print(f"\n{n} DNGs (24 MP, full-size JPEG preview), {args.workers} workers; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(f"{'decode floor of the previews':34} {floor:7.2f} s  {n / floor:6.1f} files/s")
    print(f"{'cull scan, cold, DNG':34} {raw:7.2f} s  {n / raw:6.1f} files/s   peak RSS {raw_rss / 1024:.0f} MB")
    print(f"{'cull scan, cold, the same JPEGs':34} {jpeg:7.2f} s  {n / jpeg:6.1f} files/s")
    print(f"\nRAW scan / decode floor of its preview = {floor / raw:4.2f}x   (target >= 0.8)")
    print(f"RAW scan / JPEG scan                   = {jpeg / raw:4.2f}x")
    print(f"DNG scores and verdicts equal to their previews': {'yes' if same else 'NO'}")
    print(f"\none decode, this process: DNG {dng_ms:.0f} ms, its preview as JPEG {jpeg_ms:.0f} ms"
          + (f", shared KDC sample (64-byte thumbnail: half-size demosaic) {kdc_ms:.0f} ms" if kdc_ms else ""))
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
