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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cull.fsutil import atomic_write_bytes, write_through

REPORT_VERSION = 1
FIELDS = (
    "path", "abs_path", "verdict", "score", "kind", "partner", "partner_abs", "size", "mtime", "error",
    "reason", "report_version", "burst", "burst_rank", "burst_size", "protected",
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
    written_through(check_output(out, "--report", SUFFIXES), out, "--report", SUFFIXES)


def written_through(target: Path, out: Path, option: str, suffixes: Iterable[str]) -> None:
    """Raise ValueError when ``out`` is a link whose target (the file a write replaces) is not named like
    the output: ``report.csv`` leading to ``IMG_1.JPG`` would put the report in the photo's place."""
    suffixes = tuple(suffixes)
    if target.suffix.lower() not in suffixes:
        raise ValueError(f"{option}: {display_path(out)} is a link to {display_path(target)}, which is not a "
                         f"{' or '.join(suffixes)} file; not replaced")


def check_output(out: Path, option: str, suffixes: Iterable[str], replaceable: Callable[[Path], bool] | None = None,
                 kind: str = "") -> Path:
    """Raise ValueError (a usage error, checked before any work is done) when ``out`` cannot be written,
    or (with ``replaceable``) names an existing file that is not ``kind`` (one of cull's own outputs,
    which a rerun may replace: a photo, a note or a model card never is). Returns the file a write
    replaces (a link's target)."""
    suffixes = tuple(suffixes)
    if out.suffix.lower() not in suffixes:
        raise ValueError(f"{option} must end in {' or '.join(suffixes)}, not {display_path(out.name)!r}")
    try:
        if not out.parent.is_dir():
            raise ValueError(f"{option}: folder {display_path(out.parent)} does not exist")
        if out.is_dir():
            raise ValueError(f"{option}: {display_path(out)} is a folder")
        target = write_through(out)  # a link: the file it names is what gets written, where it is
        exists = target.exists()
    except OSError as exc:
        raise ValueError(f"{option}: {display_path(out)}: {exc.strerror or exc}") from None
    if not os.access(target.parent, os.W_OK | os.X_OK) or (exists and not os.access(target, os.W_OK)):
        raise ValueError(f"{option}: cannot write to {display_path(target)} (permission denied or read-only)")
    if exists and replaceable is not None and not replaceable(target):
        raise ValueError(f"{option}: {display_path(out)} exists and is not {kind}; cull only replaces its own "
                         "output: remove the file or choose another name")
    return target


def json_object(path: Path, limit: int = 256 << 20) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is not one (not JSON, not an object, over ``limit``
    bytes, unreadable)."""
    try:
        if path.stat().st_size > limit:
            return None
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


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


_CONTROL = {code: f"\\x{code:02x}" for code in [*range(0x20), 0x7F]} | {0x0A: "\\n", 0x09: "\\t", 0x0D: "\\r"}


def display_path(path: Path | str) -> str:
    """A path for the terminal, one line: bytes that are not UTF-8 shown as ``\\xe9`` instead of
    failing, and control characters (a newline in a name) as ``\\n`` / ``\\x1b``, so a listing stays one
    line per photo and no name can send escape sequences to the terminal."""
    return os.fsencode(path).decode("utf-8", "backslashreplace").translate(_CONTROL)
