"""`cull scan --ray`: the same results on a Ray runtime as on the local pool, crash isolation, a real head node.

One local Ray runtime (2 CPUs) serves the module; one test starts its own head node with `ray start --head`
on 127.0.0.1 and stops exactly the processes it started.  Ray must only ever use the loopback address.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before any ray import: 127.0.0.1 stays loopback

import http.server
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
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


def hide_unmounted_and_remove_removed() -> None:
    """In a Ray worker: a file named unmounted* cannot be found there (as on a node without the library's
    mount), and one named removed* is deleted just before it is read (removed during the scan)."""
    import cull.decode

    original = cull.decode.open_reduced

    def open_reduced(path: Path, long_side: int):  # type: ignore[no-untyped-def]
        if Path(path).name.startswith("unmounted"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        if Path(path).name.startswith("removed"):
            Path(path).unlink()
        return original(path, long_side)

    cull.decode.open_reduced = open_reduced  # type: ignore[assignment]


def test_a_file_a_ray_node_cannot_see_but_the_driver_can_is_reported_as_not_visible_there(tmp_path, card, local_ray):
    for name in ("s0.jpg", "unmounted.jpg", "removed.jpg"):
        save(sharp_image(0), tmp_path / name)
    result = scan([tmp_path], card, ScanOptions(ray=True, use_cache=False), worker_setup=hide_unmounted_and_remove_removed)
    errors = {r.path.name: r.error for r in result.results}
    assert errors["s0.jpg"] is None and errors["removed.jpg"] == "file not found (broken link or removed during the scan)"
    assert errors["unmounted.jpg"] == (f"not visible on Ray node {socket.gethostname()} (127.0.0.1), though this "
                                       "machine sees it: mount the library there at the same path")


def _no_cull() -> None:
    raise ModuleNotFoundError("No module named 'cull'", name="cull")


class CullMissingThere:
    """A worker_setup that does not load where it is sent, as cull's task code does not on a node without cull."""

    def __reduce__(self) -> tuple[object, ...]:
        return _no_cull, ()

    def __call__(self) -> None:
        pass


def test_a_ray_node_without_cull_ends_the_scan_with_one_line_naming_it(card, photos, local_ray):
    from cull.cluster import ClusterError

    with pytest.raises(ClusterError) as raised:
        scan([photos], card, ScanOptions(ray=True, use_cache=False), worker_setup=CullMissingThere())
    assert str(raised.value) == (
        f"cull does not load on Ray node {socket.gethostname()} (127.0.0.1): No module named 'cull'; install "
        "cull-focus[ray]==0.1.0 there, in the Python that runs Ray (every node needs the same version)")


def test_a_ray_node_with_another_cull_version_exits_2_with_one_line(monkeypatch, photos, local_ray):
    import cull
    import cull.cluster

    monkeypatch.setattr(cull.cluster, "connect", lambda address, local_cpus=None: local_ray)
    monkeypatch.setattr(cull.cluster, "disconnect", lambda: None)
    monkeypatch.setattr(cull, "__version__", "9.9.9")  # this machine's; the Ray workers import their own, 0.1.0
    result = runner.invoke(app, ["scan", str(photos), "--ray", "local", "--no-xmp", "--no-cache"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"cull: Ray node {socket.gethostname()} (127.0.0.1) has cull 0.1.0, this machine 9.9.9: install "
        "cull-focus[ray]==9.9.9 there (every node needs the same version)"]


def test_analysing_without_a_connection_is_an_error_not_a_hang(card, photos):
    from cull.cluster import ClusterError, analyse_paths_ray, disconnect

    disconnect()
    with pytest.raises(ClusterError):
        next(analyse_paths_ray(sorted(photos.glob("*.jpg")), card))


def test_cli_ray_with_a_broken_ray_install_exits_2_with_one_line(tmp_path):
    broken = tmp_path / "broken" / "ray"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text('raise RuntimeError("pydantic version mismatch\\nand more")\n')
    save(sharp_image(0), tmp_path / "a.jpg")
    done = subprocess.run([sys.executable, "-m", "cull", "scan", str(tmp_path / "a.jpg"), "--ray", "local", "--dry-run"],
                          env=dict(os.environ, PYTHONPATH=str(tmp_path / "broken")), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["cull: Ray is installed but does not load (RuntimeError: pydantic version "
                                        "mismatch); reinstall it: pip install --force-reinstall 'cull-focus[ray]'"]


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


class _QuietHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass


@contextmanager
def _listener(kind: str) -> Iterator[int]:
    """A port on 127.0.0.1 where a web server, a silent listener (it never answers) or a stand-in for a
    gRPC server (Ray's GCS and client servers: it answers the HTTP/2 greeting with SETTINGS) waits."""
    if kind == "http":
        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
        thread = threading.Thread(target=web.serve_forever, daemon=True)
        thread.start()
        try:
            yield web.server_address[1]
        finally:
            web.shutdown()
            web.server_close()
        return
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.1)
        stop = threading.Event()

        def grpc() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    conn.recv(64)
                    conn.sendall(bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))  # an empty SETTINGS frame

        thread = threading.Thread(target=grpc, daemon=True)
        if kind == "grpc":
            thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()


def _never(*args: object, **kwargs: object) -> None:
    raise AssertionError("ray.init was asked to join something that is not Ray")


@pytest.mark.parametrize(("kind", "answer"), [("http", "a web server answers there"),
                                              ("silent", "no answer within 0.5 s")])
def test_cli_ray_where_something_else_listens_exits_2_at_once(tmp_path, monkeypatch, kind, answer):
    """Ray would retry for many minutes against a port that is not Ray's: the probe says so in seconds."""
    import cull.cluster

    monkeypatch.setattr(cull.cluster, "PROBE_TIMEOUT", 0.5)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # leave the module's runtime alone
    monkeypatch.setattr(ray, "init", _never)
    save(sharp_image(0), tmp_path / "a.jpg")
    with _listener(kind) as port:
        result = runner.invoke(app, ["scan", str(tmp_path), "--ray", f"127.0.0.1:{port}", "--no-xmp"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"cull: not a Ray cluster at 127.0.0.1:{port}: {answer}; give the port "
                                          "`ray start --head` printed (6379 unless --port chose another), or "
                                          "ray://HOST:10001 for Ray Client"]


def test_the_probe_goes_where_ray_will_connect(monkeypatch):
    """Ray rewrites 127.0.0.1 to this machine's network address (unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0):
    the probe checks that address, not the one typed."""
    import ray._private.services

    from cull.cluster import ClusterError, connect

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", _never)
    monkeypatch.setattr(ray._private.services, "get_node_ip_address", lambda *args: "127.0.0.2")
    with _listener("grpc") as port:  # on 127.0.0.1 only
        with pytest.raises(ClusterError, match=rf"^cannot reach the Ray cluster at 127\.0\.0\.1:{port} "
                                               rf"\(Ray connects to 127\.0\.0\.2:{port}\): Connection refused$"):
            connect(f"127.0.0.1:{port}")


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


@pytest.mark.parametrize("loss", ["NodeDiedError", "TaskCancelledError"])
def test_chunks_lost_beyond_rays_retries_are_rerun_per_file_and_a_lost_file_is_reported(tmp_path, card, photos, pool_rows, local_ray, monkeypatch, loss):
    """When Ray gives up on a chunk (its node died more often than max_retries covers, or something
    cancelled its task), the chunk is re-run one file at a time; a file whose own task is lost too gets a
    per-file error, the rest their scores: no photo goes missing from the report."""
    import ray.exceptions

    def lose() -> Exception:
        return ray.exceptions.NodeDiedError("node 127.0.0.1 died") if loss == "NodeDiedError" else ray.exceptions.TaskCancelledError()

    real_get = ray.get
    lost: dict[str, object] = {"chunks": 0, "file": None}

    def get(ref, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = real_get(ref, *args, **kwargs)
        names = [analysis.path.name for analysis in result.analyses]
        if len(names) > 1 and lost["chunks"] == 0:  # the first whole chunk is lost
            lost["chunks"] = 1
            raise lose()
        if len(names) == 1 and lost["file"] in (None, names[0]):  # and so is its first file on its own
            lost["file"] = names[0]
            raise lose()
        return result

    monkeypatch.setattr(ray, "get", get)
    result = scan([photos], card, ScanOptions(ray=True, use_cache=False))
    by_name = {r.path.name: r for r in result.results}
    assert lost["chunks"] == 1 and lost["file"] and set(by_name) == set(pool_rows)
    assert by_name[str(lost["file"])].error == f"the cluster lost this file's analysis: {loss}"
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

    with _listener("grpc") as port:  # something answers as a head's client port does: the fast probe passes
        address = f"ray://127.0.0.1:{port}"
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


def test_a_path_through_a_link_and_dotdot_is_read_on_ray_as_the_kernel_reads_it(tmp_path, card, local_ray):
    """`cull scan sym/cur/../y2025 --ray`: the workers read store/y2025 as the local pool does (the path
    was collapsed as text to sym/y2025, another folder, and its photo's verdict written for this one)."""
    (tmp_path / "sym" / "store" / "y2026").mkdir(parents=True)
    save(blurred_image(0, 9), tmp_path / "sym" / "store" / "y2025" / "P.jpg")
    save(sharp_image(0), tmp_path / "sym" / "y2025" / "P.jpg")
    (tmp_path / "sym" / "cur").symlink_to("store/y2026")
    given = tmp_path / "sym" / "cur" / ".." / "y2025"
    on_ray = scan([given], card, ScanOptions(ray=True, use_cache=False)).results
    locally = scan([given], card, ScanOptions(workers=1, use_cache=False)).results
    assert [(r.verdict, r.photo.score if r.photo else None) for r in on_ray] == [
        (r.verdict, r.photo.score if r.photo else None) for r in locally]
    assert on_ray[0].verdict is not None and on_ray[0].verdict.value != "keep"
