"""Test-only entry point: the `cull` CLI with every file move slowed down or held, so a test can
kill it (or start a second run) in the middle of a move.  Not part of the package.

    python tests/slow_cull.py --delay 0.15 -- move LIB --rejects
    python tests/slow_cull.py --hold-after 2 --until GO_FILE -- move LIB --rejects

``--delay S`` sleeps S seconds before each file is placed (after its intent is journalled);
``--hold-after N --until FILE`` lets N files move, then waits until FILE exists before each later one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import cull.move
from cull.cli import app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--hold-after", type=int, default=-1)
    parser.add_argument("--until", type=Path)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    real_place = cull.move._place
    placed = {"n": 0}

    def slow_place(*a: Any, **kw: Any) -> None:
        if args.delay:
            time.sleep(args.delay)
        if 0 <= args.hold_after <= placed["n"] and args.until is not None:
            while not args.until.exists():
                time.sleep(0.02)
        real_place(*a, **kw)
        placed["n"] += 1

    cull.move._place = slow_place  # type: ignore[assignment]
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    app(rest, prog_name="cull")


if __name__ == "__main__":
    sys.exit(main())
