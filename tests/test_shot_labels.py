"""An *uncertain* shot gets cull's yellow label (and digiKam's "pending") only where the user has no
label or pick of their own anywhere in the shot: its sidecars, its embedded XMP, its RAW/JPEG partner's."""

from __future__ import annotations

from pathlib import Path

import pytest

import cull.cache
from cull.decide import Decision
from cull.decide import Verdict as Call
from cull.scan import PhotoResult
from cull.score import PhotoScore
from cull.sidecars import XmpOptions, write_results
from cull.xmp import read_fields
from tests.test_protection import user_xmp

FAKE_JPEG = b"\xff\xd8\xff\xe0 not an image\xff\xd9"


@pytest.fixture(autouse=True)
def _no_racy_window(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cull.cache, "RACY_SECONDS", 0.0)


def uncertain(path: Path, partner: Path | None = None) -> PhotoResult:
    return PhotoResult(path, partner, PhotoScore(0.6, 9, "motion"), Decision(Call.UNCERTAIN, "test"))


def labels(sidecar: Path) -> tuple[object, object]:
    fields = read_fields(sidecar.read_bytes())
    return fields.get("xmp:Label"), fields.get("digiKam:PickLabel")


def test_a_colour_elsewhere_in_the_shot_keeps_cull_s_label_out_of_every_place(tmp_path):
    """Lightroom's P.xmp of a RAW+JPEG pair says Red: P.JPG.xmp gets the verdict but no yellow.  A red
    label inside the JPEG: its new sidecar gets no yellow either.  A shot without one gets it."""
    (tmp_path / "P.JPG").write_bytes(FAKE_JPEG)
    (tmp_path / "P.CR2").write_bytes(b"II*\x00 raw")
    (tmp_path / "P.xmp").write_bytes(user_xmp(Label="Red"))
    (tmp_path / "A.JPG").write_bytes(FAKE_JPEG[:-2] + user_xmp(Label="Red") + b"\xff\xd9")  # embedded, as Lightroom saves it
    (tmp_path / "C.JPG").write_bytes(FAKE_JPEG)
    (tmp_path / "C.JPG.xmp").write_bytes(user_xmp(PickLabel="3"))  # digiKam: accepted
    (tmp_path / "N.JPG").write_bytes(FAKE_JPEG)
    results = [uncertain(tmp_path / "P.JPG", tmp_path / "P.CR2"), uncertain(tmp_path / "A.JPG"),
               uncertain(tmp_path / "C.JPG"), uncertain(tmp_path / "N.JPG")]
    summary = write_results(results, XmpOptions(), "test-model")
    assert not summary.errors
    assert read_fields((tmp_path / "P.xmp").read_bytes()).get("xmp:Label") == "Red"
    assert read_fields((tmp_path / "P.JPG.xmp").read_bytes()).get("cull:Verdict") == "uncertain"
    assert labels(tmp_path / "P.JPG.xmp")[0] is None
    assert labels(tmp_path / "A.JPG.xmp")[0] is None
    assert labels(tmp_path / "C.JPG.xmp")[1] == "3"  # the user's accept is not turned into "pending"
    assert labels(tmp_path / "N.JPG.xmp") == ("Yellow", "2")
    again = write_results(results, XmpOptions(), "test-model")  # a rescan: same bytes
    assert again.written == 0 and not again.errors


def test_a_colour_added_later_elsewhere_is_honoured_by_the_next_scan(tmp_path):
    (tmp_path / "P.JPG").write_bytes(FAKE_JPEG)
    (tmp_path / "P.CR2").write_bytes(b"II*\x00 raw")
    results = [uncertain(tmp_path / "P.JPG", tmp_path / "P.CR2")]
    write_results(results, XmpOptions(), "test-model")
    assert labels(tmp_path / "P.JPG.xmp")[0] == "Yellow"
    (tmp_path / "P.xmp").write_bytes(user_xmp(Label="Green"))  # the user gives the RAW a colour in Lightroom
    write_results(results, XmpOptions(), "test-model")
    assert labels(tmp_path / "P.JPG.xmp")[0] is None  # cull's yellow taken back, the user's green stands


def test_a_photo_moved_or_changed_since_it_was_judged_gets_no_sidecar(tmp_path):
    """`cull move` ran beside the scan and moved the shot before its XMP was written: no sidecar is left
    behind without its photo (and no copy of the user's sidecar in undo's way); reported as an error."""
    photo = tmp_path / "N.JPG"
    photo.write_bytes(FAKE_JPEG)
    judged = (photo.stat().st_size, photo.stat().st_mtime_ns)
    result = PhotoResult(photo, None, PhotoScore(0.6, 9, "motion"), Decision(Call.UNCERTAIN, "test"), judged=judged)
    photo.rename(tmp_path / "elsewhere.jpg")
    summary = write_results([result], XmpOptions(), "test-model")
    assert [(p.name, why.split(",")[0]) for p, why in summary.errors] == [("N.JPG", "gone or changed since it was judged")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.jpg"]


def test_u_in_cull_review_adds_no_yellow_where_the_shot_has_the_user_s_colour(tmp_path):
    from cull.review.decisions import write_decision

    (tmp_path / "P.JPG").write_bytes(FAKE_JPEG)
    (tmp_path / "P.CR2").write_bytes(b"II*\x00 raw")
    (tmp_path / "P.xmp").write_bytes(user_xmp(Label="Red"))  # Lightroom's colour on the RAW
    (tmp_path / "N.JPG").write_bytes(FAKE_JPEG)
    write_decision([tmp_path / "P.JPG", tmp_path / "P.CR2"], "uncertain", XmpOptions())
    write_decision([tmp_path / "N.JPG"], "uncertain", XmpOptions())
    assert read_fields((tmp_path / "P.xmp").read_bytes()).get("xmp:Label") == "Red"
    assert all(labels(p)[0] in (None, "Red") for p in tmp_path.glob("P*.xmp"))
    assert labels(tmp_path / "N.JPG.xmp")[0] == "Yellow"
