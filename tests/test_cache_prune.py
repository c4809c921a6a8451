"""`cull cache info` / `cull cache prune`: rows of photos that are gone go, everything else stays."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

import pytest

from cull import cache_prune
from cull.cache import SCHEMA, FactCache, ScoreCache
from cull.cache_prune import cache_failure_hint, describe_cache, path_state, prune_cache
from cull.card import load_card
from cull.cli import app
from cull.score import PhotoScore
from tests.conftest import blurred_image, drop_dac_override, save, sharp_image

runner = CliRunner()


def scan(folder: Path, env: dict[str, str], tmp: Path) -> tuple[int, str]:
    """(photos in the report, the summary line)"""
    report = tmp / "report.jsonl"
    result = runner.invoke(app, ["scan", str(folder), "--workers", "1", "--no-xmp", "--report", str(report)], env=env)
    assert result.exit_code == 0, result.output
    return len([json.loads(line) for line in report.read_text().splitlines()]), result.output


def rows(cache: Path, table: str) -> list[bytes]:
    with sqlite3.connect(cache) as db:
        return sorted(row[0] for row in db.execute(f"SELECT path FROM {table}"))


def test_prune_drops_gone_photos_keeps_unreachable_folders_and_other_models_on_request(tmp_path):
    env = {"CULL_CACHE_DIR": str(tmp_path / "cache")}
    library = tmp_path / "library"
    save(sharp_image(1), library / "day1" / "a.jpg")
    save(blurred_image(2, 6), library / "day1" / "b.jpg")
    save(sharp_image(3), library / "day2" / "c.jpg")
    photos, summary = scan(library, env, tmp_path)
    assert photos == 3 and "(0 from cache)" in summary
    cache = Path(env["CULL_CACHE_DIR"]) / "scores.sqlite"
    with FactCache(cache) as facts:  # an XMP fact of the photo that will be deleted
        facts.put((library / "day1" / "b.jpg").absolute(), "stamp", merged="x")
    with ScoreCache(cache, "an-older-model") as old:  # a score left by an earlier model
        old.put((library / "day1" / "a.jpg").absolute(), (1, 1), PhotoScore(0.9, 8))

    (library / "day1" / "b.jpg").unlink()  # deleted
    shutil.move(library / "day2", tmp_path / "elsewhere")  # folder gone: a drive not mounted, say
    assert path_state(os.fsencode((library / "day1" / "b.jpg").absolute())) == "gone"
    assert path_state(os.fsencode((library / "day2" / "c.jpg").absolute())) == "unreachable"

    before = (rows(cache, "scores_v2"), rows(cache, "xmp_facts_v1"))
    counted = prune_cache(cache, dry_run=True)
    assert counted.gone["scores_v2"] == 1 and counted.gone["xmp_facts_v1"] == 1 and counted.unreachable_paths == 1
    assert (rows(cache, "scores_v2"), rows(cache, "xmp_facts_v1")) == before  # a dry run changes nothing

    result = runner.invoke(app, ["cache", "prune"], env=env)
    assert result.exit_code == 0, result.output
    assert "removed what was cached of 1 files that are gone (2 rows)" in result.output, result.output
    assert "kept 1 files whose folder is missing" in result.output and "compacted" in result.output
    kept = rows(cache, "scores_v2")
    assert os.fsencode((library / "day1" / "b.jpg").absolute()) not in kept
    assert os.fsencode((library / "day2" / "c.jpg").absolute()) in kept  # may come back with its drive
    assert rows(cache, "xmp_facts_v1") == []
    photos, summary = scan(library, env, tmp_path)
    assert photos == 1 and "(1 from cache)" in summary  # what is left still serves rescans

    contents = describe_cache(cache)
    current = load_card().fingerprint
    assert contents is not None and contents.scores_by_model == {current: 2, "an-older-model": 1}
    info = runner.invoke(app, ["cache", "info"], env=env)
    assert info.exit_code == 0 and f"{current[:12]}  (current)" in info.output and "an-older-mo" in info.output

    result = runner.invoke(app, ["cache", "prune", "--other-models"], env=env)
    assert result.exit_code == 0 and "and 1 scores of other models" in result.output, result.output
    assert describe_cache(cache).scores_by_model == {current: 2}  # type: ignore[union-attr]
    assert sorted(p.name for p in (library / "day1").iterdir()) == ["a.jpg"]  # photos untouched


def test_prune_beside_a_scan_reading_the_cache(tmp_path):
    """A scan reading the cache keeps its consistent view while rows go; it sees the pruned cache next time."""
    cache = tmp_path / "scores.sqlite"
    photo = save(sharp_image(4), tmp_path / "p.jpg")
    with ScoreCache(cache, "m") as scores:
        scores.put(photo.absolute(), (1, 1), PhotoScore(0.9, 8))
        scores.put((tmp_path / "gone.jpg").absolute(), (1, 1), PhotoScore(0.1, 8))
    reader = sqlite3.connect(cache, isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT COUNT(*) FROM scores_v2").fetchone()[0] == 2
    try:
        outcome = prune_cache(cache)
        assert reader.execute("SELECT COUNT(*) FROM scores_v2").fetchone()[0] == 2  # its snapshot
    finally:
        reader.execute("ROLLBACK")
    assert reader.execute("SELECT COUNT(*) FROM scores_v2").fetchone()[0] == 1
    reader.close()
    assert outcome.gone["scores_v2"] == 1 and rows(cache, "scores_v2") == [os.fsencode(photo.absolute())]
    # the reader kept the WAL from being truncated: said so (it used to claim all compacted, after 10 s)
    assert outcome.compacted and outcome.note is not None and "shrinks once it lets go" in outcome.note


def test_no_cache_yet(tmp_path):
    env = {"CULL_CACHE_DIR": str(tmp_path / "none")}
    assert "no score cache yet" in runner.invoke(app, ["cache", "info"], env=env).output
    assert runner.invoke(app, ["cache", "prune"], env=env).exit_code == 0
    assert not (tmp_path / "none").exists()  # looking creates nothing


def test_a_damaged_cache_is_named_not_a_traceback(tmp_path):
    env = {"CULL_CACHE_DIR": str(tmp_path)}
    (tmp_path / "scores.sqlite").write_bytes(b"not a database at all")
    for command in (["cache", "info"], ["cache", "prune"]):
        result = runner.invoke(app, command, env=env)
        assert result.exit_code == 1 and "file is not a database" in result.output, result.output
        assert "remove the file to start a new one" in result.output
        assert isinstance(result.exception, SystemExit)  # a clean exit, not an uncaught error
    assert (tmp_path / "scores.sqlite").read_bytes() == b"not a database at all"


def put_scores(cache: Path, paths: list[Path], model: str = "m") -> None:
    with ScoreCache(cache, model) as scores:
        for path in paths:
            scores.put(path, (1, 1), PhotoScore(0.5, 8))


def test_photos_at_the_top_of_an_unmounted_drive_keep_their_rows(tmp_path):
    """An unmounted drive leaves its mount point as an empty folder: the photos that were at its top
    counted as gone from a folder that exists, and their rows were dropped."""
    mount_point = tmp_path / "media" / "card"
    mount_point.mkdir(parents=True)
    library = tmp_path / "library"
    library.mkdir()
    (library / "kept.jpg").write_bytes(b"x")
    cache = tmp_path / "scores.sqlite"
    put_scores(cache, [mount_point / "IMG_1.jpg", mount_point / "IMG_2.jpg", library / "kept.jpg", library / "deleted.jpg"])
    assert path_state(os.fsencode(mount_point / "IMG_1.jpg")) == "unreachable"
    outcome = prune_cache(cache)
    assert (outcome.gone_paths, outcome.unreachable_paths) == (1, 2)
    assert rows(cache, "scores_v2") == sorted(os.fsencode(p) for p in (mount_point / "IMG_1.jpg", mount_point / "IMG_2.jpg", library / "kept.jpg"))


def test_paths_cull_never_writes_are_kept_and_odd_names_work(tmp_path):
    """A path with a NUL byte (a damaged row) made prune crash with a ValueError traceback; a relative
    or empty path was judged against the current folder.  Such rows are kept, as unreachable; a name
    that is not UTF-8 is pruned like any other; a path under a file (NotADirectoryError) is kept."""
    (tmp_path / "here.jpg").write_bytes(b"x")
    (tmp_path / "a-file").write_bytes(b"x")
    cache = tmp_path / "scores.sqlite"
    odd = [b"/nowhere/a\x00b.jpg", b"", b"relative.jpg", os.fsencode(tmp_path / "a-file") + b"/under.jpg"]
    latin1 = os.fsencode(tmp_path) + b"/caf\xe9.jpg"  # gone, from a folder that exists
    with sqlite3.connect(cache) as db:
        db.execute(SCHEMA)
        db.executemany("INSERT INTO scores_v2 VALUES (?, 1, 1, 'm', 0.5, 8, NULL, 0.1, NULL, NULL)", [(p,) for p in [*odd, latin1]])
    os.chdir(tmp_path)  # where "relative.jpg" would be judged gone
    outcome = prune_cache(cache)
    assert (outcome.gone_paths, outcome.unreachable_paths) == (1, 4)
    assert rows(cache, "scores_v2") == sorted(odd)
    assert runner.invoke(app, ["cache", "prune", "--dry-run"], env={"CULL_CACHE_DIR": str(tmp_path)}).exit_code == 0


def test_a_cache_from_an_older_cull_is_read_and_its_unused_table_dropped_on_request(tmp_path):
    """The first cull's table (text paths, "scores") is never read since: `cache info` did not show it
    and no prune ever dropped it.  Extra columns and missing tables are fine."""
    cache = tmp_path / "scores.sqlite"
    with sqlite3.connect(cache) as db:
        db.execute(SCHEMA.replace("scores_v2", "scores").replace("path BLOB", "path TEXT"))
        db.execute("INSERT INTO scores VALUES (?, 1, 1, 'm', 0.5, 8, NULL, 0.1, NULL, NULL)", (str(tmp_path / "a.jpg"),))
        db.execute(SCHEMA.replace("sharp_share REAL NOT NULL,", "sharp_share REAL NOT NULL, added_later TEXT,"))
        db.execute("INSERT INTO scores_v2 VALUES (?, 1, 1, 'm', 0.5, 8, NULL, 0.1, 'x', NULL, NULL)", (os.fsencode(tmp_path / "gone.jpg"),))
        db.execute("INSERT INTO scores_v2 VALUES (?, 1, 1, 'm', 0.5, 8, NULL, 0.1, 'x', NULL, NULL)", (str(tmp_path / "text.jpg"),))
    env = {"CULL_CACHE_DIR": str(tmp_path)}
    assert describe_cache(cache).older_rows == 1  # type: ignore[union-attr]
    info = runner.invoke(app, ["cache", "info"], env=env)
    assert info.exit_code == 0 and "1 scores kept by an older cull, unused" in info.output, info.output
    plain = prune_cache(cache)  # no footprints or fact table: nothing fails
    assert plain.gone == {"scores_v2": 1} and describe_cache(cache).older_rows == 1  # type: ignore[union-attr]
    result = runner.invoke(app, ["cache", "prune", "--other-models"], env=env)
    assert result.exit_code == 0 and "and 2 scores of other models" in result.output, result.output  # 'm' and the old table
    with sqlite3.connect(cache) as db:
        assert "scores" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert describe_cache(cache).older_rows == 0  # type: ignore[union-attr]


def run_as_user(args: list[str], cache_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cull", "cache", *args], capture_output=True, text=True, timeout=60,
                          preexec_fn=drop_dac_override, env={**os.environ, "CULL_CACHE_DIR": str(cache_dir)})


def test_a_read_only_cache_is_described_counted_and_refused_with_the_right_reason(tmp_path):
    """An ordinary user: in a read-only folder, `cache info` and `prune --dry-run` failed outright (a
    WAL cache cannot be opened read-only there); a prune that cannot write was called damaged, with
    the advice to remove the file."""
    folder = tmp_path / "cache"
    cache = folder / "scores.sqlite"
    put_scores(cache, [tmp_path / "gone.jpg"])
    (tmp_path / "here.jpg").write_bytes(b"x")
    before = cache.read_bytes()
    for locked in ("file", "folder"):
        os.chmod(cache if locked == "file" else folder, 0o444 if locked == "file" else 0o555)
        try:
            info = run_as_user(["info"], folder)
            counted = run_as_user(["prune", "--dry-run"], folder)
            pruned = run_as_user(["prune"], folder)
        finally:
            os.chmod(cache, 0o644)
            os.chmod(folder, 0o755)
        assert info.returncode == 0 and "1 scores by model m" in info.stdout, (locked, info.stdout + info.stderr)
        assert counted.returncode == 0 and "would remove what was cached of 1 files" in counted.stdout, counted.stderr
        assert pruned.returncode == 1 and "read-only for this user; nothing was changed" in pruned.stderr, pruned.stderr
        assert "remove the file" not in pruned.stderr and "Traceback" not in pruned.stderr
        assert cache.read_bytes() == before  # (SQLite may add its -wal/-shm files where it can)
        assert {p.name for p in folder.iterdir()} <= {"scores.sqlite", "scores.sqlite-wal", "scores.sqlite-shm"}
    assert "another cull is writing it" in (cache_failure_hint(sqlite3.OperationalError("database is locked")) or "")
    assert cache_failure_hint(sqlite3.DatabaseError("file is not a database")) is None


def test_a_cache_reached_through_a_link_stays_a_link(tmp_path):
    real = tmp_path / "elsewhere" / "scores.sqlite"
    put_scores(real, [tmp_path / "gone.jpg"])
    (tmp_path / "here.jpg").write_bytes(b"x")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "scores.sqlite").symlink_to(real)
    result = runner.invoke(app, ["cache", "prune"], env={"CULL_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 0 and "(1 rows)" in result.output and "compacted" in result.output, result.output
    assert (tmp_path / "cache" / "scores.sqlite").is_symlink() and rows(real, "scores_v2") == []
    assert os.listdir(tmp_path / "cache") == ["scores.sqlite"]


class _Interrupted(sqlite3.Connection):
    """A connection that is interrupted (Ctrl-C) on its second DELETE."""

    deletes = 0

    def execute(self, sql, *args):  # type: ignore[override]
        if sql.startswith("DELETE FROM"):
            _Interrupted.deletes += 1
            if _Interrupted.deletes == 2:
                raise KeyboardInterrupt
        return super().execute(sql, *args)


def test_an_interrupted_prune_leaves_the_cache_as_it_was(tmp_path, monkeypatch):
    cache = tmp_path / "scores.sqlite"
    put_scores(cache, [tmp_path / f"gone{i}.jpg" for i in range(50)])
    with FactCache(cache) as facts:
        facts.put(tmp_path / "gone1.jpg", "stamp", merged="x")
    (tmp_path / "here.jpg").write_bytes(b"x")
    before = {table: rows(cache, table) for table in ("scores_v2", "xmp_facts_v1")}
    connect = sqlite3.connect
    monkeypatch.setattr(cache_prune.sqlite3, "connect", lambda *a, **k: connect(*a, **k, factory=_Interrupted))
    with pytest.raises(KeyboardInterrupt):
        prune_cache(cache)
    assert _Interrupted.deletes == 2  # the first table's rows were deleted, then Ctrl-C
    monkeypatch.undo()
    assert {table: rows(cache, table) for table in before} == before
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert prune_cache(cache).gone == {"scores_v2": 50, "footprints_v1": 0, "xmp_facts_v1": 1}


def test_prune_beside_a_real_scan_writing_the_same_cache(tmp_path):
    """Two processes: a scan storing its scores while prunes run one after another; every prune
    succeeds, the scan loses none of its rows, and the file stays sound."""
    library = tmp_path / "library"
    image = sharp_image(0, 0.5)
    for i in range(300):
        save(image.rotate(i % 4 * 90), library / f"IMG_{i:04d}.jpg")
    cache_dir = tmp_path / "cache"
    cache = cache_dir / "scores.sqlite"
    put_scores(cache, [library / f"gone_{i}.jpg" for i in range(2000)])
    env = {**os.environ, "CULL_CACHE_DIR": str(cache_dir)}
    scan = subprocess.Popen([sys.executable, "-m", "cull", "scan", str(library), "--workers", "1", "--no-xmp"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outcomes = []
    try:
        while True:
            put_scores(cache, [library / f"gone_{len(outcomes)}_{i}.jpg" for i in range(100)])  # more keep coming
            outcomes.append(prune_cache(cache))
            if scan.poll() is not None:
                break
    finally:
        out, err = scan.communicate(timeout=300)
    assert scan.returncode == 0 and "could not update" not in err, err
    assert all(o.note is None for o in outcomes) and outcomes[0].gone["scores_v2"] == 2100
    assert sum(o.gone["scores_v2"] for o in outcomes) == 2000 + 100 * len(outcomes)
    assert rows(cache, "scores_v2") == sorted(os.fsencode(p.absolute()) for p in library.iterdir())
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_folders_this_user_cannot_look_into_keep_their_rows(tmp_path):
    locked, listless = tmp_path / "locked", tmp_path / "listless"
    for folder in (locked, listless):
        folder.mkdir()
        (folder / "there.jpg").write_bytes(b"x")
    kept = [locked / "a.jpg", locked / "there.jpg", listless / "b.jpg"]
    put_scores(tmp_path / "cache" / "scores.sqlite", [*kept, tmp_path / "gone.jpg"])
    os.chmod(locked, 0o000)
    os.chmod(listless, 0o311)  # may be searched, not listed
    try:
        result = run_as_user(["prune"], tmp_path / "cache")
    finally:
        os.chmod(locked, 0o755)
        os.chmod(listless, 0o755)
    assert result.returncode == 0 and "of 1 files that are gone" in result.stdout, result.stdout + result.stderr
    assert "kept 3 files whose folder is missing, empty or unreadable" in result.stdout
    assert rows(tmp_path / "cache" / "scores.sqlite", "scores_v2") == sorted(os.fsencode(p) for p in kept)


def test_info_and_prune_say_a_cache_folder_that_is_a_file_is_not_a_folder(tmp_path, monkeypatch):
    """As a scan warns; `no score cache yet` and `removed 0 files` (exit 0) hid it."""
    (tmp_path / "cachefile").write_bytes(b"not a folder")
    monkeypatch.setenv("CULL_CACHE_DIR", str(tmp_path / "cachefile"))
    for command in (["cache", "info"], ["cache", "prune"], ["cache", "prune", "--dry-run"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 1 and "not a folder" in result.stderr and "must be a folder" in result.stderr, command
    assert (tmp_path / "cachefile").read_bytes() == b"not a folder"
