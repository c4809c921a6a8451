"""`cull eval`: how well the model (and a Laplacian-variance baseline) sorts labelled folders.

A labelled folder holds ``sharp*/`` sub-folders (in focus) and any ``*blur*/`` sub-folders
(out of focus), e.g. the blur-dataset layout sharp/, defocused_blurred/, motion_blurred/.
"""

from __future__ import annotations

import errno
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cull.analyse import Analysis
from cull.card import ModelCard
from cull.decide import Verdict, decide
from cull.discover import Skipped, discover, is_hidden_or_system
from cull.errors import DatasetError
from cull.report import display_path, json_object
from cull.runner import analyse_paths

LAPLACIAN_THRESHOLD = 100.0  # the classic global cut-off for variance of the Laplacian
REPORT_KIND = "cull eval"  # marks `cull eval --json` output, which a later run may replace


def is_eval_report(path: Path) -> bool:
    """Whether ``path`` holds a `cull eval --json` report (this version's, or one from before the marker)."""
    raw = json_object(path)
    return raw is not None and (raw.get("report") == REPORT_KIND or {"folder", "model_version", "overall"} <= raw.keys()
                                or {"rank1_accuracy", "pair_recall"} <= raw.keys())


@dataclass(frozen=True)
class LabelledPhoto:
    path: Path
    sharp: bool
    group: str  # the sub-folder it came from


def folder_label(name: str) -> bool | None:
    """True for a sharp folder, False for a blurred one, None for anything else."""
    lowered = name.lower()
    if "blur" in lowered:
        return False
    if lowered.startswith("sharp"):
        return True
    return None


def labelled_photos(root: Path) -> list[LabelledPhoto]:
    """Every photo under ``root``'s labelled sub-folders, sorted. Raises DatasetError if unusable."""
    return labelled_tree(root)[0]


def labelled_tree(root: Path) -> tuple[list[LabelledPhoto], list[tuple[LabelledPhoto, str]]]:
    """Every photo under ``root``'s labelled sub-folders (walked as ``cull scan`` walks a folder: hidden
    files and folders left out, folder links followed once), and what could not be read there, with
    why (a dangling link, a folder that cannot be listed...). Raises DatasetError if unusable."""
    root = Path(root)
    try:
        subfolders = sorted(p for p in root.iterdir() if _is_folder(p))
    except NotADirectoryError:
        raise DatasetError(f"{root} is not a folder") from None
    except OSError as exc:
        raise DatasetError(f"cannot list {display_path(root)}: {exc.strerror or exc}") from None
    photos: list[LabelledPhoto] = []
    skipped: list[tuple[LabelledPhoto, str]] = []
    for sub in subfolders:
        label = folder_label(sub.name)
        if label is None or is_hidden_or_system(sub.name):
            continue
        for found in discover([sub]):
            if isinstance(found, Skipped):
                if found.error:
                    skipped.append((LabelledPhoto(found.path, label, sub.name), found.reason))
                continue
            photos += [LabelledPhoto(path, label, sub.name) for path in (found.path, found.partner) if path is not None]
    photos.sort(key=lambda p: p.path)
    if not any(p.sharp for p in photos) or all(p.sharp for p in photos):
        unread = "".join(f"; {display_path(p.path)}: {reason}" for p, reason in skipped[:3])
        raise DatasetError(
            f"{display_path(root)} needs a sharp/ folder and at least one *blur*/ folder of photos "
            f"(e.g. sharp/, defocused_blurred/, motion_blurred/){unread}"
        )
    return photos, skipped


def _is_folder(path: Path) -> bool:
    """Path.is_dir that raises for a folder that cannot be read instead of answering False."""
    try:
        return stat.S_ISDIR(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False  # a dangling link at the top: not a labelled folder
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return False
        raise


def evaluate(labels: Sequence[bool], verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Confusion matrix and rates for sharp (True) / blurred (False) labels. Pure.

    Raises ValueError on mismatched or empty input.
    """
    if len(labels) != len(verdicts):
        raise ValueError(f"{len(labels)} labels but {len(verdicts)} verdicts")
    if not labels:
        raise ValueError("nothing to evaluate")
    counts = Counter((bool(l), Verdict(v)) for l, v in zip(labels, verdicts))
    matrix = {
        name: {v.value: counts[(label, v)] for v in Verdict} for name, label in (("sharp", True), ("blurred", False))
    }
    n_sharp = sum(matrix["sharp"].values())
    n_blur = sum(matrix["blurred"].values())

    def rate(numerator: int, denominator: int) -> float | None:
        return numerator / denominator if denominator else None

    flagged = matrix["blurred"]["reject"] + matrix["blurred"]["uncertain"]
    return {
        "n_sharp": n_sharp,
        "n_blurred": n_blur,
        "confusion": matrix,
        "sharp_false_reject_rate": rate(matrix["sharp"]["reject"], n_sharp),
        "sharp_kept_rate": rate(matrix["sharp"]["keep"], n_sharp),
        "blurred_flagged_rate": rate(flagged, n_blur),
        "blurred_rejected_rate": rate(matrix["blurred"]["reject"], n_blur),
        # per-class accuracy: a sharp photo is right unless rejected; a blurred one unless kept
        "accuracy_sharp": rate(n_sharp - matrix["sharp"]["reject"], n_sharp),
        "accuracy_blurred": rate(flagged, n_blur),
        "accuracy": rate(n_sharp - matrix["sharp"]["reject"] + flagged, n_sharp + n_blur),
    }


def baseline_verdict(laplacian_var: float, threshold: float = LAPLACIAN_THRESHOLD) -> Verdict:
    return Verdict.KEEP if laplacian_var >= threshold else Verdict.REJECT


@dataclass(frozen=True)
class ScoredPhoto:
    photo: LabelledPhoto
    analysis: Analysis


def score_folder(root: Path, card: ModelCard, *, workers: int = 1, progress: Any = None) -> list[ScoredPhoto]:
    """Analyse every labelled photo under ``root`` once (model score and Laplacian statistic)."""
    photos, unreadable = labelled_tree(root)
    by_path = {p.path: p for p in photos}
    analyses: dict[Path, Analysis] = {}
    for analysis in analyse_paths(by_path, card, workers=workers, with_laplacian=True):
        analyses[analysis.path] = analysis
        if progress is not None:
            progress.update(1)
    return [ScoredPhoto(p, analyses[p.path]) for p in photos] + [ScoredPhoto(p, Analysis(p.path, error=why)) for p, why in unreadable]


def summarise_folder(
    root: Path,
    scored: list[ScoredPhoto],
    card: ModelCard,
    strictness: str = "lenient",
    laplacian_threshold: float = LAPLACIAN_THRESHOLD,
) -> dict[str, Any]:
    """The model and the baseline side by side, overall and per folder, at one strictness."""
    thresholds = card.thresholds_for(strictness)
    rows: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    for item in scored:
        photo, analysis = item.photo, item.analysis
        if analysis.photo is None:
            failed.append({"path": str(photo.path), "error": analysis.error})
            continue
        decision = decide(analysis.photo, thresholds, card.analysis.min_patches)
        rows.append(
            {
                "path": str(photo.path),
                "group": photo.group,
                "sharp": photo.sharp,
                "score": analysis.photo.score,
                "kind": analysis.photo.kind,
                "verdict": decision.verdict,
                "laplacian_var": analysis.laplacian_var,
                "baseline": baseline_verdict(analysis.laplacian_var or 0.0, laplacian_threshold),
            }
        )
    if not rows:
        raise DatasetError(f"no photo under {root} could be scored")

    def summarise(selected: list[dict[str, Any]]) -> dict[str, Any]:
        labels = [r["sharp"] for r in selected]
        return {
            "model": evaluate(labels, [r["verdict"] for r in selected]),
            "laplacian": evaluate(labels, [r["baseline"] for r in selected]),
        }

    groups = sorted({r["group"] for r in rows})
    return {
        "report": REPORT_KIND,
        "folder": str(root),
        "strictness": strictness,
        "model_version": card.version,
        "laplacian_threshold": laplacian_threshold,
        "overall": summarise(rows),
        "groups": {g: summarise([r for r in rows if r["group"] == g]) for g in groups},
        "photos": [{**r, "verdict": r["verdict"].value, "baseline": r["baseline"].value} for r in rows],
        "errors": failed,
    }


def evaluate_folder(
    root: Path,
    card: ModelCard,
    strictness: str = "lenient",
    *,
    workers: int = 1,
    laplacian_threshold: float = LAPLACIAN_THRESHOLD,
    progress: Any = None,
) -> dict[str, Any]:
    """Score every labelled photo under ``root`` and summarise (see summarise_folder)."""
    scored = score_folder(root, card, workers=workers, progress=progress)
    return summarise_folder(root, scored, card, strictness, laplacian_threshold)


def format_report(report: dict[str, Any]) -> str:
    """A plain-text rendering of evaluate_folder's report."""
    lines = [f"{display_path(report['folder'])}  (strictness {report['strictness']}, model {report['model_version']})"]
    for method, title in (("model", "cull model"), ("laplacian", f"Laplacian variance < {report['laplacian_threshold']:g}")):
        m = report["overall"][method]
        c = m["confusion"]
        lines += [
            "",
            f"{title}:",
            f"  {'':9}{'keep':>7}{'uncertain':>11}{'reject':>8}",
            f"  {'sharp':9}{c['sharp']['keep']:>7}{c['sharp']['uncertain']:>11}{c['sharp']['reject']:>8}",
            f"  {'blurred':9}{c['blurred']['keep']:>7}{c['blurred']['uncertain']:>11}{c['blurred']['reject']:>8}",
            f"  sharp falsely rejected: {_pct(m['sharp_false_reject_rate'])}   "
            f"blurred flagged (reject or uncertain): {_pct(m['blurred_flagged_rate'])}   "
            f"blurred rejected: {_pct(m['blurred_rejected_rate'])}",
            f"  accuracy sharp {_pct(m['accuracy_sharp'])}, blurred {_pct(m['accuracy_blurred'])}, "
            f"overall {_pct(m['accuracy'])}",
        ]
    lines += ["", "per folder (model | Laplacian): right / total"]
    for group, summary in report["groups"].items():
        cells = []
        for method in ("model", "laplacian"):
            m = summary[method]
            right = round((m["accuracy"] or 0) * (m["n_sharp"] + m["n_blurred"]))
            cells.append(f"{right}/{m['n_sharp'] + m['n_blurred']}")
        lines.append(f"  {display_path(group):24} {cells[0]:>8} | {cells[1]}")
    return "\n".join(lines)  # per-photo errors: the caller reports them (report["errors"])


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
