import json

import numpy as np
import pytest
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from cull.card import load_card
from cull.cli import app
from cull.decide import Verdict
from cull.errors import DatasetError
from cull.evaluate import BOTH_LABELS, calibration_note, evaluate, folder_label, labelled_photos, labelled_tree
from tests.conftest import REPO, blurred_image, save, sharp_image

K, U, R = Verdict.KEEP, Verdict.UNCERTAIN, Verdict.REJECT


def test_evaluate_counts_and_rates():
    labels = [True, True, True, True, False, False, False, False]
    verdicts = [K, K, U, R, R, R, U, K]
    m = evaluate(labels, verdicts)
    assert m["confusion"] == {"sharp": {"keep": 2, "uncertain": 1, "reject": 1},
                              "blurred": {"keep": 1, "uncertain": 1, "reject": 2}}
    assert m["sharp_false_reject_rate"] == 0.25
    assert m["blurred_flagged_rate"] == 0.75 and m["blurred_rejected_rate"] == 0.5
    assert m["accuracy_sharp"] == 0.75 and m["accuracy_blurred"] == 0.75 and m["accuracy"] == 0.75


def test_evaluate_rejects_bad_input():
    with pytest.raises(ValueError):
        evaluate([True], [K, K])
    with pytest.raises(ValueError):
        evaluate([], [])


def test_folder_labels_follow_the_study_layout(tmp_path):
    assert folder_label("sharp") is True and folder_label("sharp_shallow_dof") is True
    assert folder_label("defocused_blurred") is False and folder_label("Motion_Blur") is False
    assert folder_label("misc") is None
    # "blur" in a name that says it is not blurred labels no blurred class
    for name in ("unblurred", "Deblurred", "not_blurry", "non_blur", "noblur", "no-blur", "NOT BLURRED"):
        assert folder_label(name) is None, name
    assert folder_label("sharp_unblurred") is True
    assert folder_label("piano_blurred") is False and folder_label("snow-blur") is False
    save(sharp_image(), tmp_path / "sharp" / "1_NIKON_S.jpg")
    with pytest.raises(DatasetError, match="blur"):
        labelled_photos(tmp_path)
    save(blurred_image(), tmp_path / "defocused_blurred" / "1_NIKON_F.jpg")
    (tmp_path / "misc").mkdir()
    assert [(p.path.name, p.sharp) for p in labelled_photos(tmp_path)] == [("1_NIKON_F.jpg", False), ("1_NIKON_S.jpg", True)]


def motion(image: Image.Image, length: int = 15) -> Image.Image:
    a = np.asarray(image, dtype=np.float32)
    out = sum(np.roll(a, s, axis=1) for s in range(length)) / length
    return Image.fromarray(out.astype(np.uint8))


def test_cull_eval_reports_model_and_laplacian_side_by_side(tmp_path):
    for i in range(4):
        save(sharp_image(i), tmp_path / "sharp" / f"{i}_CAM_S.jpg")
        save(blurred_image(i, 4), tmp_path / "defocused_blurred" / f"{i}_CAM_F.jpg")
        save(motion(sharp_image(i)), tmp_path / "motion_blurred" / f"{i}_CAM_M.jpg")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--workers", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "cull model" in result.stdout and "Laplacian variance" in result.stdout
    report = json.loads(out.read_text())
    model, baseline = report["overall"]["model"], report["overall"]["laplacian"]
    assert model["n_sharp"] == 4 and model["n_blurred"] == 8 and baseline["n_blurred"] == 8
    assert model["sharp_false_reject_rate"] == 0.0
    assert model["blurred_flagged_rate"] == 1.0
    assert set(report["groups"]) == {"sharp", "defocused_blurred", "motion_blurred"}
    assert len(report["photos"]) == 12 and all("laplacian_var" in p for p in report["photos"])


def test_a_raw_jpeg_pair_is_one_labelled_photo(tmp_path):
    """As `cull scan` counts them: a RAW+JPEG pair is one shot, scored through the JPEG."""
    from tests.rawfiles import write_dng

    for cls, image in (("sharp", sharp_image), ("blurred", lambda i, s: blurred_image(i, 4).resize(sharp_image(i, s).size))):
        for i in range(3):
            jpg = save(image(i, 0.25), tmp_path / cls / f"IMG_{i}.JPG")
            write_dng(jpg, tmp_path / cls / f"IMG_{i}.DNG")
    photos = labelled_photos(tmp_path)
    assert [(p.path.name, p.partner.name if p.partner else None) for p in photos if p.sharp] == [
        ("IMG_0.JPG", "IMG_0.DNG"), ("IMG_1.JPG", "IMG_1.DNG"), ("IMG_2.JPG", "IMG_2.DNG")]
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--workers", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    model = json.loads(out.read_text())["overall"]["model"]
    assert model["n_sharp"] == 3 and model["n_blurred"] == 3


def test_eval_leaves_out_a_file_labelled_both_ways_and_says_so(tmp_path):
    """sharp/link.jpg links to blurred/b0.jpg: an error for each path, neither class counts the file;
    unblurred/ is not a blurred class; a card calibrated on this folder gets a note that the rates
    flatter it."""
    for i in range(3):
        save(sharp_image(i, 0.25), tmp_path / "sharp" / f"s{i}.jpg")
        save(sharp_image(i, 0.25).filter(ImageFilter.GaussianBlur(3)), tmp_path / "blurred" / f"b{i}.jpg")
    save(sharp_image(0, 0.25), tmp_path / "unblurred" / "u0.jpg")
    (tmp_path / "sharp" / "link.jpg").symlink_to(tmp_path / "blurred" / "b0.jpg")
    photos, unusable = labelled_tree(tmp_path)
    assert sorted(p.path.name for p in photos) == ["b1.jpg", "b2.jpg", "s0.jpg", "s1.jpg", "s2.jpg"]
    assert sorted(p.path.name for p, why in unusable if why.startswith(BOTH_LABELS)) == ["b0.jpg", "link.jpg"]

    raw = json.loads((REPO / "models" / "focus.json").read_text())
    raw.update(model_file=str(REPO / "models" / raw["model_file"]), calibration={"folder": str(tmp_path.resolve())})
    card = tmp_path.parent / f"{tmp_path.name}-card.json"
    card.write_text(json.dumps(raw))
    assert "flatter" in (calibration_note(tmp_path, load_card(card)) or "")
    assert calibration_note(tmp_path / "sharp", load_card(card)) is None
    assert calibration_note(tmp_path, load_card()) is None

    out = tmp_path.parent / f"{tmp_path.name}-eval.json"
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--workers", "1", "--model", str(card), "--json", str(out)])
    assert result.exit_code == 1, result.output  # the two paths are errors
    assert f"link.jpg: {BOTH_LABELS}" in result.stderr and f"b0.jpg: {BOTH_LABELS}" in result.stderr
    report = json.loads(out.read_text())
    assert (report["overall"]["model"]["n_sharp"], report["overall"]["model"]["n_blurred"]) == (3, 2)
    assert "note: 2 path(s) name a file that is labelled both sharp and blurred" in result.stdout
    assert "note: unblurred/ says it is not blurred" in result.stdout
    assert "these rates are on the calibration photos themselves and flatter the card" in result.stdout


def test_a_raw_plus_s_shot_whose_raw_cannot_be_read_is_judged_by_its_jpeg(tmp_path):
    """A small JPEG beside a RAW that LibRaw cannot read (a camera it does not know yet): eval scores the
    shot through the JPEG, as scan does, instead of an error."""
    from cull.card import load_card
    from cull.evaluate import score_folder
    from tests.conftest import blurred_image, save, sharp_image

    for cls, image in (("sharp", sharp_image(0)), ("blurred", blurred_image(0, 8))):
        save(image, tmp_path / cls / "IMG_1.JPG", quality=90)  # 768 px: RAW+S
        (tmp_path / cls / "IMG_1.CR2").write_bytes(f"a {cls} raw of a camera LibRaw does not know".encode())
    scored = score_folder(tmp_path, load_card())
    assert [(s.photo.path.name, s.analysis.error, s.analysis.photo is not None) for s in scored] == [
        ("IMG_1.CR2", None, True), ("IMG_1.CR2", None, True)]
