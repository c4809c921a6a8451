import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cull.decode import decode_gray, to_gray_array
from cull.errors import UnreadableImage
from tests.conftest import draft_requests, save, sharp_image

LONG = 1440


def test_large_jpeg_uses_dct_scaling_not_a_full_decode(tmp_path, monkeypatch):
    path = save(sharp_image().resize((6000, 4000)), tmp_path / "big.jpg", quality=90)
    requested = draft_requests(monkeypatch)
    gray = decode_gray(path, LONG)
    assert requested, "JPEG must be decoded with draft (DCT scaling)"
    assert gray.shape == (1000, 1500) and gray.dtype == np.float32  # 1/4 DCT scale, within 10 % of 1440
    gray = decode_gray(save(sharp_image().resize((4000, 3000)), tmp_path / "12mp.jpg"), LONG)
    assert gray.shape == (1080, 1440)  # 1/2 scale (2000 px) is too far: reduced to the analysis scale
    assert 0.0 <= gray.min() and gray.max() <= 1.0


def test_exif_orientation_is_applied(tmp_path):
    image = sharp_image().resize((400, 200))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    path = save(image, tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert decode_gray(path, LONG).shape == (400, 200)


@pytest.mark.parametrize(
    "mode,ext",
    [("L", "png"), ("P", "png"), ("RGBA", "png"), ("LA", "png"), ("CMYK", "jpg"), ("CMYK", "tif"),
     ("RGB", "webp"), ("1", "png"), ("I;16", "png"), ("I;16", "tif"), ("RGB", "bmp")],
)
def test_every_pixel_layout_decodes_to_gray(tmp_path, mode, ext):
    base = sharp_image()
    if mode == "I;16":
        array = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        image = Image.fromarray(array)
    elif mode == "P":
        image = base.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        image = base.convert(mode)
    path = save(image, tmp_path / f"photo.{ext}")
    gray = decode_gray(path, LONG)
    assert gray.shape == (500, 500)
    assert 0.0 <= gray.min() and gray.max() <= 1.0 and gray.std() > 0.05
    if mode == "I;16":  # 16-bit must be scaled, not clipped to white
        reference = np.asarray(base.convert("L"), dtype=np.float32) / 255
        assert np.abs(gray - reference).mean() < 0.01


def test_tiny_and_panorama_images(tmp_path):
    assert decode_gray(save(Image.new("RGB", (1, 1), "gray"), tmp_path / "one.png"), LONG).shape == (1, 1)
    pano = sharp_image().resize((12000, 800))
    gray = decode_gray(save(pano, tmp_path / "pano.jpg"), LONG)
    assert LONG <= gray.shape[1] <= LONG * 1.1 and gray.shape[1] / gray.shape[0] == pytest.approx(15, rel=0.02)


def test_100_megapixel_image_is_decoded_without_bomb_error(tmp_path):
    path = save(Image.new("L", (10000, 10000), 128), tmp_path / "huge.jpg", quality=50)
    with __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("error")  # no DecompressionBombWarning escapes
        gray = decode_gray(path, LONG)
    assert gray.shape == (LONG, LONG)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 100).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("noise.jpg", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not an image"),
        ("bomb.png", _png_header_only(40000, 40000), "too large"),
        ("bomb600.png", _png_header_only(30000, 20000), r"too large .*600 MP; the limit for PNG is 100 MP"),
        ("bomb.jpg", None, r"too large .*784 MP; the limit for JPEG is 400 MP"),
        ("fake.cr2", b"II*\x00" + bytes(3000), "not a RAW file LibRaw can read"),
        ("text.CR2", b"hello, this is not a photo\n" * 20, r"^not a RAW file LibRaw can read \(unsupported or corrupt\)$"),
        ("short.NEF", b"hi\n", r"^not a RAW file LibRaw can read \(unsupported or corrupt\)$"),
        ("empty.nef", b"", "empty file"),
    ],
)
def test_bad_files_raise_one_clear_reason(tmp_path, name, content, reason):
    if content is None:  # a JPEG whose frame header claims 28000x28000
        content = _jpeg_claiming(28000, 28000)
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImage, match=reason):
        decode_gray(path, LONG)


def test_truncated_jpeg_is_reported(tmp_path):
    buffer = io.BytesIO()
    sharp_image().save(buffer, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UnreadableImage, match="truncated"):
        decode_gray(path, LONG)


def test_directory_is_reported(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(UnreadableImage, match="directory"):
        decode_gray(tmp_path / "x.jpg", LONG)


def test_real_raw_with_useless_thumbnail_falls_back_to_half_size_demosaic(shared_raw):
    # RAW_KODAK_DC50.KDC embeds only a 64-byte bitmap thumbnail (shared/NOTES.md)
    gray = decode_gray(shared_raw / "RAW_KODAK_DC50.KDC", LONG)
    assert max(gray.shape) >= 300 and gray.std() > 0.02


def fake_raw(monkeypatch: pytest.MonkeyPatch, preview: Image.Image, flip: int = 0) -> None:
    """rawpy.imread returns a 6000x4000 RAW whose embedded JPEG preview is ``preview`` (LibRaw ``flip``)."""
    import rawpy

    data = io.BytesIO()
    preview.save(data, "JPEG", quality=95)

    class FakeRaw:
        sizes = type("S", (), {"width": 6000, "height": 4000, "flip": flip})()

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def extract_thumb(self):
            return type("T", (), {"format": rawpy.ThumbFormat.JPEG, "data": data.getvalue()})()

        def postprocess(self, **kw):
            raise AssertionError("must not demosaic when the preview is big enough")

    monkeypatch.setattr(rawpy, "imread", lambda p: FakeRaw())


def test_raw_with_embedded_jpeg_preview_uses_the_preview(tmp_path, monkeypatch):
    fake_raw(monkeypatch, sharp_image().resize((1600, 1200)))
    path = tmp_path / "IMG_0001.CR2"
    path.write_bytes(b"raw")
    assert decode_gray(path, LONG).shape == (1080, 1440)


def test_heic_needs_pillow_heif_or_decodes_with_it(tmp_path):
    from cull import decode

    path = tmp_path / "IMG_1.HEIC"
    if not decode.HEIF_AVAILABLE:
        path.write_bytes(b"\x00\x00\x00\x18ftypheic")
        with pytest.raises(UnreadableImage, match="pillow-heif"):
            decode_gray(path, LONG)
    else:  # pragma: no cover - with the [heic] extra
        sharp_image().save(path, format="HEIF")
        assert decode_gray(path, LONG).shape == (500, 500)


def test_pixel_limit_is_checked_per_format_before_decoding(tmp_path, monkeypatch):
    from cull import decode

    monkeypatch.setattr(decode, "MAX_PIXELS_FULL", 1_000_000)
    image = sharp_image().resize((1200, 1000))
    for ext in ("png", "webp", "tif"):
        with pytest.raises(UnreadableImage, match=r"1200x1000 = 1 MP; the limit for \w+ is 1 MP"):
            decode_gray(save(image, tmp_path / f"big.{ext}"), LONG)
    assert decode_gray(save(image, tmp_path / "big.jpg"), LONG).shape == (1000, 1200)  # DCT-scaled: allowed


def test_pillow_global_limit_is_not_changed_by_importing_cull():
    import subprocess
    import sys

    code = "import PIL.Image as I; d = I.MAX_IMAGE_PIXELS; import cull.decode, cull.scan; print(I.MAX_IMAGE_PIXELS == d)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "True"


def test_float_tiff_with_values_0_to_1_is_scaled_not_divided_by_255(tmp_path):
    reference = np.asarray(sharp_image().convert("L"), dtype=np.float32) / 255
    path = save(Image.fromarray(reference, mode="F"), tmp_path / "float.tif")
    gray = decode_gray(path, LONG)
    assert np.abs(gray - reference).mean() < 0.01


def test_a_raw_named_file_with_jpeg_content_is_decoded_as_jpeg(tmp_path):
    path = save(sharp_image(), tmp_path / "DSC_0001.nef", format="JPEG")
    gray = decode_gray(path, LONG)
    assert gray.shape == (500, 500) and gray.std() > 0.05
    png = save(sharp_image(), tmp_path / "IMG_2.CR2", format="PNG")
    assert decode_gray(png, LONG).shape == (500, 500)


def test_avif_is_decoded_by_pillow_without_pillow_heif(tmp_path):
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    path = save(sharp_image(), tmp_path / "photo.avif", quality=90)
    assert decode_gray(path, LONG).shape == (500, 500)


@pytest.mark.parametrize("flip,turned", [(0, False), (3, False), (5, True), (6, True)])
def test_raw_preview_is_turned_by_libraw_flip(tmp_path, monkeypatch, flip, turned):
    upright = sharp_image().resize((1600, 1200))
    fake_raw(monkeypatch, upright, flip)
    path = tmp_path / "IMG_0001.CR2"
    path.write_bytes(b"raw")
    gray = decode_gray(path, LONG)
    expected = {0: None, 3: Image.Transpose.ROTATE_180, 5: Image.Transpose.ROTATE_90, 6: Image.Transpose.ROTATE_270}[flip]
    reference = upright.convert("L").resize((1440, 1080), Image.Resampling.LANCZOS)
    reference = np.asarray(reference.transpose(expected) if expected is not None else reference, np.float32) / 255
    assert gray.shape == ((1440, 1080) if turned else (1080, 1440))
    assert np.abs(gray - reference).mean() < 0.02


def test_a_progressive_jpeg_gets_the_full_decode_limit(tmp_path, monkeypatch):
    from cull import decode

    monkeypatch.setattr(decode, "MAX_PIXELS_FULL", 1_000_000)
    image = sharp_image().resize((1200, 1000))
    assert decode_gray(save(image, tmp_path / "baseline.jpg"), LONG).shape == (1000, 1200)
    with pytest.raises(UnreadableImage, match=r"the limit for progressive JPEG is 1 MP"):
        decode_gray(save(image, tmp_path / "progressive.jpg", progressive=True), LONG)


# --- RAW previews named in a TIFF container (tests/rawfiles.py writes real DNGs LibRaw opens) ---

@pytest.mark.parametrize("layout", ["ifd0", "subifd"])
def test_a_raw_preview_named_in_its_ifds_is_read_straight_from_the_file(tmp_path, monkeypatch, layout):
    """DNG keeps its preview in IFD0, NEF in a SubIFD (JPEGInterchangeFormat): both are found through
    the container and decoded exactly as the same JPEG on its own, without LibRaw's extract_thumb."""
    import cull.decode
    from tests.rawfiles import write_dng

    preview = save(sharp_image(1).resize((1600, 1200)), tmp_path / "preview.jpg", quality=90)
    raw = tmp_path / "IMG_0001.DNG"
    write_dng(preview, raw, layout=layout)

    def no_libraw_copy(*args: object) -> None:
        raise AssertionError("LibRaw's extract_thumb path was used")

    monkeypatch.setattr(cull.decode, "_raw_preview", no_libraw_copy)
    assert np.array_equal(decode_gray(raw, 1440), decode_gray(preview, 1440))


def test_a_rotated_raw_preview_is_turned_as_libraw_says(tmp_path):
    from tests.rawfiles import write_dng

    preview = save(sharp_image(1).resize((1600, 1200)), tmp_path / "preview.jpg", quality=90)
    raw = tmp_path / "IMG_0002.DNG"
    write_dng(preview, raw, orientation=6)  # camera held upright: turn clockwise to view
    upright = np.asarray(Image.fromarray((decode_gray(preview, 1440) * 255).round().astype(np.uint8)).transpose(Image.Transpose.ROTATE_270))
    assert decode_gray(raw, 1440).shape == (1440, 1080)
    turned = (decode_gray(raw, 1440) * 255).round().astype(np.int16)  # turned before, not after, the reduction
    assert np.abs(turned - upright).max() <= 4 and np.abs(turned - upright).mean() < 0.5  # turned wrongly: tens


def test_a_lossless_jpeg_strip_is_not_taken_for_the_preview(tmp_path):
    """DNG raw data is often lossless JPEG (SOF3), which no photo decoder reads: it is skipped, and
    LibRaw's own choice decides instead."""
    from cull.decode import tiff_preview
    from tests.rawfiles import write_dng

    preview = save(sharp_image(1).resize((1600, 1200)), tmp_path / "preview.jpg", quality=90)
    lossless = b"\xff\xd8\xff\xc3\x00\x0b\x10\x04\xb0\x06\x40\x01\x01\x11\x00" + b"\x00" * 64 + b"\xff\xd9"
    raw = tmp_path / "IMG_0003.DNG"
    write_dng(preview, raw, jpeg=lossless)
    assert tiff_preview(raw, 1440) is None
    assert tiff_preview(preview, 1440) is None  # a plain JPEG names no preview in TIFF IFDs


def test_a_raw_preview_too_small_for_the_analysis_is_not_decoded_through_the_container(tmp_path):
    """A 640 px preview of a 1600 px sensor is judged from its frame header and left to LibRaw's way."""
    from cull.decode import tiff_preview
    from tests.rawfiles import write_dng

    preview = save(sharp_image(1).resize((640, 480)), tmp_path / "preview.jpg", quality=90)
    raw = tmp_path / "IMG_0004.DNG"
    write_dng(preview, raw)
    assert tiff_preview(raw, 1440, need=800) is None
    assert tiff_preview(raw, 1440, need=640).size == (640, 480)


def test_gray_conversion_gives_the_same_floats_as_converting_then_scaling():
    """to_gray_array converts and scales in one pass; every 8-bit level and float value lands on
    exactly the float32 that converting first and multiplying by 1/255 gives (scores stay bit for bit)."""
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    floats = np.linspace(0.0, 255.0, 1001, dtype=np.float32).reshape(7, 143)
    for image in (Image.fromarray(levels), Image.fromarray(floats)):  # modes L and F
        gray = to_gray_array(image)
        expected = np.array(image, dtype=np.float32) * np.float32(1.0 / 255.0)
        assert gray.dtype == np.float32 and gray.flags.writeable
        assert np.array_equal(gray, expected)


def test_gray_pixels_are_numpy_s_own_array_bit_for_bit(monkeypatch):
    """gray_pixels copies an L/F image straight from Pillow's memory (its Arrow export) instead of
    np.asarray's line-by-line tobytes: the same values, shape and dtype, a copy that outlives the image; np.asarray where the export is missing or the image is not one block of memory.  (Run
    with an older Pillow on PYTHONPATH too: np.asarray's array throughout.)"""
    from cull.decode import gray_pixels

    rng = np.random.default_rng(4)
    images = []
    for width, height in ((1, 1), (3, 7), (1501, 999), (64, 64)):
        levels = rng.integers(0, 256, (height, width), dtype=np.uint8)
        images += [Image.fromarray(levels), Image.fromarray(levels.astype(np.float32) * 0.37)]
    images += [Image.new("L", (9000, 9000), 7), Image.new("RGB", (30, 20), (1, 2, 3)), Image.new("I;16", (5, 4), 300)]
    for image in images:
        expected = np.asarray(image)
        pixels = gray_pixels(image)
        assert pixels.dtype == expected.dtype and np.array_equal(pixels, expected), (image.mode, image.size)
    small = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    pixels = gray_pixels(small)
    del small
    assert pixels.tolist()[1] == [4, 5, 6, 7]  # its own memory, not the image's
    assert gray_pixels(Image.new("L", (0, 5))).shape == (5, 0)  # empty: np.asarray's (Pillow 12 crashed on it)
    monkeypatch.delattr(Image.Image, "__arrow_c_array__")  # a Pillow before 11.2
    assert np.array_equal(gray_pixels(Image.fromarray(np.eye(3, dtype=np.uint8))), np.eye(3, dtype=np.uint8))


def test_gray_pixels_leave_pillow_12_s_export_alone(tmp_path, monkeypatch):
    """Pillow 11.2-12.x export an image mapped over a buffer (fromarray, an uncompressed grey TIFF or BMP
    opened from disk) through a NULL pointer: the process crashed.  Only Pillow 13's export is used."""
    import cull.decode
    from cull.decode import decode_levels, gray_pixels

    levels = np.random.default_rng(5).integers(0, 256, (600, 801), dtype=np.uint8)
    for ext in ("tif", "bmp"):  # Pillow maps both from disk
        Image.fromarray(levels).save(tmp_path / f"gray.{ext}")
        assert np.array_equal(decode_levels(tmp_path / f"gray.{ext}", 1440), levels)

    def crash(self, requested_schema=None):
        raise AssertionError("the export of a Pillow before 13 was called")

    monkeypatch.setattr(cull.decode, "ARROW_EXPORT_SAFE", False)
    monkeypatch.setattr(Image.Image, "__arrow_c_array__", crash)
    assert np.array_equal(gray_pixels(Image.fromarray(levels)), levels)


# --- hostile and unusual files (probe of session 14) ---


def _jpeg_header(sof: int, width: int, height: int, components: int, scans: list[int]) -> bytes:
    """A JPEG's marker segments only (no tables, no entropy data): enough for Image.open and
    cull's checks, which run before any pixel is decoded."""
    frame = bytes([8]) + struct.pack(">HH", height, width) + bytes([components])
    frame += b"".join(bytes([i + 1, 0x11, 0]) for i in range(components))
    out = b"\xff\xd8" + bytes([0xFF, sof]) + struct.pack(">H", len(frame) + 2) + frame
    for count in scans:  # one SOS per scan, naming ``count`` components
        body = bytes([count]) + b"".join(bytes([i + 1, 0]) for i in range(count)) + b"\x00\x3f\x00"
        out += b"\xff\xda" + struct.pack(">H", len(body) + 2) + body + b"\x00" * 8
    return out + b"\xff\xd9"


def test_a_baseline_jpeg_with_colours_in_separate_scans_gets_the_full_decode_limit(tmp_path):
    """libjpeg buffers every coefficient of such a file, as of a progressive one: a 6 MB file of
    400 MP took 3.2 GB in one worker under the 400 MP baseline limit."""
    bomb = tmp_path / "multiscan.jpg"
    bomb.write_bytes(_jpeg_header(0xC0, 20000, 20000, 4, [1, 1, 1, 1]))
    with pytest.raises(UnreadableImage, match=r"400 MP; the limit for JPEG with colours in separate scans is 100 MP"):
        decode_gray(bomb, LONG)
    interleaved = tmp_path / "interleaved.jpg"  # the usual layout: one scan with every colour, baseline limit
    interleaved.write_bytes(_jpeg_header(0xC0, 20000, 20000, 3, [3]))
    with pytest.raises(UnreadableImage) as caught:
        decode_gray(interleaved, LONG)
    assert "limit" not in str(caught.value)  # it got as far as decoding (and found no data)


def test_a_progressive_jpeg_with_thousands_of_scans_is_refused_before_decoding(tmp_path):
    from cull.decode import MAX_JPEG_SCANS

    bomb = tmp_path / "scans.jpg"
    bomb.write_bytes(_jpeg_header(0xC2, 4000, 3000, 1, [1] * (MAX_JPEG_SCANS + 1)))
    with pytest.raises(UnreadableImage, match=rf"JPEG with {MAX_JPEG_SCANS + 1} scans refused"):
        decode_gray(bomb, LONG)
    normal = save(sharp_image(0), tmp_path / "progressive.jpg", progressive=True)
    assert decode_gray(normal, LONG).size


def test_a_postscript_file_named_jpg_is_never_handed_to_ghostscript(tmp_path, monkeypatch):
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("Ghostscript was run"))
    eps = tmp_path / "a.jpg"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n0 0 moveto 100 100 lineto stroke\nshowpage\n")
    with pytest.raises(UnreadableImage, match="not an image file"):
        decode_gray(eps, LONG)


def test_a_camera_jpeg_with_a_multi_picture_preview_decodes_as_a_jpeg(tmp_path, monkeypatch):
    """Pillow calls a JPEG with a CIPA MPF preview "MPO": it was decoded in full (3x slower, other
    scores) and held to the 100 MP limit of formats decoded in full."""
    from cull import decode

    photo = sharp_image(1).resize((3072, 2048))
    plain = save(photo, tmp_path / "plain.jpg", quality=92)
    mpo = save(photo, tmp_path / "camera.jpg", format="MPO", save_all=True,
               append_images=[photo.resize((640, 426))], quality=92)
    assert Image.open(mpo).format == "MPO"
    np.testing.assert_array_equal(decode_gray(mpo, LONG), decode_gray(plain, LONG))
    monkeypatch.setattr(decode, "MAX_PIXELS_FULL", 1_000_000)
    assert decode_gray(mpo, LONG).size  # 6 MP: within the JPEG limit, not the full-decode one


def test_a_tiff_whose_first_page_is_a_preview_is_judged_by_the_full_image(tmp_path):
    import tifffile

    photo = np.asarray(sharp_image(0).convert("L").resize((1536, 1024)))
    path = tmp_path / "preview_first.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(photo[::8, ::8].copy(), photometric="minisblack", subfiletype=1)  # reduced resolution
        tif.write(photo, photometric="minisblack")
    assert decode_gray(path, LONG).shape == (1024, 1536)  # the photo (within the scale tolerance), not 192 x 128


def test_raw_content_under_a_raster_name_is_decoded_as_raw(tmp_path, shared_raw):
    """A KDC (a TIFF container whose first image is a 96 x 64 thumbnail) renamed .tif or .JPG."""
    import shutil

    raw = next(p for p in shared_raw.iterdir() if p.suffix.upper() == ".KDC")
    expected = decode_gray(raw, LONG)
    assert max(expected.shape) > 96
    for name in ("renamed.tif", "renamed.JPG"):
        copy = shutil.copy(raw, tmp_path / name)
        np.testing.assert_array_equal(decode_gray(copy, LONG), expected)


def test_a_dng_libraw_refuses_is_an_error_not_its_preview(tmp_path, monkeypatch):
    """A DNG's first image is a small preview; judging it kept a blurred photo (a preview always looks
    sharp).  LibRaw's refusal is the file's error; a plain TIFF named .dng still decodes as a TIFF."""
    import tifffile

    from cull import decode

    def refuse(path, long_side):
        raise UnreadableImage("LibRaw cannot read this file (LibRaw: unsupported compression)")

    monkeypatch.setattr(decode, "_open_raw", refuse)
    photo = np.asarray(sharp_image(0).convert("RGB").resize((1024, 1024)))
    dng = tmp_path / "a.dng"
    with tifffile.TiffWriter(dng) as tif:
        tif.write(photo[::4, ::4].copy(), photometric="rgb", subfiletype=1, subifds=1,
                  extratags=[(50706, 1, 4, (1, 4, 0, 0), True)])
        tif.write(photo[:, :, 1].copy(), photometric=32803, extratags=[(33421, 3, 2, (2, 2), True), (33422, 1, 4, (0, 1, 1, 2), True)])
    with pytest.raises(UnreadableImage, match="unsupported compression"):
        decode_gray(dng, LONG)
    plain = tmp_path / "plain.dng"
    Image.fromarray(photo).save(plain, format="TIFF")
    assert decode_gray(plain, LONG).shape == (1024, 1024)


@pytest.mark.parametrize("bits", [10, 12, 14, 16])
def test_gray_data_of_fewer_bits_in_a_16_bit_file_is_scaled_by_its_bit_depth(tmp_path, bits):
    """12-bit microscope frames in 16-bit PNG/TIFF came out nearly black: every tile under dark_mean,
    every photo *uncertain*."""
    photo = np.asarray(sharp_image(2).convert("L"), dtype=np.float64)
    levels = np.round(photo / 255 * (2**bits - 1)).astype(np.uint16)
    for ext in ("png", "tif"):
        path = tmp_path / f"g{bits}.{ext}"
        Image.fromarray(levels).save(path)
        gray = decode_gray(path, LONG)
        assert abs(float(gray.mean()) - photo.mean() / 255) < 0.01


def test_signed_integer_gray_is_shifted_not_clipped(tmp_path):
    photo = np.asarray(sharp_image(2).convert("L"), dtype=np.int32)
    path = tmp_path / "signed.tif"
    Image.fromarray((photo * 40 - 5000).astype(np.int32), mode="I").save(path)
    gray = decode_gray(path, LONG)
    assert float(gray.std()) > 0.1 and float(gray.min()) == 0.0


def test_the_jpeg_limits_hold_where_cull_cannot_parse_the_markers_and_count_only_the_image_s_scans(tmp_path):
    """From an attack review: one junk byte after APP0 (Pillow and libjpeg skip it) made the layout
    unparseable and a 144 MP progressive JPEG got the 400 MP limit; data after the image (a motion
    photo's video) was counted as scans and refused an ordinary photo."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    header = _jpeg_header(0xC2, 12000, 12000, 1, [1])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(header[:2] + app0 + b"\x00" + header[2:])
    with pytest.raises(UnreadableImage, match=r"the limit for progressive JPEG is 100 MP"):
        decode_gray(junk, LONG)
    small = save(sharp_image(0), tmp_path / "small.jpg", progressive=True).read_bytes()
    (tmp_path / "junk_ok.jpg").write_bytes(small[:20] + b"\x00" + small[20:])  # after APP0: decodes as before
    np.testing.assert_array_equal(decode_gray(tmp_path / "junk_ok.jpg", LONG), decode_gray(tmp_path / "small.jpg", LONG))
    photo = save(sharp_image(0), tmp_path / "motion.jpg", progressive=True)
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    assert video.count(b"\xff\xda") > 50  # as many "scans" as the limit allows, and more
    photo.write_bytes(photo.read_bytes() + video * 2)
    assert decode_gray(photo, LONG).size
    junk_motion = tmp_path / "junk_motion.jpg"  # both: stray bytes are skipped as libjpeg skips them
    junk_motion.write_bytes(small[:20] + b"\x00" + small[20:] + video * 2)
    assert decode_gray(junk_motion, LONG).size
    multiscan = tmp_path / "junk_multiscan.jpg"  # the 100 MP limit holds with a stray byte too
    separate = _jpeg_header(0xC0, 20000, 20000, 4, [1, 1, 1, 1])
    multiscan.write_bytes(separate[:2] + app0 + b"\x00" + separate[2:])
    with pytest.raises(UnreadableImage, match=r"the limit for JPEG with colours in separate scans is 100 MP"):
        decode_gray(multiscan, LONG)


def test_a_tiff_page_pillow_cannot_read_is_passed_over(tmp_path):
    import tifffile

    photo = np.asarray(sharp_image(0).convert("L").resize((1024, 768)))
    path = tmp_path / "with_extra_pages.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(photo, photometric="minisblack")
        tif.write(np.zeros((2048, 2048), np.float16), photometric="minisblack")  # Pillow: unknown mode
    gray = decode_gray(path, LONG)
    assert gray.shape == (768, 1024) and float(gray.std()) > 0.05


def test_a_plain_tiff_carrying_a_copied_dng_version_tag_still_decodes(tmp_path):
    import tifffile

    photo = np.asarray(sharp_image(0).convert("RGB").resize((1024, 768)))
    path = tmp_path / "exported.tif"
    tifffile.imwrite(path, photo, photometric="rgb", extratags=[(50706, 1, 4, (1, 4, 0, 0), True)])
    assert decode_gray(path, LONG).shape == (768, 1024)


def test_a_cr2_is_raw_by_its_header(tmp_path):
    """A CR2's raw IFD names no CFA layout; LibRaw refusing one (not as damaged) left its full-size JPEG
    preview to be judged silently."""
    from cull.formats import tiff_holds_raw

    cr2 = tmp_path / "a.CR2"
    cr2.write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00\x00\x00\x00\x00" + b"\x00" * 64)
    plain = save(sharp_image(0), tmp_path / "plain.tif")
    assert tiff_holds_raw(cr2) and not tiff_holds_raw(plain)
