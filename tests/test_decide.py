import numpy as np
import pytest

from cull.card import Thresholds
from cull.decide import Verdict, decide
from cull.errors import ModelError
from cull.score import PatchScores, PhotoScore, aggregate

T = Thresholds(keep=0.8, reject=0.2)


def test_verdicts_follow_thresholds_and_lean_to_keep():
    assert decide(PhotoScore(0.9, 64), T, 4).verdict is Verdict.KEEP
    assert decide(PhotoScore(0.8, 64), T, 4).verdict is Verdict.KEEP
    assert decide(PhotoScore(0.5, 64), T, 4).verdict is Verdict.UNCERTAIN
    assert decide(PhotoScore(0.2, 64), T, 4).verdict is Verdict.UNCERTAIN
    assert decide(PhotoScore(0.1, 64), T, 4).verdict is Verdict.REJECT


def test_too_little_evidence_is_uncertain_never_reject():
    assert decide(PhotoScore(0.0, 2), T, 4).verdict is Verdict.UNCERTAIN
    assert decide(PhotoScore(None, 0), T, 4).verdict is Verdict.UNCERTAIN


def test_a_photo_without_a_usable_patch_says_what_it_may_be():
    """A 60x50 image has no 64 px patch at all: "too little texture" alone read as if the photo were flat."""
    none = decide(PhotoScore(None, 0), T, 4)
    assert none.verdict is Verdict.UNCERTAIN and none.reason == (
        "too little texture to judge (0 usable patches; the image is flat, too dark or bright, or smaller than one patch)")
    assert decide(PhotoScore(0.1, 2), T, 4).reason == "too little texture to judge (2 usable patches)"


def test_any_sharp_region_keeps_the_photo():
    # 60 blurred patches and 3 sharp ones (a small sharp subject): the photo is in focus
    sharp = np.array([0.02] * 60 + [0.97, 0.95, 0.99], np.float32)
    photo = aggregate(PatchScores(sharp), k=3)
    assert photo.score == pytest.approx(0.97, abs=1e-6)
    assert decide(photo, T, 4).verdict is Verdict.KEEP


def test_kind_is_the_most_likely_class_over_patches():
    kind = np.array([[0.1, 0.8, 0.1], [0.2, 0.6, 0.2]], np.float32)
    photo = aggregate(PatchScores(np.array([0.1, 0.1], np.float32), kind), 3, ("sharp", "defocus", "motion"))
    assert photo.kind == "defocus"
    assert aggregate(PatchScores(np.zeros(0, np.float32)), 3).score is None


def test_thresholds_must_be_ordered():
    with pytest.raises(ModelError):
        Thresholds(keep=0.2, reject=0.5)


STEADY = Thresholds(keep=0.9, reject=0.2, steady_keep=0.8, max_motion=0.35)


def test_the_steady_path_keeps_a_high_score_without_signs_of_shake():
    keep = decide(PhotoScore(0.85, 64, "sharp", motion=0.2), STEADY, 4)
    assert keep.verdict is Verdict.KEEP and keep.reason == "sharp region found, no sign of shake"
    assert decide(PhotoScore(0.85, 64, "sharp", motion=0.35), STEADY, 4).verdict is Verdict.KEEP  # at the cap
    assert decide(PhotoScore(0.95, 64, "motion", motion=0.9), STEADY, 4).reason == "sharp region found"


@pytest.mark.parametrize("photo", [
    PhotoScore(0.85, 64, "motion", motion=0.36),  # the patches look shaken: the full keep threshold applies
    PhotoScore(0.79, 64, "sharp", motion=0.0),  # below the steady threshold
    PhotoScore(0.85, 64, None, motion=None),  # no kind head, no evidence about shake
    PhotoScore(0.85, 3, "sharp", motion=0.0),  # too few patches: uncertain whatever the scores
])
def test_the_steady_path_keeps_nothing_else(photo):
    assert decide(photo, STEADY, 4).verdict is Verdict.UNCERTAIN


def test_the_steady_path_never_changes_what_is_rejected():
    for motion in (None, 0.0, 1.0):
        assert decide(PhotoScore(0.19, 64, "defocus", motion=motion), STEADY, 4).verdict is Verdict.REJECT
        assert decide(PhotoScore(0.19, 64, "defocus", motion=motion), Thresholds(0.9, 0.2), 4).verdict is Verdict.REJECT


def test_motion_is_the_kind_heads_mean_motion_probability():
    kind = np.array([[0.7, 0.1, 0.2], [0.5, 0.1, 0.4]], np.float32)
    photo = aggregate(PatchScores(np.array([0.9, 0.8], np.float32), kind), 3, ("sharp", "defocus", "motion"))
    assert photo.motion == pytest.approx(0.3)
    assert aggregate(PatchScores(np.array([0.9], np.float32), kind[:1, :2]), 3, ("sharp", "defocus")).motion is None


@pytest.mark.parametrize("fields", [
    {"steady_keep": 0.8},  # without max_motion
    {"steady_keep": 0.95, "max_motion": 0.3},  # above keep
    {"steady_keep": 0.1, "max_motion": 0.3},  # below reject
    {"steady_keep": 0.8, "max_motion": 1.5},
])
def test_a_steady_path_must_be_complete_and_ordered(fields):
    with pytest.raises(ModelError):
        Thresholds(keep=0.9, reject=0.2, **fields)
    assert Thresholds(0.9, 0.2).as_dict() == {"keep": 0.9, "reject": 0.2}


def test_a_reject_the_kind_head_calls_sharp_names_the_score_not_a_blur_kind():
    """A calibrated card may reject a photo whose patches the kind head calls sharp: the reason gives
    the score against the threshold, never "no sharp region (sharp)"."""
    from cull.card import Thresholds
    from cull.decide import decide
    from cull.score import PhotoScore

    t = Thresholds(keep=0.95, reject=0.82)
    reason = decide(PhotoScore(0.808, 64, kind="sharp"), t, 4).reason
    assert reason == "no sharp region (score 0.808 under 0.820)"
    assert decide(PhotoScore(0.1, 64, kind="motion"), t, 4).reason == "no sharp region (motion)"
