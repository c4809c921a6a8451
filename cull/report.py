"""Machine-readable scan reports: one row per photo as JSON Lines or CSV, written atomically."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cull.fsutil import atomic_write_text

FIELDS = ("path", "score", "verdict", "kind", "partner", "error")


def write_report(rows: Iterable[dict[str, Any]], out: Path) -> None:
    """Write ``rows`` (dicts with FIELDS) to ``out``; the format follows the suffix (.jsonl or .csv)."""
    suffix = out.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise ValueError(f"report must end in .jsonl or .csv, not {out.name!r}")
    buffer = io.StringIO()
    if suffix == ".jsonl":
        for row in rows:
            buffer.write(json.dumps({k: row.get(k) for k in FIELDS}, ensure_ascii=False) + "\n")
    else:
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in FIELDS})
    atomic_write_text(out, buffer.getvalue())
