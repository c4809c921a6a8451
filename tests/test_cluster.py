"""`cull scan --ray`: the same results on a Ray runtime as on the local pool, crash isolation, a real head node.

One local Ray runtime (2 CPUs) serves the module; one test starts its own head node with `ray start --head`
on 127.0.0.1 and stops exactly the processes it started.  Ray must only ever use the loopback address.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before any ray import: 127.0.0.1 stays loopback

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cull.cli import app
from cull.scan import ScanOptions, scan
from tests.conftest import EXAMPLES, blurred_image, save, sharp_image
from tests.rayhead import free_port, head_env, start_head, stop_head
from tests.test_scan_faults import kill_on_crash_names  # the same hook kills a Ray worker

ray = pytest.importorskip("ray")
runner = CliRunner()




@pytest.fixture(scope="module")
def local_ray():
    from cull.cluster import connect, disconnect

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
    ray.cloudpickle.register_pickle_by_value(sys.modules["tests.test_scan_faults"])  # its crash hook
    info = connect("local", local_cpus=2)
    yield info
    disconnect()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    for i in range(3):
        save(sharp_image(i), root / f"s{i}.jpg")
        save(blurred_image(i, 3), root / f"b{i}.jpg")
    for example in sorted(EXAMPLES.glob("*_*.jpg")):  # the bundled defocused / motion-blurred examples
        shutil.copy(example, root / example.name)
    return root


@pytest.fixture(scope="module")
def pool_rows(photos: Path, card) -> dict[str, tuple[object, ...]]:  # type: ignore[no-untyped-def]
    result = scan([photos], card, ScanOptions(workers=2, use_cache=False))
    return {r.path.name: _key(r.row()) for r in result.results}


def _key(row: dict) -> tuple[object, ...]:  # type: ignore[type-arg]
    return row["score"], row["verdict"], row["reason"], row["error"]


def _report(path: Path) -> dict[str, tuple[object, ...]]:
    return {Path(r["path"]).name: _key(r) for r in map(json.loads, path.read_text().splitlines())}


def test_ray_local_scan_through_the_cli_matches_the_local_pool(tmp_path, monkeypatch, photos, pool_rows, local_ray):
    import cull.cluster

    # the module's runtime stands in for `--ray local` (starting another costs 10 s); connect() itself is
    # exercised for real by the head-node test
    monkeypatch.setattr(cull.cluster, "connect", lambda address, local_cpus=None: local_ray)
    monkeypatch.setattr(cull.cluster, "disconnect", lambda: None)
    report = tmp_path / "ray.jsonl"
    result = runner.invoke(app, ["scan", str(photos), "--ray", "local", "--no-xmp", "--no-cache", "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert _report(report) == pool_rows
    assert len(pool_rows) == 6 + len(list(EXAMPLES.glob("*_*.jpg")))
    assert {v[1] for v in pool_rows.values()} >= {"keep", "reject"}
    assert "Ray cluster local: 1 node, 2 CPUs" in result.stdout


def test_cull_keeps_its_own_sigterm_handling_after_ray_connects(tmp_path, monkeypatch, photos, local_ray):
    """ray.init puts in a SIGTERM handler of its own (exit 15, a stack dump on stderr); `cull scan --ray`
    puts cull's back, so SIGTERM stops it as it stops a local scan (143, workers and runtime shut down)."""
    import signal

    import cull.cluster

    def rays_own(signum, frame):  # noqa: ANN001 - a signal handler's signature
        raise SystemExit(signum)

    def connect(address, local_cpus=None):  # noqa: ANN001
        signal.signal(signal.SIGTERM, rays_own)
        return local_ray

    def culls(signum, frame):  # noqa: ANN001
        raise SystemExit(128 + signum)

    monkeypatch.setattr(cull.cluster, "connect", connect)
    monkeypatch.setattr(cull.cluster, "disconnect", lambda: None)
    previous = signal.signal(signal.SIGTERM, culls)
    try:
        result = runner.invoke(app, ["scan", str(photos), "--ray", "local", "--no-xmp", "--no-cache"])
        assert result.exit_code == 0, result.output
        assert signal.getsignal(signal.SIGTERM) is culls
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_file_that_kills_its_ray_worker_is_reported_and_the_rest_scored(tmp_path, card, pool_rows, photos, local_ray):
    folder = tmp_path / "p"
    shutil.copytree(photos, folder)
    save(sharp_image(0), folder / "crash_me.jpg")
    result = scan([folder], card, ScanOptions(ray=True, use_cache=False), worker_setup=kill_on_crash_names)
    by_name = {r.path.name: r for r in result.results}
    assert by_name["crash_me.jpg"].error == "worker process crashed while reading this file"
    assert {n: _key(r.row()) for n, r in by_name.items() if n != "crash_me.jpg"} == pool_rows


def test_analysing_without_a_connection_is_an_error_not_a_hang(card, photos):
    from cull.cluster import ClusterError, analyse_paths_ray, disconnect

    disconnect()
    with pytest.raises(ClusterError):
        next(analyse_paths_ray(sorted(photos.glob("*.jpg")), card))


def test_cli_ray_without_the_extra_exits_2_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    save(sharp_image(0), tmp_path / "a.jpg")
    result = runner.invoke(app, ["scan", str(tmp_path), "--ray", "local", "--no-xmp"])
    assert result.exit_code == 2
    assert "[ray]" in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize(("address", "ray_address", "message"), [
    ("127.0.0.1:{port}", None, "cannot reach the Ray cluster at 127.0.0.1:"),
    ("auto", "127.0.0.1:{port}", "cannot reach the Ray cluster at 127.0.0.1:"),  # RAY_ADDRESS names a dead head
    ("auto", None, "no RAY_ADDRESS and no `ray start` on this machine"),
    ("nonsense", None, "--ray takes local, auto or HOST:PORT"),
])
def test_cli_ray_unreachable_or_malformed_address_exits_2(tmp_path, monkeypatch, address, ray_address, message):
    port = free_port()
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no-ray-here"))  # no recorded `ray start`
    if ray_address:
        monkeypatch.setenv("RAY_ADDRESS", ray_address.format(port=port))
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    save(sharp_image(0), tmp_path / "a.jpg")
    result = runner.invoke(app, ["scan", str(tmp_path), "--ray", address.format(port=port), "--no-xmp"])
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "a.xmp").exists()


def _alive(pids: list[int]) -> list[int]:
    """Those of ``pids`` still running (zombies waiting for a reaper count as gone)."""
    alive = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(pid)
    return alive


def _group(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_a_ray_start_head_node_joined_by_address_gives_the_same_results(tmp_path, photos, pool_rows):
    temp_dir = tempfile.mkdtemp(prefix="rayh", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = head_env()
    head, port = start_head(2, temp_dir, env, timeout=60)
    started: list[int] = []
    try:
        started = _group(head.pid)
        report = tmp_path / "head.jsonl"
        done = subprocess.run(
            [sys.executable, "-m", "cull", "scan", str(photos), "--ray", f"127.0.0.1:{port}", "--no-xmp", "--no-cache",
             "--report", str(report)],
            env=env, capture_output=True, text=True, timeout=180,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert _report(report) == pool_rows
        assert f"Ray cluster 127.0.0.1:{port}: 1 node, 2 CPUs" in done.stdout
        started = sorted(set(started) | set(_group(head.pid)))
    finally:
        stop_head(head)
        for _ in range(40):  # the head's children (GCS, raylet, workers) go down with it
            if not _alive(started + _group(head.pid)):
                break
            time.sleep(0.5)
        left = _alive(started + _group(head.pid))
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert started and not left, f"processes of the head node still running: {left}"


def _descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found += children
        frontier += children
    return found


def test_ctrl_c_stops_a_ray_local_scan_and_its_runtime(tmp_path):
    big = tmp_path / "big.jpg"
    sharp_image(0).resize((6000, 4000)).save(big, quality=90)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2400):  # over a minute of work on 2 idle CPUs: interrupted well before its end
        os.link(big, photos / f"p{i:04d}.jpg")
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    env.pop("RAY_ADDRESS", None)
    # a test run started in the background of a non-interactive shell (`nohup .ci/run &`) ignores SIGINT,
    # and an ignored signal stays ignored across exec: give the scan the disposition a terminal gives it
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        scan_cli = subprocess.Popen(
            [sys.executable, "-m", "cull", "scan", str(photos), "--ray", "local", "-j", "2", "--no-cache",
             "--report", str(tmp_path / "r.jsonl")],
            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    finally:
        signal.signal(signal.SIGINT, ignored)
    seen: set[int] = set()
    try:
        for _ in range(240):  # wait for a worker to run an analysis task (an idle one is "ray::IDLE")
            seen |= set(_descendants(scan_cli.pid))
            if any(b"ray::_analyse" in Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _alive(list(seen))
                   if Path(f"/proc/{pid}/cmdline").exists()):
                break
            time.sleep(0.25)
        time.sleep(1)
        seen |= set(_descendants(scan_cli.pid))
        assert scan_cli.poll() is None, "the scan ended before it could be interrupted"
        scan_cli.send_signal(signal.SIGINT)
        _, err = scan_cli.communicate(timeout=90)
    finally:
        if scan_cli.poll() is None:
            os.killpg(scan_cli.pid, signal.SIGKILL)
    assert scan_cli.returncode != 0
    assert not (tmp_path / "r.jsonl").exists() and "Traceback" not in err
    for _ in range(40):  # the local runtime (GCS, raylet, workers) stops with the scan
        if not _alive(sorted(seen)):
            break
        time.sleep(0.5)
    assert len(seen) > 2 and not _alive(sorted(seen)), f"left running: {_alive(sorted(seen))}"


def test_bursts_on_ray_match_bursts_on_the_local_pool(tmp_path, card, local_ray):
    import datetime as dt

    from benchmarks.burst_library import save_frame
    from cull.cluster import connect

    if not ray.is_initialized():  # a CLI test before this one connected elsewhere and disconnected
        connect("local", local_cpus=2)

    when = dt.datetime(2026, 6, 1, 10, 0, 0)
    for i, radius in enumerate([0.0, 3.0, 6.0]):  # one scene, three frames 0.3 s apart: one sharp
        image = sharp_image(1) if radius == 0 else blurred_image(1, radius)
        save_frame(image, tmp_path / "burst" / f"f{i}.jpg", when + dt.timedelta(seconds=0.3 * i))
    save(sharp_image(2), tmp_path / "burst" / "lone.png")

    def places(options: ScanOptions) -> dict[str, tuple]:
        result = scan([tmp_path / "burst"], card, options)
        return {r.path.name: (r.burst.rank if r.burst else None, r.burst.size if r.burst else None, r.photo.score)
                for r in result.results}

    on_ray = places(ScanOptions(ray=True, bursts=True, use_cache=False))
    assert on_ray == places(ScanOptions(workers=1, bursts=True, use_cache=False))
    assert on_ray["f0.jpg"][:2] == (1, 3) and on_ray["lone.png"][:2] == (None, None)


def test_chunks_lost_beyond_rays_retries_are_rerun_per_file_and_a_lost_file_is_reported(tmp_path, card, photos, pool_rows, local_ray, monkeypatch):
    """When Ray gives up on a chunk (its node died more often than max_retries covers), the chunk is
    re-run one file at a time; a file whose own task is lost too gets a per-file error, the rest their scores."""
    from ray.exceptions import NodeDiedError

    real_get = ray.get
    lost: dict[str, object] = {"chunks": 0, "file": None}

    def get(ref, *args, **kwargs):  # type: ignore[no-untyped-def]
        analyses = real_get(ref, *args, **kwargs)
        if len(analyses) > 1 and lost["chunks"] == 0:  # the first whole chunk is lost
            lost["chunks"] = 1
            raise NodeDiedError("node 127.0.0.1 died")
        if len(analyses) == 1 and lost["file"] in (None, analyses[0].path.name):  # and so is its first file on its own
            lost["file"] = analyses[0].path.name
            raise NodeDiedError("node 127.0.0.1 died")
        return analyses

    monkeypatch.setattr(ray, "get", get)
    result = scan([photos], card, ScanOptions(ray=True, use_cache=False))
    by_name = {r.path.name: r for r in result.results}
    assert lost["chunks"] == 1 and lost["file"] and set(by_name) == set(pool_rows)
    assert by_name[str(lost["file"])].error == "the cluster lost this file's analysis: NodeDiedError"
    assert {n: _key(r.row()) for n, r in by_name.items() if n != lost["file"]} == {n: k for n, k in pool_rows.items() if n != lost["file"]}


def test_chunks_taper_towards_the_end_so_the_last_tasks_finish_together():
    from cull.cluster import tapered_chunks

    paths = [Path(f"p{i}.jpg") for i in range(200)]
    sizes = [len(c) for c in tapered_chunks(paths, 8, cpus=2)]
    assert [p for c in tapered_chunks(paths, 8, cpus=2) for p in c] == paths  # every path once, in order
    assert sizes[:21] == [8] * 21 and sizes[-4:] == [1, 1, 1, 1] and sizes == sorted(sizes, reverse=True)
    assert max(sizes[-2 * 2:]) == 1  # the last task per slot is a single photo
    assert [len(c) for c in tapered_chunks(iter(paths), 8, cpus=2)] == [8] * 25  # open-ended: even chunks
    assert list(tapered_chunks([], 8, cpus=2)) == []



def test_a_ray_client_timeout_is_one_line_without_rays_own_warning(monkeypatch):
    """Ray's client warns "connection timed out" (with its source line) and then raises: only cull's
    one-line error shows.  A warning from a connection that succeeds still shows."""
    import warnings

    import ray

    from cull.cluster import ClusterError, connect

    def timing_out(*args: object, **kwargs: object) -> None:
        warnings.warn("Ray Client connection timed out. Ensure that the Ray Client port is reachable", UserWarning,
                      stacklevel=1)
        raise ConnectionError("ray client connection timeout")

    def joining(*args: object, **kwargs: object) -> None:
        warnings.warn("a version note worth reading", UserWarning, stacklevel=1)

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()  # something listens, as a head's client port does: the fast probe passes
        address = f"ray://127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
        monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4})
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            monkeypatch.setattr(ray, "init", timing_out)
            with pytest.raises(ClusterError, match=r"at ray://127\.0\.0\.1:\d+: ray client connection timeout$"):
                connect(address)
            assert not shown
            monkeypatch.setattr(ray, "init", joining)
            assert connect(address).cpus == 4
            assert [str(w.message) for w in shown] == ["a version note worth reading"]
