"""`cull move` / `cull undo`: whole shots, journal, crash safety, devices, collisions, refusals."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import cull.move
from cull.cli import app
from cull.discover import Shot, discover
from cull.journal import journals
from cull.move import MoveError, execute, plan_moves, undo, validate_target
from tests.conftest import blurred_image, drop_dac_override, save, sharp_image


def snapshot(root: Path, skip: str = "_culled") -> dict[str, tuple[int, int, bytes]]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts and rel.parts[0] == skip:
            continue
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            out[rel.as_posix()] = (info.st_size, info.st_mtime_ns, path.read_bytes())
        elif path.is_dir():
            out[rel.as_posix() + "/"] = (0, 0, b"")
    return out


def make_shot(folder: Path, stem: str, raw: bool, jpeg: bool, sidecars: list[str], seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if raw:
        (folder / f"{stem}.CR2").write_bytes(os.urandom(64 + seed % 50))
    if jpeg:
        (folder / f"{stem}.JPG").write_bytes(b"\xff\xd8" + os.urandom(32 + seed % 20))
    main = f"{stem}.CR2" if raw else f"{stem}.JPG"
    for kind in sidecars:
        name = {"adobe": f"{stem}.xmp", "darktable": f"{main}.xmp", "dop": f"{main}.dop",
                "pp3": f"{main}.pp3", "thm": f"{stem}.THM", "aae": f"{stem}.AAE"}[kind]
        (folder / name).write_bytes(f"{kind} {seed}".encode())
    for i, path in enumerate(sorted(folder.glob(f"{stem}*"))):
        os.utime(path, ns=(1_600_000_000_000_000_000 + seed * 1000 + i, 1_600_000_000_000_000_000 + seed * 7919 + i))


shot_spec = st.tuples(
    st.sampled_from(["", "a", "a/b", "c d", "ünï"]),  # folder
    st.booleans(), st.booleans(),  # raw, jpeg
    st.lists(st.sampled_from(["adobe", "darktable", "dop", "pp3", "thm", "aae"]), unique=True, max_size=4),
    st.booleans(),  # rejected
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=st.lists(shot_spec, min_size=1, max_size=8), collide=st.booleans(), cross_device=st.booleans())
def test_move_then_undo_restores_the_tree_exactly(tmp_path_factory, monkeypatch, specs, collide, cross_device):
    root = tmp_path_factory.mktemp("lib")
    rejected = []
    for i, (folder, raw, jpeg, sidecars, reject) in enumerate(specs):
        if not (raw or jpeg):
            raw = True
        make_shot(root / folder, f"IMG_{i:04d}", raw, jpeg, sidecars, i)
        if reject:
            rejected.append(i)
    (root / "unrelated.txt").write_text("keep me")
    target = root / "_culled"
    if collide and rejected:  # a previous cull left a same-named file in the target
        (target / specs[rejected[0]][0]).mkdir(parents=True, exist_ok=True)
        (target / specs[rejected[0]][0] / f"IMG_{rejected[0]:04d}.CR2").write_bytes(b"older")
    monkeypatch.setattr(cull.move, "same_device", lambda a, b: not cross_device)
    before = snapshot(root)
    shots = [s for s in discover([root]) if isinstance(s, Shot) and int(s.path.stem[4:8]) in rejected]
    plan = plan_moves(shots, root, target)
    result = execute(plan, root, target)
    assert not result.failed and result.shots == len(rejected)
    after_move = snapshot(root)
    for i in rejected:  # a shot moves whole: nothing of it stays behind
        assert not [k for k in after_move if f"IMG_{i:04d}" in k], i
    for move in result.moved:
        assert move.dst.is_file() and move.dst.is_relative_to(target)
    if collide and rejected:
        assert (target / specs[rejected[0]][0] / f"IMG_{rejected[0]:04d}.CR2").read_bytes() == b"older"
    if not rejected:
        assert result.journal is None
        with pytest.raises(MoveError, match="nothing to undo"):
            undo(target)
        return
    back = undo(target)
    assert not back.left and not back.missing
    assert snapshot(root) == before  # names, bytes and mtimes


def tree_with_rejects(root: Path, n: int = 6) -> None:
    for i in range(n):
        save(blurred_image(i, 9), root / "day" / f"IMG_{i:04d}.JPG")
        (root / "day" / f"IMG_{i:04d}.CR2").write_bytes(os.urandom(3000))
        (root / "day" / f"IMG_{i:04d}.xmp").write_text("<x:xmpmeta xmlns:x='adobe:ns:meta/'/>")
    save(sharp_image(0), root / "day" / "IMG_0100.JPG")


def test_cli_move_dry_run_then_move_and_undo(tmp_path):
    root = tmp_path / "lib"
    tree_with_rejects(root, 2)
    before = snapshot(root)
    runner = CliRunner()
    dry = runner.invoke(app, ["move", str(root), "--rejects", "--dry-run", "--workers", "1"])
    assert dry.exit_code == 0, dry.output
    assert sum(line.startswith("would move") for line in dry.stdout.splitlines()) == 6 and snapshot(root) == before
    moved = runner.invoke(app, ["move", str(root), "--rejects", "--workers", "1"])
    assert moved.exit_code == 0, moved.output
    assert "moved 2 shots (6 files" in moved.stdout and "journal:" in moved.stdout
    assert sorted(p.name for p in (root / "day").iterdir()) == ["IMG_0100.JPG"]
    assert (root / "_culled" / "day" / "IMG_0000.CR2").is_file()
    back = runner.invoke(app, ["undo", str(root)])
    assert back.exit_code == 0, back.output
    assert snapshot(root) == before
    assert runner.invoke(app, ["move", str(root), "--workers", "1"]).exit_code == 2  # nothing chosen


SLOW_CULL = Path(__file__).with_name("slow_cull.py")  # the CLI with a delay before each file move


def _kill_mid_move(root: Path, env: dict[str, str]) -> None:
    proc = subprocess.Popen([sys.executable, str(SLOW_CULL), "--delay", "0.15", "--", "move", str(root), "--rejects",
                             "--workers", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = journals(root / "_culled")
        if found and sum(r["op"] == "done" for r in found[0].records()) >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    records = journals(root / "_culled")[0].records()
    assert not any(r["op"] == "end" for r in records), "the move must have been cut off"
    assert records[-1]["op"] in ("shot", "intent", "done"), records  # killed mid-shot or between shots


@pytest.mark.parametrize("then", ["undo", "move again"])
def test_kill_9_mid_move_then_undo_or_rerun_is_clean(tmp_path, then):
    root = tmp_path / "lib"
    tree_with_rejects(root)
    before = snapshot(root)
    env = {**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")}
    _kill_mid_move(root, env)
    if then == "undo":
        proc = subprocess.run([sys.executable, "-m", "cull", "undo", str(root)], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert snapshot(root) == before, journals(root / "_culled")[0].records()
    else:
        proc = subprocess.run([sys.executable, "-m", "cull", "move", str(root), "--rejects", "--workers", "1"],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in (root / "day").iterdir()) == ["IMG_0100.JPG"]
        assert len(list((root / "_culled" / "day").iterdir())) == 18
        proc = subprocess.run([sys.executable, "-m", "cull", "undo", str(root), "--all"], capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        assert snapshot(root) == before


def test_full_disk_mid_shot_puts_the_shot_back(tmp_path, monkeypatch):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, True, ["adobe"], 1)
    before = snapshot(root)
    calls = {"n": 0}
    real_copy = shutil.copy2

    def copy_then_fill(src, dst, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_copy(src, dst, **kw)

    monkeypatch.setattr(cull.move, "same_device", lambda a, b: False)
    monkeypatch.setattr(shutil, "copy2", copy_then_fill)
    shots = [s for s in discover([root]) if isinstance(s, Shot)]
    result = execute(plan_moves(shots, root, root / "_culled"), root, root / "_culled")
    assert result.failed and "no space" in result.failed[0][1] and not result.moved
    assert snapshot(root) == before
    assert not [p for p in (root / "_culled").rglob("*") if p.is_file() and ".cull-journal" not in p.parts]


def test_undo_leaves_a_file_whose_place_is_taken(tmp_path):
    root = tmp_path / "lib"
    make_shot(root, "IMG_0001", True, False, [], 1)
    shots = [s for s in discover([root]) if isinstance(s, Shot)]
    execute(plan_moves(shots, root, root / "_culled"), root, root / "_culled")
    (root / "IMG_0001.CR2").write_bytes(b"a new photo with the same name")
    result = undo(root / "_culled")
    assert len(result.left) == 1, result.left
    assert "taken" in result.left[0][1] or "exists" in result.left[0][1], result.left
    assert (root / "IMG_0001.CR2").read_bytes() == b"a new photo with the same name"
    assert (root / "_culled" / "IMG_0001.CR2").is_file()


def test_refusals(tmp_path):
    root = tmp_path / "lib"
    make_shot(root / "a", "IMG_0001", True, False, [], 1)
    with pytest.raises(MoveError, match="rescanned"):
        validate_target(root, root / "a" / "rejects")
    with pytest.raises(MoveError, match="contains"):
        validate_target(root / "a", root)
    validate_target(root, root / "_culled")
    validate_target(root, tmp_path / "elsewhere")
    outside = tmp_path / "outside"
    make_shot(outside, "IMG_0009", True, False, [], 9)
    os.symlink(outside, root / "linked")
    make_shot(tmp_path / "other", "IMG_0010", True, False, [], 10)
    os.symlink(tmp_path / "other" / "IMG_0010.CR2", root / "a" / "IMG_0002.CR2")
    shots = [s for s in discover([root]) if isinstance(s, Shot)]
    plan = plan_moves(shots, root, root / "_culled")
    reasons = {p.name: r for p, r in plan.refused}
    assert "symbolic link" in reasons["IMG_0002.CR2"] and "outside" in reasons["IMG_0009.CR2"]
    assert [m.src.name for m in plan.moves] == ["IMG_0001.CR2"]




def test_read_only_target_gives_a_clear_message_and_moves_nothing(tmp_path):
    root = tmp_path / "lib"
    tree_with_rejects(root, 1)
    target = tmp_path / "ro-target"
    target.mkdir()
    os.chmod(target, 0o555)
    before = snapshot(root)
    try:
        proc = subprocess.run([sys.executable, "-m", "cull", "move", str(root), "--rejects", "--to", str(target),
                               "--workers", "1"], capture_output=True, text=True, preexec_fn=drop_dac_override,
                              env={**os.environ, "CULL_CACHE_DIR": str(tmp_path / "cache")}, timeout=120)
    finally:
        os.chmod(target, 0o755)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "permission denied" in (proc.stdout + proc.stderr).lower()
    assert snapshot(root) == before
