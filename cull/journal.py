"""An append-only, fsynced journal of file moves, so an interrupted move can be finished or undone.

One JSON object per line.  ``intent`` is written (and fsynced) before a file moves, ``done`` after
it has arrived and been verified; ``undo-done`` after it has been put back.  Reading tolerates a
torn last line (a crash mid-write).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL_DIR = ".cull-journal"


@dataclass
class Step:
    src: Path
    dst: Path
    size: int
    sha256: str
    mtime_ns: int
    shot: str
    done: bool = False
    undone: bool = False
    undo_failed: str | None = None


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, target: Path, root: Path) -> Journal:
        folder = target / JOURNAL_DIR
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        journal = cls(folder / f"move-{stamp}-{uuid.uuid4().hex[:6]}.jsonl")
        journal.append({"op": "begin", "root": str(root), "target": str(target), "time": time.time()})
        return journal

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[dict[str, Any]]:
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a torn last line from a crash: everything before it stands
        return out

    def header(self) -> dict[str, Any]:
        records = self.records()
        return records[0] if records else {}

    def steps(self) -> list[Step]:
        steps: dict[str, Step] = {}
        for r in self.records():
            op = r.get("op")
            if op == "intent":
                steps[r["dst"]] = Step(Path(r["src"]), Path(r["dst"]), r["size"], r["sha256"], r["mtime_ns"], r["shot"])
            elif op == "done" and r["dst"] in steps:
                steps[r["dst"]].done = True
            elif op == "undo-done" and r["dst"] in steps:
                steps[r["dst"]].undone = True
            elif op == "undo-failed" and r["dst"] in steps:
                steps[r["dst"]].undo_failed = r.get("reason")
        return list(steps.values())

    def shot_plans(self) -> dict[str, list[tuple[Path, Path]]]:
        """Every shot's full plan (src, dst), journalled before its first file moved."""
        return {r["shot"]: [(Path(a), Path(b)) for a, b in r["moves"]] for r in self.records() if r.get("op") == "shot"}

    def finished(self) -> bool:
        return any(r.get("op") == "end" for r in self.records())

    def undone(self) -> bool:
        return any(r.get("op") == "undo-end" for r in self.records())


def journals(target: Path) -> list[Journal]:
    """Journals under a move target, oldest first."""
    folder = target / JOURNAL_DIR
    if not folder.is_dir():
        return []
    return [Journal(p) for p in sorted(folder.glob("move-*.jsonl"))]
