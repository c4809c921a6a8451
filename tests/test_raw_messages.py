"""A RAW that LibRaw cannot open although a JPEG preview is plainly inside: the error says so."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from cull.decode import decode_gray, embedded_jpeg_size
from cull.errors import UnreadableImage
from tests.conftest import sharp_image

pytest.importorskip("rawpy")


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    sharp_image(0).resize((width, height)).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def test_unsupported_raw_with_a_preview_names_the_preview_and_libraw(tmp_path):
    # an ISO-BMFF box header like a Canon CR3's, a small and a large JPEG inside, nothing LibRaw can parse
    path = tmp_path / "IMG_0001.CR3"
    path.write_bytes(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01" + bytes(100) + _jpeg(160, 120) + bytes(64)
                     + _jpeg(640, 427) + bytes(500))
    with pytest.raises(UnreadableImage, match=r"^LibRaw [\d.]+ cannot open this CR3 file .*640x427 JPEG preview"):
        decode_gray(path, 1024)


def test_embedded_jpeg_size_reads_frame_headers_only(tmp_path):
    (tmp_path / "none.bin").write_bytes(b"\xff\xd8\xff" + bytes(50) + b"no jpeg here" * 10)
    (tmp_path / "two.bin").write_bytes(bytes(7) + _jpeg(64, 48) + b"junk" + _jpeg(300, 200)[:400])  # 2nd truncated
    assert embedded_jpeg_size(tmp_path / "none.bin") is None
    assert embedded_jpeg_size(tmp_path / "two.bin") == (300, 200)
    assert embedded_jpeg_size(tmp_path / "missing.bin") is None


def test_unsupported_raw_without_a_preview_keeps_the_plain_reason(tmp_path):
    path = tmp_path / "text.CR2"
    path.write_bytes(b"hello, this is not a photo\n" * 20)
    with pytest.raises(UnreadableImage, match=r"^not a RAW file LibRaw can read \(unsupported or corrupt\)$"):
        decode_gray(path, 1024)


@pytest.mark.parametrize("share", [0.99, 0.6, 0.1])
def test_a_truncated_raw_is_reported_damaged_not_judged_by_its_thumbnail(tmp_path, shared_raw, capfd, share):
    """LibRaw prints "Unexpected end of file" to stderr and refuses the file; its TIFF container still
    opens as a 96 px thumbnail, which must not be judged instead ("too little texture", exit 0)."""
    data = (shared_raw / "RAW_KODAK_DC50.KDC").read_bytes()
    path = tmp_path / "DC50.KDC"
    path.write_bytes(data[: int(len(data) * share)])
    with pytest.raises(UnreadableImage, match=r"^damaged or truncated RAW file \(LibRaw: Unexpected end of file\)$"):
        decode_gray(path, 1024)
    assert "Unexpected end of file" not in capfd.readouterr().err  # LibRaw's own line stays off the terminal
    path.write_bytes(data)
    assert decode_gray(path, 1024).shape == (256, 384)


def test_a_raw_cut_short_after_its_preview_is_reported_not_judged(tmp_path):
    """A copy interrupted in the sensor data: the full-size preview near the start still decodes, but the
    file is damaged: an error (exit 1), not a verdict on the preview; the whole file is judged as before."""
    from tests.conftest import save
    from tests.rawfiles import write_dng

    preview = save(sharp_image(0).resize((640, 427)), tmp_path / "p.jpg", quality=90)
    whole = tmp_path / "IMG_1.DNG"
    write_dng(preview, whole)
    assert decode_gray(whole, 640).shape == (427, 640)
    cut = tmp_path / "IMG_2.DNG"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size - 640 * 427])  # half the 16-bit CFA is gone
    with pytest.raises(UnreadableImage, match=r"^damaged or truncated RAW file \(its image data ends early\)$"):
        decode_gray(cut, 640)


def test_raw_plus_small_jpeg_is_judged_by_the_raw_preview(tmp_path):
    """A mildly blurred shot as RAW+S: its half-size JPEG hides the blur (kept outright), its RAW's
    full-size preview shows it: the scan judges the RAW, and writes the verdict beside both files."""
    import json

    from PIL import ImageFilter
    from typer.testing import CliRunner

    from cull.cli import app
    from tests.conftest import SHARED_DATA, save
    from tests.rawfiles import write_dng

    source = SHARED_DATA / "sharp" / "urban100" / "img_020_SRF_4_HR.jpg"  # 1280 px, native detail
    if not source.exists():
        pytest.skip("needs ../shared/data/sharp")
    from PIL import Image

    big = Image.open(source).convert("RGB").filter(ImageFilter.GaussianBlur(1.4))
    small = big.resize((big.width // 2, big.height // 2), Image.Resampling.LANCZOS)
    alone = save(small, tmp_path / "alone" / "IMG_1.JPG", quality=80)
    judged_alone = CliRunner().invoke(app, ["scan", str(alone), "-j1", "--dry-run", "--show", "all"])
    assert judged_alone.stdout.split()[0] == "keep"  # the small JPEG hides the blur
    lib = tmp_path / "lib"
    lib.mkdir()
    write_dng(save(big, tmp_path / "preview.jpg", quality=92), lib / "IMG_1.DNG")
    save(small, lib / "IMG_1.JPG", quality=80)
    report = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["scan", str(lib), "-j1", "--report", str(report)])
    assert result.exit_code == 0, result.output
    row = json.loads(report.read_text())
    assert (Path(row["path"]).name, Path(row["partner"]).name, row["verdict"]) == ("IMG_1.DNG", "IMG_1.JPG", "reject")
    assert sorted(p.name for p in lib.glob("*.xmp")) == ["IMG_1.DNG.xmp", "IMG_1.JPG.xmp"]


def test_raw_plus_s_with_a_raw_libraw_cannot_read_is_judged_by_the_jpeg_without_an_error(tmp_path):
    from typer.testing import CliRunner

    from cull.cli import app
    from tests.conftest import save

    save(sharp_image(0), tmp_path / "IMG_1.JPG", quality=90)  # 768 px
    (tmp_path / "IMG_1.CR2").write_bytes(b"a raw of a camera LibRaw does not know")
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "-j1", "--show", "all"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("keep") and "IMG_1.JPG" in result.stdout  # judged through its JPEG
    assert "note: " in result.stderr and "judged by its partner IMG_1.JPG (a small JPEG" in result.stderr


def test_raw_plus_s_whose_raw_is_cut_short_is_an_error(tmp_path):
    """A small JPEG beside a DNG cut short (an interrupted copy): the shot is judged by the JPEG, and the
    damaged RAW is an error (exit 1), not a note: the card's copy may be incomplete."""
    from typer.testing import CliRunner

    from cull.cli import app
    from tests.conftest import save
    from tests.rawfiles import write_dng

    preview = save(sharp_image(0).resize((1600, 1067)), tmp_path / "p.jpg", quality=90)
    lib = tmp_path / "lib"
    lib.mkdir()
    write_dng(preview, lib / "IMG_1.DNG")
    data = (lib / "IMG_1.DNG").read_bytes()
    (lib / "IMG_1.DNG").write_bytes(data[: len(data) - 1600 * 1067])
    save(sharp_image(0), lib / "IMG_1.JPG", quality=90)  # 768 px
    result = CliRunner().invoke(app, ["scan", str(lib), "-j1", "--dry-run"])
    assert result.exit_code == 1 and "damaged or truncated RAW" in result.stderr, result.output
