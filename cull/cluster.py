"""Analyse photos on a Ray cluster (``cull scan --ray``): the same analysis code, run as Ray tasks.

The driver (the machine running ``cull scan``) discovers the photos, sends chunks of absolute
paths to Ray tasks and streams their Analyses back; XMP, report, cache and moves stay on the driver,
exactly as in a local scan. Every node must see the photos under the same path (an NFS/SMB mount)
and have cull installed (the same version).

- Each Ray worker process keeps one onnxruntime session per model card (built on its first chunk),
  so tasks cost what a local worker costs; a task is one chunk of photos.
- A node lost mid-scan: Ray re-runs its tasks (``max_retries``) on the nodes left. A chunk that still
  fails because its worker or node died is re-run one file at a time, and a file that is lost again
  is reported as a per-file error, never retried forever.
- Ctrl-C ends the job: the driver disconnects and Ray stops the job's tasks (no ray.cancel, which can
  abort the driver inside Ray while it retries a task); ``--ray local`` also stops the local runtime.
- A node that cannot run cull (not installed, another version, a dependency missing) ends the scan with
  one line naming the node, not one error per photo; a photo a node cannot see but the driver can is
  reported as not visible on that node (its mount is missing or differs).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cull.analyse import BATCH_SIZE, Analysis, analyse_chunk
from cull.card import ModelCard
from cull.decode import describe_decode_error
from cull.errors import CullError, ModelError
from cull.fsutil import absolute
from cull.runner import CRASH_REASON, _chunks

log = logging.getLogger(__name__)

TASK_RETRIES = 2  # re-runs of a chunk whose worker or node died (Ray system failures)
PROBE_TIMEOUT = 5.0  # seconds for the TCP connection to a cluster address, and again for its answer
NODE_CHECK_TIMEOUT = 20.0  # seconds for the nodes to say whether they can run cull (after a task could not)
# what an HTTP/2 client sends first (the connection preface, then empty SETTINGS); gRPC servers, as Ray's
# GCS and client servers are, answer with a SETTINGS frame of their own
_HTTP2_GREETING = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS_FRAME = 4
_NOT_FOUND = describe_decode_error(FileNotFoundError())  # what a file missing where it was read is reported as
_scorers: dict[str, Any] = {}  # per Ray worker process: card fingerprint -> OnnxScorer
_setups_done: set[str] = set()  # per Ray worker process: the callers' worker_setups that have run (by name)


class ClusterError(CullError):
    """Ray is missing, or the cluster cannot be reached."""


@dataclass(frozen=True)
class ChunkResult:
    """What a Ray task returns: the node that analysed the chunk, and an Analysis per photo."""

    node: str
    analyses: list[Analysis]


@dataclass(frozen=True)
class ClusterInfo:
    """What the scan ran on, for the summary line."""

    address: str
    nodes: int
    cpus: int

    def describe(self) -> str:
        return f"Ray cluster {self.address}: {self.nodes} node{'s' * (self.nodes != 1)}, {self.cpus} CPUs"


def _ray(local: bool = False) -> Any:
    if local and "ray" not in sys.modules:
        # Ray otherwise resolves 127.0.0.1 to the machine's network address: a local runtime needs none
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs the [ray] extra: pip install 'cull-focus[ray]'") from None
    except Exception as exc:  # noqa: BLE001 - a broken install (a dependency of another version) raises anything
        raise ClusterError(f"Ray is installed but does not load ({type(exc).__name__}: {_first_line(exc)}); "
                           "reinstall it: pip install --force-reinstall 'cull-focus[ray]'") from None
    return ray


def connect(address: str, local_cpus: int | None = None) -> ClusterInfo:
    """Start a local Ray runtime (``local``, with ``local_cpus`` CPUs or all, on the loopback address)
    or join a cluster (``auto``: the one ``RAY_ADDRESS`` or the last ``ray start`` on this machine
    names; ``HOST:PORT``; ``ray://HOST:PORT``). Raises ClusterError when Ray is missing, no Ray server
    answers where Ray would connect (checked first, in seconds: Ray itself retries for minutes) or Ray
    refuses to join."""
    ray = _ray(local=address == "local")
    if ray.is_initialized():
        ray.shutdown()
    if address == "auto":
        address = _auto_address()
    if address != "local":
        _check_format(address)
        _probe(address, _ray_target(address))
    try:
        with _warnings_only_on_success():
            if address == "local":
                with _offline_env():
                    ray.init(address="local", num_cpus=local_cpus, include_dashboard=False, log_to_driver=False,
                             configure_logging=False, _node_ip_address="127.0.0.1")
            else:
                ray.init(address=address, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises many types here (connection, auth, version)
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {_first_line(exc)}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return ClusterInfo(address, len(nodes), int(ray.cluster_resources().get("CPU", 0)))


@contextmanager
def _warnings_only_on_success() -> Iterator[None]:
    """Hold back the warnings of the block and show them only if it succeeds: Ray's client warns that
    a connection timed out (with its own source line) just before it raises, and cull's one-line
    error already says so."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        yield
    for warning in caught:
        warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


# What the processes of a local runtime inherit: no usage report, and an HTTP proxy nobody listens on,
# because Ray's dashboard process asks cloud metadata endpoints (169.254.169.254, metadata.google.internal)
# what it runs on at every start, even with usage stats off.  A local scan needs no network at all.
_OFFLINE = {"RAY_USAGE_STATS_ENABLED": "0", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "127.0.0.1,localhost,::1"}


@contextmanager
def _offline_env() -> Iterator[None]:
    """The _OFFLINE variables the user has not set, while a local runtime starts (then restored)."""
    added = {key: value for key, value in _OFFLINE.items() if key not in os.environ and key.lower() not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _auto_address() -> str:
    """``auto``: RAY_ADDRESS, else the head that the last ``ray start`` on this machine recorded."""
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    recorded = Path(os.environ.get("RAY_TMPDIR") or "/tmp") / "ray" / "ray_current_cluster"
    try:
        return recorded.read_text().strip()
    except OSError:
        raise ClusterError("--ray auto: no RAY_ADDRESS and no `ray start` on this machine; give HOST:PORT") from None


def _check_format(address: str) -> None:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray takes local, auto or HOST:PORT, not {address!r}")


def _ray_target(address: str) -> str:
    """HOST:PORT where Ray will connect for ``address``: a Ray Client address as given, a cluster address
    as Ray rewrites it (127.0.0.1 and localhost become this machine's network address unless
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)."""
    if address.startswith("ray://"):
        return address.removeprefix("ray://")
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address(address) or address
    except Exception:  # noqa: BLE001 - a private function of Ray: then probe the address as given
        return address


def _probe(address: str, target: str) -> None:
    """Fail in seconds (Ray itself retries for minutes) unless a gRPC server, as Ray's servers are,
    answers at ``target``, the HOST:PORT Ray will connect to for ``address``."""
    host, _, port = target.rpartition(":")
    where = address if target == address.removeprefix("ray://") else f"{address} (Ray connects to {target})"
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT) as sock:
            wrong = _not_grpc(sock)
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {where}: {exc.strerror or exc}") from None
    if wrong:
        raise ClusterError(f"not a Ray cluster at {where}: {wrong}; give the port `ray start --head` printed "
                           "(6379 unless --port chose another), or ray://HOST:10001 for Ray Client")


def _not_grpc(sock: socket.socket) -> str | None:
    """None when the server at the other end answers an HTTP/2 greeting as gRPC servers do, else what it
    did instead.  A cluster with TLS (RAY_USE_TLS) is not greeted: the connection alone must do."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return None
    sock.sendall(_HTTP2_GREETING)
    answer = b""
    try:
        while len(answer) < 4 and (more := sock.recv(9 - len(answer))):
            answer += more
    except TimeoutError:
        return f"no answer within {PROBE_TIMEOUT:g} s"
    if len(answer) >= 4 and answer[3] == _SETTINGS_FRAME:
        return None
    if answer.startswith((b"HTTP", b"<")):  # a status line, or a bare HTML error page (Python's http.server)
        return "a web server answers there"
    return "it answers, but not as Ray does" if answer else "it closed the connection"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def disconnect() -> None:
    ray = _ray()
    if ray.is_initialized():
        ray.shutdown()


def tapered_chunks(paths: Iterable[Path], chunk_size: int, cpus: int) -> Iterator[list[Path]]:
    """Chunks of ``chunk_size`` paths that shrink towards the end of a known list (at most a
    (2 x ``cpus``)-th of what is left, at least one), so the last tasks finish together instead of one
    CPU working through a full chunk while the others idle; an open-ended iterable gets even chunks."""
    if not isinstance(paths, (list, tuple)):
        yield from _chunks(paths, chunk_size)
        return
    start = 0
    while start < len(paths):
        size = max(1, min(chunk_size, (len(paths) - start) // (2 * max(1, cpus))))
        yield list(paths[start:start + size])
        start += size


def _analyse_remote(
    card: ModelCard, paths: list[str], batch_size: int, with_laplacian: bool, setup: Callable[[], None] | None,
    with_bursts: bool = False, version: str | None = None,
) -> ChunkResult:
    """Body of the Ray task: one chunk, with this worker process's cached scorer for the card.
    Raises ClusterError when this node has another cull than ``version`` (the driver's) or lacks a
    dependency."""
    node = _this_node()
    if version is not None and _version() != version:
        raise ClusterError(_other_version([f"{node} has cull {_version()}"], version))
    if setup is not None and _name(setup) not in _setups_done:
        setup()
        _setups_done.add(_name(setup))
    scorer = _scorers.get(card.fingerprint)
    if scorer is None:
        try:
            from cull.score import OnnxScorer
        except ImportError as exc:
            raise ClusterError(_cannot_load(f"Ray node {node}", str(exc), version or _version())) from None
        scorer = _scorers[card.fingerprint] = OnnxScorer(card, threads=1)
    return ChunkResult(node, analyse_chunk([Path(p) for p in paths], card, scorer, batch_size, with_laplacian, with_bursts))


def _name(function: Callable[[], None]) -> str:
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', type(function).__qualname__)}"


def _this_node() -> str:
    """The Ray node this process runs on, as an admin knows it: host name and address."""
    import ray

    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"


def _version() -> str:
    import cull

    return str(cull.__version__)


def _cannot_load(where: str, why: str, version: str) -> str:
    return (f"cull does not load on {where}: {why}; install cull-focus[ray]=={version} there, "
            "in the Python that runs Ray (every node needs the same version)")


def _other_version(found: list[str], version: str) -> str:
    """``found``: "NODE has cull X" for each node whose cull is not ``version``, this machine's."""
    return (f"Ray node {', '.join(found)}, this machine {version}: install cull-focus[ray]=={version} there "
            "(every node needs the same version)")


def analyse_paths_ray(
    paths: Iterable[Path],
    card: ModelCard,
    *,
    batch_size: int = BATCH_SIZE,
    chunk_size: int = 8,
    with_laplacian: bool = False,
    with_bursts: bool = False,
    worker_setup: Callable[[], None] | None = None,
) -> Iterator[Analysis]:
    """Yield an Analysis per path (completion order) from Ray tasks; ``connect()`` must come first.

    Paths are sent absolute; each Analysis comes back with the caller's own Path object.
    ``worker_setup`` runs once in each Ray worker process, before the first chunk it comes with (tests;
    a worker process outlives a scan, and each distinct setup runs once in it).
    """
    ray = _ray()
    from ray.exceptions import RayError, RayTaskError, WorkerCrashedError

    if not ray.is_initialized():  # never let Ray start or join a cluster on its own (it may hang on a stale one)
        raise ClusterError("not connected to a Ray cluster: cull.cluster.connect() comes first")
    remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_analyse_remote)
    single = ray.remote(num_cpus=1, max_retries=0)(_analyse_remote)
    version = _version()
    card_ref = _put(card, version)

    def submit(task: Any, files: list[Path]) -> Any:
        named = [str(absolute(p)) for p in files]  # link/.. as the kernel reads it, as the local pool does
        return task.remote(card_ref, named, batch_size, with_laplacian, worker_setup, with_bursts, version)

    slots = max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)
    pending = tapered_chunks(paths, chunk_size, slots // 2)
    in_flight: dict[Any, tuple[list[Path], bool]] = {}
    suspects: list[Path] = []
    try:
        while True:
            while len(in_flight) < slots:
                if suspects:
                    path = suspects.pop()
                    in_flight[submit(single, [path])] = ([path], True)
                    continue
                chunk = next(pending, None)
                if chunk is None:
                    break
                in_flight[submit(remote, chunk)] = (chunk, False)
            if not in_flight:
                return
            done, _ = ray.wait(list(in_flight), num_returns=1)
            chunk, alone = in_flight.pop(done[0])
            try:
                result = ray.get(done[0])
            except RayTaskError as exc:
                _raise_if_node_unfit(exc.cause, (card, worker_setup), version)
                yield from (Analysis(p, error=f"analysis failed on the cluster: {_brief(exc.cause)}") for p in chunk)
                continue
            except RayError as exc:  # a worker or node died more often than Ray's retries cover, or a task was cancelled
                if alone:
                    reason = CRASH_REASON if isinstance(exc, WorkerCrashedError) else (
                        f"the cluster lost this file's analysis: {type(exc).__name__}")
                    log.warning("%s: %s", chunk[0], reason)
                    yield Analysis(chunk[0], error=reason)
                else:
                    log.warning("a Ray worker or node died (%s); re-running %d files one at a time",
                                type(exc).__name__, len(chunk))
                    suspects.extend(chunk)
                continue
            for path, analysis in zip(chunk, result.analyses):
                yield _as_seen_here(replace(analysis, path=path), result.node)
    except KeyboardInterrupt:
        # No ray.cancel here: cancelling tasks that Ray may be retrying aborts the driver inside Ray
        # ("Tried to complete task that was not pending", ray-project/ray#54260), leaving the local
        # runtime's agents behind.  The caller's disconnect() ends the job, and Ray stops its tasks.
        in_flight.clear()
        raise
    finally:
        for ref in in_flight:  # closed early by the caller: stop what is left, gently
            ray.cancel(ref, force=False)


def _put(card: ModelCard, version: str) -> Any:
    """ray.put: with Ray Client, its server (on the head node) unpickles the card, so cull missing there
    is one line, not a traceback."""
    try:
        return _ray().put(card)
    except ImportError as exc:
        raise ClusterError(_cannot_load("the Ray Client server (the head node)", str(exc), version)) from None


def _as_seen_here(analysis: Analysis, node: str) -> Analysis:
    """A file the node did not find but this machine sees: say where it is missing (a mount missing
    or different there), not "removed during the scan"."""
    if analysis.error == _NOT_FOUND and analysis.path.exists():
        return replace(analysis, error=f"not visible on Ray node {node}, though this machine sees it: "
                                       "mount the library there at the same path")
    return analysis


def _brief(exc: BaseException) -> str:
    """An exception as one short line (a RaySystemError as what it wraps)."""
    inner = getattr(exc, "client_exc", None) or exc
    return f"{type(inner).__name__}: {_first_line(inner)}"[:200]


def _raise_if_node_unfit(cause: BaseException, arguments: tuple[object, ...], version: str) -> None:
    """End the scan with one line when a task failed because its node cannot run cull (the model does
    not load, cull or a dependency is missing, another cull version), instead of one error per photo.
    ``arguments`` are what the tasks are given: every node is asked whether they load there."""
    if isinstance(cause, (ModelError, ClusterError)):
        raise type(cause)(str(cause)) from None
    failure = getattr(cause, "client_exc", None) or cause  # RaySystemError: loading the task's arguments failed
    if not isinstance(failure, ImportError):
        return
    try:
        reports = _node_reports(_ray().cloudpickle.dumps(arguments))
    except Exception:  # noqa: BLE001 - naming the nodes is a help: without it, the line names none
        log.debug("could not ask the nodes whether they run cull", exc_info=True)
        reports = []
    missing = [node for node, _, error in reports if error is not None]
    if missing:
        where = f"Ray node{'s' * (len(missing) > 1)} {', '.join(missing)}"
        raise ClusterError(_cannot_load(where, next(e for _, _, e in reports if e is not None), version)) from None
    other = [f"{node} has cull {theirs}" for node, theirs, _ in reports if theirs != version]
    if other:
        raise ClusterError(_other_version(other, version)) from None
    raise ClusterError(_cannot_load("a Ray node", _first_line(failure), version)) from None


def _node_reports(arguments: bytes) -> list[tuple[str, str | None, str | None]]:
    """Ask every alive node with CPUs, by a task that runs without cull: its name, its cull version and
    why ``arguments`` (pickled) do not load there (None: they do).  Nodes that do not answer within
    NODE_CHECK_TIMEOUT are left out."""
    ray = _ray()
    from ray.exceptions import RayError
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    check = ray.remote(num_cpus=0, max_retries=0)(_node_check())
    refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(arguments)
            for node in ray.nodes() if node.get("Alive") and node.get("Resources", {}).get("CPU")]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=NODE_CHECK_TIMEOUT) if refs else ([], [])
    reports = []
    for ref in ready:
        try:
            reports.append(ray.get(ref))
        except RayError:  # the node went away meanwhile
            pass
    return reports


def _node_check() -> Callable[[bytes], tuple[str, str | None, str | None]]:
    """The body of _node_reports's task: a nested function, so Ray sends its code (it must run where cull
    cannot be imported) instead of a reference to cull.cluster."""

    def check(arguments: bytes) -> tuple[str, str | None, str | None]:
        import importlib
        import pickle
        import socket

        import ray

        node = f"{socket.gethostname()} ({ray.util.get_node_ip_address()})"
        try:
            pickle.loads(arguments)
            return node, str(importlib.import_module("cull").__version__), None
        except Exception as exc:  # noqa: BLE001 - whatever stops cull from loading here is the answer
            return node, None, (str(exc).strip().splitlines() or [type(exc).__name__])[0]

    return check

