"""Bursts: capture time from EXIF, grouping by time + look, ranking by the same regions in each frame."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from benchmarks.burst_library import make_library

from cull.bursts import Frame, align, clearly_softer, find_bursts, group_bursts, rank_burst, signature
from cull.capture import parse_exif_time, read_capture
from cull.cli import app
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
    base = parse_exif_time("2024:05:01 10:11:12")
    assert parse_exif_time("2024:05:01 10:11:12", "\u00b2") == base  # a digit to str.isdigit, not to int()
    assert parse_exif_time("2024:05:01 10:11:12", "1" * 5000) == pytest.approx(base + 0.111111111)  # int() refuses 4300+ digits
    assert parse_exif_time("0000:00:00 00:00:00") is None
    assert parse_exif_time("garbage") is None


def test_capture_reads_raw_exif(shared_raw):
    capture = read_capture(shared_raw / "RAW_KODAK_DC50.KDC")  # exiftool: ModifyDate 1997:04:23 08:00:47 (no DateTimeOriginal)
    # ModifyDate alone may be an export's or a scan's time: grouped with the stricter gate (WEAK_TIMES)
    assert capture.time_source == "modified" and capture.camera is not None and capture.camera.startswith("Eastman Kodak")
    assert capture.time == pytest.approx(parse_exif_time("1997:04:23 08:00:47"))


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
    patches = select_patches(gray, replace(card.analysis, tile_stride=None))  # a footprint's tiles (cull.analyse)
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


# --- scan --bursts end to end (CLI), on synthetic bursts made from the shared photos ---



def run(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    if not SCENES.is_dir():
        pytest.skip("needs ../shared/data/sharp/urban100")
    out = tmp_path_factory.mktemp("bursts") / "shoot"
    make_library(out, sorted(SCENES.glob("*"))[:4], seed=5, singles=1)  # defocus, shake, shallow bursts + 1 lone photo
    return out


def test_scan_bursts_groups_ranks_reports_and_rescans_without_decoding(library, tmp_path, monkeypatch):
    work = tmp_path / "shoot"
    shutil.copytree(library, work)
    labels = dict(line.split(",") for line in (work / "labels.csv").read_text().split()[1:])
    result = run("scan", work, "--bursts", "--workers", "1", "--no-xmp", "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    rows = {f"{Path(r['path']).parent.name}/{Path(r['path']).name}": r
            for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    by_burst: dict[str, list[dict]] = {}
    for name, row in rows.items():
        if name.split("/")[0].endswith("_single"):
            assert row["burst"] is None and row["burst_rank"] is None and row["burst_size"] is None
        else:
            by_burst.setdefault(row["burst"], []).append({**row, "name": name})
    assert len(by_burst) == 3, "one burst per scene, none mixing scenes"
    for frames in by_burst.values():
        folders = {f["name"].split("/")[0] for f in frames}
        assert len(folders) == 1
        best = next(f for f in frames if f["burst_rank"] == 1)
        assert best["name"] == f"{folders.pop()}/{labels[best['name'].split('/')[0]]}"
        assert sorted(f["burst_rank"] for f in frames) == list(range(1, len(frames) + 1))
        assert all(f["burst_size"] == len(frames) for f in frames)
    assert "3 bursts" in result.stdout

    import cull.analyse

    def no_decoding(*args, **kwargs):
        raise AssertionError("a cached rescan with --bursts must not decode")

    monkeypatch.setattr(cull.analyse, "decode_levels", no_decoding)
    again = run("scan", work, "--bursts", "--workers", "1", "--no-xmp", "--report", tmp_path / "r2.jsonl")
    assert again.exit_code == 0, again.output
    assert f"({len(rows)} from cache)" in again.stdout
    assert (tmp_path / "r2.jsonl").read_text() == (tmp_path / "r.jsonl").read_text()


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed (.ci/run installs it)")
def test_keep_best_flags_softer_frames_uncertain_never_reject_and_move_leaves_the_best(library, tmp_path):
    work = tmp_path / "shoot"
    shutil.copytree(library, work)
    plain = run("scan", work, "--workers", "1", "--no-xmp", "--no-cache", "--report", tmp_path / "plain.jsonl")
    assert plain.exit_code == 0, plain.output
    before = {r["path"]: r["verdict"] for r in map(json.loads, (tmp_path / "plain.jsonl").read_text().splitlines())}
    result = run("scan", work, "--bursts", "--keep-best", "--workers", "1", "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    rows = list(map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines()))
    for row in rows:
        if before[row["path"]] == "reject":
            assert row["verdict"] == "reject"  # rejects stay rejects
        elif row["verdict"] != before[row["path"]]:
            assert before[row["path"]] == "keep" and row["verdict"] == "uncertain"
            assert row["reason"] == "a sharper frame exists in this burst" and row["burst_rank"] > 1
        if row["burst_rank"] == 1:
            assert row["verdict"] == before[row["path"]]  # the best frame keeps its own verdict
    assert any(r["reason"] == "a sharper frame exists in this burst" for r in rows)
    best = [Path(r["path"]) for r in rows if r["burst_rank"] == 1]
    tags = json.loads(subprocess.run(["exiftool", "-j", "-XMP:all", *[f"{p}.xmp" for p in best]],
                                     capture_output=True, text=True, check=True).stdout)
    assert all(t["BurstRank"] == 1 and t["Burst"].startswith("burst-") and t["BurstSize"] >= 2 for t in tags)
    moved = run("move", work, "--rejects", "--uncertain", "--keep-best", "--workers", "1")
    assert moved.exit_code == 0, moved.output
    for path in best:
        assert path.is_file(), f"the best frame {path} stays in place"
    assert not any((work / "_culled" / Path(r["path"]).relative_to(work)).exists() for r in rows if r["burst_rank"] == 1)
    softer = [Path(r["path"]) for r in rows if r["reason"] == "a sharper frame exists in this burst"]
    assert softer and all((work / "_culled" / p.relative_to(work)).is_file() and not p.exists() for p in softer)
    cleared = run("xmp", "clear", work)
    assert cleared.exit_code == 0, cleared.output
    assert not any(p.suffix == ".xmp" for p in work.rglob("*") if "_culled" not in p.parts)


def _keep_best_scan(work: Path, report: Path, *options: str) -> dict[str, dict]:
    """`cull scan --bursts --keep-best` of ``work``: its report rows by path."""
    result = run("scan", work, "--bursts", "--keep-best", "--workers", "1", *options, "--report", report)
    assert result.exit_code == 0, result.output
    return {r["path"]: r for r in map(json.loads, report.read_text().splitlines())}


def _demoted_burst(library: Path, tmp_path: Path) -> tuple[Path, dict, list[dict]]:
    """A copy of ``library`` scanned with --keep-best: (the copy, a demoted frame's row, its burst's rows by rank)."""
    work = tmp_path / "shoot"
    shutil.copytree(library, work)
    rows = _keep_best_scan(work, tmp_path / "a.jsonl", "--no-xmp")
    demoted = next(r for r in rows.values() if r["reason"] == "a sharper frame exists in this burst")
    frames = sorted((r for r in rows.values() if r["burst"] == demoted["burst"]), key=lambda r: r["burst_rank"])
    return work, demoted, frames


def test_keep_best_never_demotes_a_frame_the_user_rated(library, tmp_path):
    """The user's own rating of a frame is their judgement of it: --keep-best left it kept but labelled
    a 5-star frame uncertain (Yellow in Lightroom) because a sharper frame of the burst exists."""
    work = tmp_path / "shoot"
    shutil.copytree(library, work)
    first = run("scan", work, "--bursts", "--keep-best", "--workers", "1", "--no-xmp", "--report", tmp_path / "a.jsonl")
    assert first.exit_code == 0, first.output
    softer = [Path(r["path"]) for r in map(json.loads, (tmp_path / "a.jsonl").read_text().splitlines())
              if r["reason"] == "a sharper frame exists in this burst"]
    assert softer
    rated = softer[0]
    sidecar = rated.with_suffix(".xmp")
    sidecar.write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
                       '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="5"/>'
                       '</rdf:RDF></x:xmpmeta>')
    again = run("scan", work, "--bursts", "--keep-best", "--workers", "1", "--report", tmp_path / "b.jsonl")
    assert again.exit_code == 0, again.output
    rows = {Path(r["path"]): r for r in map(json.loads, (tmp_path / "b.jsonl").read_text().splitlines())}
    assert rows[rated]["verdict"] == "keep" and rows[rated]["burst_rank"] > 1
    assert rows[rated]["reason"].endswith("(a sharper frame exists in this burst, but user rated it 5 stars)")
    assert all(rows[p]["verdict"] == "uncertain" for p in softer[1:])  # the unrated ones are still demoted
    text = sidecar.read_text()
    assert 'Rating="5"' in text or "<xmp:Rating>5</xmp:Rating>" in text
    assert "Yellow" not in text


def test_keep_best_measures_frames_against_the_best_kept_frame_the_user_did_not_take_back(library, tmp_path):
    """A frame the user rejected in `cull review` was still the burst's best kept frame, so the others were
    demoted against it and `move --rejects --uncertain --keep-best` took the whole burst aside."""
    from cull.review.decisions import write_decision
    from cull.sidecars import XmpOptions

    work, _, frames = _demoted_burst(library, tmp_path)
    best = next(r for r in frames if r["verdict"] == "keep")
    write_decision([Path(best["path"])], "reject", XmpOptions())  # the user's X in cull review
    after = _keep_best_scan(work, tmp_path / "b.jsonl", "--no-xmp")
    assert after[best["path"]]["verdict"] == "reject"
    assert any(after[r["path"]]["verdict"] == "keep" for r in frames)  # the burst keeps a frame: the next best
    moved = run("move", work, "--rejects", "--uncertain", "--keep-best", "--workers", "1", "--dry-run")
    assert moved.exit_code == 0, moved.output
    staying = [r["path"] for r in frames if after[r["path"]]["verdict"] == "keep"]
    assert staying and not any(p in moved.output for p in staying)


def test_a_frame_whose_decision_cannot_be_read_sets_no_bar(library, tmp_path):
    """A best frame whose sidecar cull cannot parse, though it names the user's reject (another program
    may read it), set the bar: cull's sharp frame was demoted and `move --uncertain --keep-best` took it."""
    work, demoted, frames = _demoted_burst(library, tmp_path)
    best = next(r for r in frames if r["verdict"] == "keep")
    Path(best["path"] + ".xmp").write_text(  # an unclosed rdf:Description: malformed
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description xmlns:cull="https://github.com/cull-photo/cull/ns/1.0/" cull:UserVerdict="reject"></rdf:RDF></x:xmpmeta>')
    after = _keep_best_scan(work, tmp_path / "b.jsonl", "--no-xmp")
    assert after[demoted["path"]]["verdict"] == "keep"


def test_a_review_decision_in_a_utf16_sidecar_is_read():
    from cull.protect import sidecar_user_verdict
    from cull.review.decisions import user_packet

    packet = user_packet(None, "reject")
    for encoding in ("utf-16-le", "utf-16-be"):
        assert sidecar_user_verdict(packet.decode("utf-8").encode(encoding)) == "reject"


def test_raw_jpeg_pair_is_one_frame_and_photos_without_exif_use_mtime(tmp_path):
    rng = np.random.default_rng(2)
    base = sharp_image(0)
    folder = tmp_path / "p"
    folder.mkdir()
    start = 1_700_000_000.0
    for i in range(3):  # PNGs carry no EXIF capture time: their modification times stand in
        image = _shot(base, rng, blur=0.0 if i == 1 else 3.0)
        path = folder / f"f{i}.png"
        image.save(path)
        os.utime(path, (start + 0.4 * i, start + 0.4 * i))
    (folder / "f1.CR2").write_bytes(b"not really a raw")  # a RAW partner: f1 stays one frame
    result = run("scan", folder, "--bursts", "--workers", "1", "--no-xmp", "--no-cache", "--report", tmp_path / "r.jsonl")
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert set(rows) == {"f0.png", "f1.png", "f2.png"} and rows["f1.png"]["partner"].endswith("f1.CR2")
    assert {r["burst_size"] for r in rows.values()} == {3} and rows["f1.png"]["burst_rank"] == 1


def test_eval_bursts_reports_grouping_and_rank_one(library):
    result = run("eval", library, "--bursts", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert "3/3 bursts (100.0 %)" in result.stdout and "0 wrong merges" in result.stdout


def test_burst_options_are_checked_before_any_work(tmp_path):
    assert run("scan", tmp_path, "--keep-best").exit_code == 2
    assert run("move", tmp_path, "--rejects", "--keep-best", "--burst-gap", "-1").exit_code == 2
    assert run("scan", tmp_path, "--burst-gap", "5").exit_code == 2  # not silently ignored without --bursts
    assert run("move", tmp_path, "--rejects", "--burst-gap", "5").exit_code == 2
    no_uncertain = run("move", tmp_path, "--rejects", "--keep-best")  # would change nothing: it only makes frames uncertain
    assert no_uncertain.exit_code == 2 and "--keep-best works with --uncertain" in no_uncertain.output
    assert run("scan", tmp_path, "--bursts", "--burst-gap", "-1").exit_code == 2
    assert run("eval", tmp_path, "--bursts").exit_code == 2  # no burst sub-folders


def test_footprint_round_trips_through_bytes():
    from cull.bursts import Footprint

    fp = Footprint("Canon EOS R6 0421", 12.5, "exif", np.arange(-6, 6, dtype=np.int8).reshape(3, 4), 15.0,
                   np.array([[0, 64], [128, 0]], np.int32), np.array([0.25, 0.75], np.float32))
    back = Footprint.from_bytes(fp.to_bytes())
    assert back.camera == fp.camera and back.time == fp.time and back.scale == fp.scale
    assert np.array_equal(back.signature, fp.signature) and np.array_equal(back.origins, fp.origins)
    assert np.array_equal(back.scores, fp.scores)
    with pytest.raises(ValueError):
        Footprint.from_bytes(b"junk")


def test_bursts_keep_the_photo_score_and_compare_the_side_by_side_tiles(tmp_path, card, scorer):
    """With the card's overlapping tiles, `--bursts` judges each photo exactly as a plain scan does
    (the same selected patches, every one scored) and compares frames on the side-by-side tiles."""
    from cull.analyse import analyse_chunk
    from cull.decode import decode_gray
    from cull.patches import network_input, select_patches

    assert card.analysis.tile_step < card.analysis.patch_size  # the shipped card's grid overlaps
    paths = [exif_jpeg(sharp_image(i), tmp_path / f"{i}.jpg", "2026:11:27 10:00:0" + str(i)) for i in range(3)]
    every_patch = replace(card, analysis=replace(card.analysis, first_pass=card.analysis.max_patches))
    plain = analyse_chunk(paths, every_patch, scorer)
    bursts = analyse_chunk(paths, card, scorer, with_bursts=True)
    for path, a, b in zip(paths, plain, bursts):
        assert a.photo == b.photo and b.footprint is not None
        grid = select_patches(decode_gray(path, card.analysis.long_side), replace(card.analysis, tile_stride=None))
        assert np.array_equal(b.footprint.origins, grid.origins) and len(grid) > 3
        assert np.allclose(b.footprint.scores, scorer.score(network_input(grid.pixels)).sharp, atol=1e-6)


def _look_alike_frames(count: int, source: str, mix: float, seed: int = 0) -> list:
    """Frames with one capture time whose signatures share ``mix`` of their variance (correlation ~ mix)."""
    from cull.bursts import Frame

    rng = np.random.default_rng(seed)
    common = rng.normal(size=(64, 96)).astype(np.float32)
    frames = []
    for i in range(count):
        own = rng.normal(size=(64, 96)).astype(np.float32)
        sig = np.sqrt(mix) * common + np.sqrt(1 - mix) * own
        frames.append(Frame(f"f{i:04d}.jpg", None, 1000.0, source, (sig - sig.mean()) / sig.std(), 15.0,
                            np.zeros((0, 2), np.int32), np.zeros(0, np.float32)))
    return frames


def test_photos_timed_by_file_time_must_look_much_more_alike_to_be_grouped():
    """A folder copied at once gives unrelated photos one modification time: their signatures, which
    for unrelated scenes reach ~0.5-0.78, must not make them a burst; frames with a camera time may."""
    from cull.bursts import group_bursts

    assert group_bursts(_look_alike_frames(6, "exif", 0.65)) != []
    assert group_bursts(_look_alike_frames(6, "mtime", 0.65)) == []
    assert group_bursts(_look_alike_frames(6, "mtime", 0.95)) == [[0, 1, 2, 3, 4, 5]]


def test_grouping_compares_each_frame_with_a_bounded_number_of_bursts(monkeypatch):
    """Frames within the gap of each other that do not match (a copied folder, a long --burst-gap) must
    not make grouping quadratic: each is compared with the few bursts most recently extended."""
    import cull.bursts

    calls = []
    real = cull.bursts.align
    monkeypatch.setattr(cull.bursts, "align", lambda a, b: calls.append(1) or real(a, b))
    frames = _look_alike_frames(300, "exif", 0.0)
    assert cull.bursts.group_bursts(frames) == []
    assert len(calls) <= 2 * cull.bursts.MAX_OPEN_BURSTS * len(frames)


def test_burst_ids_are_stable_and_distinct_across_folders(library, tmp_path, monkeypatch):
    """A burst keeps its id on every rescan, however its folder is named on the command line; bursts
    of two folders never share one (a catalogue filter on cull:Burst must not mix them)."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(library, a)
    shutil.copytree(library, b)

    def ids(folder: Path | str) -> dict[str, str]:
        report = tmp_path / "r.jsonl"
        result = run("scan", folder, "--bursts", "--workers", "1", "--no-xmp", "--report", report)
        assert result.exit_code == 0, result.output
        return {str(Path(r["abs_path"])): r["burst"] for r in map(json.loads, report.read_text().splitlines()) if r["burst"]}

    first = ids(a)
    assert first and len(set(first.values())) >= 2
    monkeypatch.chdir(tmp_path)
    assert ids("a") == first  # a relative path, another working folder: the same ids
    assert not set(first.values()) & set(ids(b).values())


def test_a_capture_time_edited_in_place_is_read_again_on_a_cached_rescan(tmp_path):
    """`exiftool -P` fixes a capture time keeping size and mtime (the score cache's key): the cached
    footprint must not keep the old time, or the frame stays in a burst it left."""
    rng = np.random.default_rng(4)
    base = sharp_image(0)
    folder = tmp_path / "p"
    folder.mkdir()
    for i in range(3):
        exif_jpeg(_shot(base, rng, blur=3.0 if i == 1 else 0.0), folder / f"f{i}.jpg", f"2024:05:01 10:00:0{i}")
        os.utime(folder / f"f{i}.jpg", (1_714_557_602, 1_714_557_602))

    def bursts(*extra: str) -> dict[str, object]:
        report = tmp_path / "r.jsonl"
        result = run("scan", folder, "--bursts", "--workers", "1", "--no-xmp", "--report", report, *extra)
        assert result.exit_code == 0, result.output
        return {Path(r["path"]).name: r["burst_size"] for r in map(json.loads, report.read_text().splitlines())}

    assert bursts() == {"f0.jpg": 3, "f1.jpg": 3, "f2.jpg": 3}
    path = folder / "f1.jpg"
    before = path.stat()
    data = path.read_bytes()
    path.write_bytes(data.replace(b"2024:05:01 10:00:01", b"2024:05:01 11:30:01", 1))  # same length
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert bursts() == bursts("--no-cache") == {"f0.jpg": 2, "f1.jpg": None, "f2.jpg": 2}


@settings(max_examples=200, deadline=None)
@given(st.integers(4, 80), st.integers(4, 80), st.integers(0, 80), st.integers(0, 80), st.integers(0, 2**32 - 1))
def test_peak_candidates_sorts_only_the_allowed_shifts_with_the_same_answer(height, width, limit_y, limit_x, seed):
    """The allowed-window sort (4x faster alignment) gives the peaks a sort of the whole masked surface gives."""
    from cull.bursts import _peak_candidates

    surface = np.random.default_rng(seed).standard_normal((height, width))
    ys = np.arange(height)
    xs = np.arange(width)
    ys = np.where(ys > height // 2, ys - height, ys)
    xs = np.where(xs > width // 2, xs - width, xs)
    masked = np.where((np.abs(ys)[:, None] <= limit_y) & (np.abs(xs)[None, :] <= limit_x), surface, -np.inf)
    flat = np.argsort(masked, axis=None)[::-1][:3]
    whole = [(int(ys[i // width]), int(xs[i % width])) for i in flat if np.isfinite(masked.flat[i])] or [(0, 0)]
    assert _peak_candidates(surface, limit_y, limit_x) == whole


# --- --keep-best and same-model bodies (probe of session 14) ---


def _print(sig: np.ndarray, when: float, scores: list[float], camera: str = "cam") -> "Footprint":
    from cull.bursts import Footprint

    origins = np.array([(64 * (i // 4), 64 * (i % 4)) for i in range(len(scores))], np.int32)
    return Footprint(camera, when, "exif", np.clip(np.round(sig * 32), -127, 127).astype(np.int8), 8.0,
                     origins, np.array(scores, np.float32))


def _result(path: Path, verdict: "Verdict") -> "PhotoResult":
    from cull.decide import Decision
    from cull.scan import PhotoResult
    from cull.score import PhotoScore

    return PhotoResult(path, photo=PhotoScore(0.9, 16), decision=Decision(verdict, "as scored"))


def test_keep_best_never_demotes_the_burst_s_best_kept_frame(tmp_path):
    """Rank 1 can go to an evenly soft frame cull itself left *uncertain* (the mean of the shared
    regions favours it over a sharp subject on a blurred background): the kept frame was demoted against
    it, and `move --rejects --uncertain --keep-best` took the whole burst aside."""
    from cull.decide import Verdict
    from cull.scan import place_in_bursts

    sig, _ = signature(np.asarray(sharp_image(0).convert("L"), np.float32) / 255)
    even = [0.9] * 16  # uncertain: soft everywhere
    subject = [0.99] * 2 + [0.3] * 14  # kept: a sharp subject, the rest blurred
    softer = [0.99] + [0.1] * 15  # kept too, clearly softer than the subject frame
    prints = {tmp_path / f"IMG_{i}.JPG": _print(sig, 100 + 0.1 * i, s) for i, s in enumerate((even, subject, softer))}
    verdicts = [Verdict.UNCERTAIN, Verdict.KEEP, Verdict.KEEP]
    results = [_result(p, v) for p, v in zip(prints, verdicts)]
    placed = place_in_bursts(results, prints, gap=2.0, keep_best=True)
    assert [r.burst.rank for r in placed] == [1, 2, 3]  # the ranking itself is unchanged
    assert [r.verdict for r in placed] == [Verdict.UNCERTAIN, Verdict.KEEP, Verdict.UNCERTAIN]


def test_keep_best_s_bar_is_a_frame_cull_kept_that_the_user_did_not_take_back(tmp_path):
    """The user's decisions only take frames out of the bar: a keep in `cull review` on an evenly soft
    rank-1 frame cull left uncertain made it the bar, and the frame cull found sharp was demoted (and moved
    by `move --uncertain --keep-best`); a reject on the best kept frame hands the bar to the next one."""
    from cull.decide import Verdict
    from cull.scan import place_in_bursts

    sig, _ = signature(np.asarray(sharp_image(0).convert("L"), np.float32) / 255)
    even, subject, softer = [0.9] * 16, [0.99] * 2 + [0.3] * 14, [0.99] + [0.1] * 15
    prints = {tmp_path / f"IMG_{i}.JPG": _print(sig, 100 + 0.1 * i, s) for i, s in enumerate((even, subject, softer))}
    results = [_result(p, v) for p, v in zip(prints, (Verdict.UNCERTAIN, Verdict.KEEP, Verdict.KEEP))]

    def placed_with(user: dict[str, str], protected: tuple[str, ...] = ()) -> list[str]:
        placed = place_in_bursts(results, prints, gap=2.0, keep_best=True,
                                 protection=lambda r: "user kept it (cull review)" if r.path.name in protected else None,
                                 user_verdict=lambda r: user.get(r.path.name))
        return [r.verdict.value for r in placed]

    assert placed_with({}) == ["uncertain", "keep", "uncertain"]
    assert placed_with({"IMG_0.JPG": "keep"}, protected=("IMG_0.JPG",)) == ["uncertain", "keep", "uncertain"]
    assert placed_with({"IMG_1.JPG": "reject"}) == ["uncertain", "keep", "keep"]  # the next kept frame is the bar
    assert placed_with({"IMG_1.JPG": "uncertain", "IMG_2.JPG": "reject"}) == ["uncertain", "keep", "keep"]  # no bar left


def test_keep_best_leaves_frames_of_another_scene_alone(tmp_path):
    """Unrelated photos of one size pass the grouping's similarity in 1-8 % of pairs (a street burst and
    a waterfall shot within the gap became one burst, the waterfall's sharp frame demoted)."""
    from cull.bursts import DEMOTE_SIMILARITY, MIN_SIMILARITY
    from cull.decide import Verdict
    from cull.scan import place_in_bursts

    a, _ = signature(np.asarray(sharp_image(0).convert("L"), np.float32) / 255)
    b, _ = signature(np.asarray(sharp_image(1).convert("L").resize(sharp_image(0).size), np.float32) / 255)
    for mix, demoted in ((0.45, False), (0.97, True)):  # a look-alike of a: a mixed with another scene (0.73, 0.9996)
        other = mix * a + (1 - mix) * b
        other = (other - other.mean()) / other.std()
        similarity = align(a, other.astype(np.float32))[2]
        assert MIN_SIMILARITY <= similarity and (similarity < DEMOTE_SIMILARITY) is not demoted
        prints = {tmp_path / "best.JPG": _print(a, 100.0, [0.99] * 16),
                  tmp_path / "other.JPG": _print(other, 100.5, [0.99] + [0.2] * 15)}
        placed = place_in_bursts([_result(p, Verdict.KEEP) for p in prints], prints, gap=2.0, keep_best=True)
        assert placed[1].burst is not None and placed[1].burst.rank == 2  # grouped and ranked all the same
        assert (placed[1].verdict is Verdict.UNCERTAIN) is demoted


def test_a_serial_number_is_read_from_the_maker_notes_and_only_as_text(tmp_path, monkeypatch):
    """Many Nikon, Fuji, Olympus and Sony bodies keep their serial only in the maker notes, which the
    capture reading skipped (exifread reads them only with details): two interleaved Z 6 bodies made one
    burst.  The maker notes are read apart, so one exifread cannot parse costs nothing else."""
    import exifread

    from cull import capture

    path = exif_jpeg(sharp_image(0), tmp_path / "a.jpg", "2024:05:01 10:11:12", "25", make="NIKON CORPORATION", model="NIKON Z 6")
    image = Image.open(path)
    exif = image.getexif()
    exif.get_ifd(0x8769)[0x927C] = b"Nikon\x00\x02\x10\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00"
    image.save(path, quality=92, exif=exif)
    real = exifread.process_file

    def with_serial(serial):
        def process(handle, details=True, **kw):
            tags = dict(real(handle, details=False, **kw))
            if details:
                tags["MakerNote SerialNumber"] = serial
            return tags
        return process

    cameras = set()
    for serial in ("3001111", "3002222", "\x02\x03\x02"):
        monkeypatch.setattr(exifread, "process_file", with_serial(serial))
        cameras.add(capture.read_capture(path).camera)
    assert cameras == {"NIKON CORPORATION NIKON Z 6 3001111", "NIKON CORPORATION NIKON Z 6 3002222", "NIKON CORPORATION NIKON Z 6"}

    def broken(handle, details=True, **kw):
        if details:
            raise ValueError("a maker note exifread cannot parse")
        return real(handle, details=False, **kw)

    monkeypatch.setattr(exifread, "process_file", broken)
    shot = capture.read_capture(path)
    assert shot.time_source == "exif" and shot.camera == "NIKON CORPORATION NIKON Z 6"


def test_a_cached_capture_of_the_earlier_reading_is_read_once_more_and_stored_as_current(tmp_path):
    """Footprints cached before maker notes were read are read again, once: the refreshed one kept the
    old version, so every later scan read the EXIF again."""
    from cull.capture import CAPTURE_VERSION
    from cull.scan import _current_capture

    path = exif_jpeg(sharp_image(0), tmp_path / "a.jpg", "2024:05:01 10:11:12", "25")
    stored = []

    class Cache:
        def put_footprint(self, photo, key, print_):
            stored.append(print_)

    old = replace(_print(np.zeros((64, 96), np.float32), 0.0, [0.9]), camera="old", capture_version=1,
                  ctime_ns=path.stat().st_ctime_ns)
    fresh = _current_capture(path, old, Cache(), "key")  # type: ignore[arg-type]
    assert fresh.camera == "Canon EOS R6" and fresh.capture_version == CAPTURE_VERSION and stored == [fresh]
    assert _current_capture(path, fresh, Cache(), "key") is fresh and len(stored) == 1  # type: ignore[arg-type]


def test_a_best_frame_the_user_rejected_in_darktable_sets_no_bar(library, tmp_path):
    """A reject the user gave in darktable (xmp:Rating -1 in the sidecar, not written by cull) counts like
    one in `cull review`: the frame sets no bar, so the user's remaining kept frame is not demoted."""
    work, demoted, frames = _demoted_burst(library, tmp_path)
    best = next(r for r in frames if r["verdict"] == "keep")
    Path(best["path"] + ".xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="-1"/></rdf:RDF></x:xmpmeta>')
    after = _keep_best_scan(work, tmp_path / "b.jsonl", "--no-xmp")
    assert any(after[r["path"]]["verdict"] == "keep" for r in frames if r["path"] != best["path"])


def test_a_cull_reject_is_not_taken_for_the_users():
    from cull.xmp import Packet, Verdict, merge, user_rejection

    ours = merge(None, Verdict("reject", 0.1, "defocus", "m")).packet
    assert user_rejection(Packet(ours)) is None  # cull's own reject, recorded in cull:Changed
    theirs = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
              b'<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="-1"/></rdf:RDF></x:xmpmeta>')
    assert user_rejection(Packet(theirs)) == "user rejected it (xmp:Rating)"


def test_keep_best_does_not_demote_a_frame_sharp_where_the_best_frame_is_soft():
    """Focus on another plane: the subject sharp in one frame, the (larger) background in the other. The
    background frame wins on the mean of the shared regions, but the subject frame holds sharp regions the
    best frame lacks, so it is not demoted."""
    from cull.bursts import Ranked, clearly_softer

    best = Ranked("back.jpg", "b", 1, 2, 0.80, 0.8, 5, (0.95, 0.95, 0.95, 0.95, 0.20))
    subject = Ranked("subject.jpg", "b", 2, 2, 0.60, 0.4, 5, (0.40, 0.40, 0.40, 0.40, 0.98))
    evenly_soft = Ranked("soft.jpg", "b", 3, 3, 0.45, 0.2, 5, (0.45, 0.45, 0.45, 0.45, 0.45))
    assert not clearly_softer(subject, best)
    assert clearly_softer(evenly_soft, best)


def test_frames_timed_only_by_modify_date_need_the_stricter_look_alike_gate(tmp_path):
    """Batch exports and film scans carry only EXIF ModifyDate, the same second for unrelated photos:
    they are grouped as cautiously as frames timed by the file (two unrelated photos 0.6 alike used to
    form a burst)."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Scanner", "S1", "2024:05:01 10:11:12"  # ModifyDate only
    sharp_image(0, 0.3).save(tmp_path / "a.jpg", exif=exif)
    assert read_capture(tmp_path / "a.jpg").time_source == "modified"
    loose = _look_alike_frames(6, "exif", 0.65)
    assert group_bursts(loose) != []
    assert group_bursts([replace(f, time_source="modified") for f in loose]) == []
