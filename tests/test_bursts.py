"""Bursts: capture time from EXIF, grouping by time + look, ranking by the same regions in each frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from cull.bursts import Frame, align, clearly_softer, find_bursts, group_bursts, rank_burst, signature
from cull.capture import parse_exif_time, read_capture
from tests.conftest import SHARED_DATA, sharp_image

SCENES = SHARED_DATA / "sharp" / "urban100"


def exif_jpeg(image: Image.Image, path: Path, when: str | None, subsec: str | None = None,
              make: str = "Canon", model: str = "EOS R6", serial: str | None = None) -> Path:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = make, model
    if when is not None:
        ifd = exif.get_ifd(0x8769)
        ifd[0x9003] = when
        if subsec is not None:
            ifd[0x9291] = subsec
        if serial is not None:
            ifd[0xA431] = serial
    image.save(path, quality=92, exif=exif)
    return path


def test_exif_time_with_subseconds():
    assert parse_exif_time("2024:05:01 10:11:12", "25") - parse_exif_time("2024:05:01 10:11:12") == pytest.approx(0.25)
    assert parse_exif_time("2024:05:01 10:11:12", "5") - parse_exif_time("2024:05:01 10:11:12") == pytest.approx(0.5)
    assert parse_exif_time("0000:00:00 00:00:00") is None
    assert parse_exif_time("garbage") is None


def test_capture_reads_camera_and_time_and_falls_back_to_mtime(tmp_path):
    shot = exif_jpeg(sharp_image(0, 0.3), tmp_path / "a.jpg", "2024:05:01 10:11:12", "40", serial="0123")
    capture = read_capture(shot)
    assert capture.time_source == "exif"
    assert capture.camera == "Canon EOS R6 0123"
    assert capture.time == pytest.approx(parse_exif_time("2024:05:01 10:11:12") + 0.4)
    plain = tmp_path / "b.png"
    sharp_image(1, 0.3).save(plain)
    fallback = read_capture(plain)
    assert fallback.time_source == "mtime" and fallback.time == pytest.approx(plain.stat().st_mtime)
    junk = tmp_path / "c.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe1garbage")
    assert read_capture(junk).time_source == "mtime"  # never raises on odd files


def _frame(key: str, image: Image.Image, time: float | None, scorer, card, camera: str = "cam") -> Frame:
    from cull.patches import network_input, select_patches

    gray = np.asarray(image.convert("L"), np.float32) / 255.0
    patches = select_patches(gray, card.analysis)
    scores = scorer.score(network_input(patches.pixels)).sharp if len(patches) else np.zeros(0, np.float32)
    sig, scale = signature(gray)
    return Frame(key, camera, time, "exif", sig, scale, patches.origins, np.asarray(scores, np.float32))


def _shot(base: Image.Image, rng: np.random.Generator, blur: float = 0.0, shake: int = 0) -> Image.Image:
    """A frame of a hand-held burst: a small shift and rotation, then optional defocus or shake."""
    width, height = base.size
    dx, dy = (int(v) for v in rng.integers(-20, 21, 2))
    image = base.rotate(float(rng.uniform(-0.8, 0.8)), resample=Image.Resampling.BICUBIC, center=(width / 2 + dx, height / 2 + dy))
    image = image.crop((32 + dx, 32 + dy, width - 32 + dx, height - 32 + dy))
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    if shake:  # a straight horizontal smear of ``shake`` pixels
        pixels = np.asarray(image, np.float32)
        smeared = sum(np.roll(pixels, k, axis=1) for k in range(shake)) / shake
        image = Image.fromarray(np.clip(smeared, 0, 255).astype(np.uint8))
    return image


@pytest.fixture(scope="module")
def scorer(card):
    from cull.score import OnnxScorer

    return OnnxScorer(card)


def _scene(index: int) -> Image.Image:
    if not SCENES.is_dir():
        pytest.skip("needs ../shared/data/sharp/urban100")
    return Image.open(sorted(SCENES.glob("*"))[index]).convert("RGB")


def test_bursts_group_interleaved_scenes_apart_and_rank_the_sharp_frame_first(card, scorer):
    rng = np.random.default_rng(7)
    frames, sharp_keys = [], set()
    scenes = [_scene(i) for i in (0, 3, 6, 9)]
    t = 1000.0
    for round_ in range(3):  # scenes shot in turn, 0.4 s apart: A B C D A B C D …
        for s, base in enumerate(scenes):
            sharp = round_ == (s % 3)
            image = _shot(base, rng, blur=0.0 if sharp else [1.5, 3.0][(round_ + s) % 2],
                          shake=0 if sharp or s % 2 else 5)
            key = f"scene{s}_frame{round_}"
            frames.append(_frame(key, image, t, scorer, card))
            sharp_keys.add(key) if sharp else None
            t += 0.4
    ranked = find_bursts(frames, gap=2.0)
    bursts: dict[str, list] = {}
    for row in ranked.values():
        bursts.setdefault(row.burst, []).append(row)
    assert len(bursts) == 4, "one burst per scene"
    for rows in bursts.values():
        assert len({r.key.split("_")[0] for r in rows}) == 1, "a burst never spans two scenes"
        assert len(rows) == 3 and sorted(r.rank for r in rows) == [1, 2, 3]
        best = min(rows, key=lambda r: r.rank)
        assert best.key in sharp_keys, rows
        assert best.common_patches >= 3  # compared on shared regions, not each frame's best patches


def test_gap_camera_and_missing_time_split_bursts(card, scorer):
    rng = np.random.default_rng(3)
    base = _scene(1)
    f = [_frame(f"f{i}", _shot(base, rng), t, scorer, card) for i, t in enumerate([0.0, 0.5, 5.0, 5.4])]
    assert group_bursts(f, gap=2.0) == [[0, 1], [2, 3]]
    assert group_bursts(f, gap=10.0) == [[0, 1, 2, 3]]
    other_camera = [f[0], Frame(**{**f[1].__dict__, "camera": "another body"})]
    assert group_bursts(other_camera) == []
    no_time = [f[0], Frame(**{**f[1].__dict__, "time": None})]
    assert group_bursts(no_time) == []
    with pytest.raises(ValueError):
        group_bursts(f, gap=-1)


def test_different_scenes_do_not_look_alike_and_shifted_frames_do():
    rng = np.random.default_rng(1)
    a = np.asarray(_shot(sharp_image(0), rng).convert("L"), np.float32) / 255
    b = np.asarray(_shot(sharp_image(0), rng).convert("L"), np.float32) / 255
    c = np.asarray(_shot(sharp_image(1), rng).convert("L"), np.float32) / 255
    same = align(signature(a)[0], signature(b)[0])[2]
    other = align(signature(a)[0], signature(c)[0])[2]
    assert same > 0.8 and other < 0.5


def test_ties_go_to_the_larger_share_in_focus():
    sig = np.ones((4, 6), np.float32)
    origins = np.array([[0, 0], [0, 64], [64, 0], [64, 64]], np.int32)
    narrow = Frame("narrow", "c", 0.0, "exif", sig, 1.0, origins, np.array([0.99, 0.99, 0.2, 0.2], np.float32))
    wide = Frame("wide", "c", 0.1, "exif", sig, 1.0, origins, np.array([0.61, 0.60, 0.59, 0.58], np.float32))
    rows = rank_burst([narrow, wide], "b")
    assert abs(rows[0].common_score - rows[1].common_score) < 0.02
    assert [r.key for r in rows] == ["wide", "narrow"]
    assert not clearly_softer(rows[1], rows[0])
    soft = Frame("soft", "c", 0.2, "exif", sig, 1.0, origins, np.array([0.1, 0.1, 0.1, 0.1], np.float32))
    rows = rank_burst([narrow, wide, soft], "b")
    assert rows[-1].key == "soft" and clearly_softer(rows[-1], rows[0])
