"""The shipped model and its card: integrity, and the quality bar on real photos (a golden check)."""

import numpy as np
import onnxruntime as ort
import pytest

from cull.card import STRICTNESS_LEVELS, file_sha256, load_card
from cull.errors import ModelError
from cull.evaluate import evaluate_folder, score_folder, summarise_folder
from tests.conftest import SHARED_DATA


def test_card_matches_the_shipped_model(card):
    assert file_sha256(card.model_path) == card.sha256
    for name in STRICTNESS_LEVELS:
        t = card.thresholds_for(name)
        assert 0 <= t.reject <= t.keep <= 1
    lenient, normal, strict = (card.thresholds_for(s).reject for s in STRICTNESS_LEVELS)
    assert lenient <= normal <= strict  # lenient rejects least
    for key in ("metrics", "training", "seed_comparison", "export"):
        assert key in card.extra
    assert card.extra["export"]["parity_max_abs_diff"] < 1e-4


def test_model_outputs_match_the_card(card):
    session = ort.InferenceSession(str(card.model_path), providers=["CPUExecutionProvider"])
    size = card.analysis.patch_size
    out = session.run(None, {card.input_name: np.zeros((5, size, size, 1), np.float32)})
    names = [o.name for o in session.get_outputs()]
    shapes = {n: np.asarray(o).shape for n, o in zip(names, out)}
    assert shapes[card.score_output] == (5, 1)
    if card.kind_output:
        assert shapes[card.kind_output] == (5, len(card.kind_labels))


def test_tampered_model_is_refused(tmp_path, card):
    (tmp_path / "focus.onnx").write_bytes(card.model_path.read_bytes() + b"x")
    (tmp_path / "focus.json").write_text(card.model_path.with_suffix(".json").read_text())
    with pytest.raises(ModelError, match="sha256"):
        load_card(tmp_path / "focus.json")


@pytest.mark.skipif(not (SHARED_DATA / "real-blur-dev").is_dir(), reason="needs ../shared/data/real-blur-dev")
def test_real_photos_meet_the_quality_bar(card):
    report = evaluate_folder(SHARED_DATA / "real-blur-dev", card, "lenient", workers=1)
    model = report["overall"]["model"]
    assert model["sharp_false_reject_rate"] <= 0.01
    assert model["blurred_flagged_rate"] >= 0.9


@pytest.mark.skipif(not (SHARED_DATA / "real-blur-dev").is_dir(), reason="needs ../shared/data/real-blur-dev")
def test_no_real_sharp_photo_is_rejected_at_any_strictness(card):
    """In-focus priority, as the build's gate enforces it: not even *strict* rejects a real sharp photo."""
    folder = SHARED_DATA / "real-blur-dev"
    scored = score_folder(folder, card, workers=1)
    for strictness in STRICTNESS_LEVELS:
        report = summarise_folder(folder, scored, card, strictness)
        assert report["overall"]["model"]["confusion"]["sharp"]["reject"] == 0, strictness


@pytest.mark.skipif(not (SHARED_DATA / "real-blur-dev").is_dir(), reason="needs ../shared/data/real-blur-dev")
def test_the_steady_path_keeps_no_real_blurred_photo_the_keep_threshold_flags(card):
    """The shipped card's steady path (keep at a lower score without signs of shake) only adds keeps;
    on the real dev photos it must not keep a blurred one that the plain keep threshold flags."""
    from dataclasses import replace

    from cull.decide import Verdict, decide

    lenient = card.thresholds_for("lenient")
    assert lenient.steady_keep is not None and lenient.steady_keep < lenient.keep
    plain = replace(lenient, steady_keep=None, max_motion=None)
    for scored in score_folder(SHARED_DATA / "real-blur-dev", card, workers=1):
        photo = scored.analysis.photo
        assert photo is not None and photo.motion is not None  # the kind head's evidence reaches the decision
        with_path = decide(photo, lenient, card.analysis.min_patches).verdict
        without = decide(photo, plain, card.analysis.min_patches).verdict
        if not scored.photo.sharp:
            assert (with_path is Verdict.KEEP) == (without is Verdict.KEEP), scored.photo.path
