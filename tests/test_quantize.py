"""train/quantize.py: a static int8 copy of the shipped model that decides every photo as the float one does."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import ImageFilter

pytest.importorskip("onnx")  # onnxruntime's quantisation tools need the onnx package ([train] extra)

from cull.analyse import analyse_chunk  # noqa: E402
from cull.card import STRICTNESS_LEVELS, load_card  # noqa: E402
from cull.decide import decide  # noqa: E402
from cull.score import OnnxScorer  # noqa: E402
from tests.conftest import EXAMPLES, SHARED_DATA, SHARP_EXAMPLES, save, sharp_image  # noqa: E402
from tests.test_evaluate import motion  # noqa: E402
from train.quantize import calibration_patches, photos_under, quantize_model, write_card_for  # noqa: E402


@pytest.fixture(scope="module")
def int8_card(tmp_path_factory):
    shipped = load_card()
    folders = [SHARED_DATA / "sharp"] if (SHARED_DATA / "sharp").is_dir() else [EXAMPLES]
    patches = calibration_patches(photos_under(folders, limit=24), shipped.analysis)
    assert patches.shape[1:] == (64, 64, 1) and len(patches) >= 200
    folder = tmp_path_factory.mktemp("int8")
    model = quantize_model(shipped.model_path, folder / "focus-int8.onnx", patches)
    return load_card(write_card_for(model, shipped.model_path.with_suffix(".json"), folder / "focus-int8.json"))


def test_quantised_model_is_smaller_and_int8(int8_card):
    import onnx

    shipped = load_card()
    assert int8_card.model_path.stat().st_size < shipped.model_path.stat().st_size
    graph = onnx.load(str(int8_card.model_path)).graph
    assert sum(n.op_type == "QuantizeLinear" for n in graph.node) >= 2
    assert int8_card.thresholds == shipped.thresholds and int8_card.sha256 != shipped.sha256


def test_quantised_model_gives_the_same_verdict_at_every_strictness(int8_card, tmp_path):
    shipped = load_card()
    photos = sorted(EXAMPLES.glob("*.jpg"))
    for i, name in enumerate(SHARP_EXAMPLES):
        photos.append(save(sharp_image(i).filter(ImageFilter.GaussianBlur(2)), tmp_path / f"g2_{name}", quality=92))
        photos.append(save(sharp_image(i).filter(ImageFilter.GaussianBlur(4)), tmp_path / f"g4_{name}", quality=92))
        photos.append(save(motion(sharp_image(i), 15), tmp_path / f"m15_{name}", quality=92))
    before = analyse_chunk(photos, shipped, OnnxScorer(shipped))
    after = analyse_chunk(photos, int8_card, OnnxScorer(int8_card))
    diffs = []
    for a, b in zip(before, after):
        assert a.photo is not None and b.photo is not None and a.photo.score is not None and b.photo.score is not None
        diffs.append(abs(a.photo.score - b.photo.score))
        for strictness in STRICTNESS_LEVELS:
            thresholds = shipped.thresholds_for(strictness)
            assert decide(a.photo, thresholds, 4).verdict == decide(b.photo, thresholds, 4).verdict, (a.path, strictness)
    print(f"\nint8 vs float on {len(photos)} photos: score max abs diff {max(diffs):.4f}, mean {np.mean(diffs):.4f}")
    assert max(diffs) < 0.1


def test_quantize_refuses_bad_input(tmp_path):
    shipped = load_card()
    with pytest.raises(ValueError):
        quantize_model(shipped.model_path, tmp_path / "q.onnx", np.zeros((0, 64, 64, 1), np.float32))
    with pytest.raises(ValueError):
        quantize_model(shipped.model_path, tmp_path / "q.onnx", np.zeros((4, 64, 64, 1), np.float32), fmt="int4")
    assert not (tmp_path / "q.onnx").exists()
