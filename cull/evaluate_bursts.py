"""`cull eval --bursts`: how well bursts are grouped and how often rank 1 is the sharpest frame.

Labelled layout: one sub-folder per real burst (a sub-folder with one photo is a lone photo), and
``labels.csv`` beside them with the columns ``burst,sharpest``: the sub-folder and the file name of
its sharpest frame. Bursts without a ``sharpest`` row count for grouping only.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from cull.card import ModelCard
from cull.errors import DatasetError
from cull.evaluate import REPORT_KIND
from cull.formats import is_photo

LABELS = "labels.csv"


@dataclass(frozen=True)
class BurstTruth:
    """``groups``: true burst name -> its photos; ``sharpest``: true burst name -> the sharpest photo."""

    groups: dict[str, list[Path]]
    sharpest: dict[str, Path]


def read_burst_labels(root: Path) -> BurstTruth:
    """Read a labelled bursts folder (see the module docstring). Raises DatasetError when unusable."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder")
    groups = {
        sub.name: sorted(f for f in sub.iterdir() if f.is_file() and is_photo(f))
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
    }
    groups = {name: photos for name, photos in groups.items() if photos}
    if not groups:
        raise DatasetError(f"{root} needs one sub-folder of photos per burst")
    sharpest: dict[str, Path] = {}
    labels = root / LABELS
    if labels.is_file():
        with open(labels, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                name, frame = (row.get("burst") or "").strip(), (row.get("sharpest") or "").strip()
                if name not in groups or not (root / name / frame).is_file():
                    raise DatasetError(f"{labels}:{line}: no photo {name}/{frame}")
                sharpest[name] = root / name / frame
    return BurstTruth(groups, sharpest)


def evaluate_bursts(truth: BurstTruth, found: Mapping[Path, tuple[str, int]]) -> dict[str, Any]:
    """Compare ``found`` ({photo: (burst id, rank)}, photos on their own absent) with the labels.

    Returns pair counts (same-burst pairs grouped / missed, different-burst pairs wrongly merged),
    bursts mixing two real bursts, and how often rank 1 is the labelled sharpest frame.
    """
    photos = [p for group in truth.groups.values() for p in group]
    true_burst = {p: name for name, group in truth.groups.items() for p in group}
    same_pairs = grouped = wrong_merges = 0
    for a, b in combinations(photos, 2):
        together = a in found and b in found and found[a][0] == found[b][0]
        if true_burst[a] == true_burst[b]:
            same_pairs += 1
            grouped += together
        elif together:
            wrong_merges += 1
    members: dict[str, set[str]] = {}
    for photo, (burst, _rank) in found.items():
        if photo in true_burst:
            members.setdefault(burst, set()).add(true_burst[photo])
    mixed = sum(1 for names in members.values() if len(names) > 1)
    rank_one = [
        (name, next((p for p in truth.groups[name] if p in found and found[p][1] == 1), None))
        for name in truth.sharpest
        if len(truth.groups[name]) > 1
    ]
    right = sum(1 for name, first in rank_one if first == truth.sharpest[name])
    return {
        "report": REPORT_KIND,
        "photos": len(photos),
        "true_bursts": sum(1 for g in truth.groups.values() if len(g) > 1),
        "found_bursts": len(members),
        "same_burst_pairs": same_pairs,
        "pairs_grouped": grouped,
        "pair_recall": grouped / same_pairs if same_pairs else 1.0,
        "wrong_merges": wrong_merges,
        "mixed_bursts": mixed,
        "labelled_bursts": len(rank_one),
        "rank1_sharpest": right,
        "rank1_accuracy": right / len(rank_one) if rank_one else None,
        "rank1_misses": sorted(str(truth.sharpest[name]) for name, first in rank_one if first != truth.sharpest[name]),
    }


def evaluate_burst_folder(
    root: Path, card: ModelCard, *, workers: int = 1, gap: float = 2.0, on_result: Any = None
) -> dict[str, Any]:
    """Scan a labelled bursts folder with ``--bursts`` and compare with its labels (see the module
    docstring). Uses the score cache like ``cull scan``. Raises DatasetError for an unusable folder."""
    from cull.scan import ScanOptions, scan

    truth = read_burst_labels(root)
    result = scan([root], card, ScanOptions(workers=workers, bursts=True, burst_gap=gap),
                  on_total=None, on_result=on_result)
    found = {r.path: (r.burst.burst, r.burst.rank) for r in result.results if r.burst is not None}
    report = evaluate_bursts(truth, found)
    report["errors"] = [{"path": str(path), "error": reason} for path, reason in result.failures]
    report["gap_seconds"] = gap
    return report


def format_burst_report(report: dict[str, Any]) -> str:
    """The terminal summary of evaluate_burst_folder."""
    lines = [
        f"{report['photos']} photos, {report['true_bursts']} labelled bursts; cull found {report['found_bursts']} bursts "
        f"(gap {report['gap_seconds']:g} s)",
        f"grouping: {report['pairs_grouped']}/{report['same_burst_pairs']} same-burst pairs grouped "
        f"({100 * report['pair_recall']:.1f} %), {report['wrong_merges']} wrong merges, "
        f"{report['mixed_bursts']} bursts mixing two scenes",
    ]
    if report["rank1_accuracy"] is not None:
        lines.append(f"ranking: rank 1 is the labelled sharpest frame in {report['rank1_sharpest']}/"
                     f"{report['labelled_bursts']} bursts ({100 * report['rank1_accuracy']:.1f} %)")
        lines += [f"  rank 1 missed: {miss}" for miss in report["rank1_misses"]]
    lines += [f"error: {e['path']}: {e['error']}" for e in report["errors"]]
    return "\n".join(lines)
