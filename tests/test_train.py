"""train/: degradations, splits, thresholds, Keras-vs-ONNX parity, and a smoke training run."""

import json

import numpy as np
import pytest

from tests.conftest import blurred_image, save, sharp_image

pytest.importorskip("tensorflow")
pytest.importorskip("tf2onnx")

from train.data import find_sources  # noqa: E402
from train.degrade import convolve, degrade, disk_psf, motion_psf  # noqa: E402
from train.thresholds import fit_thresholds  # noqa: E402


def test_psfs_conserve_light_and_have_the_requested_size():
    rng = np.random.default_rng(0)
    for radius in (2.0, 5.5, 9.0):
        psf = disk_psf(radius, rng)
        assert psf.sum() == pytest.approx(1.0, abs=1e-5) and psf.min() >= 0
        ys, xs = np.nonzero(psf > psf.max() * 0.05)
        assert radius * 2 - 2 <= xs.max() - xs.min() + 1 <= radius * 2 + 3
    for length in (5.0, 20.0):
        psf = motion_psf(length, rng)
        assert psf.sum() == pytest.approx(1.0, abs=1e-5)
        ys, xs = np.nonzero(psf)
        assert max(xs.max() - xs.min(), ys.max() - ys.min()) <= length + 3


def gradient(image):
    return np.abs(np.diff(image, axis=1)).mean()


def test_degradations_blur_and_are_reproducible():
    gray = np.asarray(sharp_image().convert("L"), dtype=np.float32) / 255
    for kind in ("defocus", "motion"):
        a = degrade(gray, kind, np.random.default_rng(3))
        b = degrade(gray, kind, np.random.default_rng(3))
        assert np.array_equal(a.image, b.image) and a.kind == kind and a.amount > 0
        assert a.image.shape == gray.shape and 0 <= a.image.min() and a.image.max() <= 1
    for radius in (2.0, 5.0):  # the optics alone (before noise and JPEG) remove fine detail
        assert gradient(convolve(gray, disk_psf(radius, np.random.default_rng(0)))) < gradient(gray) * 0.7
    assert gradient(convolve(gray, motion_psf(12.0, np.random.default_rng(0)))) < gradient(gray) * 0.7
    assert not np.array_equal(degrade(gray, "defocus", np.random.default_rng(1)).image, gray)
    comp = degrade(gray, "sharp", np.random.default_rng(1), composite=True)
    assert comp.kind == "sharp" and comp.sharp_mask is not None and 0.05 < comp.sharp_mask.mean() < 0.7


def test_thresholds_lean_to_keep():
    rng = np.random.default_rng(0)
    sharp = np.clip(rng.normal(0.9, 0.08, 400), 0, 1)
    blurred = np.clip(rng.normal(0.1, 0.1, 400), 0, 1)
    t = fit_thresholds(sharp, blurred)
    assert (sharp < t["normal"]["reject"]).mean() <= 0.005
    assert (sharp < t["strict"]["reject"]).mean() <= 0.02
    assert t["lenient"]["reject"] == pytest.approx(sharp.min() / 2, rel=1e-4)
    assert (blurred >= t["normal"]["keep"]).mean() <= 0.02
    for name in ("lenient", "normal", "strict"):
        assert t[name]["reject"] <= t[name]["keep"]
    with pytest.raises(ValueError):
        fit_thresholds([], [0.1])


def test_sources_split_by_scene_and_accept_the_study_layout(tmp_path):
    study = tmp_path / "blur-dataset"
    for scene in range(30):
        for folder, letter in (("sharp", "S"), ("defocused_blurred", "F"), ("motion_blurred", "M")):
            (study / folder).mkdir(parents=True, exist_ok=True)
            (study / folder / f"{scene}_NIKON_{letter}.jpg").write_bytes(b"x")
    sources = find_sources([study])
    assert len(sources) == 90
    by_scene = {}
    for s in sources:
        by_scene.setdefault(s.group, set()).add(s.split)
    assert all(len(splits) == 1 for splits in by_scene.values())  # no scene leaks across splits
    assert {s.label for s in sources} == {"sharp", "defocus", "motion"}
    assert len({s.split for s in sources}) >= 2
    plain = tmp_path / "plain"
    (plain / "kodak24").mkdir(parents=True)
    (plain / "kodak24" / "k.jpg").write_bytes(b"x")
    (plain / "a.png").write_bytes(b"x")
    plain_sources = find_sources([plain])
    assert {s.label for s in plain_sources} == {"sharp"}
    assert [s.split for s in plain_sources if "kodak" in str(s.path)] == ["test"]


def test_keras_and_onnx_agree(tmp_path):
    from train.export import export_onnx, parity
    from train.model import build_model

    model = build_model("focus", 3)
    path = tmp_path / "m.onnx"
    export_onnx(model, path, 64)
    x = np.random.default_rng(0).standard_normal((16, 64, 64, 1)).astype(np.float32)
    assert parity(model, path, x) < 1e-5


def test_seed_variant_is_the_study_network():
    from train.model import build_model

    model = build_model("seed", 3)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["InputLayer", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D", "Conv2D", "MaxPooling2D",
                     "Flatten", "Dense", "Dropout", "Dense"]
    assert all(layer.kernel_size == (3, 3) for layer in model.layers if type(layer).__name__ == "Conv2D")
    assert model.layers[-1].activation.__name__ == "sigmoid" and model.layers[-2].rate == 0.5


@pytest.mark.slow
def test_smoke_training_builds_a_loadable_model_and_card(tmp_path):
    from cull.card import load_card
    from train.__main__ import main

    data = tmp_path / "data"
    for i in range(12):
        save(sharp_image(i, scale=0.8 + 0.05 * (i % 4)), data / f"photo{i}.jpg")
    real = tmp_path / "real"
    for i in range(2):
        save(sharp_image(i), real / "sharp" / f"{i}_CAM_S.jpg")
        save(blurred_image(i, 5), real / "defocused_blurred" / f"{i}_CAM_F.jpg")
    out = tmp_path / "models"
    code = main(["--data", str(data), "--real", str(real), "--out", str(out), "--work", str(tmp_path / "work"),
                 "--epochs", "1", "--per-variant", "4", "--workers", "2", "--quiet"])
    assert code == 0
    card = load_card(out / "focus.json")  # verifies the sha256 too
    raw = json.loads((out / "focus.json").read_text())
    assert raw["export"]["parity_max_abs_diff"] < 1e-4
    assert set(raw["metrics"]["photos"]) >= {"validation (synthetic)", "test (synthetic)", "real held-out"}
    assert card.kind_labels == ("sharp", "defocus", "motion")
    assert (out / "CARD.md").read_text().startswith("# Model card")
    # the kernel sweep writes its table and puts the seed comparison into the existing card
    code = main(["sweep", "--kernels", "3", "--data", str(data), "--real", str(real), "--out", str(out),
                 "--work", str(tmp_path / "work"), "--epochs", "1", "--per-variant", "4", "--workers", "2", "--quiet"])
    assert code == 0
    sweep = json.loads((out / "sweep.json").read_text())
    assert [row["kernel"] for row in sweep["rows"]] == [3] and "accuracy_sharp" in sweep["rows"][0]["patch_level_test"]
    assert "| seed | 3×3 |" in (out / "SWEEP.md").read_text()
    assert json.loads((out / "focus.json").read_text())["seed_comparison"] == sweep
    load_card(out / "focus.json")  # the model file and its hash are untouched
