from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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


def reference_select(gray, spec):
    """The whole-image way patch selection was written before it went strip by strip (5bd6b95~1):
    each statistic a full-size array in the image's own dtype, summed per tile."""
    size = spec.patch_size
    rows, cols, y0, x0 = tile_grid(gray.shape, size)
    if rows == 0 or cols == 0:
        return np.zeros((0, 2), np.int32), np.zeros((0, size, size), np.float32)
    region = gray[y0 : y0 + rows * size, x0 : x0 + cols * size]

    def sums(values):
        return values.reshape(rows, size, cols * size).sum(axis=1).reshape(rows, cols, size).sum(axis=2)

    area = np.float32(size * size)
    mean = sums(region) / area
    std = np.sqrt(np.maximum(sums(region * region) / area - mean * mean, 0.0))
    clipped = sums(((region >= 0.98) | (region <= 0.02)).astype(np.float32)) / area
    grad = np.empty_like(region)
    grad[:, 0] = 0
    np.subtract(region[:, 1:], region[:, :-1], out=grad[:, 1:])
    np.abs(grad, out=grad)
    grad[1:] += np.abs(np.subtract(region[1:], region[:-1]))
    energy = sums(grad) / area
    usable = (std >= spec.min_std) & (mean >= spec.dark_mean) & (mean <= spec.bright_mean) & (clipped <= spec.max_clipped)
    flat = np.flatnonzero(usable.ravel())
    order = flat[np.argsort(-energy.ravel()[flat], kind="stable")][: spec.max_patches]
    r, c = np.divmod(order, cols)
    blocks = region.reshape(rows, size, cols, size).swapaxes(1, 2)
    origins = np.stack([y0 + r * size, x0 + c * size], axis=1).astype(np.int32)
    return origins, np.ascontiguousarray(blocks[r, c], dtype=np.float32)


def assert_as_reference(gray, spec=SPEC):
    patches = select_patches(gray, spec)
    origins, pixels = reference_select(gray, spec)
    assert np.array_equal(patches.origins, origins), (patches.origins[:4], origins[:4])
    assert np.array_equal(patches.pixels, pixels)
    assert patches.pixels.dtype == np.float32 and patches.pixels.flags.c_contiguous


def test_a_float64_image_is_judged_in_float64_as_before():
    """A float64 gray image was judged in float64: a pixel a hair above 0.02 is not clipped (the strip
    buffers were float32, which rounded it onto 0.02 and dropped the tile as clipped)."""
    rng = np.random.default_rng(5)
    gray = rng.random((640, 640)) * 0.5 + 0.25
    gray[:64, :64] = np.where(rng.random((64, 64)) < 0.5, 0.0200000001, 0.6)  # 50 % clipped in float32 only
    assert tuple(select_patches(gray, SPEC).origins[0]) == (0, 0)  # the most textured tile, usable
    assert_as_reference(gray)


def test_a_fully_clipped_tile_of_256_px_is_still_clipped():
    """A card with 256 px patches: the clipped count of a tile (65,536 pixels) overflowed 16 bits and a
    tile of black and white stripes (all clipped, mean 0.5, std 0.5) was picked."""
    spec = replace(SPEC, patch_size=256)
    stripes = np.zeros((512, 512), np.float32)
    stripes[:, ::2] = 1.0
    assert len(select_patches(stripes, spec)) == 0
    assert_as_reference(stripes, spec)


def test_layouts_and_edge_shapes_give_the_same_patches_as_the_whole_image_way():
    rng = np.random.default_rng(6)
    for shape in [(64, 64), (65, 65), (64, 1000), (1000, 64), (63, 500), (129, 200), (127, 1301), (4000, 6000)]:
        gray = rng.random(shape).astype(np.float32)
        for variant in (gray, np.asfortranarray(gray), gray[::-1], gray[:, ::-1], gray.astype(np.float64)):
            assert_as_reference(variant)
    big = rng.random((900, 1301)).astype(np.float32)
    assert_as_reference(big[1::2, 3::2])  # strided
    assert_as_reference(big[3:, 5:])  # odd offsets into a larger buffer
    for value in (0.0, 0.02, 0.5, 0.98, 1.0):  # constant images, and halves exactly at the clip limits
        assert_as_reference(np.full((300, 300), value, np.float32))
        half = rng.random((300, 300)).astype(np.float32)
        half[:, :150] = value
        assert_as_reference(half)


LEVELS = np.array([0.0, 0.02, 0.02 + 1e-10, 0.0200001, 0.04, 0.5, 0.97, 0.98, 0.98 - 1e-10, 0.9799999, 1.0])


@settings(max_examples=60, deadline=None, derandomize=True)
@given(height=st.integers(1, 200), width=st.integers(1, 200), size=st.sampled_from([8, 16, 33, 64]),
       seed=st.integers(0, 2**32 - 1), wide=st.booleans(), layout=st.sampled_from(["C", "F", "flip", "offset"]),
       mix=st.floats(0.0, 1.0))
def test_property_same_patches_as_the_whole_image_way(height, width, size, seed, wide, layout, mix):
    """Random images mixing noise, flat runs and values right at the clip and mean limits."""
    rng = np.random.default_rng(seed)
    gray = rng.random((height + 3, width + 5)) * rng.uniform(0.01, 1.0)
    snap = rng.random(gray.shape) < mix
    gray[snap] = rng.choice(LEVELS, int(snap.sum()))
    gray = gray if wide else gray.astype(np.float32)
    view = {"C": gray[:height, :width], "F": np.asfortranarray(gray[:height, :width]),
            "flip": gray[:height, :width][::-1],
            "offset": gray[3:, 5:]}[layout]
    assert_as_reference(view, replace(SPEC, patch_size=size, max_patches=int(rng.integers(1, 80))))


HALF = replace(SPEC, tile_stride=32)


def test_overlapping_tile_statistics_match_each_window_computed_directly():
    """With a tile stride of half the patch size every 64 px window on the 32 px grid is a tile, and
    its statistics (summed from its four grid cells) are the window's own: a pixel's differences
    reach into the row above and the column to the left, as for tiles side by side."""
    rng = np.random.default_rng(11)
    gray = rng.random((300, 455)).astype(np.float32)
    gray[:40, :50] = 1.0
    cell_rows, cell_cols, y0, x0 = tile_grid(gray.shape, 32)  # a centred grid of 32 px cells
    region = gray[y0 : y0 + cell_rows * 32, x0 : x0 + cell_cols * 32]
    stats = tile_stats(region, cell_rows, cell_cols, 32, cells=2)
    assert stats.mean.shape == (cell_rows - 1, cell_cols - 1)
    r64 = region.astype(np.float64)
    dx = np.zeros_like(r64)
    dx[:, 1:] = np.abs(np.diff(r64, axis=1))
    dy = np.zeros_like(r64)
    dy[1:] = np.abs(np.diff(r64, axis=0))
    for row in range(cell_rows - 1):
        for col in range(cell_cols - 1):
            window = np.s_[row * 32 : row * 32 + 64, col * 32 : col * 32 + 64]
            assert np.isclose(stats.mean[row, col], r64[window].mean(), atol=1e-6)
            assert np.isclose(stats.std[row, col], r64[window].std(), atol=1e-4)
            assert np.isclose(stats.clipped[row, col], ((region[window] >= 0.98) | (region[window] <= 0.02)).mean())
            assert np.isclose(stats.energy[row, col], (dx[window] + dy[window]).mean(), rtol=1e-5)
    patches = select_patches(gray, HALF)
    assert patches.candidates == (cell_rows - 1) * (cell_cols - 1)
    assert {int(y - y0) % 32 for y, _ in patches.origins} == {0} and {int(x - x0) % 32 for _, x in patches.origins} == {0}
    for pixels, (y, x) in zip(patches.pixels, patches.origins):
        assert np.array_equal(pixels, gray[y : y + 64, x : x + 64])


def test_a_small_subject_between_tiles_falls_whole_into_an_overlapping_tile():
    """A 64 px textured subject centred on a corner of the side-by-side grid is cut in four there;
    the half-stride grid has a tile that holds all of it, ranked first."""
    rng = np.random.default_rng(12)
    gray = np.full((512, 512), 0.5, np.float32)
    gray[96:160, 96:160] += rng.normal(0, 0.2, (64, 64)).astype(np.float32)  # spans tiles (64..192)^2
    gray = np.clip(gray, 0, 1)
    side_by_side = select_patches(gray, SPEC)
    assert {tuple(o) for o in side_by_side.origins} == {(64, 64), (64, 128), (128, 64), (128, 128)}
    overlapping = select_patches(gray, HALF)
    assert tuple(overlapping.origins[0]) == (96, 96)
    assert np.array_equal(overlapping.pixels[0], gray[96:160, 96:160])


def test_no_tile_stride_is_the_side_by_side_grid():
    gray = np.random.default_rng(13).random((700, 950)).astype(np.float32)
    a, b = select_patches(gray, SPEC), select_patches(gray, replace(SPEC, tile_stride=64))
    assert np.array_equal(a.origins, b.origins) and np.array_equal(a.pixels, b.pixels) and a.candidates == b.candidates
    every = replace(SPEC, max_patches=10_000, min_std=0.0)
    assert len(select_patches(gray, every)) == 10 * 14  # 700 x 950: 10 x 14 tiles side by side, 30 / 59 px left over
    overlapping = select_patches(gray, replace(every, tile_stride=32)).origins
    assert len(overlapping) == (21 - 1) * (29 - 1)  # 21 x 29 cells of 32 px: 28 / 22 px left over
    assert overlapping[:, 0].min() == 14 and overlapping[:, 1].min() == 11  # centred, nearer the edges
    assert_as_reference(gray)
    assert len(select_patches(gray[:63], HALF)) == 0  # smaller than one patch: no tile at any stride


@settings(max_examples=40, deadline=None)
@given(height=st.integers(60, 400), width=st.integers(60, 400), seed=st.integers(0, 2**16), stride=st.sampled_from([None, 32]))
def test_8_bit_levels_are_judged_and_cut_exactly_as_their_float_image(height, width, seed, stride):
    """A scan selects from the decoded 8-bit levels (no full-size float copy of the photo): the same
    statistics, the same tiles and the same float32 pixels, bit for bit, as from the whole image
    converted first (cull.decode.to_unit), clipped and dark levels included."""
    from cull.decode import to_unit

    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 256, (height, width), dtype=np.uint8)
    levels[: height // 3] //= 8  # a dark band and a clipped one: the thresholds' edges are met
    levels[-height // 4 :] |= 0xF8
    spec = replace(SPEC, tile_stride=stride)
    whole, strips = select_patches(to_unit(levels), spec), select_patches(levels, spec)
    assert strips.pixels.dtype == np.float32 and strips.pixels.flags.c_contiguous
    assert np.array_equal(whole.origins, strips.origins) and whole.candidates == strips.candidates
    assert np.array_equal(whole.pixels, strips.pixels)


def test_levels_of_a_photo_give_the_patches_of_its_float_decode(tmp_path):
    """decode_levels + selection == decode_gray + selection on real photos (8-bit JPEG, 16-bit PNG)."""
    from pathlib import Path

    from PIL import Image

    from cull.decode import decode_gray, decode_levels

    examples = sorted((Path(__file__).resolve().parent.parent / "examples" / "photos").glob("*.jpg"))[:3]
    deep = tmp_path / "deep.png"
    Image.fromarray((np.random.default_rng(3).random((300, 420)) * 65535).astype(np.uint16)).save(deep)
    assert decode_levels(deep, 1440).dtype == np.float32  # 16-bit sources stay float
    for path in [*examples, deep]:
        a, b = select_patches(decode_gray(path, 1440), SPEC), select_patches(decode_levels(path, 1440), SPEC)
        assert len(a) > 0 and np.array_equal(a.pixels, b.pixels) and np.array_equal(a.origins, b.origins)
