"""One review: the scanned items, their pictures (computed lazily, cached) and the user's decisions."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cull.card import ModelCard
from cull.errors import CullError
from cull.protect import Places, shot_protection, shot_user_verdict
from cull.review.decisions import Change, DecisionError, Write, restore, write_decision, write_decisions
from cull.review.imaging import Detail, LruCache, compute_detail, thumbnail
from cull.review.items import Item, Show, build_items, burst_of, inside, real_roots, shown, unreadable_rows
from cull.scan import PhotoResult, ScanOptions, scan
from cull.score import Scorer
from cull.sidecars import XmpOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewOptions:
    show: Show = Show.FLAGGED
    xmp: XmpOptions = XmpOptions()
    thumb_cache: int = 4096
    detail_cache: int = 48


@dataclass
class Step:
    """One key press (one decision, or a whole burst's), as Z undoes it. ``refused``: an undo of it
    failed once already (a file changed since); Z again tries once more, then gives it up."""

    changes: list[Change]
    refused: bool = False


@dataclass
class Undone:
    """What Z did: the items it covered, the files it could not put back, and whether the step is
    still on the undo list (it failed, and Z again tries it once more)."""

    items: list[Item]
    problems: list[str]
    kept: bool = False


class ReviewSession:
    """The state behind the page. Thread-safe: the server calls it from its worker threads."""

    def __init__(self, roots: Sequence[Path], items: list[Item], card: ModelCard, options: ReviewOptions,
                 scorer_factory: Callable[[ModelCard], Scorer] | None = None,
                 unreadable: Sequence[tuple[Path, str]] = ()) -> None:
        self.roots = [Path(r) for r in roots]
        self.real_roots = real_roots(self.roots)
        self.all_items = items
        self.unreadable = unreadable_rows(unreadable, self.roots)
        self.items = shown(items, options.show)
        self.by_id = {item.id: item for item in self.items}
        self.card = card
        self.options = options
        self._scorer_factory = scorer_factory
        self._scorer: Scorer | None = None
        self._lock = threading.Lock()
        self._history: list[Step] = []
        self._thumbs = LruCache(options.thumb_cache)
        self._details = LruCache(options.detail_cache)

    # -- lookups ---------------------------------------------------------------------------------
    def item(self, item_id: int) -> Item:
        """The shown item with this id. Raises KeyError (the server answers 404)."""
        return self.by_id[item_id]

    def servable(self, item_id: int) -> Item:
        """The item, checked again right before its file is read: a file replaced since the scan by
        a link leading outside the scanned folders is refused. Raises KeyError."""
        item = self.item(item_id)
        if not inside(item.path, self.real_roots):
            log.warning("%s now leads outside the scanned folders; not served", item.path)
            raise KeyError(item_id)
        return item

    @property
    def undo_depth(self) -> int:
        return len(self._history)

    def listing(self) -> dict[str, Any]:
        return {
            "items": [item.public() for item in self.items],
            "show": self.options.show.value,
            "model": self.card.version,
            "total": len(self.all_items) + len(self.unreadable),
            "unreadable": self.unreadable,
            "undo": self.undo_depth,
            "bursts": len({item.burst for item in self.items if item.burst is not None}),
        }

    # -- pictures --------------------------------------------------------------------------------
    def scorer(self) -> Scorer:
        with self._lock:
            if self._scorer is None:
                if self._scorer_factory is not None:
                    self._scorer = self._scorer_factory(self.card)
                else:
                    from cull.score import OnnxScorer

                    self._scorer = OnnxScorer(self.card)
            return self._scorer

    def thumbnail(self, item_id: int) -> bytes:
        item = self.servable(item_id)
        return self._thumbs.get_or_build(item_id, lambda: thumbnail(item.path))  # type: ignore[return-value]

    def neighbours(self, item_id: int) -> list[Item]:
        """The shown frames of the item's burst, sharpest first ([] for a photo on its own)."""
        item = self.item(item_id)
        return burst_of(self.items, item) if item.burst is not None else []

    def detail(self, item_id: int) -> Detail:
        item = self.servable(item_id)
        return self._details.get_or_build(item_id, lambda: compute_detail(item.path, self.card, self.scorer()))  # type: ignore[return-value]

    # -- decisions -------------------------------------------------------------------------------
    def decide(self, item_id: int, decision: str) -> Item:
        """Record the user's ``decision`` in XMP. Raises KeyError, ValueError or DecisionError.
        A photo replaced since the scan by a link leading outside the scanned folders is refused, as
        for reading it (KeyError): a decision must not write into a file elsewhere."""
        item = self.servable(item_id)
        with self._lock:
            _check_present(item)
            writes = write_decision(_files(item), decision, self.options.xmp)
            self._history.append(Step([Change(item.id, item.user, decision, writes)]))
            item.user = decision
            _refresh_protection(item)
        log.info("%s: %s", item.path, decision)
        return item

    def keep_best(self, item_id: int) -> list[Item]:
        """"Keep best, flag the rest" on the burst of ``item_id``: its best frame gets the user's keep,
        every other frame uncertain (never reject: in-focus priority), as one undo step.  The best frame
        is the best-ranked one kept (by the user's own decision where there is one, else cull's: B is the
        user's own call, where `scan --keep-best` measures against the best frame cull kept and the user
        did not take back; rank 1 can be a frame soft everywhere that cull left uncertain, beside a kept
        one with a sharp subject); rank 1 where none is kept.  Returns the frames, sharpest first. Raises KeyError, ValueError (not a burst) or
        DecisionError."""
        frames = [self.servable(f.id) for f in self.neighbours(item_id)]
        if len(frames) < 2 or frames[0].rank != 1:
            raise ValueError("not a burst: B works on the frames of a burst (cull review --bursts)")
        best = next((f for f in frames if f.effective == "keep"), frames[0])
        plan = [(_files(f), "keep" if f is best else "uncertain") for f in frames]
        with self._lock:
            for frame in frames:
                _check_present(frame)
            done = write_decisions(plan, self.options.xmp)
            self._history.append(Step([Change(f.id, f.user, decision, writes)
                                       for f, (_, decision), writes in zip(frames, plan, done)]))
            for f, (_, decision) in zip(frames, plan):
                f.user = decision
                _refresh_protection(f)
        log.info("%s: kept %s, the other %d frames uncertain", best.burst, best.path, len(frames) - 1)
        return frames

    def undo(self) -> Undone:
        """Undo the last step: the files as they were before it.  A file changed since (by another
        program) is left as it is; the step then stays on the undo list with what is left to put back
        (tried once more by the next undo, then given up), and its items say what their files hold."""
        with self._lock:
            if not self._history:
                return Undone([], [])
            step = self._history[-1]
            failed = restore([write for change in step.changes for write in change.writes])
            left = [write for write, _ in failed]
            kept = bool(failed) and not step.refused
            items = [self._undone(change, left) for change in step.changes]
            step.changes = [change for change in step.changes if change.writes]
            step.refused = True
            if not kept:
                self._history.pop()
        return Undone(items, [problem for _, problem in failed], kept)

    def _undone(self, change: Change, left: list[Write]) -> Item:
        """The change's item after an undo: its earlier decision where every file went back, else
        what its files now hold; ``change`` keeps the writes still to put back."""
        item = self.by_id[change.item]
        change.writes = [write for write in change.writes if any(write is other for other in left)]
        item.user = shot_user_verdict(item.path, item.partner) if change.writes else change.previous
        _refresh_protection(item)
        return item


def _refresh_protection(item: Item) -> None:
    """What keeps the item's reject out of the XMP, read again after a decision or an undo changed it (a
    reject made here replaces the rating it finds; a rating given since in another program keeps the shot)."""
    item.protected = shot_protection(item.path, item.partner) if item.effective == "reject" else None


def _files(item: Item) -> list[Path]:
    return [p for p in (item.path, item.partner) if p is not None]


def _check_present(item: Item) -> None:
    """Refuse a decision on a shot whose photo or RAW/JPEG partner is gone since the page was loaded
    (moved by `cull move`, deleted): its XMP would be a sidecar beside nothing."""
    for path in _files(item):
        if not path.exists():
            raise DecisionError(f"{path.name} is no longer at {item.folder} (moved or deleted?); not saved")


def load_session(
    roots: Sequence[Path],
    card: ModelCard,
    scan_options: ScanOptions,
    options: ReviewOptions,
    *,
    on_total: Callable[[int], None] | None = None,
    on_result: Callable[[PhotoResult], None] | None = None,
    scorer_factory: Callable[[ModelCard], Scorer] | None = None,
) -> tuple[ReviewSession, list[tuple[Path, str]]]:
    """Scan ``roots`` (from the cache when unchanged) and build the review. Returns it and the
    files that could not be judged. Raises CullError."""
    result = scan(roots, card, scan_options, on_total=on_total, on_result=on_result, scorer_factory=scorer_factory)
    items = build_items(result.results, roots)
    places = Places()  # each folder listed once
    for item in items:
        item.user = shot_user_verdict(item.path, item.partner, places)
        if item.effective == "reject":  # as the scan's conflict line says: the XMP does not mark it rejected
            item.protected = shot_protection(item.path, item.partner, places)
    failures = list(result.failures)
    return ReviewSession(roots, items, card, options, scorer_factory, failures), failures


__all__ = ["CullError", "DecisionError", "ReviewOptions", "ReviewSession", "load_session"]
