"""Minimal DNG files for tests and benchmarks: a real TIFF/DNG container LibRaw opens, carrying a given
JPEG as its preview, with a 16-bit CFA of the same size left as a hole (zeros if read; sparse on disk).

``layout="ifd0"``: the preview is IFD0 (NewSubFileType 1, one JPEG strip), the CFA its SubIFD, as
Adobe's converter and many cameras write DNGs.  ``layout="subifd"``: IFD0 is a stub, the preview is the first SubIFD, named by JPEGInterchangeFormat/Length as Nikon's NEF keeps its
preview, and the CFA the second.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from PIL import Image

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


def write_dng(preview: Path, out: Path, *, layout: str = "ifd0", orientation: int = 1, jpeg: bytes | None = None) -> None:
    """A minimal DNG 1.4 holding ``preview`` (a baseline JPEG) at full size and a same-size 16-bit RGGB
    CFA.  ``jpeg`` replaces the preview's bytes in the file (the size still comes from ``preview``)."""
    jpeg = preview.read_bytes() if jpeg is None else jpeg
    with Image.open(preview) as image:
        width, height = image.size
    raw_bytes = width * height * 2
    identity = [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1), (1, 1)]

    dng_tags: list[Entry] = [
        (271, ASCII, "Cull"), (272, ASCII, "Benchmark DNG"), (274, SHORT, [orientation]),
        (50706, BYTE, [1, 4, 0, 0]), (50707, BYTE, [1, 1, 0, 0]), (50708, ASCII, "Cull Benchmark DNG"),
        (50721, SRATIONAL, identity), (50728, RATIONAL, [(1, 2), (1, 1), (1, 2)]), (50778, SHORT, [21]),
    ]

    def ifd0(sub_at: int, jpeg_at: int, cfa_at: int = 0) -> list[Entry]:
        if layout == "subifd":  # a tiny IFD0 whose SubIFDs are the preview and the CFA
            return [(254, LONG, [1]), (256, LONG, [8]), (257, LONG, [8]), (330, LONG, [sub_at, cfa_at]), *dng_tags]
        return [
            (254, LONG, [1]), (256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [8, 8, 8]),
            (259, SHORT, [7]), (262, SHORT, [6]), (273, LONG, [jpeg_at]), (277, SHORT, [3]), (278, LONG, [height]),
            (279, LONG, [len(jpeg)]), (284, SHORT, [1]), (330, LONG, [sub_at]), *dng_tags,
        ]

    def preview_ifd(jpeg_at: int) -> list[Entry]:
        return [(254, LONG, [1]), (256, LONG, [width]), (257, LONG, [height]), (259, SHORT, [6]),
                (513, LONG, [jpeg_at]), (514, LONG, [len(jpeg)])]

    def cfa(raw_at: int) -> list[Entry]:
        return [
            (254, LONG, [0]), (256, LONG, [width]), (257, LONG, [height]), (258, SHORT, [16]), (259, SHORT, [1]),
            (262, SHORT, [32803]), (273, LONG, [raw_at]), (277, SHORT, [1]), (278, LONG, [height]),
            (279, LONG, [raw_bytes]), (284, SHORT, [1]), (33421, SHORT, [2, 2]), (33422, BYTE, [0, 1, 1, 2]),
            (50717, LONG, [65535]),
        ]

    sub_at = 8 + len(_ifd(ifd0(0, 0), 8))  # sizes do not depend on the offsets: lay out, then write
    if layout == "subifd":
        cfa_at = sub_at + len(_ifd(preview_ifd(0), sub_at))
        jpeg_at = cfa_at + len(_ifd(cfa(0), cfa_at))
        raw_at = jpeg_at + len(jpeg) + len(jpeg) % 2
        head = _ifd(ifd0(sub_at, jpeg_at, cfa_at), 8) + _ifd(preview_ifd(jpeg_at), sub_at) + _ifd(cfa(raw_at), cfa_at)
    elif layout == "ifd0":
        jpeg_at = sub_at + len(_ifd(cfa(0), sub_at))
        raw_at = jpeg_at + len(jpeg) + len(jpeg) % 2
        head = _ifd(ifd0(sub_at, jpeg_at), 8) + _ifd(cfa(raw_at), sub_at)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        fh.write(b"II*\0" + struct.pack("<I", 8) + head)
        fh.write(jpeg + b"\0" * (len(jpeg) % 2))
        fh.truncate(raw_at + raw_bytes)
    os.replace(tmp, out)


