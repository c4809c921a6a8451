"""`cull eval`: how well the model (and a Laplacian-variance baseline) sorts labelled folders.

A labelled folder holds ``sharp*/`` sub-folders (in focus) and any ``*blur*/`` sub-folders
(out of focus), e.g. the blur-dataset layout sharp/, defocused_blurred/, motion_blurred/; a name
that says it is not blurred (unblurred/, deblurred/, not_blurry/, no-blur/...) labels no blurred class.
A RAW+JPEG pair is one labelled photo (one shot, scored as `cull scan` scores it: through the JPEG, or the RAW
beside a small JPEG), and
a file labelled both sharp and blurred (the same file reached through a link) is left out of both.
"""

from __future__ import annotations

import errno
import re
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from cull.analyse import Analysis
from cull.card import ModelCard
from cull.fsutil import file_sha256
from cull.decide import Verdict, decide
from cull.decode import SCALE_TOLERANCE
from cull.discover import Skipped, discover, is_hidden_or_system
from cull.formats import is_raw
from cull.errors import DatasetError
from cull.report import display_path, json_object
from cull.runner import analyse_paths

LAPLACIAN_THRESHOLD = 100.0  # the classic global cut-off for variance of the Laplacian
REPORT_KIND = "cull eval"  # marks `cull eval --json` output, which a later run may replace
BOTH_LABELS = "labelled both sharp and blurred"  # the error for a file under a sharp and a blurred folder
_NOT_BLURRED = re.compile(r"(?<![a-z])(?:un|de|not|non|no)[\s_.-]*blur")  # unblurred, not_blurry, no-blur...


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
    partner: Path | None = None  # the RAW (or JPEG) of the same shot, not scored


def says_not_blurred(name: str) -> bool:
    """Whether a folder name with "blur" in it says it is not blurred (unblurred, deblurred, not_blurry,
    non_blur, noblur, no-blur; any case)."""
    return _NOT_BLURRED.search(name.lower()) is not None


def folder_label(name: str) -> bool | None:
    """True for a sharp folder, False for a blurred one, None for anything else (unblurred/ too)."""
    lowered = name.lower()
    if "blur" in lowered and not says_not_blurred(lowered):
        return False
    if lowered.startswith("sharp"):
        return True
    return None


def raw_judging_below(card: ModelCard) -> int:
    """The JPEG long side under which a RAW+JPEG shot is judged by its RAW (cull.discover.pair_shots):
    a JPEG that DCT scaling cannot bring within SCALE_TOLERANCE of the card's analysis scale."""
    return round(card.analysis.long_side / SCALE_TOLERANCE)


def labelled_photos(root: Path) -> list[LabelledPhoto]:
    """Every photo under ``root``'s labelled sub-folders, sorted. Raises DatasetError if unusable."""
    return labelled_tree(root)[0]


def _empty_classes(subfolders: list[Path], photos: list[LabelledPhoto]) -> str:
    """"; sharp/ holds no photos" for a class whose folders are there but hold no usable photo ("" if none):
    the folders exist, so "needs a sharp/ folder" alone would mislead."""
    empty = []
    for sharp in (True, False):
        named = [f"{sub.name}/" for sub in subfolders if folder_label(sub.name) is sharp and not is_hidden_or_system(sub.name)]
        if named and not any(p.sharp is sharp for p in photos):
            empty.append(f"{', '.join(named)} {'hold' if len(named) > 1 else 'holds'} no usable photos")
    return "".join(f"; {text}" for text in empty)


def labelled_tree(root: Path, judge_raw_below: int = 0) -> tuple[list[LabelledPhoto], list[tuple[LabelledPhoto, str]]]:
    """Every shot under ``root``'s labelled sub-folders (walked as ``cull scan`` walks a folder: hidden
    files and folders left out, folder links followed once, a RAW+JPEG pair one photo), and what could
    not be used there, with why (a dangling link, a folder that cannot be listed, a file labelled both
    sharp and blurred...). ``judge_raw_below``: as for discover (RAW+S shots judged by the RAW, as a scan
    judges them). Raises DatasetError if unusable."""
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
        for found in discover([sub], judge_raw_below=judge_raw_below):
            if isinstance(found, Skipped):
                if found.error:
                    skipped.append((LabelledPhoto(found.path, label, sub.name), found.reason))
                continue
            photos.append(LabelledPhoto(found.path, label, sub.name, found.partner))
    photos, both = _without_both_labels(photos)
    skipped += both
    photos.sort(key=lambda p: p.path)
    if not any(p.sharp for p in photos) or all(p.sharp for p in photos):
        unread = "".join(f"; {display_path(p.path)}: {reason}" for p, reason in skipped[:3])
        raise DatasetError(f"{display_path(root)} needs a sharp/ folder and at least one *blur*/ folder of photos "
                           f"(e.g. sharp/, defocused_blurred/, motion_blurred/){_empty_classes(subfolders, photos)}{unread}")
    return photos, skipped


def _without_both_labels(photos: list[LabelledPhoto]) -> tuple[list[LabelledPhoto], list[tuple[LabelledPhoto, str]]]:
    """The photos less those whose file (device and inode, or its partner's), or a byte-identical copy of
    it, is also labelled the other way, and those, each with why."""
    by_file: dict[tuple[object, ...], list[LabelledPhoto]] = {}
    by_size: dict[int, list[tuple[Path, LabelledPhoto]]] = {}
    for photo in photos:
        for path in filter(None, (photo.path, photo.partner)):
            try:
                info = path.stat()
            except OSError:
                continue
            by_file.setdefault((info.st_dev, info.st_ino), []).append(photo)
            by_size.setdefault(info.st_size, []).append((path, photo))
    for same_size in by_size.values():  # only files of one size under both labels are read, to compare content
        if len({photo.sharp for _, photo in same_size}) > 1:
            for path, photo in same_size:
                try:
                    by_file.setdefault(("sha256", file_sha256(path)), []).append(photo)
                except OSError:
                    continue
    clash: dict[Path, set[Path]] = {}
    for group in by_file.values():
        if len({p.sharp for p in group}) > 1:
            for photo in group:
                clash.setdefault(photo.path, set()).update(p.path for p in group if p.path != photo.path)
    return ([p for p in photos if p.path not in clash],
            [(p, f"{BOTH_LABELS} (the same file or content as {', '.join(display_path(q) for q in sorted(clash[p.path]))})")
             for p in photos if p.path in clash])


def label_warnings(root: Path, reasons: Iterable[str]) -> list[str]:
    """Warnings about the labelling of ``root``: folders named with "blur" that say they are not blurred
    (left out), and files labelled both sharp and blurred (``reasons``: why photos were not used)."""
    warnings = []
    try:
        names = sorted(p.name for p in Path(root).iterdir() if _is_folder(p) and not is_hidden_or_system(p.name))
    except OSError:
        names = []
    for name in names:
        if "blur" in name.lower() and folder_label(name) is None:
            warnings.append(f"{display_path(name)}/ says it is not blurred: it is not taken as a blurred class "
                            "(its photos are left out; name it sharp... to label them sharp)")
    both = sum(reason.startswith(BOTH_LABELS) for reason in reasons)
    if both:
        warnings.append(f"{both} path(s) name a file that is {BOTH_LABELS} (e.g. a link in sharp/ to a blurred "
                        "photo): left out of both classes")
    return warnings


def calibration_note(root: Path, card: ModelCard) -> str | None:
    """A note when ``card`` was calibrated on the photos of ``root``: its rates there flatter it."""
    calibration = card.extra.get("calibration")
    folder = calibration.get("folder") if isinstance(calibration, dict) else None
    if not isinstance(folder, str):
        return None
    try:
        same = Path(root).resolve() == Path(folder).resolve()
    except (OSError, RuntimeError, ValueError):  # ValueError: a NUL byte in a hand-edited folder
        return None
    if not same:
        return None
    return (f"{card.version} was calibrated on {display_path(folder)}: these rates are on the calibration photos "
            "themselves and flatter the card; evaluate it on other labelled photos")


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


def analyse_labelled(photos: Sequence[LabelledPhoto], card: ModelCard, *, workers: int = 1,
                     with_laplacian: bool = False) -> Iterator[tuple[LabelledPhoto, Analysis]]:
    """cull.runner.analyse_paths over labelled photos.  A RAW judged ahead of its small JPEG (RAW+S, see
    raw_judging_below) that cannot be read is judged by the JPEG, as `cull scan` judges that shot."""
    by_path = {p.path: p for p in photos}
    instead: dict[Path, LabelledPhoto] = {}
    for analysis in analyse_paths(list(by_path), card, workers=workers, with_laplacian=with_laplacian):
        photo = by_path[analysis.path]
        if analysis.photo is None and photo.partner is not None and is_raw(photo.path) and not is_raw(photo.partner):
            instead[photo.partner] = photo
            continue
        yield photo, analysis
    if instead:
        for analysis in analyse_paths(list(instead), card, workers=workers, with_laplacian=with_laplacian):
            yield instead[analysis.path], analysis


def score_folder(root: Path, card: ModelCard, *, workers: int = 1, progress: Any = None) -> list[ScoredPhoto]:
    """Analyse every labelled photo under ``root`` once (model score and Laplacian statistic)."""
    photos, unreadable = labelled_tree(root, raw_judging_below(card))
    analyses: dict[Path, Analysis] = {}
    for photo, analysis in analyse_labelled(photos, card, workers=workers, with_laplacian=True):
        analyses[photo.path] = analysis
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
    """Score every labelled photo under ``root`` and summarise (see summarise_folder), with ``notes``:
    the labelling's warnings and whether the card was calibrated on these photos."""
    scored = score_folder(root, card, workers=workers, progress=progress)
    report = summarise_folder(root, scored, card, strictness, laplacian_threshold)
    note = calibration_note(root, card)
    reasons = [s.analysis.error or "" for s in scored if s.analysis.photo is None]
    report["notes"] = label_warnings(root, reasons) + ([note] if note else [])
    return report


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
    if report.get("notes"):
        lines += [""] + [f"note: {note}" for note in report["notes"]]
    return "\n".join(lines)  # per-photo errors: the caller reports them (report["errors"])


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"
