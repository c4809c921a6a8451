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
from cull.errors import CullError, ModelError
from cull.runner import CRASH_REASON, _chunks

log = logging.getLogger(__name__)

TASK_RETRIES = 2  # re-runs of a chunk whose worker or node died (Ray system failures)
_scorers: dict[str, Any] = {}  # per Ray worker process: card fingerprint -> OnnxScorer
_setup_done: list[bool] = []  # per Ray worker process: the caller's worker_setup has run


class ClusterError(CullError):
    """Ray is missing, or the cluster cannot be reached."""


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
    return ray


def connect(address: str, local_cpus: int | None = None) -> ClusterInfo:
    """Start a local Ray runtime (``local``, with ``local_cpus`` CPUs or all, on the loopback address)
    or join a cluster (``auto``: the one ``RAY_ADDRESS`` or the last ``ray start`` on this machine
    names; ``HOST:PORT``; ``ray://HOST:PORT``). Raises ClusterError when Ray is missing, nothing
    listens at the address (checked first: Ray itself retries for minutes) or Ray refuses to join."""
    ray = _ray(local=address == "local")
    if ray.is_initialized():
        ray.shutdown()
    if address == "auto":
        address = _auto_address()
    if address != "local":
        _probe(address)
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


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast (Ray itself retries for a minute) when nothing listens at HOST:PORT."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray takes local, auto or HOST:PORT, not {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


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
    with_bursts: bool = False,
) -> list[Analysis]:
    """Body of the Ray task: one chunk, with this worker process's cached scorer for the card."""
    from cull.score import OnnxScorer

    if setup is not None and not _setup_done:
        setup()
        _setup_done.append(True)
    scorer = _scorers.get(card.fingerprint)
    if scorer is None:
        scorer = _scorers[card.fingerprint] = OnnxScorer(card, threads=1)
    return analyse_chunk([Path(p) for p in paths], card, scorer, batch_size, with_laplacian, with_bursts)


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
    ``worker_setup`` runs once in each Ray worker process before its first chunk (tests).
    """
    ray = _ray()
    from ray.exceptions import RayError, RayTaskError, TaskCancelledError, WorkerCrashedError

    if not ray.is_initialized():  # never let Ray start or join a cluster on its own (it may hang on a stale one)
        raise ClusterError("not connected to a Ray cluster: cull.cluster.connect() comes first")
    remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_analyse_remote)
    single = ray.remote(num_cpus=1, max_retries=0)(_analyse_remote)
    card_ref = ray.put(card)
    slots = max(2, int(ray.cluster_resources().get("CPU", 1)) * 2)
    pending = tapered_chunks(paths, chunk_size, slots // 2)
    in_flight: dict[Any, tuple[list[Path], bool]] = {}
    suspects: list[Path] = []
    try:
        while True:
            while len(in_flight) < slots:
                if suspects:
                    path = suspects.pop()
                    in_flight[single.remote(card_ref, [os.path.abspath(path)], batch_size, with_laplacian, worker_setup, with_bursts)] = ([path], True)
                    continue
                chunk = next(pending, None)
                if chunk is None:
                    break
                ref = remote.remote(card_ref, [os.path.abspath(p) for p in chunk], batch_size, with_laplacian, worker_setup, with_bursts)
                in_flight[ref] = (chunk, False)
            if not in_flight:
                return
            done, _ = ray.wait(list(in_flight), num_returns=1)
            chunk, alone = in_flight.pop(done[0])
            try:
                analyses = ray.get(done[0])
            except RayTaskError as exc:
                cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
                if isinstance(cause, ModelError):
                    raise ModelError(str(cause)) from None
                yield from (Analysis(p, error=f"analysis failed on the cluster: {exc.cause!r}") for p in chunk)
                continue
            except TaskCancelledError:
                continue
            except RayError as exc:  # a worker or node died more often than Ray's retries cover
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
            for path, analysis in zip(chunk, analyses):
                yield replace(analysis, path=path)
    except KeyboardInterrupt:
        # No ray.cancel here: cancelling tasks that Ray may be retrying aborts the driver inside Ray
        # ("Tried to complete task that was not pending", ray-project/ray#54260), leaving the local
        # runtime's agents behind.  The caller's disconnect() ends the job, and Ray stops its tasks.
        in_flight.clear()
        raise
    finally:
        for ref in in_flight:  # closed early by the caller: stop what is left, gently
            ray.cancel(ref, force=False)

