"""Decoding files an attack review (h3) found misjudged: arithmetic-coded JPEGs, TIFF layouts Pillow has no
mode for, HEIC decided by its name, zero-filled JPEGs, and Pillow's raw "Corrupt EXIF data" warning."""

import io
import shutil
import struct
import subprocess
import warnings

import numpy as np
import pytest
from PIL import Image

from cull.decode import decode_gray
from cull.errors import UnreadableImage
from tests.conftest import draft_requests, save, sharp_image

LONG = 1440

# --- arithmetic-coded JPEG (review finding 6) ---

_MKJPEG_C = r"""
/* mkjpeg in.ppm out.jpg 0|1 : an arithmetic-coded (1: progressive) JPEG through the system's libjpeg */
#include <stdio.h>
#include <stdlib.h>
#include <jpeglib.h>
int main(int argc, char **argv) {
  FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
  int width, height, top;
  if (argc < 4 || !in || !out || fscanf(in, "P6 %d %d %d", &width, &height, &top) != 3) return 1;
  fgetc(in);
  JSAMPROW row = malloc(width * 3);
  struct jpeg_compress_struct c;
  struct jpeg_error_mgr e;
  c.err = jpeg_std_error(&e);
  jpeg_create_compress(&c);
  jpeg_stdio_dest(&c, out);
  c.image_width = width; c.image_height = height; c.input_components = 3; c.in_color_space = JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 92, TRUE);
  c.arith_code = TRUE;
  if (argv[3][0] == '1') jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    if (fread(row, 3, width, in) != (size_t)width) return 1;
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  return fclose(out) != 0;
}
"""
_NO_ARITHMETIC_ENCODER = ("needs cjpeg with -arithmetic (Debian: libjpeg-turbo-progs) or a C compiler with the "
                          "libjpeg headers (Debian: libjpeg62-turbo-dev) to write an arithmetic-coded JPEG")


@pytest.fixture(scope="module")
def arithmetic_jpeg(tmp_path_factory):
    """write(image, path, progressive) -> an arithmetic-coded JPEG of ``image`` at quality 92, by the
    system's libjpeg-turbo: ``cjpeg -arithmetic``, else a small C program compiled here; skipped without."""
    cjpeg, compiler = shutil.which("cjpeg"), shutil.which("cc")
    helper = None
    if cjpeg is None and compiler is not None:
        folder = tmp_path_factory.mktemp("mkjpeg")
        (folder / "mkjpeg.c").write_text(_MKJPEG_C)
        built = subprocess.run([compiler, "-O1", "-o", str(folder / "mkjpeg"), str(folder / "mkjpeg.c"), "-ljpeg"],
                               capture_output=True)
        helper = folder / "mkjpeg" if built.returncode == 0 else None
    if cjpeg is None and helper is None:
        pytest.skip(_NO_ARITHMETIC_ENCODER)

    def write(image, path, progressive=False):
        ppm = save(image.convert("RGB"), path.with_suffix(".ppm"))
        if cjpeg is not None:
            command = [cjpeg, "-arithmetic", "-quality", "92", *(["-progressive"] if progressive else []),
                       "-outfile", str(path), str(ppm)]
        else:
            command = [str(helper), str(ppm), str(path), "1" if progressive else "0"]
        subprocess.run(command, check=True, capture_output=True)
        return path

    return write


def _sof_marker(data: bytes) -> int:
    return next(data[i + 1] for i in range(2, len(data) - 1) if data[i] == 0xFF and 0xC0 <= data[i + 1] <= 0xCF
                and data[i + 1] not in (0xC4, 0xC8, 0xCC))


@pytest.mark.parametrize("progressive,sof", [(False, 0xC9), (True, 0xCA)])
def test_an_arithmetic_coded_jpeg_over_64_kb_decodes_with_dct_scaling(tmp_path, monkeypatch, arithmetic_jpeg,
                                                                       progressive, sof):
    """libjpeg's arithmetic decoder cannot suspend for more data, and Pillow feeds it 64 KB at a time:
    every such file over 64 KB was reported as "broken data stream" (a damaged file, to a photographer)."""
    photo = sharp_image(0).resize((3000, 2000))
    path = arithmetic_jpeg(photo, tmp_path / "arith.jpg", progressive)
    data = path.read_bytes()
    assert len(data) > 65536 and _sof_marker(data) == sof
    requested = draft_requests(monkeypatch)
    gray = decode_gray(path, LONG)
    assert requested and gray.shape == (1000, 1500)  # 1/2 DCT scale, within 10 % of 1440: no full decode
    huffman = decode_gray(save(photo, tmp_path / "huffman.jpg", quality=92), LONG)
    assert np.abs(gray - huffman).mean() < 0.01


def test_only_arithmetic_coded_jpegs_are_read_in_one_block(tmp_path, monkeypatch):
    """The common (Huffman) JPEG keeps Pillow's 64 KB reads: no whole-file read on the usual path."""
    from PIL import ImageFile

    from cull import decode

    blocks = []
    original = decode._decode_in_one_piece
    monkeypatch.setattr(decode, "_decode_in_one_piece", lambda image: blocks.append(image) or original(image))
    path = save(sharp_image(0).resize((3000, 2000)), tmp_path / "huffman.jpg", quality=92)
    assert path.stat().st_size > ImageFile.MAXBLOCK
    assert decode_gray(path, LONG).shape == (1000, 1500) and not blocks


# --- TIFF layouts Pillow cannot identify (review finding 7) ---


def _rgb_unit(index: int = 0, size: tuple[int, int] = (500, 500)) -> np.ndarray:
    return np.asarray(sharp_image(index).resize(size), dtype=np.float64) / 255


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("planar", ["contig", "separate"])
def test_a_float_rgb_tiff_is_read_as_a_float_photo(tmp_path, dtype, planar):
    """darktable's 32-bit export (float RGB, 0..1), float16 and float64 RGB: "not an image file" before;
    now the same gray as the photo's 8-bit copy, scaled as single-channel float TIFFs are."""
    import tifffile

    rgb = _rgb_unit()
    path = tmp_path / f"{dtype}.tif"
    samples = rgb.astype(dtype) if planar == "contig" else np.moveaxis(rgb, 2, 0).astype(dtype)
    tifffile.imwrite(path, samples, photometric="rgb", planarconfig=planar)
    with pytest.raises(Exception):
        Image.open(path).load()  # Pillow has no mode for it: the test needs a layout it refuses
    reference = decode_gray(save(Image.fromarray((rgb * 255).round().astype(np.uint8)), tmp_path / "8bit.png"), LONG)
    gray = decode_gray(path, LONG)
    assert gray.shape == (500, 500) and gray.dtype == np.float32
    assert np.abs(gray - reference).mean() < 0.005


def test_a_16_bit_gray_tiff_with_alpha_is_laid_over_mid_gray_as_pillow_s_la(tmp_path):
    import tifffile

    gray8 = np.asarray(sharp_image(1).convert("L"), dtype=np.uint16)
    alpha8 = np.tile(np.linspace(0, 255, gray8.shape[1]).round().astype(np.uint16), (gray8.shape[0], 1))
    path = tmp_path / "gray_alpha16.tif"
    tifffile.imwrite(path, np.dstack([gray8 * 257, alpha8 * 257]), photometric="minisblack", extrasamples=[2])
    la = Image.merge("LA", [Image.fromarray(gray8.astype(np.uint8)), Image.fromarray(alpha8.astype(np.uint8))])
    reference = decode_gray(save(la, tmp_path / "la8.png"), LONG)  # Pillow's LA: over mid-gray
    gray = decode_gray(path, LONG)
    assert np.abs(gray - reference).mean() < 0.005
    twelve_bit = tmp_path / "gray12_alpha.tif"  # 12-bit data in 16-bit samples: scaled by its bit depth
    tifffile.imwrite(twelve_bit, np.dstack([(gray8 * 4095.0 / 255).round().astype(np.uint16), np.full_like(gray8, 65535)]),
                     photometric="minisblack", extrasamples=[2])
    assert abs(float(decode_gray(twelve_bit, LONG).mean()) - float(gray8.mean()) / 255) < 0.005


def test_a_tiff_read_through_tifffile_is_turned_upright_and_held_to_the_pixel_limit(tmp_path, monkeypatch):
    import tifffile

    from cull import decode

    rgb = _rgb_unit(0, (1200, 1000)).astype(np.float32)
    path = tmp_path / "turned.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", extratags=[(274, "H", 1, 6, True)])  # turn clockwise to view
    assert decode_gray(path, LONG).shape == (1200, 1000)
    monkeypatch.setattr(decode, "MAX_PIXELS_FULL", 1_000_000)
    with pytest.raises(UnreadableImage, match=r"1200x1000 = 1 MP; the limit for 32-bit float RGB TIFF is 1 MP"):
        decode_gray(path, LONG)


def test_a_tiff_layout_cull_cannot_read_is_named(tmp_path):
    import tifffile

    cmyk = tmp_path / "float_cmyk.tif"
    tifffile.imwrite(cmyk, np.random.default_rng(0).random((64, 48, 4)).astype(np.float32), photometric="separated")
    with pytest.raises(UnreadableImage, match=r"^TIFF layout cull cannot read \(32-bit float CMYK\)$"):
        decode_gray(cmyk, LONG)
    lzw = tmp_path / "float_rgb_lzw.tif"  # LZW (like the floating-point predictor) needs imagecodecs in tifffile
    tifffile.imwrite(lzw, _rgb_unit(0, (64, 48)).astype(np.float32), photometric="rgb")
    with tifffile.TiffFile(lzw, mode="r+b") as tif:
        tif.pages[0].tags["Compression"].overwrite(5)
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        expected = r"^cannot decode this 32-bit float RGB TIFF \(LZW compression\) without the imagecodecs package"
    else:  # pragma: no cover - where imagecodecs is installed it decodes (the bytes are not LZW here)
        expected = r"32-bit float RGB TIFF"
    with pytest.raises(UnreadableImage, match=expected):
        decode_gray(lzw, LONG)
    junk = tmp_path / "junk.tif"  # neither Pillow nor tifffile parses it: Pillow's reason, as before
    junk.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    with pytest.raises(UnreadableImage, match=r"^not an image file \(unrecognised format\)$"):
        decode_gray(junk, LONG)


# --- HEIC by content, not name (review finding 11) ---

_HEIC_HEAD = b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heicmiaf"


def test_heic_is_decided_by_content_not_by_name(tmp_path, monkeypatch):
    from cull import decode

    monkeypatch.setattr(decode, "HEIF_AVAILABLE", False)
    exported = save(sharp_image(0), tmp_path / "exported.heic", format="JPEG", quality=92)  # a JPEG named .heic
    plain = save(sharp_image(0), tmp_path / "a.jpg", quality=92)
    np.testing.assert_array_equal(decode_gray(exported, LONG), decode_gray(plain, LONG))
    iphone = tmp_path / "iphone.jpg"  # a HEIC named .jpg
    iphone.write_bytes(_HEIC_HEAD + bytes(4000))
    with pytest.raises(UnreadableImage, match="HEIC/HEIF needs pillow-heif"):
        decode_gray(iphone, LONG)


def test_sniff_reads_the_ftyp_brands():
    from cull.formats import sniff

    assert sniff(_HEIC_HEAD) == "heif"
    assert sniff(b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic") == "heif"  # major brand mif1
    assert sniff(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf") == "avif"  # AVIF lists mif1 too
    assert sniff(b"\x00\x00\x00\x14ftypisom\x00\x00\x02\x00isom") is None  # an MP4 video
    assert sniff(b"\x00\x00\x00\x18ftypheic") == "heif"  # only the major brand at hand


# --- zero-filled JPEG, an unfinished copy (review finding 12) ---


def _jpeg_bytes(index: int = 0) -> bytes:
    buffer = io.BytesIO()
    sharp_image(index).save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_a_jpeg_whose_data_turns_into_zeros_is_reported_incomplete(tmp_path, fraction):
    data = _jpeg_bytes()
    cut = int(len(data) * fraction)
    path = tmp_path / "unfinished.jpg"
    path.write_bytes(data[:cut] + bytes(len(data) - cut))  # preallocated to full size, written part-way
    with pytest.raises(UnreadableImage, match=rf"^incomplete file .* after {round(100 * cut / len(data))} % of the file"):
        decode_gray(path, LONG)


def test_zeros_after_a_jpeg_s_end_marker_are_padding(tmp_path):
    data = _jpeg_bytes()
    expected = decode_gray(save(sharp_image(0), tmp_path / "plain.jpg", quality=92), LONG)
    padded = tmp_path / "padded.jpg"  # cameras pad to a block size
    padded.write_bytes(data + bytes(64 << 10))
    np.testing.assert_array_equal(decode_gray(padded, LONG), expected)
    trailer = tmp_path / "motion.jpg"  # data after the image (a motion photo's video) that ends in zeros
    trailer.write_bytes(data + np.random.default_rng(0).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes() + bytes(4096))
    np.testing.assert_array_equal(decode_gray(trailer, LONG), expected)


def test_the_zero_check_reads_only_the_tail_of_a_finished_jpeg():
    from cull.decode import ZERO_TAIL, refuse_unfinished_jpeg

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            data = super().read(size)
            Counting.read_bytes += len(data)
            return data

    refuse_unfinished_jpeg(Counting(_jpeg_bytes() + np.random.default_rng(1).bytes(8 << 20)), 0)
    assert Counting.read_bytes <= ZERO_TAIL


# --- Pillow's "Corrupt EXIF data" warning (review finding 13) ---


def test_corrupt_exif_is_not_printed_raw_but_logged_with_the_file_name(tmp_path, caplog):
    data = _jpeg_bytes()
    bad = b"Exif\x00\x00II\x2a\x00\xff\xff\xff\x7f"  # IFD0 offset far outside the block
    path = tmp_path / "bad_exif.jpg"
    path.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(bad) + 2) + bad + data[2:])
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG", logger="cull.decode"):
        warnings.simplefilter("always")
        gray = decode_gray(path, LONG)
    assert gray.shape == (500, 500)  # still judged
    assert not [w for w in caught if issubclass(w.category, UserWarning)], [str(w.message) for w in caught]
    assert any(str(path) in r.getMessage() and "Corrupt EXIF" in r.getMessage() for r in caplog.records)
