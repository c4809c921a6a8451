"""`cull scan`: discover -> (cache | decode -> patches -> score) -> decide. Returns results, writes nothing.

Writers (report, XMP, move) act on the returned results; this module only reads files and,
unless told otherwise, the score cache.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cull.analyse import BATCH_SIZE, Analysis
from cull.bursts import DEFAULT_GAP, SOFTER_REASON, Footprint, Ranked, clearly_softer, find_bursts, frame, same_scene
from cull.cache import FactCache, FileKey, ScoreCache, default_cache_path, file_key
from cull.capture import CAPTURE_VERSION, read_capture
from cull.card import ModelCard
from cull.decide import Decision, Strictness, Verdict, decide
from cull.discover import Shot, Skipped, discover
from cull.evaluate import raw_judging_below
from cull.formats import is_raw
from cull.report import file_row
from cull.protect import Places, apply_user_verdicts, shot_protection, shot_user_rejection, shot_user_verdict
from cull.runner import analyse_paths
from cull.score import PhotoScore, Scorer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanOptions:
    workers: int = 1
    batch_size: int = BATCH_SIZE
    strictness: Strictness = Strictness.LENIENT
    use_cache: bool = True
    dry_run: bool = False  # read the cache, write nothing (not even the cache)
    cache_path: Path | None = None
    exclude: tuple[Path, ...] = ()
    ray: bool = False  # analyse on the Ray cluster cull.cluster.connect() joined
    bursts: bool = False  # group bursts and rank their frames (cull.bursts)
    burst_gap: float = DEFAULT_GAP  # seconds between frames of one burst
    keep_best: bool = False  # frames clearly softer than their burst's best become uncertain


def validate_options(
    options: ScanOptions, *, report: Path | None = None, xmp: bool = True, embed: bool = False
) -> None:
    """Rules across options (pure: touches no file); raises ValueError with a one-line message."""
    if options.workers < 1:
        raise ValueError("--workers must be at least 1")
    if not 1 <= options.batch_size <= 4096:
        raise ValueError("--batch-size must be between 1 and 4096")
    if report is not None and report.suffix.lower() not in (".jsonl", ".csv"):
        raise ValueError(f"--report must end in .jsonl or .csv, not {report.name!r}")
    if report is not None and options.dry_run:
        raise ValueError("--report writes a file and --dry-run writes nothing: use one of them")
    if embed and not xmp:
        raise ValueError("--embed writes XMP into the photos and --no-xmp writes no XMP: use one of them")
    if options.keep_best and not options.bursts:
        raise ValueError("--keep-best works on bursts: add --bursts")
    if not 0 <= options.burst_gap <= 3600:
        raise ValueError("--burst-gap must be between 0 and 3600 seconds")
    if options.burst_gap != DEFAULT_GAP and not options.bursts:
        raise ValueError("--burst-gap works on bursts: add --bursts")


@dataclass(frozen=True)
class PhotoResult:
    path: Path
    partner: Path | None = None
    photo: PhotoScore | None = None
    decision: Decision | None = None
    error: str | None = None
    cached: bool = False
    burst: Ranked | None = None  # its place in a burst (scan --bursts), None for a photo on its own
    judged: FileKey | None = None  # (size, mtime_ns) of ``path`` when it was judged

    @property
    def verdict(self) -> Verdict | None:
        return self.decision.verdict if self.decision else None

    def row(self) -> dict[str, Any]:
        """The report row (see cull.report.FIELDS and docs/report-format.md)."""
        return file_row(
            self.path,
            self.partner,
            score=None if self.photo is None or self.photo.score is None else round(self.photo.score, 4),
            verdict=self.verdict.value if self.verdict else None,
            kind=self.photo.kind if self.photo else None,
            error=self.error,
            reason=self.decision.reason if self.decision else None,
            burst=self.burst.burst if self.burst else None,
            burst_rank=self.burst.rank if self.burst else None,
            burst_size=self.burst.size if self.burst else None,
        )


@dataclass
class ScanResult:
    results: list[PhotoResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failures(self) -> list[tuple[Path, str]]:
        return [(r.path, r.error) for r in self.results if r.error] + [
            (s.path, s.reason) for s in self.skipped if s.error
        ]

    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter(r.verdict.value for r in self.results if r.verdict)
        counts["errors"] = len(self.failures)
        counts["cached"] = sum(r.cached for r in self.results)
        return counts


def scan(
    roots: Iterable[Path],
    card: ModelCard,
    options: ScanOptions,
    *,
    on_total: Callable[[int], None] | None = None,
    on_result: Callable[[PhotoResult], None] | None = None,
    scorer_factory: Callable[[ModelCard], Scorer] | None = None,
    worker_setup: Callable[[], None] | None = None,
) -> ScanResult:
    """Score and decide every photo under ``roots``; results sorted by path.

    ``scorer_factory`` and ``worker_setup`` are passed to cull.runner.analyse_paths (tests).
    Raises ModelError when the model cannot be loaded (also inside a worker).
    """
    validate_options(options)
    started = time.monotonic()
    outcome = ScanResult()
    shots: list[Shot] = []
    # a RAW+JPEG shot whose JPEG is well under the analysis scale (RAW+S) is judged by the RAW's preview
    for item in discover(roots, options.exclude, judge_raw_below=raw_judging_below(card)):
        (shots if isinstance(item, Shot) else outcome.skipped).append(item)  # type: ignore[arg-type]
    if on_total:
        on_total(len(shots))
    thresholds = card.thresholds_for(Strictness(options.strictness).value)

    def finish(result: PhotoResult) -> None:
        outcome.results.append(result)
        if on_result:
            on_result(result)

    cache = None
    if options.use_cache:
        cache = ScoreCache(options.cache_path or default_cache_path(), card.fingerprint, readonly=options.dry_run)
    try:
        partners = {shot.path: shot.partner for shot in shots}
        keys = {}
        todo: list[Path] = []
        prints: dict[Path, Footprint] = {}  # result path -> burst footprint (with --bursts)
        for shot in shots:
            key = file_key(shot.path)
            hit = cache.get(shot.path.absolute(), key) if cache is not None and key is not None else None
            if hit is not None and options.bursts and cache is not None and key is not None:
                print_ = cache.get_footprint(shot.path.absolute(), key)
                if print_ is None:
                    hit = None  # scored before without bursts: analyse again for the footprint
                else:
                    prints[shot.path] = _current_capture(shot.path, print_, cache, key)
            if hit is not None:
                finish(_decided(shot.path, shot.partner, hit, card, thresholds, key, cached=True))
            else:
                keys[shot.path] = key
                todo.append(shot.path)
        retry: dict[Path, tuple[Path, str]] = {}  # partner -> (primary that failed, its error)
        for attempt in (1, 2):
            for analysis in _analyses(todo, card, options, scorer_factory, worker_setup):
                partner = partners.get(analysis.path)
                if analysis.photo is None:
                    if attempt == 1 and partner is not None:  # e.g. a corrupt JPEG: judge the shot by its RAW
                        retry[partner] = (analysis.path, analysis.error or "unreadable")
                        continue
                    if analysis.path in retry:
                        primary, first_error = retry[analysis.path]
                        finish(PhotoResult(primary, analysis.path, error=f"{first_error}; partner: {analysis.error}"))
                    else:
                        finish(PhotoResult(analysis.path, partner, error=analysis.error))
                    continue
                if analysis.path in retry:  # the partner was scored instead: it becomes the shot's path
                    partner, why = retry[analysis.path]
                    # the shot has a verdict, but the damaged file is still reported (and counts in the exit code)
                    # a RAW judged ahead of its small JPEG (RAW+S) that cannot be read (a camera LibRaw does not
                    # know yet): the JPEG judges the shot as it always did, a note rather than an error
                    # (a RAW found damaged or cut short is still an error: the card's copy may be incomplete)
                    ahead = is_raw(partner) and not is_raw(analysis.path) and not why.startswith("damaged or truncated")
                    outcome.skipped.append(Skipped(partner, f"{why}; the shot is judged by its partner {analysis.path.name}"
                                                   + (" (a small JPEG: less sure of blur)" if ahead else ""), error=not ahead))
                key = keys.get(analysis.path)  # a partner scored instead is not cached: lookups go by the shot's path
                if key is not None and analysis.judged is not None and not _same_version(analysis.judged, key):
                    finish(PhotoResult(analysis.path, partner, error=_NOT_THE_LISTED_FILE))
                    continue
                if cache is not None and key is not None and file_key(analysis.path) == key:
                    cache.put(analysis.path.absolute(), key, analysis.photo)
                    if analysis.footprint is not None:
                        cache.put_footprint(analysis.path.absolute(), key, replace(analysis.footprint, ctime_ns=_ctime_ns(analysis.path)))
                if analysis.footprint is not None:  # keyed by the result's path: the partner, when it was scored instead
                    prints[analysis.path] = analysis.footprint
                finish(_decided(analysis.path, partner, analysis.photo, card, thresholds,
                                key or analysis.judged or file_key(analysis.path)))
            todo = list(retry)
            if not todo:
                break
    finally:
        if cache is not None:
            cache.close()
    outcome.results = [_unless_changed(result) for result in outcome.results]
    with _places(options) as places:
        if options.bursts:
            outcome.results = place_in_bursts(
                outcome.results, prints, options.burst_gap, options.keep_best,
                protection=lambda r: shot_protection(r.path, r.partner, places),
                # a sidecar that may hold a decision but cannot be read keeps its frame out of the bar, and so
                # does a reject the user gave in darktable or Lightroom
                user_verdict=lambda r: shot_user_verdict(r.path, r.partner, places, unreadable_counts=True)
                or ("reject" if shot_user_rejection(r.path, r.partner, places) else None))
        outcome.results = apply_user_verdicts(outcome.results, places)  # a decision made in `cull review` stands
    outcome.results.sort(key=lambda r: str(r.path))
    outcome.seconds = time.monotonic() - started
    return outcome


@contextmanager
def _places(options: ScanOptions) -> Iterator[Places]:
    """Where the user's decisions and ratings are read: each folder listed once; a sidecar unchanged
    since it was last read (fact cache, beside the scores) is not opened again."""
    if not options.use_cache:
        yield Places()
        return
    with FactCache(options.cache_path or default_cache_path(), readonly=options.dry_run) as facts:
        yield Places(facts)


def _ctime_ns(path: Path) -> int | None:
    try:
        return path.stat().st_ctime_ns
    except OSError:
        return None


def _current_capture(path: Path, print_: Footprint, cache: ScoreCache, key: FileKey) -> Footprint:
    """A cached footprint with its capture data read again when the file's status changed since it was
    read (``exiftool -P`` edits the capture time keeping size and mtime: only the ctime moves; a move
    or undo moves it too, and costs one EXIF read)."""
    ctime = _ctime_ns(path)
    if ctime is None or (ctime == print_.ctime_ns and print_.capture_version == CAPTURE_VERSION):
        return print_
    shot = read_capture(path)
    fresh = replace(print_, camera=shot.camera, time=shot.time, time_source=shot.time_source, ctime_ns=ctime,
                    capture_version=CAPTURE_VERSION)
    cache.put_footprint(path.absolute(), key, fresh)
    return fresh


def place_in_bursts(
    results: list[PhotoResult], prints: dict[Path, Footprint], gap: float, keep_best: bool,
    protection: Callable[[PhotoResult], str | None] = lambda result: None,
    user_verdict: Callable[[PhotoResult], str | None] = lambda result: None,
) -> list[PhotoResult]:
    """Results with their burst places; with ``keep_best``, a kept frame clearly softer than its
    burst's best *kept* frame, and of the same scene (same_scene), becomes uncertain (never reject:
    in-focus priority), unless ``protection`` names why the user keeps it (a rating, a pick, a keep in
    `cull review`: their own judgement of the frame stands).  The best kept frame is the best-ranked
    frame cull kept that the user's own decision (``user_verdict``: `cull review`'s, applied after this)
    did not reject or leave uncertain (nor one whose decision cannot be read): a user's keep on a frame cull
    did not keep protects it but sets no bar for the others.
    It is never demoted, so a burst with a kept frame keeps one, even where rank 1 went to a frame that
    is only uncertain (evenly soft beats a sharp subject on the mean of the shared regions). Pure but for
    what ``protection`` and ``user_verdict`` read."""
    keyed = {str(r.path): r for r in results if r.path in prints and r.decision is not None}
    frames = {key: frame(key, prints[r.path]) for key, r in keyed.items()}
    ranked = find_bursts(list(frames.values()), gap)
    best: dict[str, Ranked] = {}  # burst -> its best-ranked kept frame
    for ranked_row in sorted(ranked.values(), key=lambda r: r.rank):
        candidate = keyed[ranked_row.key]
        if (ranked_row.burst not in best and candidate.verdict is Verdict.KEEP
                and user_verdict(candidate) in (None, Verdict.KEEP.value)):
            best[ranked_row.burst] = ranked_row
    placed = []
    for result in results:
        row = ranked.get(str(result.path)) if str(result.path) in keyed else None
        if row is not None:
            result = replace(result, burst=row)
            top = best.get(row.burst)
            if (keep_best and result.verdict is Verdict.KEEP and top is not None and clearly_softer(row, top)
                    and same_scene(frames[row.key], frames[top.key]) and result.decision is not None):
                why = protection(result)
                reason = f"{result.decision.reason} ({SOFTER_REASON}, but {why})" if why else SOFTER_REASON
                result = replace(result, decision=Decision(Verdict.KEEP if why else Verdict.UNCERTAIN, reason))
        placed.append(result)
    return placed


def _analyses(
    todo: list[Path],
    card: ModelCard,
    options: ScanOptions,
    scorer_factory: Callable[[ModelCard], Scorer] | None,
    worker_setup: Callable[[], None] | None,
) -> Iterator[Analysis]:
    """The local worker pool, or Ray tasks with ``options.ray`` (cull.cluster.connect() came first)."""
    if options.ray:
        from cull.cluster import analyse_paths_ray

        return analyse_paths_ray(todo, card, batch_size=options.batch_size, worker_setup=worker_setup,
                                 with_bursts=options.bursts)
    return analyse_paths(
        todo, card, workers=min(options.workers, max(1, len(todo))), batch_size=options.batch_size,
        scorer_factory=scorer_factory, worker_setup=worker_setup, with_bursts=options.bursts,
        isolate=options.workers > 1,  # one file left still runs in a worker: a crash must not take the scan
    )


def refresh_cache(result: ScanResult, photos: list[Path], card: ModelCard, options: ScanOptions) -> None:
    """Re-key the cached scores of photos whose XMP block was rewritten in place (image data is
    untouched, so the score stands): the next scan still decodes nothing."""
    if not options.use_cache or options.dry_run or not photos:
        return
    scores = {r.path: r.photo for r in result.results if r.photo is not None}  # lookups go by the shot's path
    with ScoreCache(options.cache_path or default_cache_path(), card.fingerprint) as cache:
        for photo in photos:
            key = file_key(photo)
            if key is not None and photo in scores:
                cache.put(photo.absolute(), key, scores[photo])  # type: ignore[arg-type]


def _decided(path: Path, partner: Path | None, photo: PhotoScore, card: ModelCard, thresholds: Any,
             judged: FileKey | None, cached: bool = False) -> PhotoResult:
    return PhotoResult(path, partner, photo, decide(photo, thresholds, card.analysis.min_patches), cached=cached,
                       judged=judged)


_NOT_THE_LISTED_FILE = ("the file read to judge it is not the one listed here (other size or time): it changed during "
                        "the scan, or a --ray worker sees another file at this path (a stale mount?): not marked")


def _same_version(read: FileKey, listed: FileKey) -> bool:
    """Whether the file a worker read is the one listed here: the same size, and modification times within
    2 s (a worker's mount may keep them coarser: SMB 100 ns, FAT 2 s, sshfs 1 s)."""
    return read[0] == listed[0] and abs(read[1] - listed[1]) <= 2_000_000_000


def _unless_changed(result: PhotoResult) -> PhotoResult:
    """``result``, or an error in its place when its file is not the one judged any more (replaced, edited or
    gone while the scan ran, which can take hours): its verdict must not reach the XMP, the report or a move."""
    if result.decision is None or result.judged is None:
        return result
    now = file_key(result.path)
    if now == result.judged:
        return result
    what = "gone" if now is None else "changed"
    return PhotoResult(result.path, result.partner, error=f"{what} since it was judged, while the scan ran: not marked; scan it again")
