"""Analyse many photos in parallel: worker processes decode, pick patches and score in batches.

Each worker owns one single-threaded onnxruntime session, so decode and inference keep every
core busy without oversubscription. Results stream back as chunks finish.

A worker that dies (killed for memory, a decoder crashing in C) never loses the scan: the chunks
that were in flight are re-run in a fresh pool one file at a time, and the file that kills a worker
again is reported as a per-file error (``CRASH_REASON``).  A model that will not load in a worker
raises ModelError, exactly as it does in-process.
"""

from __future__ import annotations

import itertools
import multiprocessing
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from cull.analyse import BATCH_SIZE, Analysis, analyse_chunk
from cull.card import ModelCard
from cull.errors import ModelError, WorkerError
from cull.forkserver import worker_context
from cull.score import OnnxScorer, Scorer

log = logging.getLogger(__name__)

CRASH_REASON = "worker process crashed while reading this file"
ScorerFactory = Callable[[ModelCard], Scorer]


@dataclass(frozen=True)
class WorkerState:
    """What one worker process holds: the card the user gave (pickled from the parent) and its scorer."""

    card: ModelCard
    scorer: Scorer | None
    batch_size: int
    with_laplacian: bool
    init_error: str | None = None  # a model that would not load: raised as ModelError on use
    with_bursts: bool = False  # score every patch and keep each photo's burst footprint


_state: WorkerState | None = None


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _init_worker(
    card: ModelCard,
    batch_size: int,
    with_laplacian: bool,
    scorer_factory: ScorerFactory | None,
    setup: Callable[[], None] | None,
    with_bursts: bool = False,
) -> None:
    """Pool initialiser. Never raises (a raising initialiser only logs and breaks the pool)."""
    global _state
    try:
        if setup is not None:
            setup()
        scorer = scorer_factory(card) if scorer_factory else OnnxScorer(card, threads=1)
        _state = WorkerState(card, scorer, batch_size, with_laplacian, with_bursts=with_bursts)
    except Exception as exc:  # noqa: BLE001 - reported to the parent on the first task
        _state = WorkerState(card, None, batch_size, with_laplacian, init_error=str(exc) or type(exc).__name__)


def _ready() -> WorkerState:
    if _state is None or _state.scorer is None:
        raise ModelError(_state.init_error if _state is not None and _state.init_error else "worker not initialised")
    return _state


_running: list[_Pooled] = []  # pools whose run() is under way in this process
_stop_code: list[int] = []  # set by stop_pools: the exit status the running pool ends with


def stop_pools(code: int) -> bool:
    """For a termination signal's handler: when a pool is running, end its worker processes and make
    it raise SystemExit(``code``) where it next looks (an exception raised from a signal handler at an
    arbitrary point of concurrent.futures can leave one of its locks held, and the pool's shutdown then
    waits for ever).  False when no pool is running: the caller may raise at once."""
    if not _running:
        return False
    _stop_code.append(code)
    for process in multiprocessing.active_children():  # the workers (the fork server is no Process child)
        process.terminate()
    return True


def _end_if_stopping() -> None:
    """Raise SystemExit when a termination signal ended the workers (stop_pools): called where it is safe."""
    if _stop_code:
        raise SystemExit(_stop_code[0])


def _ping() -> bool:
    _ready()
    return True


def _run_chunk(paths: list[Path]) -> list[Analysis]:
    state = _ready()
    assert state.scorer is not None
    return analyse_chunk(paths, state.card, state.scorer, state.batch_size, state.with_laplacian, state.with_bursts)


def _chunks(paths: Iterable[Path], size: int) -> Iterator[list[Path]]:
    chunk: list[Path] = []
    for path in paths:
        chunk.append(path)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def analyse_paths(
    paths: Iterable[Path],
    card: ModelCard,
    *,
    workers: int = 1,
    batch_size: int = BATCH_SIZE,
    chunk_size: int = 2,
    with_laplacian: bool = False,
    scorer_factory: ScorerFactory | None = None,
    worker_setup: Callable[[], None] | None = None,
    isolate: bool = False,
    with_bursts: bool = False,
) -> Iterator[Analysis]:
    """Yield an Analysis per path, in completion order (callers sort if they need to).

    ``workers <= 1`` runs in this process unless ``isolate`` (then in one worker process, so that a
    crash costs one file, not the caller).  ``scorer_factory`` supplies another scorer (tests);
    with several workers it and ``worker_setup`` (run first in each worker) must be picklable,
    i.e. module-level functions.  At most a few chunks per worker are in flight, so memory stays
    flat on huge libraries.  ``with_bursts``: see cull.analyse.analyse_chunk.  Raises ModelError when the model cannot be loaded, WorkerError when
    worker processes cannot even start.
    """
    if workers <= 1 and not isolate:
        scorer: Scorer | None = None
        for chunk in _chunks(paths, chunk_size):
            if scorer is None:  # built on first use: nothing to analyse, no model loaded
                if worker_setup is not None:
                    worker_setup()
                scorer = scorer_factory(card) if scorer_factory else OnnxScorer(card, threads=1)
            yield from _guarded(chunk, partial(analyse_chunk, chunk, card, scorer, batch_size, with_laplacian, with_bursts))
        return
    init = partial(_init_worker, card, batch_size, with_laplacian, scorer_factory, worker_setup, with_bursts)
    yield from _Pooled(max(1, workers), init).run(_chunks(paths, chunk_size))


def _guarded(chunk: list[Path], run: Callable[[], list[Analysis]]) -> list[Analysis]:
    """Run a chunk; an unexpected exception (not a file's fault alone) fails the chunk's files, not the scan."""
    try:
        return run()
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. the scorer failing on a batch
        log.debug("chunk failed", exc_info=True)
        return [Analysis(p, error=f"analysis failed: {type(exc).__name__}: {exc}") for p in chunk]


class _Pooled:
    """A process pool that survives dying workers (see the module docstring)."""

    def __init__(self, workers: int, init: Callable[[], None]) -> None:
        self.workers = workers
        self.init = init
        self.suspects: deque[Path] = deque()  # files that were in flight when a worker died
        self.start_failures = 0
        self.isolated: set[Path] = set()  # files already re-run alone once

    def _pool(self, workers: int) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=workers,
            mp_context=worker_context(),
            initializer=self.init,
        )

    def run(self, chunks: Iterator[list[Path]]) -> Iterator[Analysis]:
        _running.append(self)
        try:
            yield from self._run(chunks)
        finally:
            _running.remove(self)

    def _run(self, chunks: Iterator[list[Path]]) -> Iterator[Analysis]:
        first = next(chunks, None)
        if first is None:  # nothing to do: start no process
            return
        chunks = itertools.chain([first], chunks)
        exhausted = False
        while not exhausted or self.suspects:
            isolating = bool(self.suspects)  # suspects run in a one-worker pool, the rest in a full one
            pool = self._pool(1 if isolating else self.workers)
            try:
                ping = pool.submit(_ping)
                in_flight: dict[Future[list[Analysis]], list[Path]] = {}
                broken = False
                while not broken:
                    _end_if_stopping()
                    if isolating:  # one suspect at a time, alone, so a crash names its file
                        if not in_flight and self.suspects:
                            path = self.suspects.popleft()
                            in_flight[pool.submit(_run_chunk, [path])] = [path]
                    else:
                        while not exhausted and len(in_flight) < self.workers * 4:
                            chunk = next(chunks, None)
                            if chunk is None:
                                exhausted = True
                            else:
                                in_flight[pool.submit(_run_chunk, chunk)] = chunk
                    if not in_flight:
                        break
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    _end_if_stopping()  # before the ended workers are taken for a crash
                    if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                        broken = True
                        wait(in_flight, return_when=ALL_COMPLETED)  # a broken pool fails every pending task
                        done = set(in_flight)
                    lost: list[Path] = []
                    for future in done:
                        chunk = in_flight.pop(future)
                        if isinstance(future.exception(), BrokenProcessPool):
                            lost.extend(chunk)
                        else:
                            yield from _guarded(chunk, future.result)
                    if ping.done() and ping.exception() is None:
                        self.start_failures = 0
                    if broken:
                        yield from self._after_crash(ping, lost)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _after_crash(self, ping: Future[bool], lost: list[Path]) -> Iterator[Analysis]:
        """Decide what a dead worker means: a start-up failure, a known culprit, or new suspects."""
        wait([ping])
        error = ping.exception()
        if isinstance(error, ModelError):
            raise error
        if error is not None:
            self.start_failures += 1
            if self.start_failures >= 2:
                raise WorkerError("worker processes die while starting (loading the model); try --workers 1")
        if len(lost) == 1 and lost[0] in self.isolated:
            log.warning("%s: %s", lost[0], CRASH_REASON)
            yield Analysis(lost[0], error=CRASH_REASON)
        else:
            log.warning("a worker process died; re-running %d files one at a time", len(lost))
            self.isolated.update(lost)
            self.suspects.extend(lost)
