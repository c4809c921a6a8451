"""Pick the textured patches of a photo that the network scores.

Flat sky, deep shadow and clipped highlights say nothing about focus, so they are skipped;
the remaining tiles are ranked by gradient energy, which also puts a sharp subject first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from cull.card import AnalysisSpec


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


def select_patches(gray: NDArray[np.float32], spec: AnalysisSpec) -> Patches:
    """Return up to ``spec.max_patches`` informative tiles, most textured first."""
    size = spec.patch_size
    rows, cols, y0, x0 = tile_grid(gray.shape, size)
    if rows == 0 or cols == 0:
        return Patches(np.zeros((0, size, size), np.float32), np.zeros((0, 2), np.int32), 0)
    region = gray[y0 : y0 + rows * size, x0 : x0 + cols * size]
    blocks = region.reshape(rows, size, cols, size).swapaxes(1, 2)  # (rows, cols, P, P) view
    area = np.float32(size * size)
    mean = _tile_sums(region, rows, cols, size) / area
    std = np.sqrt(np.maximum(_tile_sums(region * region, rows, cols, size) / area - mean * mean, 0.0))
    clipped = _tile_sums(((region >= 0.98) | (region <= 0.02)).astype(np.float32), rows, cols, size) / area
    energy = _gradient_energy(region, rows, cols, size)
    usable = (
        (std >= spec.min_std)
        & (mean >= spec.dark_mean)
        & (mean <= spec.bright_mean)
        & (clipped <= spec.max_clipped)
    )
    flat_index = np.flatnonzero(usable.ravel())
    order = flat_index[np.argsort(-energy.ravel()[flat_index], kind="stable")][: spec.max_patches]
    r, c = np.divmod(order, cols)
    pixels = np.ascontiguousarray(blocks[r, c], dtype=np.float32)
    origins = np.stack([y0 + r * size, x0 + c * size], axis=1).astype(np.int32)
    return Patches(pixels, origins, rows * cols)


def _tile_sums(values: NDArray[np.float32], rows: int, cols: int, size: int) -> NDArray[np.float32]:
    """Sum of ``values`` inside each tile, reducing along contiguous memory (fast)."""
    per_row = values.reshape(rows, size, cols * size).sum(axis=1)
    return per_row.reshape(rows, cols, size).sum(axis=2)


def _gradient_energy(region: NDArray[np.float32], rows: int, cols: int, size: int) -> NDArray[np.float32]:
    """Mean absolute first difference (x plus y) inside each tile (in place, no large temporaries)."""
    grad = np.empty_like(region)
    grad[:, 0] = 0
    np.subtract(region[:, 1:], region[:, :-1], out=grad[:, 1:])
    np.abs(grad, out=grad)
    dy = np.subtract(region[1:], region[:-1])
    np.abs(dy, out=dy)
    grad[1:] += dy
    return _tile_sums(grad, rows, cols, size) / np.float32(size * size)


def network_input(pixels: NDArray[np.float32]) -> NDArray[np.float32]:
    """(N, P, P) gray -> (N, P, P, 1) standardised per patch, the model's input convention.

    Contrast and exposure are divided out so the network judges edge shape, not brightness.
    """
    pixels = pixels.astype(np.float32, copy=False)
    mean = pixels.mean(axis=(1, 2), keepdims=True)
    std = pixels.std(axis=(1, 2), keepdims=True)
    return ((pixels - mean) / np.maximum(std, 0.02))[..., None].astype(np.float32)
