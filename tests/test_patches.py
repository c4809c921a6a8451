import numpy as np

from cull.card import AnalysisSpec
from cull.patches import network_input, select_patches, tile_grid, tile_stats

SPEC = AnalysisSpec()


def test_flat_dark_and_clipped_images_give_no_patches():
    for value in (0.0, 0.5, 1.0):
        assert len(select_patches(np.full((512, 512), value, np.float32), SPEC)) == 0
    noise = np.random.default_rng(0).random((512, 512)).astype(np.float32) * 0.03  # very dark, textured
    assert len(select_patches(noise, SPEC)) == 0


def test_textured_tiles_are_chosen_sharpest_first_and_capped():
    rng = np.random.default_rng(1)
    image = np.full((640, 640), 0.5, np.float32)
    image[:64, :64] += rng.normal(0, 0.2, (64, 64)).astype(np.float32)  # strong texture
    image[128:192, 128:192] += rng.normal(0, 0.05, (64, 64)).astype(np.float32)  # weak texture
    patches = select_patches(np.clip(image, 0, 1), SPEC)
    assert len(patches) == 2
    assert tuple(patches.origins[0]) == (0, 0)
    assert tuple(patches.origins[1]) == (128, 128)
    busy = rng.random((2048, 2048)).astype(np.float32)
    assert len(select_patches(busy, SPEC)) == SPEC.max_patches


def test_tiny_image_has_no_tiles():
    assert tile_grid((10, 500), 64)[0] == 0
    assert len(select_patches(np.random.default_rng(0).random((10, 500)).astype(np.float32), SPEC)) == 0


def test_network_input_is_standardised_per_patch():
    rng = np.random.default_rng(2)
    pixels = (rng.random((3, 64, 64)) * np.array([0.1, 0.5, 1.0])[:, None, None]).astype(np.float32)
    x = network_input(pixels)
    assert x.shape == (3, 64, 64, 1) and x.dtype == np.float32
    assert np.allclose(x.mean(axis=(1, 2, 3)), 0, atol=1e-5)
    assert np.allclose(x.std(axis=(1, 2, 3)), 1, atol=1e-3)
    # contrast does not change what the network sees
    assert np.allclose(network_input(pixels[2:] * 0.5 + 0.2), network_input(pixels[2:]), atol=1e-4)


def test_tile_statistics_match_a_tile_by_tile_reference():
    """The cache-sized strip computation gives each tile's own mean, std, clipped share and gradient
    energy (differences reaching into the tile above and to the left, none outside the region)."""
    rng = np.random.default_rng(3)
    gray = rng.random((300, 455)).astype(np.float32)
    gray[:40, :50] = 1.0  # clipped highlights
    gray[250:, 400:] = 0.0  # clipped shadows
    rows, cols, y0, x0 = tile_grid(gray.shape, 64)
    region = gray[y0 : y0 + rows * 64, x0 : x0 + cols * 64]  # not contiguous: x0 > 0
    stats = tile_stats(region, rows, cols, 64)
    r64 = region.astype(np.float64)
    dx = np.zeros_like(r64)
    dx[:, 1:] = np.abs(np.diff(r64, axis=1))
    dy = np.zeros_like(r64)
    dy[1:] = np.abs(np.diff(r64, axis=0))
    for row in range(rows):
        for col in range(cols):
            tile = np.s_[row * 64 : (row + 1) * 64, col * 64 : (col + 1) * 64]
            assert np.isclose(stats.mean[row, col], r64[tile].mean(), atol=1e-6)
            assert np.isclose(stats.std[row, col], r64[tile].std(), atol=1e-4)
            assert stats.clipped[row, col] == ((region[tile] >= 0.98) | (region[tile] <= 0.02)).mean()
            assert np.isclose(stats.energy[row, col], (dx[tile] + dy[tile]).mean(), rtol=1e-5)
    patches = select_patches(gray, SPEC)
    for pixels, (y, x) in zip(patches.pixels, patches.origins):  # each patch is the tile at its origin
        assert np.array_equal(pixels, gray[y : y + 64, x : x + 64])
