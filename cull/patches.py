"""Pick the textured patches of a photo that the network scores.

Flat sky, deep shadow and clipped highlights say nothing about focus, so they are skipped;
the remaining tiles are ranked by gradient energy, which also puts a sharp subject first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray

from cull.card import AnalysisSpec
from cull.decode import to_unit


@dataclass(frozen=True)
class Patches:
    """Selected patches: ``pixels`` (N, P, P) gray in [0, 1]; ``origins`` (N, 2) top-left (y, x)."""

    pixels: NDArray[np.float32]
    origins: NDArray[np.int32]
    candidates: int  # how many tiles the image had before filtering

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


def tile_grid(shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """(rows, cols, y0, x0) of the centred non-overlapping grid of ``size`` tiles."""
    height, width = shape
    rows, cols = height // size, width // size
    return rows, cols, (height - rows * size) // 2, (width - cols * size) // 2


def select_patches(gray: NDArray[np.floating] | NDArray[np.uint8], spec: AnalysisSpec) -> Patches:
    """Return up to ``spec.max_patches`` informative tiles, most textured first, as float32 in [0, 1].

    ``gray`` is in [0, 1], or 8-bit levels (cull.decode.decode_levels): those are judged and returned
    exactly as their float32 conversion (cull.decode.to_unit) would be, strip by strip.

    Tiles lie on a centred grid with a step of ``spec.tile_stride`` px (patch_size: side by side; half of it:
    each tile overlaps its neighbours by half, so a small sharp subject falls whole into some tile; the
    grid of step-sized cells is centred, so it reaches closer to the edges than tiles side by side do).
    """
    size = spec.patch_size
    step = spec.tile_step
    cells = size // step  # a tile is cells x cells grid cells
    cell_rows, cell_cols, y0, x0 = tile_grid(gray.shape, step)
    rows, cols = cell_rows - cells + 1, cell_cols - cells + 1
    if rows <= 0 or cols <= 0:
        return Patches(np.zeros((0, size, size), np.float32), np.zeros((0, 2), np.int32), 0)
    region = gray[y0 : y0 + cell_rows * step, x0 : x0 + cell_cols * step]
    row_step, col_step = region.strides
    blocks = as_strided(  # (rows, cols, P, P) view of the tiles: only the chosen ones are copied
        region, (rows, cols, size, size), (step * row_step, step * col_step, row_step, col_step), writeable=False
    )
    stats = tile_stats(region, cell_rows, cell_cols, step, cells)
    usable = (
        (stats.std >= spec.min_std)
        & (stats.mean >= spec.dark_mean)
        & (stats.mean <= spec.bright_mean)
        & (stats.clipped <= spec.max_clipped)
    )
    flat_index = np.flatnonzero(usable.ravel())
    order = flat_index[np.argsort(-stats.energy.ravel()[flat_index], kind="stable")][: spec.max_patches]
    r, c = np.divmod(order, cols)
    pixels = to_unit(blocks[r, c]) if gray.dtype == np.uint8 else np.ascontiguousarray(blocks[r, c], dtype=np.float32)
    origins = np.stack([y0 + r * step, x0 + c * step], axis=1).astype(np.int32)
    return Patches(pixels, origins, rows * cols)


@dataclass(frozen=True)
class TileStats:
    """Per-tile (rows, cols) statistics: mean, standard deviation, clipped share, gradient energy."""

    mean: NDArray[np.float32]
    std: NDArray[np.float32]
    clipped: NDArray[np.float32]  # share of pixels >= 0.98 or <= 0.02
    energy: NDArray[np.float32]  # mean |dx| + |dy| (differences reach into the tile above / to the left)


def tile_stats(region: NDArray[Any], rows: int, cols: int, size: int, cells: int = 1) -> TileStats:
    """Statistics of every tile of ``cells`` x ``cells`` grid cells of ``size`` px (one tile per cell
    position: tiles overlap when ``cells`` > 1) of ``region``, exactly ``rows * size`` by ``cols * size``.

    Sums are made per cell, then added up over each tile's cells (a pixel's differences belong to its cell).
    One tile-high strip at a time, copied into buffers that stay in the CPU cache: the whole-image way
    (a full-size temporary per step) cost twice as long on a 1.5 MP analysis image, with the same sums.
    The sums are made in the image's own precision (float64 stays float64, anything else float32), as
    arithmetic on the image itself would, so a float64 image is judged exactly as before; 8-bit levels
    are converted to [0, 1] a strip at a time, as cull.decode.to_unit converts a whole image.
    """
    width = cols * size
    real = np.dtype(np.float64) if region.dtype == np.float64 else np.dtype(np.float32)
    sums = np.empty((rows, cols), real)
    squares = np.empty((rows, cols), real)
    energy = np.empty((rows, cols), real)
    clipped = np.empty((rows, cols), np.uint32)  # up to size * size: a 256 px tile overflows 16 bits
    band = cells * size  # a strip is one tile high: ``cells`` rows of cells at a time
    strip = np.empty((band + 1, width), real)  # row 0: the row above the strip, for dy across tiles
    work_buffer = np.empty((band, width), real)
    dy_buffer = np.empty((band, width), real)
    high_buffer = np.empty((band, width), np.bool_)
    low_buffer = np.empty((band, width), np.bool_)
    for t in range(0, rows, cells):
        n = min(cells, rows - t)  # rows of cells in this strip
        top, height = t * size, n * size
        pixels, above = strip[1 : height + 1], strip[:height]
        work, dy, high, low = work_buffer[:height], dy_buffer[:height], high_buffer[:height], low_buffer[:height]
        to_unit(region[top - 1] if t else region[0], out=strip[0])  # the first row has no row above: dy = 0
        to_unit(region[top : top + height], out=pixels)
        sums[t : t + n] = _per_cell(pixels, n, cols, size)
        np.multiply(pixels, pixels, out=work)
        squares[t : t + n] = _per_cell(work, n, cols, size)
        np.greater_equal(pixels, real.type(0.98), out=high)
        np.less_equal(pixels, real.type(0.02), out=low)
        np.logical_or(high, low, out=high)
        clipped[t : t + n] = (high.view(np.uint8).reshape(n, size, width).sum(axis=1, dtype=np.uint32)
                              .reshape(n, cols, size).sum(axis=2, dtype=np.uint32))
        work[:, 0] = 0  # the region's first column has no left neighbour
        np.subtract(pixels[:, 1:], pixels[:, :-1], out=work[:, 1:])
        np.abs(work, out=work)
        np.subtract(pixels, above, out=dy)
        np.abs(dy, out=dy)
        work += dy
        energy[t : t + n] = _per_cell(work, n, cols, size)
    if cells > 1:
        sums, squares, clipped, energy = (_per_window(a, cells) for a in (sums, squares, clipped, energy))
    area = np.float32(size * size * cells * cells)
    mean = sums / area
    std = np.sqrt(np.maximum(squares / area - mean * mean, real.type(0.0)))
    return TileStats(mean, std, clipped.astype(np.float32) / area, energy / area)


def _per_window(cell_sums: NDArray[Any], cells: int) -> NDArray[Any]:
    """Per-cell sums (R, C) -> sums over every cells x cells window of cells (R - cells + 1, C - cells + 1)."""
    rows, cols = cell_sums.shape[0] - cells + 1, cell_sums.shape[1] - cells + 1
    out = np.zeros((rows, cols), cell_sums.dtype)
    for dy in range(cells):
        for dx in range(cells):
            out += cell_sums[dy : dy + rows, dx : dx + cols]
    return out


def _per_cell(values: NDArray[np.floating], rows: int, cols: int, size: int) -> NDArray[np.floating]:
    """A strip of ``rows`` rows of ``size`` px cells -> one sum per cell, (rows, cols): column sums
    within each row of cells, then per cell."""
    return values.reshape(rows, size, values.shape[1]).sum(axis=1).reshape(rows, cols, size).sum(axis=2)


def network_input(pixels: NDArray[np.float32]) -> NDArray[np.float32]:
    """(N, P, P) gray -> (N, P, P, 1) standardised per patch, the model's input convention.

    Contrast and exposure are divided out so the network judges edge shape, not brightness.
    """
    pixels = pixels.astype(np.float32, copy=False)
    mean = pixels.mean(axis=(1, 2), keepdims=True)
    std = pixels.std(axis=(1, 2), keepdims=True)
    return ((pixels - mean) / np.maximum(std, 0.02))[..., None].astype(np.float32)
