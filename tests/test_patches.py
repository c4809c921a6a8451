import numpy as np

from cull.card import AnalysisSpec
from cull.patches import network_input, select_patches, tile_grid

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
