"""Scans that always finish: dying workers, the card the user gave, cache faults, odd names and files."""

from __future__ import annotations

import csv
import json
import os
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
    original = cull.analyse.decode_levels

    def decode(path: Path, long_side: int):  # type: ignore[no-untyped-def]
        if Path(path).name.startswith("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, long_side)

    cull.analyse.decode_levels = decode  # type: ignore[assignment]


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
    # reject thresholds alone do not change scores: same fingerprint, cache still used
    stricter = load_card(custom_card(tmp_path / "cards2", thresholds__lenient={**card.thresholds["lenient"].as_dict(), "reject": 0.3}))
    assert stricter.fingerprint == card.fingerprint
    # the highest keep threshold is where scoring stops early: another one, another fingerprint
    keener = load_card(custom_card(tmp_path / "cards4", thresholds__lenient={"keep": 0.99, "reject": 0.5}))
    assert keener.sure_keep != card.sure_keep and keener.fingerprint != card.fingerprint
    # another tile grid chooses other patches: another fingerprint
    side_by_side = load_card(custom_card(tmp_path / "cards3", analysis__tile_stride=64))
    assert side_by_side.fingerprint != card.fingerprint


def test_an_early_stopped_score_of_a_card_with_a_lower_keep_is_not_reused(tmp_path, card):
    """A photo whose first patches reach the card's highest keep is scored no further: its stored score
    is only a lower bound.  A card with a higher keep (two calibrated cards of one base, say) must not read
    it as a full score: a sharp photo came out uncertain, or rejected at strict, after such a scan."""
    photos = tmp_path / "p"
    for i in range(3):  # softly blurred: the first 8 patches' best 3 pass 0.2, all 64 score higher still
        save(blurred_image(i, 1.0), photos / f"soft{i}.jpg")
    low = {"keep": 0.2, "reject": 0.1}
    eager = load_card(custom_card(tmp_path / "cards", thresholds__lenient=low, thresholds__normal=low, thresholds__strict=low))
    stopped = scan([photos], eager, ScanOptions(workers=1))
    after = scan([photos], card, ScanOptions(workers=1, strictness="normal"))
    fresh = scan([photos], card, ScanOptions(workers=1, strictness="normal", use_cache=False))
    assert any(s.photo.score < f.photo.score - 1e-6 for s, f in zip(stopped.results, fresh.results))  # some stopped early
    assert not any(r.cached for r in after.results)
    assert [(r.verdict, r.photo.score) for r in after.results] == [(r.verdict, r.photo.score) for r in fresh.results]


def test_a_card_without_a_tile_stride_keeps_its_form_and_fingerprint():
    """Cards written before the tile stride existed (cull calibrate's among them) judge with tiles side
    by side, and neither their JSON form nor their score-cache key gains the new setting."""
    from dataclasses import asdict, replace

    from cull.card import AnalysisSpec, analysis_dict

    spec = AnalysisSpec()
    assert spec.tile_step == spec.patch_size and "tile_stride" not in analysis_dict(spec)
    before = {k: v for k, v in asdict(spec).items() if k != "tile_stride"}  # the form before the setting
    assert analysis_dict(spec) == before
    assert analysis_dict(replace(spec, tile_stride=32))["tile_stride"] == 32


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


def test_the_cache_keeps_the_motion_evidence_and_upgrades_an_older_culls_table(tmp_path):
    """The steady path decides on the kind head's P(motion): a cached score carries it.  A cache
    written before the column existed gains it (read-only, it is simply not used)."""
    import sqlite3

    from cull.cache import ScoreCache
    from cull.score import PhotoScore

    db = tmp_path / "c.sqlite"
    with sqlite3.connect(db) as old:
        old.execute("CREATE TABLE scores_v2 (path BLOB NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
                    "model TEXT NOT NULL, score REAL, patches INTEGER NOT NULL, kind TEXT, sharp_share REAL NOT NULL, "
                    "PRIMARY KEY (path, model))")
        old.execute("INSERT INTO scores_v2 VALUES (?, 1, 2, 'old', 0.5, 8, NULL, 0.1)", (b"/old.jpg",))
    with ScoreCache(db, "model-a", readonly=True) as cache:
        assert cache.get(tmp_path / "a.jpg", (10, 20)) is None  # nothing to read, no error
    photo = PhotoScore(0.9, 12, "sharp", 0.5, motion=0.25)
    with ScoreCache(db, "model-a") as cache:
        cache.put(tmp_path / "a.jpg", (10, 20), photo)
    with ScoreCache(db, "model-a", readonly=True) as cache:
        assert cache.get(tmp_path / "a.jpg", (10, 20)) == photo
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT COUNT(*) FROM scores_v2").fetchone()[0] == 2  # the old row is still there


def test_a_file_changed_during_the_scan_is_not_cached(tmp_path, card, monkeypatch):
    """The score of a file replaced while it was being scanned must not be stored under the key (size,
    mtime) read before: once the original comes back with its mtime (an undo, a sync), that stale score
    would be served for it."""
    photos = photos_folder(tmp_path / "p", 1)
    sharp = photos / "s0.jpg"
    original_bytes, original_ns = sharp.read_bytes(), sharp.stat().st_mtime_ns
    decode = cull.analyse.decode_levels

    def replaced_while_scanning(path, long_side):
        if path.name == "s0.jpg":
            save(blurred_image(0, 8), path)  # another program rewrites the photo mid-scan
        return decode(path, long_side)

    monkeypatch.setattr(cull.analyse, "decode_levels", replaced_while_scanning)
    replaced = scan([photos], card, ScanOptions(workers=1)).results[1]
    assert replaced.verdict is None and "changed since it was judged" in (replaced.error or "")  # tests/test_scan_changed.py
    monkeypatch.setattr(cull.analyse, "decode_levels", decode)
    sharp.write_bytes(original_bytes)
    os.utime(sharp, ns=(original_ns, original_ns))
    again = {r.path.name: r for r in scan([photos], card, ScanOptions(workers=1)).results}
    assert again["b0.jpg"].cached and not again["s0.jpg"].cached
    assert again["s0.jpg"].verdict.value == "keep"


# --- review D4: dead workers never lose the scan ---


def test_a_worker_killed_on_one_file_costs_only_that_file(tmp_path, card):
    photos = photos_folder(tmp_path / "p", 2)
    save(sharp_image(0), photos / "crash_me.jpg")
    result = scan([photos], card, ScanOptions(workers=2, use_cache=False), worker_setup=kill_on_crash_names)
    by_name = {r.path.name: r for r in result.results}
    assert set(by_name) == {"s0.jpg", "s1.jpg", "b0.jpg", "b1.jpg", "crash_me.jpg"}
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
    assert "3 files: " in result.stdout and "crash.jpg: worker process crashed" in result.stderr


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


# --- report format (docs/report-format.md), file modes, non-UTF-8 names (fault D8) ---

REPORT_FIELDS = ["path", "abs_path", "verdict", "score", "kind", "partner", "partner_abs", "size", "mtime", "error",
                 "reason", "report_version", "burst", "burst_rank", "burst_size", "protected"]


def test_report_rows_carry_the_versioned_fields_in_order(tmp_path, monkeypatch):
    photos = tmp_path / "p"
    save(sharp_image(0), photos / "IMG_1.JPG")
    (photos / "IMG_1.CR2").write_bytes(b"partner")
    (photos / "zero.jpg").write_bytes(b"")
    os.symlink(photos / "gone.jpg", photos / "broken.jpg")
    monkeypatch.chdir(tmp_path)
    for suffix in (".jsonl", ".csv"):
        result = run("scan", "p", "--workers", "1", "--no-xmp", "--report", f"r{suffix}")
        assert result.exit_code == 1, result.output
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert all(list(r) == REPORT_FIELDS for r in rows)
    by_name = {Path(r["path"]).name: r for r in rows}
    good = by_name["IMG_1.JPG"]
    info = (photos / "IMG_1.JPG").stat()
    assert good["path"] == "p/IMG_1.JPG" and good["abs_path"] == str(photos / "IMG_1.JPG")
    assert good["partner"] == "p/IMG_1.CR2" and good["partner_abs"] == str(photos / "IMG_1.CR2")
    assert good["size"] == info.st_size and isinstance(good["size"], int) and good["mtime"] == info.st_mtime
    assert good["verdict"] == "keep" and good["error"] is None and good["report_version"] == 1
    assert by_name["zero.jpg"]["error"].startswith("empty file") and by_name["zero.jpg"]["verdict"] is None
    broken = by_name["broken.jpg"]
    assert broken["abs_path"] == str(photos / "broken.jpg") and broken["size"] is None and broken["report_version"] == 1
    with open(tmp_path / "r.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames == REPORT_FIELDS
        csv_rows = {Path(r["path"]).name: r for r in reader}
    assert csv_rows["IMG_1.JPG"]["size"] == str(info.st_size) and csv_rows["zero.jpg"]["verdict"] == ""


def test_reports_get_the_umask_mode_not_0600(tmp_path, monkeypatch):
    photos = photos_folder(tmp_path / "p", 1)
    old = os.umask(0o022)
    try:
        assert run("scan", photos, "-j", "1", "--no-xmp", "--report", tmp_path / "r.csv").exit_code == 0
        labelled = tmp_path / "labelled"
        save(sharp_image(0), labelled / "sharp" / "a.jpg")
        save(blurred_image(0, 6), labelled / "defocused_blurred" / "a.jpg")
        result = run("eval", labelled, "-j", "1", "--json", tmp_path / "e.json")
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "e.json").stat().st_mode & 0o777 == 0o644


def test_a_name_that_is_not_utf8_is_scanned_reported_and_listed(tmp_path):
    photos = tmp_path / "p"
    photos.mkdir()
    odd = os.fsdecode(bytes(photos) + b"/caf\xe9.jpg")
    save(blurred_image(0, 6), Path(odd))
    save(sharp_image(1), photos / "good.jpg")
    env = {**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache"), "PYTHONIOENCODING": "utf-8"}
    for report in ("r.jsonl", "r.csv", "r2.jsonl"):  # the third: every score from the cache
        proc = subprocess.run(
            [sys.executable, "-m", "cull", "scan", str(photos), "-j", "1", "--show", "all", "--report",
             str(tmp_path / report)], capture_output=True, timeout=120, env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert b"caf\\xe9.jpg" in proc.stdout and b"Traceback" not in proc.stderr
    assert b"(2 from cache)" in proc.stdout
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text(encoding="ascii").splitlines()]
    assert "\\udce9" in (tmp_path / "r.jsonl").read_text()  # escaped, as documented
    assert {os.fsencode(r["path"]) for r in rows} == {bytes(photos) + b"/caf\xe9.jpg", bytes(photos) + b"/good.jpg"}
    assert all(r["verdict"] in ("keep", "uncertain", "reject") for r in rows)
    raw_csv = (tmp_path / "r.csv").read_bytes()
    assert b"/caf\xe9.jpg," in raw_csv  # the original bytes come back
    assert Path(odd + ".xmp").exists()


# --- usage errors found before any work (review D15) ---


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--report", "{tmp}/missing/r.jsonl"], "does not exist"),
        (["--report", "{tmp}/afile/r.jsonl"], "does not exist"),
        (["--report", "{tmp}/r.jsonl", "--dry-run"], "--dry-run writes nothing"),
        (["--embed", "--no-xmp"], "--no-xmp writes no XMP"),
        (["--report", "{tmp}/r.txt"], "must end in .jsonl or .csv"),
    ],
)
def test_contradictory_or_unwritable_options_exit_2_before_any_work(tmp_path, monkeypatch, extra, message):
    import cull.scan

    (tmp_path / "afile").write_text("x")
    photos = photos_folder(tmp_path / "p", 1)
    monkeypatch.setattr(cull.scan, "scan", lambda *a, **k: pytest.fail("scanned despite a usage error"))
    result = run("scan", photos, *[e.format(tmp=tmp_path) for e in extra])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not list(photos.glob("*.xmp"))


def test_eval_json_to_a_missing_folder_is_exit_2(tmp_path):
    labelled = tmp_path / "labelled"
    save(sharp_image(0), labelled / "sharp" / "a.jpg")
    result = run("eval", labelled, "--json", tmp_path / "missing" / "e.json")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- an unusable cache folder (fault D9) ---


def test_cache_dir_that_is_a_file_warns_once_and_scans(tmp_path, monkeypatch, caplog):
    notadir = tmp_path / "notadir"
    notadir.write_text("x")
    monkeypatch.setenv("CULL_CACHE_DIR", str(notadir))
    photos = photos_folder(tmp_path / "p", 1)
    with caplog.at_level("WARNING", logger="cull.cache"):
        result = run("scan", photos, "-j", "1")
        assert run("scan", photos, "-j", "1", "--dry-run").exit_code == 0
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if r.name == "cull.cache"]
    assert len(warnings) == 1 and "unusable (not a folder: a file, or a link to nothing or to itself); scanning without it" in warnings[0]
    assert "2 files: " in result.stdout


def test_cache_dir_under_a_read_only_parent_warns_and_scans(tmp_path):
    from tests.conftest import drop_dac_override

    locked = tmp_path / "locked"
    locked.mkdir()
    photos = photos_folder(tmp_path / "p", 1)
    os.chmod(locked, 0o555)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cull", "scan", str(photos), "-j", "1", "--no-xmp"], capture_output=True, text=True,
            timeout=120, preexec_fn=drop_dac_override, env={**os.environ, "CULL_CACHE_DIR": str(locked / "cache")},
        )
    finally:
        os.chmod(locked, 0o755)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("unusable") == 1 and "Traceback" not in proc.stderr


# --- the partner retry (no real RAW needed: a RAW-named file with JPEG content is decoded by content) ---


def test_a_corrupt_jpeg_is_judged_by_its_raw_named_partner(tmp_path, card):
    photos = tmp_path / "p"
    photos.mkdir()
    (photos / "DSC_1.jpg").write_bytes(b"\xff\xd8\xff broken")
    save(sharp_image(0), photos / "DSC_1.NEF", format="JPEG")  # e.g. a camera that writes JPEG data as .nef
    result = scan([photos], card, ScanOptions(workers=1, use_cache=False))
    [only] = result.results
    assert only.path.name == "DSC_1.NEF" and only.partner.name == "DSC_1.jpg"
    assert only.error is None and only.verdict.value == "keep"


# --- decompression bombs: refused before decoding, memory stays small (fault D7) ---


def _png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A valid PNG header; with ``rows`` that many real compressed gray rows (the rest missing)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = b"\0" + b"\x80" * width
    idat = b"".join(z.compress(row) for _ in range(rows or 0)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_bombs_are_refused_and_a_two_worker_scan_stays_small(tmp_path):
    photos = tmp_path / "bombs"
    photos.mkdir()
    for i in range(4):
        (photos / f"big{i}.png").write_bytes(_png_bomb(28000, 28000, rows=100))
    (photos / "wide.png").write_bytes(_png_bomb(12000, 10000, rows=100))  # 120 MP: over the PNG limit
    report = tmp_path / "r.jsonl"
    scan_cmd = [sys.executable, "-m", "cull", "scan", str(photos), "-j", "2", "--no-xmp", "--report", str(report)]
    measure = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
               "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")  # every waited descendant
    proc = subprocess.run([sys.executable, "-c", measure, *scan_cmd], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "c")})
    rc, peak_kb = map(int, proc.stdout.split()[-2:])
    assert rc == 1, proc.stderr
    rows = {Path(r["path"]).name: r["error"] for r in map(json.loads, report.read_text().splitlines())}
    assert all("too large to analyse safely" in e and "the limit for PNG is 100 MP" in e for e in rows.values()), rows
    assert "784 MP" in rows["big0.png"] and "120 MP" in rows["wide.png"]
    assert peak_kb < 500_000  # the largest process of the tree: parent + 2 workers stay far under 1.5 GB


# --- the card's analysis settings are checked when it is loaded (review D18) ---


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"analysis__first_pass": 2}, "first_pass (2) must be at least max(aggregate.k, min_patches) = 4"),
        ({"aggregate__k": 16}, "first_pass (8) must be at least max(aggregate.k, min_patches) = 16"),
        ({"analysis__min_patches": 100}, "need 1 <= min_patches <= max_patches"),
        ({"analysis__dark_mean": 0.99}, "need 0 <= dark_mean < bright_mean <= 1"),
        ({"analysis__tile_stride": 24}, "tile_stride must divide patch_size (64), got 24"),
        ({"analysis__tile_stride": "32"}, "tile_stride must be a whole number, got '32'"),  # hand-edited cards
        ({"analysis__first_pass": "8"}, "first_pass must be a whole number, got '8'"),
        ({"analysis__min_std": True}, "min_std must be a number, got True"),
    ],
)
def test_contradictory_analysis_settings_are_a_model_error(tmp_path, changes, message):
    from cull.errors import ModelError

    path = custom_card(tmp_path, **changes)
    with pytest.raises(ModelError, match="invalid analysis settings") as raised:
        load_card(path)
    assert message in str(raised.value)
    result = run("scan", tmp_path, "--model", path)
    assert result.exit_code == 2 and message in result.stderr


@pytest.mark.parametrize(
    "lenient,message",
    [
        ({"keep": True, "reject": False}, "lenient thresholds: keep must be a number, got True"),  # every photo was uncertain
        ({"keep": "0.9", "reject": 0.1}, "lenient thresholds: keep must be a number, got '0.9'"),
        ({"keep": 0.2, "reject": 0.5}, "lenient thresholds: thresholds must satisfy 0 <= reject <= keep <= 1"),
    ],
)
def test_hand_edited_thresholds_are_refused_naming_the_card_and_strictness(tmp_path, lenient, message):
    from cull.errors import ModelError

    path = custom_card(tmp_path, thresholds__lenient=lenient)
    with pytest.raises(ModelError) as raised:
        load_card(path)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)


class _FailingScorer:
    kind_labels: tuple[str, ...] = ()

    def score(self, batch):  # type: ignore[no-untyped-def]
        raise RuntimeError("inference blew up")


def failing_scorer(card):  # type: ignore[no-untyped-def]
    return _FailingScorer()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_chunk_that_raises_fails_its_files_not_the_scan(tmp_path, card, workers):
    photos = photos_folder(tmp_path / "p", 1)
    result = scan([photos], card, ScanOptions(workers=workers, use_cache=False), scorer_factory=failing_scorer)
    assert [r.error for r in result.results] == ["analysis failed: RuntimeError: inference blew up"] * 2


def test_one_file_left_with_several_workers_still_runs_in_a_worker(tmp_path, card):
    photos = tmp_path / "p"
    save(sharp_image(0), photos / "crash.jpg")
    result = scan([photos], card, ScanOptions(workers=2, use_cache=False), worker_setup=kill_on_crash_names)
    assert [(r.path.name, r.error) for r in result.results] == [("crash.jpg", "worker process crashed while reading this file")]


def test_a_cached_rescan_starts_no_worker_and_loads_no_model(tmp_path, card, monkeypatch):
    import cull.runner

    photos = photos_folder(tmp_path / "p", 1)
    scan([photos], card, ScanOptions(workers=1))
    monkeypatch.setattr(cull.runner, "ProcessPoolExecutor", lambda *a, **k: pytest.fail("started a pool"))
    monkeypatch.setattr(cull.runner, "OnnxScorer", lambda *a, **k: pytest.fail("loaded the model"))
    for workers in (1, 2):
        assert all(r.cached for r in scan([photos], card, ScanOptions(workers=workers)).results)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_photo_head_reading_an_output_the_model_lacks_is_a_model_error(tmp_path, workers):
    """A hand-edited card (or one beside another model) whose photo head names an output the ONNX file
    does not have: a one-line model error and exit 2, in process and from worker processes alike."""
    path = custom_card(tmp_path / "card", photo_head__output="pooled")
    photos = photos_folder(tmp_path / "photos", 2)
    result = run("scan", photos, "--model", path, "--workers", workers, "--no-xmp")
    assert result.exit_code == 2 and "lacks outputs ['pooled'] named by its card" in result.stderr
    assert "Traceback" not in result.stderr and not list(photos.glob("*.xmp"))


def test_the_summary_counts_each_file_once_and_xmp_failures_apart(tmp_path):
    """A broken link is a file that could not be read, not a photo error on top of the photos; a
    sidecar that cannot be written is an XMP failure of a photo that was judged."""
    save(blurred_image(1, 8.0), tmp_path / "blur.jpg", quality=92)
    save(sharp_image(2), tmp_path / "sharp.jpg", quality=92)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (tmp_path / "blur.jpg.xmp").write_bytes(b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
                                            b'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"/></x:xmpmeta>')
    (tmp_path / "blur.jpg.xmp").chmod(0o444)
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "--workers", "1"])
    assert result.exit_code == 1
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("4 files: 1 keep, ") and ", 2 unreadable (" in summary, summary
    assert "XMP: 0 written, 1 unchanged, 1 failed" in summary, summary
    assert "error: " in result.stderr and "read-only file" in result.stderr


def test_a_name_with_a_newline_or_an_escape_stays_on_one_line_of_the_listing(tmp_path):
    save(blurred_image(1, 8.0), tmp_path / "new\nline.jpg", quality=92)
    save(blurred_image(2, 8.0), tmp_path / "\x1b[31mred.jpg", quality=92)
    result = CliRunner().invoke(app, ["scan", str(tmp_path), "--workers", "1", "--no-xmp"])
    assert result.exit_code == 0, result.output
    listed = [line for line in result.stdout.splitlines() if line.startswith(("reject", "uncertain"))]
    assert len(listed) == 2 and any("new\\nline.jpg" in line for line in listed), listed
    assert "\x1b" not in result.stdout and any("\\x1b[31mred.jpg" in line for line in listed)


@pytest.mark.parametrize("no_xmp", [False, True])
def test_a_reject_the_user_rated_is_marked_protected_in_the_report(tmp_path, no_xmp):
    """The report keeps cull's verdict, and says why the shot is not marked or moved as a reject."""
    photos = tmp_path / "p"
    save(blurred_image(1, 8.0), photos / "rated.jpg", quality=92)
    save(blurred_image(2, 8.0), photos / "plain.jpg", quality=92)
    (photos / "rated.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/'
                                      '02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/'
                                      'xap/1.0/" xmp:Rating="3"/></rdf:RDF></x:xmpmeta>')
    report = tmp_path / "r.jsonl"
    result = CliRunner().invoke(app, ["scan", str(photos), "--workers", "1", "--report", str(report)]
                                + (["--no-xmp"] if no_xmp else []))
    assert result.exit_code == 0, result.output
    rows = {Path(r["path"]).name: r for r in map(json.loads, report.read_text().splitlines())}
    assert rows["rated.jpg"]["verdict"] == "reject" and rows["rated.jpg"]["protected"] == "user rated it 3 stars"
    assert rows["plain.jpg"]["verdict"] == "reject" and rows["plain.jpg"]["protected"] is None
