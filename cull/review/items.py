"""The photos a review shows: scan results turned into numbered items, filtered and worst first.

Items are addressed by their number only; a client never names a path.  An item whose real path
lies outside the real paths of the scanned roots (a file reached through a symbolic link that
leads elsewhere) is dropped, so nothing outside the roots can ever be served.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cull.scan import PhotoResult

log = logging.getLogger(__name__)


class Show(str, Enum):
    REJECTS = "rejects"
    UNCERTAIN = "uncertain"
    FLAGGED = "flagged"  # rejects + uncertain
    ALL = "all"


_WANTED = {
    Show.REJECTS: {"reject"},
    Show.UNCERTAIN: {"uncertain"},
    Show.FLAGGED: {"reject", "uncertain"},
    Show.ALL: {"reject", "uncertain", "keep"},
}
_RANK = {"reject": 0, "uncertain": 1, "keep": 2}


@dataclass
class Item:
    """One shot under review. ``user`` is the user's own verdict (None: not decided yet)."""

    id: int
    path: Path
    root: Path
    partner: Path | None
    verdict: str  # cull's verdict: keep | uncertain | reject
    score: float | None
    kind: str | None
    reason: str
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    burst: str | None = None  # the burst id (scan --bursts), None for a photo on its own
    rank: int | None = None  # 1 = the burst's sharpest frame
    size: int | None = None
    protected: str | None = None  # cull says reject, but the user rated, picked or accepted the shot: why

    @property
    def effective(self) -> str:
        return self.user or self.verdict

    @property
    def protection_note(self) -> str | None:
        """What the page says of a reject the user's own rating, pick or accept keeps out of the XMP (also a
        reject of the user's own in this review, rated since in another program: move leaves it)."""
        if not self.protected or self.user not in (None, "reject"):
            return None
        return f"not marked rejected: {self.protected.replace('user ', 'you ', 1)}"

    @property
    def folder(self) -> str:
        """Where the photo is, for messages: the scanned folder's name and the folders below it, no absolute path."""
        return _shown_folder(self.path, self.root)

    def public(self) -> dict[str, Any]:
        """What the page may know: names relative to the scanned root, never an absolute path."""
        return {
            "id": self.id,
            "name": self.path.name,
            "where": _relative(self.path.parent, self.root),
            "partner": self.partner.name if self.partner else None,
            "verdict": self.verdict,
            "score": None if self.score is None else round(self.score, 3),
            "kind": self.kind,
            "reason": self.reason,
            "user": self.user,
            "burst": self.burst,
            "burst_rank": self.rank,
            "burst_size": self.size,
            "protected": self.protection_note,
        }


def _relative(folder: Path, root: Path) -> str:
    try:
        rel = folder.relative_to(root if root.is_dir() else root.parent)
    except ValueError:
        return folder.name
    return "" if str(rel) == "." else str(rel)


def _shown_folder(path: Path, root: Path) -> str:
    base = Path(os.path.abspath(root if root.is_dir() else root.parent))
    return "/".join(part for part in (base.name, _relative(path.parent, root)) if part) + "/"


def unreadable_rows(failures: Iterable[tuple[Path, str]], roots: Sequence[Path]) -> list[dict[str, str]]:
    """The files the scan could not judge, as the page lists them: name, folder below the scanned root, why."""
    rows = []
    for path, why in failures:
        root = _root_of(path, roots)
        rows.append({"name": path.name, "where": _relative(path.parent, root), "why": why.replace(str(path), path.name)})
    return rows


def _root_of(path: Path, roots: Sequence[Path]) -> Path:
    return next((Path(r) for r in roots if _under(path, Path(r))), Path(path).parent)


def real_roots(roots: Iterable[Path]) -> list[Path]:
    """The scanned roots with every link resolved (a single photo stands for its folder)."""
    out = []
    for root in roots:
        real = Path(os.path.realpath(root))
        out.append(real if real.is_dir() else real.parent)
    return out


def inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether ``path``'s real location (links resolved) is under one of ``roots`` (already real)."""
    real = Path(os.path.realpath(path))
    return any(real == root or root in real.parents for root in roots)


def build_items(results: Iterable[PhotoResult], roots: Sequence[Path]) -> list[Item]:
    """Every decided result as an Item (errors and files escaping the roots are left out), in path order."""
    real = real_roots(roots)
    items: list[Item] = []
    for result in results:
        if result.decision is None or result.photo is None:
            continue
        if not inside(result.path, real) or (result.partner is not None and not inside(result.partner, real)):
            log.warning("%s leads outside the scanned folders; not shown", result.path)
            continue
        root = _root_of(result.path, roots)
        items.append(Item(
            id=len(items), path=result.path, root=root, partner=result.partner,
            verdict=result.decision.verdict.value, score=result.photo.score, kind=result.photo.kind,
            reason=result.decision.reason,
            burst=result.burst.burst if result.burst else None,
            rank=result.burst.rank if result.burst else None,
            size=result.burst.size if result.burst else None,
        ))
    return items


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _order(item: Item) -> tuple[int, float, str]:
    return (_RANK[item.effective], -1.0 if item.score is None else item.score, str(item.path))


def shown(items: Iterable[Item], show: Show) -> list[Item]:
    """The items to list for ``show``, worst first (reject, uncertain, keep; lowest score first).

    The user's own verdict counts over cull's: a photo the user kept is never flagged again.
    The frames of a burst stay together, sharpest first, placed by the burst's worst frame; a burst
    is listed whole (its kept frames too, to compare) when at least one of its frames is wanted.
    """
    wanted = _WANTED[Show(show)]
    groups: dict[str, list[Item]] = {}
    units: list[list[Item]] = []
    for item in items:
        if item.burst is None:
            units.append([item])
        elif item.burst in groups:
            groups[item.burst].append(item)
        else:
            groups[item.burst] = [item]
            units.append(groups[item.burst])
    picked = [sorted(unit, key=lambda i: (i.rank or 0, str(i.path))) for unit in units
              if any(i.effective in wanted for i in unit)]
    picked.sort(key=lambda unit: min(_order(i) for i in unit))
    return [item for unit in picked for item in unit]


def burst_of(items: Iterable[Item], item: Item) -> list[Item]:
    """The frames of ``item``'s burst among ``items``, sharpest first ([item] for a lone photo)."""
    if item.burst is None:
        return [item]
    return sorted((i for i in items if i.burst == item.burst), key=lambda i: (i.rank or 0, str(i.path)))
