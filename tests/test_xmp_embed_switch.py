"""A scan with --embed after one without (or the other way round) keeps cull's verdict in step in both
places: an earlier reject left in the other place would still show in darktable, digiKam or Lightroom
after cull no longer judges the photo so."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from cull.protect import load_pyexiv2
from cull.sidecars import read_embedded
from cull.xmp import Packet, read_fields

pytestmark = pytest.mark.skipif(load_pyexiv2() is None, reason="--embed needs pyexiv2")
PHOTO = Path(__file__).resolve().parent.parent / "examples" / "photos" / "kodim13_defocus.jpg"  # reject at strict only


def scan(folder: Path, *options: str) -> None:
    result = CliRunner().invoke(app, ["scan", str(folder), "--workers", "1", *options])
    assert result.exit_code == 0, result.output


def embedded_rating(photo: Path) -> str | None:
    data = read_embedded(photo)
    return None if data is None else read_fields(data).get("xmp:Rating")


def test_a_scan_without_embed_updates_the_reject_an_embed_scan_left_in_the_photo(tmp_path):
    photo = tmp_path / "lib" / PHOTO.name
    photo.parent.mkdir()
    shutil.copyfile(PHOTO, photo)
    scan(photo.parent, "--embed", "--strictness", "strict")
    assert embedded_rating(photo) == "-1"
    scan(photo.parent)  # lenient: uncertain
    assert embedded_rating(photo) != "-1"
    sidecar = photo.with_name(photo.name + ".xmp")
    assert read_fields(sidecar.read_bytes())["xmp:Label"] == "Yellow"
    assert read_fields(read_embedded(photo) or b"").get("xmp:Label") == "Yellow"  # both places say uncertain


def test_an_embed_scan_updates_the_reject_a_sidecar_scan_left(tmp_path):
    photo = tmp_path / "lib" / PHOTO.name
    photo.parent.mkdir()
    shutil.copyfile(PHOTO, photo)
    scan(photo.parent, "--strictness", "strict")
    sidecar = photo.with_name(photo.name + ".xmp")
    assert read_fields(sidecar.read_bytes())["xmp:Rating"] == "-1"
    scan(photo.parent, "--embed")
    assert read_fields(sidecar.read_bytes()).get("xmp:Rating") != "-1"
    assert embedded_rating(photo) != "-1"


def test_an_embed_scan_leaves_a_sidecar_without_cull_fields_alone(tmp_path):
    photo = tmp_path / "lib" / PHOTO.name
    photo.parent.mkdir()
    shutil.copyfile(PHOTO, photo)
    sidecar = photo.with_name(photo.name + ".xmp")
    users = (b"<x:xmpmeta xmlns:x='adobe:ns:meta/'><rdf:RDF xmlns:rdf='http://www.w3.org/1999/02/22-rdf-syntax-ns#'>"
             b"<rdf:Description xmlns:dc='http://purl.org/dc/elements/1.1/'><dc:title>mine</dc:title></rdf:Description>"
             b"</rdf:RDF></x:xmpmeta>")
    sidecar.write_bytes(users)
    scan(photo.parent, "--embed", "--strictness", "strict")
    assert sidecar.read_bytes() == users and embedded_rating(photo) == "-1"


def test_a_file_exiv2_cannot_write_into_gets_the_verdict_in_its_sidecar(tmp_path):
    """--embed on a GIF named .jpg (exiv2: "Writing to GIF images is not supported"): the reject goes to the
    sidecar, and the error says so (it was recorded nowhere)."""
    from tests.conftest import blurred_image

    photo = tmp_path / "lib" / "gif_named.jpg"
    photo.parent.mkdir()
    blurred_image(0, 9).convert("P").save(photo, format="GIF")
    result = CliRunner().invoke(app, ["scan", str(photo.parent), "--workers", "1", "--embed", "--strictness", "strict"])
    assert result.exit_code == 1, result.output
    assert "cannot embed XMP in this file" in result.output and "went to its sidecar instead" in result.output
    assert read_fields(photo.with_name(photo.name + ".xmp").read_bytes())["xmp:Rating"] == "-1"


def test_a_rescan_of_an_unchanged_folder_looks_into_no_photo_for_embedded_fields(tmp_path, monkeypatch):
    """Whether photos embed cull's fields is remembered (per folder version, one fact cache row per folder:
    a row per photo cost a fifth of a cached rescan's speed): a rescan of an unchanged folder reads no photo."""
    import os
    import time

    import cull.sidecars
    from tests.conftest import blurred_image, save, sharp_image

    folder = tmp_path / "lib"
    for i in range(3):
        save(sharp_image(i), folder / f"s{i}.jpg")
    save(blurred_image(0, 9), folder / "b.jpg")
    scan(folder)
    past = time.time() - 60  # out of the fact cache's 2.5 s window for fresh files
    for path in [folder, *folder.iterdir()]:
        os.utime(path, (past, past))
    scan(folder)  # settles: the folder changed when the first scan wrote a sidecar
    read = []
    original = cull.sidecars.scan_packets
    monkeypatch.setattr(cull.sidecars, "scan_packets", lambda photo: read.append(photo) or original(photo))
    scan(folder)
    assert read == []


def test_a_review_decision_inside_the_photo_stands_when_its_sidecar_is_left_behind(tmp_path):
    """`scan --embed`, U in cull review (the decision goes inside the JPEG too), then Lightroom renames
    the JPEG and leaves `IMG.jpg.xmp` behind: the next scan and move still read the user's decision."""
    from cull.review.decisions import write_decision
    from cull.sidecars import XmpOptions

    photo = tmp_path / "lib" / "IMG_1.jpg"
    photo.parent.mkdir()
    shutil.copyfile(PHOTO, photo)
    scan(photo.parent, "--embed", "--strictness", "strict")
    assert embedded_rating(photo) == "-1"
    write_decision([photo], "uncertain", XmpOptions(True))
    assert Packet(read_embedded(photo)).get(("cull", "UserVerdict")) == "uncertain"
    renamed = photo.rename(photo.with_name("beach.jpg"))
    scan(photo.parent, "--embed", "--strictness", "strict")
    assert embedded_rating(renamed) != "-1"
    moved = CliRunner().invoke(app, ["move", str(photo.parent), "--rejects", "--strictness", "strict", "-j1"])
    assert moved.exit_code == 0 and renamed.exists()


def test_xmp_clear_after_a_review_decision_inside_the_photo_succeeds(tmp_path):
    """The user's decision fields left inside the photo are the user's, not cull's XMP left behind."""
    from cull.review.decisions import write_decision
    from cull.sidecars import XmpOptions

    photo = tmp_path / "lib" / "blur.jpg"
    photo.parent.mkdir()
    shutil.copyfile(PHOTO, photo)
    scan(photo.parent, "--embed", "--strictness", "strict")
    write_decision([photo], "uncertain", XmpOptions(True))
    scan(photo.parent, "--embed", "--strictness", "strict")
    cleared = CliRunner().invoke(app, ["xmp", "clear", str(photo.parent)])
    assert cleared.exit_code == 0, cleared.output
    assert Packet(read_embedded(photo)).get(("cull", "UserVerdict")) == "uncertain"
