"""One photo's path to a PhotoScore: decode -> patches -> score -> aggregate (no decision, no I/O out)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from numpy.typing import NDArray

from cull.bursts import Footprint, footprint
from cull.capture import read_capture
from cull.card import AnalysisSpec, ModelCard
from cull.decode import decode_levels, to_unit
from cull.errors import UnreadableImage
from cull.fsutil import file_key
from cull.patches import Patches, network_input, select_patches
from cull.score import PatchScores, PhotoScore, Scorer, aggregate

log = logging.getLogger(__name__)

# Patches per inference call.  The activations of 32 patches (the first convolution's output is
# 64x64x16 floats per patch) stay in the CPU cache where 64 do not: the same scores, bit for bit,
# and about 4 % less time on a library where every patch is scored (measured, 2 cores).
BATCH_SIZE = 32


@dataclass(frozen=True)
class Analysis:
    """What was learnt about one file: a score, or the one-line reason it could not be scored."""

    path: Path
    photo: PhotoScore | None = None
    error: str | None = None
    laplacian_var: float | None = None  # the baseline's statistic, when asked for
    footprint: Footprint | None = None  # for grouping bursts, when asked for (cull.bursts)
    judged: tuple[int, int] | None = None  # (size, mtime_ns) of the file as the analysis read it


def laplacian_variance(gray: NDArray[np.float32]) -> float:
    """Variance of the 4-neighbour Laplacian on the 0-255 scale (the classic blur baseline)."""
    if min(gray.shape) < 3:
        return 0.0
    g = gray.astype(np.float32) * 255.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


def analyse_chunk(
    paths: Sequence[Path],
    card: ModelCard,
    scorer: Scorer,
    batch_size: int = BATCH_SIZE,
    with_laplacian: bool = False,
    with_bursts: bool = False,
) -> list[Analysis]:
    """Analyse several photos, batching their patches together through the network.

    Two passes (score_two_pass): a photo whose most textured patches already reach
    ``card.sure_keep`` is "keep" at any strictness (more patches can only raise the mean of the best
    k), so only the other photos have their remaining patches scored: same verdicts, less work.
    ``with_bursts`` scores every selected patch and, with overlapping tiles, the side-by-side tiles
    not among them (frames of a burst are compared region by region on those), and adds each photo's
    burst footprint (capture data from EXIF, a signature, the side-by-side patch map).
    """
    spec = card.analysis
    errors: dict[int, str] = {}
    inputs: dict[int, NDArray[np.float32]] = {}  # each photo's selected patches (gray, most textured first)
    laplacians: dict[int, float] = {}
    prints: dict[int, Footprint] = {}  # scores filled in after the network ran
    grid_scores: dict[int, NDArray[np.intp]] = {}  # bursts: where each footprint tile's score is among the scored
    selected: dict[int, int] = {}  # bursts: how many of the scored patches are the photo's own selection
    judged: dict[int, tuple[int, int]] = {}
    for index, path in enumerate(paths):
        try:
            if (stamp := file_key(path)) is not None:  # the version read: the driver compares it
                judged[index] = stamp
            levels = decode_levels(path, spec.long_side)  # 8-bit as decoded: selection converts only what it reads
            if with_laplacian:
                laplacians[index] = laplacian_variance(to_unit(levels))
            patches = select_patches(levels, spec)
            inputs[index] = patches.pixels
            if with_bursts:
                shot = read_capture(path)
                gray = to_unit(levels)
                grid, inputs[index], grid_scores[index] = _with_side_by_side_tiles(gray, patches, spec)
                selected[index] = len(patches)
                no_scores = np.zeros(0, np.float32)
                prints[index] = footprint(gray, grid.origins, no_scores, (shot.camera, shot.time, shot.time_source), spec.patch_size)
        except UnreadableImage as exc:
            errors[index] = str(exc)
        except MemoryError:
            errors[index] = "not enough memory to analyse this image"
        except Exception as exc:  # noqa: BLE001 - one odd file must not fail the others
            log.debug("analysis of %s failed", path, exc_info=True)
            errors[index] = f"analysis failed: {type(exc).__name__}: {exc}"
    if with_bursts:
        values = [network_input(x) for x in inputs.values()]
        scored = _split(_score_in_batches(scorer, values, batch_size), [len(x) for x in values])
    else:
        scored = score_two_pass(list(inputs.values()), card, scorer, batch_size)
    per_photo = dict(zip(inputs, scored))
    results: list[Analysis] = []
    for index, path in enumerate(paths):
        if index in errors:
            results.append(Analysis(path, error=errors[index]))
            continue
        scores = per_photo[index]
        print_ = prints.get(index)
        if print_ is not None:
            print_ = replace(print_, scores=np.asarray(scores.sharp[grid_scores[index]], np.float32))
            scores = _split(scores, [selected[index]])[0]
        photo = aggregate(scores, card.aggregate_k, scorer.kind_labels, card.head)
        results.append(Analysis(path, photo, laplacian_var=laplacians.get(index), footprint=print_, judged=judged.get(index)))
    return results


def _with_side_by_side_tiles(
    gray: NDArray[np.float32], patches: Patches, spec: AnalysisSpec
) -> tuple[Patches, NDArray[np.float32], NDArray[np.intp]]:
    """Bursts compare frames region by region on the side-by-side tiles (overlapping ones crowd onto the
    most textured regions, so frames of a burst would share few).  Returns those tiles, the pixels to
    score (the selected patches, then the tiles not among them) and where each tile's score will be."""
    if spec.tile_step == spec.patch_size:
        return patches, patches.pixels, np.arange(len(patches))
    grid = select_patches(gray, replace(spec, tile_stride=None))
    at = {(int(y), int(x)): i for i, (y, x) in enumerate(patches.origins)}
    where = np.empty(len(grid), np.intp)
    extra: list[int] = []
    for i, (y, x) in enumerate(grid.origins):
        found = at.get((int(y), int(x)))
        if found is None:
            found = len(patches) + len(extra)
            extra.append(i)
        where[i] = found
    return grid, np.concatenate([patches.pixels, grid.pixels[extra]]), where


def score_two_pass(
    patches: list[NDArray[np.float32]], card: ModelCard, scorer: Scorer, batch_size: int = BATCH_SIZE
) -> list[PatchScores]:
    """Patch scores for each photo's selected patches (gray, most textured first), batched across photos.

    The first ``card.analysis.first_pass`` patches of every photo are scored; only photos whose best
    patches do not already prove "keep" at every strictness get the rest scored (and only those are
    standardised for the network: network_input works patch by patch).
    """
    first = max(card.aggregate_k, card.analysis.first_pass)
    scored = _score_in_batches(scorer, [network_input(x[:first]) for x in patches], batch_size)
    per_photo = _split(scored, [min(first, len(x)) for x in patches])
    pending = [i for i, x in enumerate(patches) if len(x) > first and not _sure_keep(per_photo[i], card)]
    rest = _score_in_batches(scorer, [network_input(patches[i][first:]) for i in pending], batch_size)
    for i, more in zip(pending, _split(rest, [len(patches[i]) - first for i in pending])):
        per_photo[i] = _join(per_photo[i], more)
    return per_photo


def score_every_patch(pixels: NDArray[np.float32], scorer: Scorer, batch_size: int = BATCH_SIZE) -> PatchScores:
    """Scores of all of one photo's selected patches (gray, as select_patches gives them), in batches."""
    return _score_in_batches(scorer, [network_input(pixels)], batch_size)


def _sure_keep(scores: PatchScores, card: ModelCard) -> bool:
    photo = aggregate(scores, card.aggregate_k)
    return photo.score is not None and photo.score >= card.sure_keep


def _split(scores: PatchScores, counts: list[int]) -> list[PatchScores]:
    out, start = [], 0
    for count in counts:
        part = slice(start, start + count)
        out.append(PatchScores(scores.sharp[part], *(None if a is None else a[part] for a in (scores.kind, scores.embedding))))
        start += count
    return out


def _join(*parts: PatchScores) -> PatchScores:
    """One PatchScores of several, in order (kind / embedding only where every part has them)."""

    def joined(arrays: list[NDArray[np.float32] | None]) -> NDArray[np.float32] | None:
        present = [a for a in arrays if a is not None]
        return np.concatenate(present) if present and len(present) == len(arrays) else None

    return PatchScores(np.concatenate([p.sharp for p in parts]), joined([p.kind for p in parts]),
                       joined([p.embedding for p in parts]))


def _score_in_batches(scorer: Scorer, inputs: list[NDArray[np.float32]], batch_size: int) -> PatchScores:
    if not inputs or sum(len(x) for x in inputs) == 0:
        return PatchScores(np.zeros(0, np.float32), None)
    batch = np.concatenate(inputs)
    return _join(*(scorer.score(batch[i : i + batch_size]) for i in range(0, len(batch), max(1, batch_size))))
