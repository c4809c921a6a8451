"""Scans that always finish: dying workers, the card the user gave, cache faults, odd names and files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import cull.analyse
from cull.card import default_card_path, load_card
from cull.cli import app
from cull.scan import ScanOptions, scan
from tests.conftest import blurred_image, save, sharp_image

runner = CliRunner()


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


# --- test hooks: module-level so that spawn workers can unpickle them (passed as worker_setup) ---


def kill_on_crash_names() -> None:
    """In a worker: decoding a file named crash* kills the process, as the OOM killer or a LibRaw segfault would."""
    original = cull.analyse.decode_gray

    def decode(path: Path, long_side: int):  # type: ignore[no-untyped-def]
        if Path(path).name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, long_side)

    cull.analyse.decode_gray = decode  # type: ignore[assignment]


def exit_at_start() -> None:
    os._exit(3)


def custom_card(folder: Path, **changes: object) -> Path:
    """A copy of the shipped card under another name, in another folder, naming the shipped ONNX file."""
    shipped = default_card_path()
    raw = json.loads(shipped.read_text())
    raw["model_file"] = str(shipped.parent / raw["model_file"])
    for key, value in changes.items():
        section, _, name = key.partition("__")
        raw[section][name] = value
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mycard.json"
    path.write_text(json.dumps(raw))
    return path


def photos_folder(root: Path, n: int = 3) -> Path:
    for i in range(n):
        save(sharp_image(i), root / f"s{i}.jpg")
        save(blurred_image(i, 3), root / f"b{i}.jpg")
    return root


# --- review D3: workers use the card the user gave ---


def test_workers_use_the_given_card_not_the_json_beside_the_model(tmp_path, card):
    photos = photos_folder(tmp_path / "p", 2)
    other = load_card(custom_card(tmp_path / "cards", aggregate__k=64, analysis__first_pass=64))
    options = dict(use_cache=False, batch_size=32)
    default = scan([photos], card, ScanOptions(workers=1, **options))
    one = scan([photos], other, ScanOptions(workers=1, **options))
    two = scan([photos], other, ScanOptions(workers=2, **options))
    assert [r.photo.score for r in two.results] == pytest.approx([r.photo.score for r in one.results], abs=1e-5)
    assert [r.verdict for r in two.results] == [r.verdict for r in one.results]
    # k = 64 really is another analysis: the mean of all patches is lower than the mean of the best 3
    assert any(abs(a.photo.score - b.photo.score) > 0.05 for a, b in zip(one.results, default.results))


# --- review D5: the cache key is the card's fingerprint ---


def test_same_onnx_other_aggregation_is_not_a_stale_cache_hit(tmp_path, card):
    photos = photos_folder(tmp_path / "p", 1)
    first = scan([photos], card, ScanOptions(workers=1))
    assert not any(r.cached for r in first.results)
    assert all(r.cached for r in scan([photos], card, ScanOptions(workers=1)).results)
    other = load_card(custom_card(tmp_path / "cards", aggregate__k=64, analysis__first_pass=64))
    assert other.sha256 == card.sha256 and other.fingerprint != card.fingerprint
    fresh = scan([photos], other, ScanOptions(workers=1))
    assert not any(r.cached for r in fresh.results)
    assert all(r.cached for r in scan([photos], other, ScanOptions(workers=1)).results)
    # thresholds alone do not change scores: same fingerprint, cache still used
    stricter = load_card(custom_card(tmp_path / "cards2", thresholds__lenient={"keep": 0.99, "reject": 0.5}))
    assert stricter.fingerprint == card.fingerprint


def test_cache_lookup_is_keyed_by_the_model(tmp_path):
    from cull.cache import ScoreCache
    from cull.score import PhotoScore

    db = tmp_path / "c.sqlite"
    photo = tmp_path / "a.jpg"
    with ScoreCache(db, "model-a") as cache:
        cache.put(photo, (10, 20), PhotoScore(0.9, 12, "sharp", 0.5))
    with ScoreCache(db, "model-b") as cache:
        assert cache.get(photo, (10, 20)) is None
    with ScoreCache(db, "model-a") as cache:
        assert cache.get(photo, (10, 20)) == PhotoScore(0.9, 12, "sharp", 0.5)
        assert cache.get(photo, (10, 21)) is None


def test_a_file_changed_during_the_scan_is_not_cached(tmp_path, card, monkeypatch):
    photos = photos_folder(tmp_path / "p", 1)
    original = cull.analyse.decode_gray

    def decode_then_touch(path, long_side):
        gray = original(path, long_side)
        if path.name == "s0.jpg":
            os.utime(path, ns=(10**18, 10**18))  # edited while being decoded
        return gray

    monkeypatch.setattr(cull.analyse, "decode_gray", decode_then_touch)
    scan([photos], card, ScanOptions(workers=1))
    monkeypatch.setattr(cull.analyse, "decode_gray", original)
    again = {r.path.name: r.cached for r in scan([photos], card, ScanOptions(workers=1)).results}
    assert again == {"b0.jpg": True, "s0.jpg": False}


# --- review D4: dead workers never lose the scan ---


def test_a_worker_killed_on_one_file_costs_only_that_file(tmp_path, card):
    photos = photos_folder(tmp_path / "p", 3)
    save(sharp_image(0), photos / "crash_me.jpg")
    result = scan([photos], card, ScanOptions(workers=2, use_cache=False), worker_setup=kill_on_crash_names)
    by_name = {r.path.name: r for r in result.results}
    assert set(by_name) == {"s0.jpg", "s1.jpg", "s2.jpg", "b0.jpg", "b1.jpg", "b2.jpg", "crash_me.jpg"}
    assert by_name["crash_me.jpg"].error == "worker process crashed while reading this file"
    assert all(r.photo is not None and r.error is None for n, r in by_name.items() if n != "crash_me.jpg")


def test_cli_scan_with_a_crashing_file_writes_report_and_xmp_and_exits_1(tmp_path, monkeypatch):
    import cull.scan

    photos = photos_folder(tmp_path / "p", 1)
    save(blurred_image(1, 6), photos / "crash.jpg")
    original = cull.scan.scan
    monkeypatch.setattr(cull.scan, "scan", lambda *a, **k: original(*a, **k, worker_setup=kill_on_crash_names))
    report = tmp_path / "r.jsonl"
    result = run("scan", photos, "--workers", "2", "--report", report)
    assert result.exit_code == 1, result.output
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert rows["crash.jpg"]["error"] == "worker process crashed while reading this file"
    assert rows["b0.jpg"]["verdict"] in ("reject", "uncertain") and (photos / "b0.jpg.xmp").exists()
    assert "3 photos" in result.stdout and "crash.jpg: worker process crashed" in result.stderr


def test_workers_that_die_at_start_end_with_a_clear_error(tmp_path, card):
    from cull.errors import WorkerError

    photos = photos_folder(tmp_path / "p", 1)
    with pytest.raises(WorkerError, match="die while starting"):
        scan([photos], card, ScanOptions(workers=2, use_cache=False), worker_setup=exit_at_start)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_that_will_not_load_is_a_clean_exit_2(tmp_path, workers):
    from cull.card import file_sha256

    photos = photos_folder(tmp_path / "p", 1)
    onnx = tmp_path / "cards" / "cut.onnx"
    onnx.parent.mkdir()
    onnx.write_bytes((default_card_path().parent / "focus.onnx").read_bytes()[:5000])
    card_path = custom_card(tmp_path / "cards")
    raw = json.loads(card_path.read_text())
    raw.update(model_file="cut.onnx", sha256=file_sha256(onnx))
    card_path.write_text(json.dumps(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "cull", "scan", str(photos), "--model", str(card_path), "--workers", workers],
        capture_output=True, text=True, timeout=120, env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "c")},
    )
    assert proc.returncode == 2, proc.stderr
    assert "cannot load model" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(photos.glob("*.xmp"))
