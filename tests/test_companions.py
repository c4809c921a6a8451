"""Sidecars named like the photo but for case or Unicode normalisation (a library made on macOS, Windows
or an SMB share and read on Linux), and darktable's duplicates: the user's rating there protects the shot
and the files move with it; a photo whose name differs only in case from another's never takes (or is
protected by) that one's sidecar."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from cull.discover import Shot
from cull.move import execute, plan_moves, undo
from cull.protect import shot_protection
from cull.xmp import read_fields
from tests.conftest import blurred_image, save, sharp_image
from tests.test_move import snapshot
from tests.test_protection import user_xmp

NFD = unicodedata.normalize("NFD", "José")  # macOS writes names decomposed
NFC = unicodedata.normalize("NFC", "José")


def moved_names(root: Path, shot: Shot) -> list[str]:
    plan = plan_moves([shot], root, root / "_culled")
    assert not plan.refused and not plan.protected, (plan.refused, plan.protected)
    return sorted(move.src.name for move in plan.moves)


@pytest.mark.parametrize(("photo", "partner", "sidecar"), [
    ("IMG_5.JPG", None, "img_5.xmp"),  # Lightroom on Windows, the library now on a Linux NAS
    ("IMG_6.JPG", None, "img_6.jpg.xmp"),
    ("IMG_7.jpg", "IMG_7.CR2", "img_7.cr2.xmp"),  # the rating sits with the RAW partner
    (f"{NFD}.jpg", None, f"{NFC}.jpg.xmp"),  # photo copied from macOS (NFD), sidecar written here (NFC)
    (f"{NFC}.jpg", None, f"{NFD}.xmp"),
])
def test_a_rating_in_a_sidecar_named_alike_protects_the_shot(tmp_path, photo, partner, sidecar):
    save(blurred_image(1, 8.0), tmp_path / photo)
    if partner:
        (tmp_path / partner).write_bytes(b"raw data")
    (tmp_path / sidecar).write_bytes(user_xmp(Rating="5"))
    shot = Shot(tmp_path / photo, tmp_path / partner if partner else None)
    assert shot_protection(shot.path, shot.partner) == "user rated it 5 stars"
    plan = plan_moves([shot], tmp_path, tmp_path / "_culled")
    assert plan.moves == [] and [why for _, why in plan.protected] == ["user rated it 5 stars"]


def test_scan_and_move_keep_a_photo_rated_in_a_sidecar_of_another_case(tmp_path):
    save(blurred_image(1, 8.0), tmp_path / "IMG_5.JPG", quality=92)
    (tmp_path / "img_5.xmp").write_bytes(user_xmp(Rating="5"))
    user_bytes = (tmp_path / "img_5.xmp").read_bytes()
    runner = CliRunner()
    scanned = runner.invoke(app, ["scan", str(tmp_path), "--workers", "1"])
    assert scanned.exit_code == 0, scanned.output
    assert "conflict:" in scanned.stderr and "user rated it 5 stars" in scanned.stderr
    assert not [p for p in tmp_path.glob("*.xmp") if b'Rating="-1"' in p.read_bytes()]  # no reject written anywhere
    assert sorted(p.name for p in tmp_path.glob("*.xmp")) == ["img_5.xmp"]  # cull's note went into the user's file
    assert read_fields((tmp_path / "img_5.xmp").read_bytes())["xmp:Rating"] == "5"
    moved = runner.invoke(app, ["move", str(tmp_path), "--rejects", "--workers", "1"])
    assert moved.exit_code == 0, moved.output
    assert "kept in place:" in moved.stderr and (tmp_path / "IMG_5.JPG").is_file()
    assert runner.invoke(app, ["xmp", "clear", str(tmp_path)]).exit_code == 0
    assert (tmp_path / "img_5.xmp").read_bytes() == user_bytes


@pytest.mark.parametrize("sidecar", ["img_6.jpg.xmp", "IMG_6.JPG.XMP", f"{NFC}.jpg.xmp"])
def test_an_unrated_sidecar_named_alike_moves_with_its_photo(tmp_path, sidecar):
    photo = f"{NFD}.jpg" if NFC in sidecar else "IMG_6.JPG"
    save(blurred_image(1, 8.0), tmp_path / photo)
    (tmp_path / sidecar).write_bytes(user_xmp(Label="Red"))
    assert moved_names(tmp_path, Shot(tmp_path / photo, None)) == sorted([photo, sidecar])


def test_photos_named_alike_keep_their_own_sidecars(tmp_path):
    """IMG_3.JPG (sharp, the user's keywords and rating) and IMG_3.jpg (blurred): two photos on Linux."""
    save(sharp_image(0), tmp_path / "IMG_3.JPG")
    save(blurred_image(1, 8.0), tmp_path / "IMG_3.jpg")
    (tmp_path / "IMG_3.JPG.xmp").write_bytes(user_xmp(Rating="5"))
    (tmp_path / "IMG_3.xmp").write_bytes(user_xmp(Label="Red"))  # shared by both stems: stays
    blurred = Shot(tmp_path / "IMG_3.jpg", None)
    assert shot_protection(blurred.path, None) is None  # the other photo's stars are not this one's
    assert moved_names(tmp_path, blurred) == ["IMG_3.jpg"]
    (tmp_path / "IMG_3.jpg.xmp").write_bytes(user_xmp(Label="Blue"))  # its own, exact name
    assert moved_names(tmp_path, blurred) == ["IMG_3.jpg", "IMG_3.jpg.xmp"]


def test_darktable_duplicates_move_with_their_photo_and_come_back(tmp_path):
    root = tmp_path / "lib"
    save(blurred_image(1, 8.0), root / "IMG_0001.JPG")
    (root / "IMG_0001.CR2").write_bytes(b"raw data")
    for name in ("IMG_0001.CR2.xmp", "IMG_0001_01.CR2.xmp", "IMG_0001_02.CR2.xmp", "IMG_0001_03.CR2.xmp"):
        (root / name).write_bytes(user_xmp(Label="Red"))
    (root / "IMG_0001_03.CR2").write_bytes(b"another photo, whose sidecar that is")
    before = snapshot(root)
    shot = Shot(root / "IMG_0001.JPG", root / "IMG_0001.CR2")
    assert moved_names(root, shot) == ["IMG_0001.CR2", "IMG_0001.CR2.xmp", "IMG_0001.JPG",
                                       "IMG_0001_01.CR2.xmp", "IMG_0001_02.CR2.xmp"]
    result = execute(plan_moves([shot], root, root / "_culled"), root, root / "_culled")
    assert not result.failed
    assert sorted(p.name for p in root.iterdir() if p.is_file()) == ["IMG_0001_03.CR2", "IMG_0001_03.CR2.xmp"]
    assert not undo(root / "_culled").left
    assert snapshot(root) == before


def test_a_rated_darktable_duplicate_keeps_its_shot_in_place(tmp_path):
    """IMG_1_01.JPG.xmp is the user's 5-star virtual copy in darktable: the shot is not moved."""
    save(blurred_image(1, 8.0), tmp_path / "IMG_1.JPG")
    (tmp_path / "IMG_1_01.JPG.xmp").write_bytes(user_xmp(Rating="5"))
    assert shot_protection(tmp_path / "IMG_1.JPG", None) == "user rated it 5 stars"
    plan = plan_moves([Shot(tmp_path / "IMG_1.JPG", None)], tmp_path, tmp_path / "_culled")
    assert plan.moves == [] and plan.protected


def test_a_twins_darktable_duplicate_stays_with_that_twin(tmp_path):
    save(sharp_image(0), tmp_path / "IMG_3.JPG")
    save(blurred_image(1, 8.0), tmp_path / "IMG_3.jpg")
    (tmp_path / "IMG_3_01.JPG.xmp").write_bytes(user_xmp(Label="Red"))  # a duplicate of the sharp IMG_3.JPG
    assert moved_names(tmp_path, Shot(tmp_path / "IMG_3.jpg", None)) == ["IMG_3.jpg"]
    assert moved_names(tmp_path, Shot(tmp_path / "IMG_3.JPG", None)) == ["IMG_3.JPG", "IMG_3_01.JPG.xmp"]


def test_cull_writes_into_the_users_sidecar_of_another_case_not_beside_it(tmp_path):
    """img_5.jpg.xmp beside IMG_5.JPG is one file on macOS, Windows and SMB shares: a second
    IMG_5.JPG.xmp would collide with it there (one of them lost)."""
    save(blurred_image(1, 8.0), tmp_path / "IMG_5.JPG", quality=92)
    (tmp_path / "img_5.jpg.xmp").write_bytes(user_xmp(Label="Red"))
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.xmp")) == ["img_5.jpg.xmp"]
    fields = read_fields((tmp_path / "img_5.jpg.xmp").read_bytes())
    assert fields["xmp:Label"] == "Red" and fields["cull:Verdict"] in ("reject", "uncertain")
    cleared = CliRunner().invoke(app, ["xmp", "clear", str(tmp_path)])
    assert cleared.exit_code == 0 and (tmp_path / "img_5.jpg.xmp").read_bytes() == user_xmp(Label="Red")
