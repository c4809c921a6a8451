"""The photo head: a logistic model over a photo's patch outputs that adds a third way to keep and a
second way to reject."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cull.analyse import analyse_chunk
from cull.cache import ScoreCache
from cull.card import PhotoHead, Thresholds, load_card
from cull.decide import HEAD_REASON, HEAD_REJECT_REASON, Verdict, decide, verdict_for
from cull.errors import ModelError
from cull.score import OnnxScorer, PatchScores, PhotoScore, aggregate, head_value, photo_features
from train.head import choose_l2, fit_head
from train.thresholds import HEAD_MARGIN, HEAD_REJECT_MARGIN, fit_head_keep, fit_head_reject

REPO = Path(__file__).resolve().parent.parent
LABELS = ("sharp", "defocus", "motion")


def patch_scores(n: int = 10, embedding: int = 4, seed: int = 0) -> PatchScores:
    rng = np.random.default_rng(seed)
    kind = rng.dirichlet(np.ones(3), n).astype(np.float32)
    return PatchScores(rng.uniform(0, 1, n).astype(np.float32), kind, rng.normal(size=(n, embedding)).astype(np.float32))


def test_photo_features_read_the_best_patches_and_all_of_them():
    scores = patch_scores(10)
    features = photo_features(scores, k=3, top=2)
    assert features.shape == (1 + 3 + 4 + 2 * 4,)
    best = np.sort(scores.sharp)[::-1]
    mean3 = best[:3].mean()
    assert features[0] == pytest.approx(np.log(mean3 / (1 - mean3)), rel=1e-5)
    np.testing.assert_allclose(features[1:4], scores.kind.mean(axis=0), rtol=1e-6)
    assert features[4:8] == pytest.approx([scores.sharp.mean(), (scores.sharp >= 0.5).mean(), best[:2].mean(), np.log(10)], rel=1e-5)
    order = np.argsort(-scores.sharp)
    np.testing.assert_allclose(features[8:12], scores.embedding[order[:2]].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(features[12:], scores.embedding.mean(axis=0), rtol=1e-5, atol=1e-7)


def test_aggregate_gives_the_heads_value_only_with_a_head_and_embeddings():
    scores = patch_scores(10)
    features = photo_features(scores, 3, 2)
    rng = np.random.default_rng(1)
    head = PhotoHead("embedding", 2, tuple(rng.normal(size=16)), tuple(rng.uniform(0.5, 2, 16)), tuple(rng.normal(size=16)), 0.3)
    photo = aggregate(scores, 3, LABELS, head)
    expected = float(((features - np.array(head.mean)) / np.array(head.scale)) @ np.array(head.weights) + 0.3)
    assert photo.head == pytest.approx(expected) and photo.score == aggregate(scores, 3, LABELS).score
    assert aggregate(scores, 3, LABELS).head is None
    assert aggregate(replace(scores, embedding=None), 3, LABELS, head).head is None
    with pytest.raises(ModelError, match="takes 16 features, this model gives 20"):
        aggregate(patch_scores(10, embedding=6), 3, LABELS, head)


def test_the_head_path_keeps_only_what_is_not_rejected():
    t = Thresholds(keep=0.9, reject=0.3, head_keep=1.5)
    assert verdict_for(0.6, None, t, head=1.5) is Verdict.KEEP
    assert verdict_for(0.6, None, t, head=1.49) is Verdict.UNCERTAIN
    assert verdict_for(0.6, None, t, head=None) is Verdict.UNCERTAIN  # a cached score from before the head
    assert verdict_for(0.29, None, t, head=9.0) is Verdict.REJECT  # the head keeps nothing under reject
    assert verdict_for(0.6, None, Thresholds(keep=0.9, reject=0.3), head=9.0) is Verdict.UNCERTAIN  # no head path
    decision = decide(PhotoScore(0.6, 64, head=2.0), t, 4)
    assert decision.verdict is Verdict.KEEP and decision.reason == HEAD_REASON
    assert decide(PhotoScore(0.95, 64, head=2.0), t, 4).reason == "sharp region found"
    assert decide(PhotoScore(0.6, 2, head=9.0), t, 4).verdict is Verdict.UNCERTAIN  # too few patches


def test_the_head_reject_path_needs_both_signs_of_blur_and_never_beats_a_keep():
    """A photo scoring under a stricter setting's reject is rejected at lenient only when the photo head,
    too, rates it as blurred as no sharp validation photo was: one sign of blur leaves it uncertain."""
    t = Thresholds(keep=0.9, reject=0.2, head_keep=2.0, head_reject=-4.0, head_reject_below=0.5)
    assert verdict_for(0.45, None, t, head=-4.5) is Verdict.REJECT
    assert verdict_for(0.45, None, t, head=-4.0) is Verdict.UNCERTAIN  # the head not sure enough
    assert verdict_for(0.5, None, t, head=-9.0) is Verdict.UNCERTAIN  # the score not low enough
    assert verdict_for(0.45, None, t, head=None) is Verdict.UNCERTAIN  # a cached score from before the head
    assert verdict_for(0.95, None, t, head=-9.0) is Verdict.KEEP  # a sharp region keeps, whatever the head says
    steady = replace(t, steady_keep=0.4, max_motion=0.2)
    assert verdict_for(0.45, 0.1, steady, head=-9.0) is Verdict.KEEP  # so does the steady path
    assert verdict_for(0.1, None, t, head=5.0) is Verdict.REJECT
    decision = decide(PhotoScore(0.45, 64, kind="defocus", head=-6.0), t, 4)
    assert decision.verdict is Verdict.REJECT and decision.reason == f"{HEAD_REJECT_REASON} (defocus)"
    assert decide(PhotoScore(0.1, 64, kind="defocus", head=-6.0), t, 4).reason == "no sharp region (defocus)"
    assert decide(PhotoScore(0.45, 2, head=-9.0), t, 4).verdict is Verdict.UNCERTAIN  # too few patches
    for bad, match in (({"head_reject": -4.0}, "go together"), ({"head_reject": -4.0, "head_reject_below": 0.95}, "reject <= head_reject_below <= keep"),
                       ({"head_reject": float("nan"), "head_reject_below": 0.5}, "head_reject must be a finite number"),
                       ({"head_keep": float("inf")}, "head_keep must be a finite number"),
                       ({"head_reject": -4.0, "head_reject_below": "0.4"}, "head_reject_below must be a number")):
        with pytest.raises(ModelError, match=match):
            Thresholds(keep=0.9, reject=0.2, **bad)


def test_a_card_whose_lenient_head_path_rejects_what_normal_does_not_is_refused(tmp_path):
    """Thresholds are checked one strictness at a time; a hand-edited card could make lenient reject a photo
    that normal leaves uncertain through a head reject path reaching above normal's reject."""
    raw = json.loads((REPO / "models" / "focus.json").read_text())
    (tmp_path / "focus.onnx").write_bytes((REPO / "models" / "focus.onnx").read_bytes())
    path = tmp_path / "focus.json"

    def load(lenient: dict) -> None:
        path.write_text(json.dumps({**raw, "thresholds": {**raw["thresholds"], "lenient": {**raw["thresholds"]["lenient"], **lenient}}}))
        load_card(path)

    load({})  # the shipped card is in order
    normal = raw["thresholds"]["normal"]
    with pytest.raises(ModelError, match="lenient's photo head reject path .* rejects photos normal does not"):
        load({"head_reject": -3.0, "head_reject_below": 0.9})
    load({"head_reject": normal["head_reject"], "head_reject_below": normal["head_reject_below"]})  # within normal's own path
    path.write_text(json.dumps({**raw, "thresholds": {  # inside normal's head path, but normal's steady path keeps some of it
        **raw["thresholds"], "lenient": {**raw["thresholds"]["lenient"], "head_reject": -4.5, "head_reject_below": 0.7},
        "normal": {**normal, "steady_keep": 0.55}}}))
    with pytest.raises(ModelError, match="rejects photos normal does not"):
        load_card(path)


def test_head_reject_sits_a_margin_under_every_sharp_photo_and_only_where_it_gains():
    fitted = {"lenient": {"keep": 0.9, "reject": 0.2, "head_keep": 2.0}, "normal": {"keep": 0.9, "reject": 0.45},
              "strict": {"keep": 0.9, "reject": 0.7}}
    sharp = [(0.95, 0.1, 5.0), (0.6, 0.1, -3.0), (0.44, 0.1, -2.5)]  # (score, motion, head value)
    blurred = [(0.3, 0.5, -6.0), (0.6, 0.5, -7.0), (0.1, 0.5, -1.0)]
    paths = fit_head_reject(sharp, blurred, fitted)
    head_reject = -3.0 - HEAD_REJECT_MARGIN
    assert paths == {"lenient": {"head_reject": head_reject, "head_reject_below": 0.45},
                     "normal": {"head_reject": head_reject, "head_reject_below": 0.7}}  # strict: nothing stricter
    for name, path in paths.items():  # no sharp photo is rejected by it, at any strictness
        t = Thresholds(**fitted[name], **path)
        assert all(verdict_for(s, m, t, h) is not Verdict.REJECT for s, m, h in sharp if s >= fitted[name]["reject"])
    assert fit_head_reject(sharp, blurred[:1], fitted).keys() == {"lenient"}  # normal rejects it already
    assert fit_head_reject(sharp, [(0.3, 0.5, -3.5)], fitted) == {}  # above head_reject: gains no photo
    assert fit_head_reject(sharp, [(0.6, 0.5, -7.0)], fitted).keys() == {"normal"}  # over lenient's cap
    assert fit_head_reject([], blurred, fitted) == {}
    kept_anyway = sharp + [(0.95, 0.1, -9.0)]  # at the highest keep: kept at every strictness, scored early
    assert fit_head_reject(kept_anyway, blurred, fitted) == paths


def test_cards_hold_the_head_and_refuse_a_head_path_without_one(tmp_path):
    raw = json.loads((REPO / "models" / "focus.json").read_text())
    card = load_card(REPO / "models" / "focus.json")
    assert card.head is not None and card.head.output == "embedding" and len(card.head.weights) == 1 + 3 + 4 + 2 * 128
    assert all(t.head_keep is not None for t in card.thresholds.values())
    (tmp_path / "focus.onnx").write_bytes(card.model_path.read_bytes())

    def write(changes: dict) -> Path:
        path = tmp_path / "focus.json"
        path.write_text(json.dumps({**raw, **changes}))
        return path

    without = load_card(write({"photo_head": None, "thresholds": {s: {"keep": 0.9, "reject": 0.2} for s in raw["thresholds"]}}))
    assert without.head is None and without.fingerprint != card.fingerprint
    with pytest.raises(ModelError, match="head_keep but the card has no photo_head"):
        load_card(write({"photo_head": None}))
    with pytest.raises(ModelError, match="one length"):
        load_card(write({"photo_head": {**raw["photo_head"], "weights": raw["photo_head"]["weights"][:-1]}}))
    with pytest.raises(ModelError, match="head_keep must be a finite number"):
        load_card(write({"thresholds": {s: {**t, "head_keep": "high"} for s, t in raw["thresholds"].items()}}))
    other = load_card(write({"photo_head": {**raw["photo_head"], "bias": raw["photo_head"]["bias"] + 1}}))
    assert other.fingerprint != card.fingerprint  # cached head values belong to the head that computed them


def test_the_cache_keeps_the_head_value_and_upgrades_a_table_without_it(tmp_path):
    db = tmp_path / "c.sqlite"
    with sqlite3.connect(db) as old:  # a cache of the cull before the photo head (motion, no head)
        old.execute("CREATE TABLE scores_v2 (path BLOB NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
                    "model TEXT NOT NULL, score REAL, patches INTEGER NOT NULL, kind TEXT, sharp_share REAL NOT NULL, "
                    "motion REAL, PRIMARY KEY (path, model))")
        old.execute("INSERT INTO scores_v2 VALUES (?, 10, 20, 'model-a', 0.5, 8, NULL, 0.1, 0.2)", (b"/old.jpg",))
    with ScoreCache(db, "model-a", readonly=True) as cache:  # read as it is: the score, no head value
        assert cache.get(Path("/old.jpg"), (10, 20)) == PhotoScore(0.5, 8, None, 0.1, 0.2, None)
    photo = PhotoScore(0.7, 12, "sharp", 0.5, motion=0.25, head=1.75)
    with ScoreCache(db, "model-a") as cache:
        cache.put(tmp_path / "a.jpg", (10, 20), photo)
    with ScoreCache(db, "model-a", readonly=True) as cache:
        assert cache.get(tmp_path / "a.jpg", (10, 20)) == photo
        assert cache.get(Path("/old.jpg"), (10, 20)) == PhotoScore(0.5, 8, None, 0.1, 0.2, None)


def test_fit_head_learns_a_separable_rule_and_cross_validation_picks_a_ridge():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 5))
    x[:, 4] = 7.0  # a constant feature: standardised by 1, weight ~0
    y = x[:, 0] - 0.5 * x[:, 2] + 0.2 * rng.normal(size=400) > 0
    head = fit_head(x, y, l2=0.01, top=8, output="embedding")
    assert head.scale[4] == 1.0 and abs(head.weights[4]) < 1e-6
    assert head.weights[0] > 1.0 and head.weights[2] < -0.5 and abs(head.weights[1]) < 0.5
    values = np.array([head_value(head, row) for row in x])
    assert ((values > 0) == y).mean() > 0.9
    assert fit_head(x, y, l2=0.01) == head  # deterministic
    l2, losses = choose_l2(x, y, choices=(0.001, 1.0))
    assert l2 == 0.001 and losses[0.001] < losses[1.0]  # a heavy ridge underfits this clear rule


def test_head_keep_sits_a_margin_above_the_blurred_photos_the_other_paths_leave_open():
    lenient = {"keep": 0.9, "reject": 0.2, "steady_keep": 0.7, "max_motion": 0.2}
    blurred = [(0.95, 0.5, 9.0), (0.75, 0.1, 8.0), (0.1, 0.5, 7.0), (0.5, 0.5, 1.0), (0.6, 0.5, -2.0)]
    sharp = [(0.5, 0.5, 1.6), (0.5, 0.5, 1.4), (0.95, 0.5, 0.0)]
    # the first two blurred photos are kept anyway, the third rejected: only 1.0 and -2.0 count
    assert fit_head_keep(sharp, blurred, lenient) == pytest.approx(1.0 + HEAD_MARGIN)
    assert fit_head_keep(sharp[1:], blurred, lenient) is None  # keeps no sharp photo more
    assert fit_head_keep(sharp, [], lenient) is None


def test_the_shipped_head_runs_in_a_scan_and_ranks_the_real_examples():
    """The shipped model returns its patch embedding and the head reads it: no blurred example reaches
    head_keep, three of the four sharp ones do (kodim23, a small sharp subject, does not; its score keeps
    it), and the scan's verdicts stay the documented 4 keep, 2 uncertain, 2 reject."""
    card = load_card()
    photos = sorted((REPO / "examples" / "photos").glob("*.jpg"))
    full = replace(card, analysis=replace(card.analysis, first_pass=card.analysis.max_patches))  # every patch
    results = analyse_chunk(photos, full, OnnxScorer(full))
    values = {a.path.stem: a.photo.head for a in results}
    assert all(v is not None for v in values.values())
    sharp = [v for name, v in values.items() if "_" not in name]
    blurred = [v for name, v in values.items() if "_" in name]
    head_keep = card.thresholds["lenient"].head_keep
    assert len(sharp) == 4 and len(blurred) == 4 and max(blurred) < head_keep
    assert sum(v >= head_keep for v in sharp) == 3 and values["kodim23"] < head_keep
    verdicts = [decide(a.photo, card.thresholds["lenient"], card.analysis.min_patches).verdict for a in results]
    assert [verdicts.count(v) for v in (Verdict.KEEP, Verdict.UNCERTAIN, Verdict.REJECT)] == [4, 2, 2]


def test_the_embedding_becomes_an_output_and_the_scores_stay_the_same(tmp_path):
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort

    from train.head import add_embedding_output

    helper, rng = onnx.helper, np.random.default_rng(4)
    w, b = rng.normal(size=(4, 1)).astype(np.float32), np.array([0.1], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["patches"], ["hidden"]), helper.make_node("MatMul", ["hidden", "w"], ["logit"]),
         helper.make_node("Add", ["logit", "b"], ["z"]), helper.make_node("Sigmoid", ["z"], ["p_sharp"])],
        "tiny", [helper.make_tensor_value_info("patches", onnx.TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("p_sharp", onnx.TensorProto.FLOAT, [None, 1])],
        [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
    src, dst = tmp_path / "tiny.onnx", tmp_path / "with.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    add_embedding_output(src, dst)
    x = rng.normal(size=(5, 4)).astype(np.float32)
    before = ort.InferenceSession(str(src)).run(None, {"patches": x})
    after = dict(zip(["p_sharp", "embedding"], ort.InferenceSession(str(dst)).run(["p_sharp", "embedding"], {"patches": x})))
    np.testing.assert_array_equal(after["p_sharp"], before[0])
    np.testing.assert_array_equal(after["embedding"], np.maximum(x, 0))  # what the score head's MatMul reads
    again = tmp_path / "again.onnx"
    add_embedding_output(dst, again)
    assert again.read_bytes() == dst.read_bytes()  # already there: the file as it is


def test_a_second_refit_on_one_day_gets_a_version_of_its_own():
    """Two refits of one network on one day made two different cards with one version name."""
    import datetime as dt

    from train.__main__ import refit_version

    day = dt.date(2026, 11, 27)
    assert refit_version("net", day, "net", head=True) == "net+refit-20261127+head"
    assert refit_version("net", day, "net+refit-20261126+head", head=True) == "net+refit-20261127+head"
    assert refit_version("net", day, "net+refit-20261127+head", head=True) == "net+refit-20261127-2+head"
    assert refit_version("net", day, "net+refit-20261127-2+head", head=False) == "net+refit-20261127-3"
