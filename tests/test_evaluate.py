import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cull.cli import app
from cull.decide import Verdict
from cull.errors import DatasetError
from cull.evaluate import evaluate, folder_label, labelled_photos
from tests.conftest import blurred_image, save, sharp_image

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
