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
