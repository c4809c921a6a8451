"""`cull calibrate`: thresholds fitted to a user's domain (in-focus priority, honest small-sample rates)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFilter
from typer.testing import CliRunner

import cull.calibrate
from cull.calibrate import (
    MIN_PER_CLASS,
    REJECT_FRACTIONS,
    Rate,
    Scored,
    calibrate,
    choose_texture,
    clopper_pearson,
    fit_thresholds,
    format_calibration,
    leave_one_out,
    rates_for,
)
from cull.card import load_card
from cull.cli import app
from cull.decide import verdict_for
from cull.errors import DatasetError
from cull.evaluate import BOTH_LABELS
from tests.conftest import REPO, blurred_image, save, sharp_image


def micrograph(seed: int, sharp: bool, size: tuple[int, int] = (512, 384)) -> Image.Image:
    """A microscopy-like frame: grey, low contrast, soft-edged cells with granules and sensor noise.

    The same scene sharp or defocused (sigma 1.2-2.5 px): texture statistics far from the photos
    the model learnt from, so its scores for sharp frames sit well below the shipped keep threshold.
    """
    rng = np.random.default_rng(seed)
    width, height = size
    scale = 2
    background = int(rng.uniform(120, 150))
    canvas = Image.new("L", (width * scale, height * scale), background)
    draw = ImageDraw.Draw(canvas)
    contrast = rng.uniform(10, 24)
    for _ in range(int(rng.integers(25, 40))):
        cx, cy = rng.uniform(0, width * scale), rng.uniform(0, height * scale)
        rx, ry = rng.uniform(12, 35) * scale, rng.uniform(10, 28) * scale
        draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=int(background - contrast * rng.uniform(0.3, 0.7)),
                     outline=int(background - contrast * 1.2), width=scale * 2)
        draw.ellipse((cx - rx * 0.35, cy - ry * 0.35, cx + rx * 0.35, cy + ry * 0.35), fill=int(background - contrast * 1.1))
    for _ in range(int(rng.integers(300, 600))):
        x, y, r = rng.uniform(0, width * scale), rng.uniform(0, height * scale), rng.uniform(1, 2.5) * scale
        draw.ellipse((x - r, y - r, x + r, y + r), fill=int(background - contrast * rng.uniform(0.5, 1.2)))
    soft = float(np.random.default_rng(seed + 7).uniform(1.6, 2.0))  # soft optics
    image = canvas.filter(ImageFilter.GaussianBlur(soft)).resize((width, height), Image.Resampling.BOX)
    if not sharp:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.2, 2.5))))
    pixels = np.asarray(image, np.float32) + rng.normal(0, 3.0, (height, width))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def micro_folder(root: Path, seeds: range) -> Path:
    for seed in seeds:
        micrograph(seed, True).save(save_dir(root / "sharp") / f"m{seed:03d}.png")
        micrograph(seed, False).save(save_dir(root / "defocus_blurred") / f"m{seed:03d}.png")
    return root


def save_dir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_clopper_pearson_matches_known_values():
    assert clopper_pearson(0, 10) == pytest.approx((0.0, 0.3085), abs=1e-4)
    assert clopper_pearson(10, 10) == pytest.approx((0.6915, 1.0), abs=1e-4)
    assert clopper_pearson(5, 10) == pytest.approx((0.1871, 0.8129), abs=1e-4)
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        clopper_pearson(3, 2)


def test_fit_never_rejects_a_labelled_sharp_photo_and_keeps_a_margin():
    rng = np.random.default_rng(1)
    for _ in range(200):
        sharp = list(rng.uniform(0.05, 1.0, int(rng.integers(1, 30))))
        blurred = list(rng.uniform(0.0, 0.9, int(rng.integers(1, 30))))
        fitted = fit_thresholds(sharp, blurred)
        for name, t in fitted.items():
            assert t.reject <= REJECT_FRACTIONS[name] * min(sharp) + 1e-9  # margin below the lowest sharp score
            assert t.reject <= t.keep and t.keep > max(blurred)  # every labelled blurred photo is flagged
            if min(sharp) > max(blurred):
                assert t.keep <= min(sharp)  # no slack: the lowest sharp photo is kept
        assert fitted["lenient"].reject <= fitted["normal"].reject <= fitted["strict"].reject
    separated = fit_thresholds([0.6, 0.7, 0.8], [0.05, 0.1, 0.2])
    assert 0.2 < separated["lenient"].keep <= 0.6  # between the classes: every sharp photo kept
    # the blurred 99th percentile reaches the lowest sharp score: keep is capped there, not rounded up past it
    capped = fit_thresholds([0.6000004, 0.9, 0.95, 0.97, 0.99], [0.05, 0.1, 0.2, 0.5, 0.58])
    assert 0.58 < capped["lenient"].keep <= 0.6000004
    overlapping = fit_thresholds([0.4, 0.7, 0.8], [0.05, 0.1, 0.6])
    assert overlapping["lenient"].keep == pytest.approx(0.6, abs=1e-5)  # just above the highest blurred
    with pytest.raises(ValueError):
        fit_thresholds([], [0.1])
    with pytest.raises(ValueError):
        fit_thresholds([1.5], [0.1])


SCORES = st.one_of(st.floats(0.0, 1.0), st.floats(0.0, 1.0, width=32), st.sampled_from([0.0, 1e-7, 0.5, 0.9999999, 1.0]))


@settings(max_examples=400, deadline=None)
@given(st.lists(SCORES, min_size=1, max_size=25), st.lists(SCORES, min_size=1, max_size=25))
def test_no_labelled_sharp_photo_is_rejected_and_the_lowest_is_kept_when_the_classes_separate(sharp, blurred):
    fitted = fit_thresholds(sharp, blurred)
    for name, t in fitted.items():
        verdicts = [verdict_for(s, None, t).value for s in sharp]
        assert "reject" not in verdicts
        if min(sharp) > max(blurred):
            assert set(verdicts) == {"keep"}  # the lowest sharp photo included
        if max(blurred) < 1.0:
            assert all(verdict_for(b, None, t).value != "keep" for b in blurred)
        # every blurred photo the fraction rule alone (capped at keep) rejects is still rejected
        fraction_rule = math.floor(min(REJECT_FRACTIONS[name] * min(sharp), t.keep) * 1e6) / 1e6
        assert all(verdict_for(b, None, t).value == "reject" for b in blurred if b < fraction_rule)


def test_well_separated_classes_leave_an_uncertain_band_between_them():
    """Sharp 0.97-1.0 against blurred 0.01-0.05: keep sits in the gap, and reject no higher than the
    middle of the gap below keep, so a photo in the gap is uncertain at every strictness, not a
    knife-edge between keep and reject."""
    rng = np.random.default_rng(2)
    for _ in range(200):
        sharp = list(rng.uniform(0.9, 1.0, int(rng.integers(5, 30))))
        blurred = list(rng.uniform(0.0, 0.05, int(rng.integers(5, 30))))
        for name, t in fit_thresholds(sharp, blurred).items():
            assert max(blurred) < t.reject < t.keep <= min(sharp)
            logit = lambda p: math.log(p / (1 - p))  # noqa: E731
            assert logit(t.keep) - logit(t.reject) >= (logit(t.keep) - logit(max(blurred))) / 2 - 1e-3
            assert verdict_for((t.reject + t.keep) / 2, None, t).value == "uncertain"
            assert all(verdict_for(s, None, t).value == "keep" for s in sharp)
            assert all(verdict_for(b, None, t).value == "reject" for b in blurred)
    # the probe's case: sharp 0.969-1.000, blurred 0.009-0.024; photos at 0.449 and 0.468 sat either
    # side of a lenient card's keep = reject = 0.4647
    fitted = fit_thresholds(list(np.linspace(0.969, 1.0, 10)), list(np.linspace(0.009, 0.024, 10)))
    for t in fitted.values():
        assert verdict_for(0.449, None, t).value == "uncertain" and verdict_for(0.2, None, t).value == "uncertain"
        assert verdict_for(0.969, None, t).value == "keep" and verdict_for(0.024, None, t).value == "reject"


def test_rates_print_their_interval_widened_to_whole_percents():
    assert str(Rate(0, 4, *clopper_pearson(0, 4))) == "0/4 (0-61%)"  # exact 0-60.2 %
    assert str(Rate(1, 3, *clopper_pearson(1, 3))) == "1/3 (0-91%)"  # exact 0.8-90.6 %
    assert str(Rate(10, 10, *clopper_pearson(10, 10))) == "10/10 (69-100%)"  # exact 69.2-100 %
    assert str(Rate(0, 0, 0.0, 1.0)) == "n/a"


def test_leave_one_out_reports_the_outlier_that_resubstitution_hides():
    """A lone low sharp photo sets the reject threshold when fitted on itself; judged by the others'
    fit it would be rejected, and the leave-one-out rate says so."""
    scores = [(True, s) for s in (0.1, 0.8, 0.82, 0.85, 0.9)] + [(False, s) for s in (0.02, 0.03, 0.05, 0.06, 0.3)]
    scored = [Scored(Path(f"{i}.png"), sharp, score) for i, (sharp, score) in enumerate(scores)]
    loo = leave_one_out(scored)
    rates = rates_for([s.sharp for s in scored], loo["lenient"])
    assert loo["lenient"][0] == "reject" and rates["sharp_rejected"].k == 1
    assert loo["lenient"][9] == "keep"  # the high blurred outlier is kept by the others' keep threshold
    assert str(rates["sharp_rejected"]) == "1/5 (0-72%)"  # exact 0.5-71.6 %
    # a photo with too little texture is uncertain, never rejected
    assert leave_one_out(scored + [Scored(Path("flat.png"), True, None)])["strict"][-1] == "uncertain"


def test_texture_choice_prefers_the_base_value_unless_another_decides_more():
    good = [Scored(Path(f"{i}"), i < 5, 0.8 if i < 5 else 0.1) for i in range(10)]
    worse = [Scored(Path(f"{i}"), i < 5, None if i < 3 else (0.8 if i < 5 else 0.1)) for i in range(10)]
    assert choose_texture({0.025: good, 0.015: good}, 0.025) == 0.025
    assert choose_texture({0.025: worse, 0.015: good, 0.009: good}, 0.025) == 0.015


def scored_set(sharp: list[float | None], blurred: list[float | None]) -> list[Scored]:
    return [Scored(Path(f"{i}"), i < len(sharp), v) for i, v in enumerate(sharp + blurred)]


SHARP = [0.8, 0.85, 0.9, 0.92, 0.95, 0.97, 0.99, 0.83, 0.88, 0.91]
BLURRED = [0.05, 0.1, 0.12, 0.2, 0.15, 0.08, 0.03, 0.06, 0.07, 0.11]


def test_texture_choice_only_considers_values_that_score_enough_photos_of_each_class():
    """The probe's low-contrast case: at the base min_std only 7 sharp and 4 blurred photos score (too
    few to calibrate), though those few decide well; a lower value scores them all."""
    few = scored_set(SHARP[:7] + [None] * 3, BLURRED[:4] + [None] * 6)
    overlapping = scored_set(SHARP, [0.05, 0.1, 0.12, 0.95, 0.15, 0.98, 0.03, 0.9, 0.07, 0.11])
    assert cull.calibrate._right(few) > cull.calibrate._right(overlapping)
    assert choose_texture({0.025: few, 0.015: overlapping}, 0.025) == 0.015
    # ties: the base value, then the one scoring more photos, then the closest
    all_ = scored_set(SHARP, BLURRED) + [Scored(Path("x"), True, None)]
    more = scored_set(SHARP, BLURRED) + [Scored(Path("x"), True, 0.45)]  # scored, but uncertain
    assert cull.calibrate._right(all_) == cull.calibrate._right(more)
    assert choose_texture({0.025: all_, 0.009: more}, 0.025) == 0.025
    assert choose_texture({0.025: few, 0.015: all_, 0.009: more}, 0.025) == 0.009
    assert choose_texture({0.025: few, 0.015: all_, 0.009: all_}, 0.025) == 0.015
    # none scores enough: the one scoring the most (calibrate then refuses)
    fewer = scored_set(SHARP[:4] + [None] * 6, BLURRED[:4] + [None] * 6)
    assert choose_texture({0.025: fewer, 0.015: few}, 0.025) == 0.015


def fake_folder(root: Path, n_sharp: int, n_blurred: int) -> Path:
    """Labelled files that are never decoded (scoring is faked)."""
    for cls, n in (("sharp", n_sharp), ("blurred", n_blurred)):
        for i in range(n):
            (save_dir(root / cls) / f"{cls[0]}{i}.jpg").write_bytes(f"\xff\xd8 {cls} {i}, not decoded".encode())  # distinct photos
    return root


def fake_scoring(monkeypatch, score_at):
    """Replace scoring: ``score_at(photo, min_std)`` gives each photo's score (None: too little texture)."""
    def score(photos, card, workers, progress):
        return [Scored(p.path, p.sharp, score_at(p, card.analysis.min_std)) for p in photos]
    monkeypatch.setattr(cull.calibrate, "_score_photos", score)


def test_calibrate_chooses_a_texture_threshold_that_scores_enough_photos(tmp_path, monkeypatch):
    """At the base min_std only 3 blurred photos have texture enough; lower values score all of them:
    calibration goes on with one of those.  With --keep-texture it refuses, saying the others were
    not tried."""
    folder = fake_folder(tmp_path / "set", 8, 8)
    base = load_card()

    def score_at(photo, min_std):
        i = int(photo.path.stem[1:])
        if not photo.sharp and i >= 3 and min_std >= base.analysis.min_std:
            return None
        return 0.8 + i / 100 if photo.sharp else 0.05 + i / 100

    fake_scoring(monkeypatch, score_at)
    result = calibrate(folder, base, fit_texture=True)
    assert result.card.analysis.min_std < base.analysis.min_std
    assert sum(s.score is not None for s in result.scored) == 16
    with pytest.raises(DatasetError, match="only 8 sharp and 3 blurred .* other texture thresholds were not tried"):
        calibrate(folder, base, fit_texture=False)


def test_a_file_labelled_both_sharp_and_blurred_is_left_out_of_both(tmp_path, monkeypatch):
    """sharp/link.jpg is a link to blurred/b0.jpg: both paths are errors, neither class counts the file,
    and a warning says why.  A folder named unblurred/ is no blurred class."""
    folder = fake_folder(tmp_path / "set", 6, 7)
    (folder / "sharp" / "link.jpg").symlink_to(folder / "blurred" / "b0.jpg")
    (save_dir(folder / "Unblurred") / "u0.jpg").write_bytes(b"\xff\xd8")
    fake_scoring(monkeypatch, lambda photo, min_std: 0.9 if photo.sharp else 0.1)
    result = calibrate(folder, load_card(), fit_texture=False)
    errors = {s.path.name: s.error for s in result.errors}
    assert set(errors) == {"link.jpg", "b0.jpg"} and all(e.startswith(BOTH_LABELS) for e in errors.values())
    usable = [s for s in result.scored if s.error is None]
    assert (sum(s.sharp for s in usable), sum(not s.sharp for s in usable)) == (6, 6)
    assert "u0.jpg" not in {s.path.name for s in result.scored}
    assert any("2 path(s)" in w and BOTH_LABELS in w for w in result.warnings)
    assert any(w.startswith("Unblurred/ says it is not blurred") for w in result.warnings)
    assert "blurred from blurred/" in format_calibration(result)


def test_the_summary_shows_thresholds_to_the_decimal_the_card_stores(tmp_path, monkeypatch):
    """Thresholds print with 6 decimals, or all the card stores when keep must sit between two scores
    closer than 1e-6: a threshold equal to a score is not hidden by rounding."""
    folder = fake_folder(tmp_path / "set", 6, 6)
    sharp = [0.78000001, 0.9, 0.95, 0.97, 0.98, 0.99]
    blurred = [0.05, 0.1, 0.2, 0.5, 0.7, 0.78]
    fake_scoring(monkeypatch, lambda p, m: (sharp if p.sharp else blurred)[int(p.path.stem[1:])])
    result = calibrate(folder, load_card(), fit_texture=False)
    assert result.card.thresholds["lenient"].keep == 0.78000001
    assert "keep at or above 0.78000001; reject below: lenient 0.390000, normal 0.546000, strict 0.663000" in (
        format_calibration(result))


def test_raw_jpeg_pairs_count_as_one_shot_each(tmp_path):
    """3 RAW+JPEG pairs per class are 3 shots per class: too few to calibrate (6 files are not 6 photos)."""
    from tests.rawfiles import write_dng

    for cls in ("sharp", "blurred"):
        for i in range(3):
            image = sharp_image(i, 0.1) if cls == "sharp" else blurred_image(i, 3).resize(sharp_image(i, 0.1).size)
            jpg = save(image, tmp_path / cls / f"IMG_{i}.JPG")  # other photos per class
            write_dng(jpg, tmp_path / cls / f"IMG_{i}.DNG")
    with pytest.raises(DatasetError, match=f"3 sharp and 3 blurred photos; calibration needs at least {MIN_PER_CLASS}"):
        cull.calibrate.count_photos(tmp_path)


def test_calibrate_fits_a_shifted_domain_and_scan_and_eval_use_the_card(tmp_path):
    """Grey low-contrast micrographs: the shipped card leaves sharp frames uncertain (v2 kept almost
    none, v5 half, v5 with its photo head three quarters); calibrated on 10 + 10 frames it keeps >= 90 %
    of 20 other sharp frames, more than the shipped card, rejects none, flags >= 95 % of blurred."""
    calibration = micro_folder(tmp_path / "cal", range(10))
    held_out = micro_folder(tmp_path / "test", range(10, 30))
    runner = CliRunner()
    shipped = tmp_path / "shipped.json"
    result = runner.invoke(app, ["eval", str(held_out), "-j1", "--json", str(shipped)])
    assert result.exit_code == 0, result.output
    before = json.loads(shipped.read_text())["overall"]["model"]
    assert before["sharp_kept_rate"] < 0.9  # with the shipped thresholds sharp frames stay uncertain

    card_path = tmp_path / "cards" / "micro.json"
    card_path.parent.mkdir()
    result = runner.invoke(app, ["calibrate", str(calibration), "--out", str(card_path), "-j1"])
    assert result.exit_code == 0, result.output
    assert "leave-one-out" in result.stdout and "Clopper-Pearson" in result.stdout
    assert "classes: sharp from sharp/; blurred from defocus_blurred/" in result.stdout
    assert "10/10" in result.stdout and "warning" not in result.stderr
    card = load_card(card_path)
    shipped_card = load_card()
    assert card.sha256 == shipped_card.sha256 and card.model_path.resolve() == shipped_card.model_path.resolve()
    assert card.thresholds != shipped_card.thresholds and card.version.startswith(shipped_card.version)
    assert all(t.steady_keep is None and t.max_motion is None and t.head_keep is None for t in card.thresholds.values())
    assert card.head is None and shipped_card.head is not None  # one keep threshold: no steady or head path
    assert card.analysis.min_std < shipped_card.analysis.min_std  # the texture threshold adapted to low contrast
    assert "10 sharp and 10 blurred" in card.extra["calibration"]["note"]

    calibrated = tmp_path / "calibrated.json"
    for strictness in ("lenient", "strict"):
        result = runner.invoke(app, ["eval", str(held_out), "-j1", "--model", str(card_path),
                                     "--strictness", strictness, "--json", str(calibrated)])
        assert result.exit_code == 0, result.output
        report = json.loads(calibrated.read_text())
        after = report["overall"]["model"]
        assert report["model_version"] == card.version
        assert after["confusion"]["sharp"]["reject"] == 0
        assert after["sharp_kept_rate"] >= 0.9 and after["blurred_flagged_rate"] >= 0.95
        assert after["sharp_kept_rate"] > before["sharp_kept_rate"]
    verdicts = {Path(p["path"]).name + str(p["sharp"]): p["verdict"] for p in report["photos"]}

    # scan with two worker processes decides with the same card (thresholds and texture threshold)
    scan_report = tmp_path / "scan.jsonl"
    result = runner.invoke(app, ["scan", str(held_out), "-j2", "--model", str(card_path), "--strictness", "strict",
                                 "--no-xmp", "--report", str(scan_report)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in scan_report.read_text().splitlines()]
    assert len(rows) == 40
    assert {Path(r["path"]).name + str("/sharp/" in r["path"]): r["verdict"] for r in rows} == verdicts


def test_calibrate_refuses_too_few_examples(tmp_path):
    for i in range(4):
        save(sharp_image(i, 0.25), tmp_path / "sharp" / f"{i}.jpg")
        save(sharp_image(i, 0.25).filter(ImageFilter.GaussianBlur(3)), tmp_path / "blurred" / f"{i}.jpg")
    out = tmp_path / "card.json"
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path), "--out", str(out), "-j1"])
    assert result.exit_code == 2
    assert "at least 5 of each" in result.stderr and not out.exists()


def test_calibrate_usage_errors(tmp_path):
    runner = CliRunner()
    (tmp_path / "sharp").mkdir()
    result = runner.invoke(app, ["calibrate", str(tmp_path), "--out", str(tmp_path / "card.txt")])
    assert result.exit_code == 2 and ".json" in result.stderr
    result = runner.invoke(app, ["calibrate", str(tmp_path), "--out", str(REPO / "models" / "focus.json")])
    assert result.exit_code == 2 and "overwrite the base card" in result.stderr
    result = runner.invoke(app, ["calibrate", str(tmp_path), "--out", str(tmp_path / "missing" / "c.json")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(app, ["calibrate", str(tmp_path), "--out", str(tmp_path / "c.json"), "-j1"])
    assert result.exit_code == 2 and "blur" in result.stderr  # no blurred folder


def test_calibrate_warns_on_overlap_and_few_examples_and_points_beside_the_card(tmp_path):
    """Mislabelled photos make the classes overlap: a warning, and still no labelled sharp photo rejected.
    A base card beside its model gives a calibrated card with a relative model path."""
    models = tmp_path / "models"
    models.mkdir()
    for name in ("focus.onnx", "focus.json"):
        shutil.copy(REPO / "models" / name, models / name)
    data = tmp_path / "data"
    for i in range(6):
        save(sharp_image(i % 4, 0.3).rotate(90 * (i // 4)), data / "sharp" / f"s{i}.jpg")
        blurred = sharp_image(i % 4, 0.3).rotate(90 * (i // 4)).filter(ImageFilter.GaussianBlur(4))
        # b0 is sharp: s0 saved again at another quality (a byte-identical copy is left out of both classes)
        save(sharp_image(i % 4, 0.3) if i == 0 else blurred, data / "motion_blurred" / f"b{i}.jpg", **({"quality": 90} if i == 0 else {}))
    out = models / "mine.json"
    result = CliRunner().invoke(app, ["calibrate", str(data), "--out", str(out), "--model", str(models / "focus.json"),
                                      "--keep-texture", "-j1"])
    assert result.exit_code == 0, result.output
    assert "classes overlap" in result.stderr and "few examples" in result.stderr
    raw = json.loads(out.read_text())
    assert raw["model_file"] == "focus.onnx" and raw["analysis"]["min_std"] == 0.025
    card = load_card(out)
    sharp_scores = raw["calibration"]["sharp_scores"]
    assert all(card.thresholds[n].reject <= min(sharp_scores) for n in card.thresholds)
    assert card.thresholds["lenient"].keep > max(raw["calibration"]["blurred_scores"]) - 1e-4


def test_a_calibration_that_does_worse_than_its_base_says_so(tmp_path, monkeypatch):
    """Thresholds that keep fewer sharp photos than the base card and flag no more blurred ones (here
    forced: keep at 1.0) come with a warning that the base card may serve better."""
    import cull.calibrate
    from cull.card import Thresholds

    from tests.conftest import blurred_image

    folder = tmp_path / "set"
    for i in range(6):  # six distinct photos per class (copies would count once): the examples, turned
        save(sharp_image(i).rotate(180 * (i // 4)), folder / "sharp" / f"s{i}.jpg")
        save(blurred_image(i, 8).rotate(180 * (i // 4)), folder / "blurred" / f"b{i}.jpg")
    monkeypatch.setattr(cull.calibrate, "fit_thresholds",
                        lambda sharp, blurred: {n: Thresholds(keep=1.0, reject=0.0) for n in ("lenient", "normal", "strict")})
    result = cull.calibrate.calibrate(folder, load_card(), workers=1, fit_texture=False)
    assert any("keeps fewer sharp photos than the base card" in w for w in result.warnings)


def test_copies_within_a_class_count_once(tmp_path, monkeypatch):
    """Five copies (or hard links) of one photo are one example: too few to calibrate.  With enough
    distinct photos, the copies are left out and a warning names them."""
    for cls in ("sharp", "blurred"):
        first = save_dir(tmp_path / "one" / cls) / "c0.jpg"
        first.write_bytes(f"\xff\xd8 one {cls} photo".encode())
        for i in range(1, 5):
            if i % 2:
                shutil.copyfile(first, first.with_name(f"c{i}.jpg"))
            else:
                first.with_name(f"c{i}.jpg").hardlink_to(first)
    with pytest.raises(DatasetError, match="1 sharp and 1 blurred photos; calibration needs at least"):
        cull.calibrate.count_photos(tmp_path / "one")

    folder = fake_folder(tmp_path / "set", 6, 6)
    shutil.copyfile(folder / "sharp" / "s0.jpg", folder / "sharp" / "zz.jpg")
    fake_scoring(monkeypatch, lambda photo, min_std: 0.9 if photo.sharp else 0.1)
    result = calibrate(folder, load_card(), fit_texture=False)
    assert "zz.jpg" not in {s.path.name for s in result.scored}
    assert any("1 photo(s) are copies" in w and "zz.jpg = " in w and "s0.jpg" in w for w in result.warnings), result.warnings


def test_empty_class_folders_are_named(tmp_path):
    (tmp_path / "sharp").mkdir()
    (tmp_path / "blurred").mkdir()
    save(sharp_image(0, 0.25), tmp_path / "sharp" / "0.jpg")
    with pytest.raises(DatasetError, match=r"; blurred/ holds no usable photos$"):
        cull.calibrate.count_photos(tmp_path)
