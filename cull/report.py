"""Machine-readable scan reports: one row per photo as JSON Lines or CSV, written atomically.

The format is stable and versioned (``REPORT_VERSION``); docs/report-format.md describes it.
File names that are not valid UTF-8 survive: JSON escapes them (``\\udcXX``, json's default
``ensure_ascii``), CSV writes their original bytes back (``surrogateescape``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cull.fsutil import atomic_write_bytes, write_through

REPORT_VERSION = 1
FIELDS = (
    "path", "abs_path", "verdict", "score", "kind", "partner", "partner_abs", "size", "mtime", "error",
    "reason", "report_version", "burst", "burst_rank", "burst_size",
)
SUFFIXES = (".jsonl", ".csv")


def file_row(path: Path, partner: Path | None = None, **fields: Any) -> dict[str, Any]:
    """A report row for ``path`` (as typed): its absolute path (symlinks kept), size and mtime
    (None when it cannot be read), ``partner`` likewise, plus ``fields``."""
    try:
        info = os.stat(path)
        size, mtime = info.st_size, info.st_mtime
    except OSError:
        size, mtime = None, None
    row = dict.fromkeys(FIELDS)
    row.update(
        path=str(path), abs_path=os.path.abspath(path),
        partner=str(partner) if partner is not None else None,
        partner_abs=os.path.abspath(partner) if partner is not None else None,
        size=size, mtime=mtime, report_version=REPORT_VERSION,
    )
    row.update(fields)
    return row


def check_target(out: Path) -> None:
    """Raise ValueError (a usage error) when a report could not be written to ``out``: checked
    before any work is done."""
    if out.suffix.lower() not in SUFFIXES:
        raise ValueError(f"--report must end in .jsonl or .csv, not {out.name!r}")
    folder = out.parent
    if not folder.is_dir():
        raise ValueError(f"--report: folder {folder} does not exist")
    if out.is_dir():
        raise ValueError(f"--report: {out} is a folder")
    try:
        target = write_through(out)  # a link: the file it names is what gets written, where it is
    except OSError as exc:
        raise ValueError(f"--report: {out}: {exc.strerror or exc}") from None
    if not os.access(target.parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"--report: cannot write to {target} (permission denied or read-only)")


def write_report(rows: Iterable[dict[str, Any]], out: Path) -> None:
    """Write ``rows`` (dicts with FIELDS; missing ones are null) to ``out``; .jsonl or .csv by suffix."""
    suffix = out.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"report must end in .jsonl or .csv, not {out.name!r}")
    buffer = io.StringIO()
    if suffix == ".jsonl":
        for row in rows:
            buffer.write(json.dumps({k: row.get(k) for k in FIELDS}) + "\n")
    else:
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in FIELDS})
    atomic_write_bytes(out, buffer.getvalue().encode("utf-8", "surrogateescape"))


def display_path(path: Path | str) -> str:
    """A path for the terminal: bytes that are not UTF-8 shown as ``\\xe9`` instead of failing."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
