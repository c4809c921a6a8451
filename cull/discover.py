"""Find the photos under some folders: deterministic order, RAW+JPEG pairs as one shot, loop-safe.

Hidden and system folders (.git, @eaDir, .thumbnails, recycle bins) and cull's own move target
are skipped; directory symlinks are followed once each, so a symlink loop cannot trap the walk.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cull.formats import JPEG_EXTENSIONS, RAW_EXTENSIONS, is_photo, is_raw
from cull.fsutil import file_type

log = logging.getLogger(__name__)

CULLED_DIR = "_culled"  # the default target of `cull move`; never scanned
SYSTEM_DIRS = frozenset(
    {"@eadir", "#recycle", "#snapshot", "$recycle.bin", "system volume information", "lost+found",
     "__macosx", CULLED_DIR}
)


@dataclass(frozen=True)
class Shot:
    """One photograph: the file that is scored, and its RAW or JPEG partner (same folder and stem)."""

    path: Path
    partner: Path | None = None


@dataclass(frozen=True)
class Skipped:
    """Something that looked like a photo or folder but could not be walked or read."""

    path: Path
    reason: str
    error: bool = True  # False: a notice only (e.g. a folder named like a photo, walked as a folder)


def is_hidden_or_system(name: str) -> bool:
    lowered = name.lower()
    return name.startswith(".") or lowered in SYSTEM_DIRS or lowered.startswith(".trash")


def discover(roots: Iterable[Path], exclude: Iterable[Path] = (), judge_raw_below: int = 0) -> Iterator[Shot | Skipped]:
    """Yield every Shot (and every Skipped problem) under ``roots`` in a stable, sorted order.

    A root may also be a single photo file.  ``exclude`` folders (e.g. a move target) are not entered.
    ``judge_raw_below``: a RAW+JPEG shot whose JPEG's long side is under this is judged by its RAW (see
    pair_shots).
    """
    excluded = set()  # (st_dev, st_ino) of folders not to enter: no path resolving per folder
    for folder in exclude:
        try:
            info = Path(folder).stat()
        except OSError:
            continue
        excluded.add((info.st_dev, info.st_ino))
    visited: set[tuple[int, int]] = set()
    seen_files: set[Path] = set()
    listings: dict[Path, dict[str, list[Path]]] = {}  # folder -> its photos by lower-case stem (photos named as files)
    for root in roots:
        root = Path(root)
        try:
            info = root.stat()
        except FileNotFoundError:
            yield Skipped(root, "broken symbolic link" if root.is_symlink() else "does not exist")
            continue
        except OSError as exc:
            yield Skipped(root, f"cannot open: {exc.strerror or exc}")
            continue
        if stat.S_ISREG(info.st_mode):
            if _real(root) not in seen_files:
                shot = _shot_of_file(root, listings, judge_raw_below)  # a photo named on the command line keeps its RAW/JPEG partner
                members = [shot.path] + ([shot.partner] if shot.partner is not None else [])
                if not any(_real(member) in seen_files for member in members):
                    seen_files.update(_real(member) for member in members)
                    yield shot
        elif stat.S_ISDIR(info.st_mode):
            yield from _walk(root, visited, excluded, seen_files, judge_raw_below)
        else:
            yield Skipped(root, f"not a regular file ({file_type(info.st_mode)})")


def _shot_of_file(path: Path, listings: dict[Path, dict[str, list[Path]]], judge_raw_below: int = 0) -> Shot:
    """The shot a photo given by name belongs to, paired as a scan of its folder pairs it (``cull scan
    card/*`` names both files of a RAW+JPEG pair: one shot, one verdict, the partner's rating honoured).
    ``listings``: each folder's photos by lower-case stem, listed once for many named files."""
    if not is_photo(path):
        return Shot(path)
    folder = path.parent
    if folder not in listings:
        by_stem: dict[str, list[Path]] = {}
        try:
            with os.scandir(folder) as entries:
                for entry in sorted(entries, key=lambda e: e.name):  # as _list_folder lists it: the same pairs
                    if not entry.name.startswith(".") and is_photo(Path(entry.name)) and entry.is_file():
                        by_stem.setdefault(Path(entry.name).stem.lower(), []).append(Path(entry.path))
        except OSError:
            pass  # judged alone, as before
        listings[folder] = by_stem
    for shot in pair_shots(listings[folder].get(path.stem.lower(), []), judge_raw_below):
        if path.name in (shot.path.name, shot.partner.name if shot.partner else None):
            return shot
    return Shot(path)


def _real(path: Path) -> Path:
    try:
        return Path(path).resolve()
    except OSError:
        return Path(os.path.abspath(path))


def _walk(
    top: Path, visited: set[tuple[int, int]], excluded: set[tuple[int, int]], seen_files: set[Path],
    judge_raw_below: int = 0,
) -> Iterator[Shot | Skipped]:
    """Depth first, a folder's own photos before its sub-folders, both sorted by name.  Iterative
    (an explicit stack), so no nesting depth can exhaust Python's recursion limit."""
    stack = [top]
    while stack:
        folder = stack.pop()
        subfolders: list[Path] = []
        yield from _list_folder(folder, visited, excluded, seen_files, subfolders, judge_raw_below)
        stack.extend(reversed(subfolders))


def _list_folder(
    folder: Path, visited: set[tuple[int, int]], excluded: set[tuple[int, int]], seen_files: set[Path], subfolders: list[Path],
    judge_raw_below: int = 0,
) -> Iterator[Shot | Skipped]:
    """The shots and problems of one folder; its sub-folders are appended to ``subfolders``."""
    try:
        info = folder.stat()
    except OSError as exc:
        yield Skipped(folder, f"cannot open folder: {exc.strerror or exc}")
        return
    key = (info.st_dev, info.st_ino)
    if key in visited:
        yield Skipped(folder, "folder already scanned (a link loop back to it, or given twice)", error=False)
        return
    visited.add(key)
    if key in excluded:
        return
    try:
        with os.scandir(folder) as entries:
            items = sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        yield Skipped(folder, f"cannot list folder: {exc.strerror or exc}")
        return
    photos: list[Path] = []
    links: set[str] = set()  # names of entries that are symbolic links (resolved one by one)
    for entry in items:
        path = Path(entry.path)
        try:
            is_dir = entry.is_dir()  # follows symlinks
            is_file = entry.is_file()
        except OSError as exc:  # e.g. ELOOP on a self-referencing link
            yield Skipped(path, f"cannot read entry: {exc.strerror or exc}")
            continue
        if is_dir:
            if is_hidden_or_system(entry.name):
                continue
            if is_photo(path):
                yield Skipped(path, "a folder named like a photo (its contents are scanned)", error=False)
            subfolders.append(path)
        elif is_file:
            if is_photo(path) and not entry.name.startswith("."):
                photos.append(path)
                if entry.is_symlink():
                    links.add(entry.name)
        elif is_photo(path) and not entry.name.startswith("."):
            yield Skipped(path, _not_a_file_reason(path))
    real_folder = _real(folder)  # once per folder: a file that is no link resolves to real_folder / name
    for shot in pair_shots(photos, judge_raw_below):
        real = _real(shot.path) if shot.path.name in links else real_folder / shot.path.name
        if real in seen_files:
            continue
        seen_files.add(real)
        yield shot


def _not_a_file_reason(path: Path) -> str:
    try:
        info = path.stat()  # follows a symlink to its target
    except FileNotFoundError:
        return "broken symbolic link (its target is missing)"
    except OSError as exc:
        return f"cannot read entry: {exc.strerror or exc}"
    return f"not a regular file ({file_type(info.st_mode)})"


def pair_shots(photos: list[Path], judge_raw_below: int = 0) -> list[Shot]:
    """Group files of one folder into shots: a RAW and a JPEG (or other raster) sharing a stem are one
    shot, scored through the raster (cheaper to decode, same moment), unless the raster's long side is
    under ``judge_raw_below`` px (a camera's small JPEG beside its RAW, RAW+S): then through the RAW,
    whose full-size preview shows the blur at the analysis scale, where a small JPEG has shrunk it."""
    by_stem: dict[str, list[Path]] = {}
    for path in photos:
        by_stem.setdefault(path.stem.lower(), []).append(path)
    shots: list[Shot] = []
    for stem in sorted(by_stem):
        group = by_stem[stem]
        raws = [p for p in group if is_raw(p)]
        rasters = sorted((p for p in group if not is_raw(p)), key=lambda p: (p.suffix.lower() not in JPEG_EXTENSIONS, p.name))
        if raws and rasters:
            small = judge_raw_below > 0 and _long_side(rasters[0]) < judge_raw_below
            shots.append(Shot(raws[0], rasters[0]) if small else Shot(rasters[0], raws[0]))
            rest = raws[1:] + rasters[1:]
        else:
            rest = group
        shots.extend(Shot(p) for p in rest)
    return sorted(shots, key=lambda s: s.path.name)


def _long_side(path: Path) -> int:
    """The long side of a raster photo from its header (no decode); a large number when it cannot be read
    (the raster stays the judged file, and its decode reports the problem)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return max(image.size)
    except Exception:  # noqa: BLE001 - any unreadable header: judged (and reported) as before
        return 1 << 30


__all__ = ["CULLED_DIR", "RAW_EXTENSIONS", "Shot", "Skipped", "discover", "pair_shots"]
