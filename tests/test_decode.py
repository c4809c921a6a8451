import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from cull.decode import decode_gray
from cull.errors import UnreadableImage
from tests.conftest import SHARED_DATA, save, sharp_image

LONG = 1440


def test_large_jpeg_uses_dct_scaling_not_a_full_decode(tmp_path, monkeypatch):
    path = save(sharp_image().resize((6000, 4000)), tmp_path / "big.jpg", quality=90)
    requested = []
    from PIL import JpegImagePlugin

    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        requested.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
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


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("noise.jpg", bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8)), "not an image"),
        ("bomb.png", _png_header_only(40000, 40000), "too large"),
        ("fake.cr2", b"II*\x00" + bytes(3000), "LibRaw cannot read"),
        ("empty.nef", b"", "empty file"),
    ],
)
def test_bad_files_raise_one_clear_reason(tmp_path, name, content, reason):
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


@pytest.mark.skipif(not (SHARED_DATA / "raw").is_dir(), reason="needs ../shared/data/raw")
def test_real_raw_with_useless_thumbnail_falls_back_to_half_size_demosaic():
    # RAW_KODAK_DC50.KDC embeds only a 64-byte bitmap thumbnail (shared/NOTES.md)
    gray = decode_gray(SHARED_DATA / "raw" / "RAW_KODAK_DC50.KDC", LONG)
    assert max(gray.shape) >= 300 and gray.std() > 0.02


def test_raw_with_embedded_jpeg_preview_uses_the_preview(tmp_path, monkeypatch):
    import rawpy

    preview = io.BytesIO()
    sharp_image().resize((1600, 1200)).save(preview, "JPEG")

    class FakeRaw:
        sizes = type("S", (), {"width": 6000, "height": 4000, "flip": 0})()

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def extract_thumb(self):
            return type("T", (), {"format": rawpy.ThumbFormat.JPEG, "data": preview.getvalue()})()

        def postprocess(self, **kw):
            raise AssertionError("must not demosaic when the preview is big enough")

    monkeypatch.setattr(rawpy, "imread", lambda p: FakeRaw())
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
