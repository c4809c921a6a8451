"""Analyse many photos in parallel: worker processes decode, pick patches and score in batches.

Each worker owns one single-threaded onnxruntime session, so decode and inference keep every
core busy without oversubscription. Results stream back as chunks finish.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from cull.analyse import Analysis, analyse_chunk
from cull.card import ModelCard, load_card
from cull.score import OnnxScorer, Scorer

_STATE: dict[str, object] = {}


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _init_worker(card_path: str, batch_size: int, with_laplacian: bool) -> None:
    card = load_card(Path(card_path), verify=False)  # the parent verified the hash once
    _STATE.update(card=card, scorer=OnnxScorer(card, threads=1), batch_size=batch_size, lap=with_laplacian)


def _run_chunk(paths: list[Path]) -> list[Analysis]:
    return analyse_chunk(
        paths,
        _STATE["card"],  # type: ignore[arg-type]
        _STATE["scorer"],  # type: ignore[arg-type]
        _STATE["batch_size"],  # type: ignore[arg-type]
        bool(_STATE["lap"]),
    )


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
    batch_size: int = 64,
    chunk_size: int = 2,
    with_laplacian: bool = False,
    scorer_factory: Callable[[ModelCard], Scorer] | None = None,
) -> Iterator[Analysis]:
    """Yield an Analysis per path, in completion order (callers sort if they need to).

    ``workers <= 1`` runs in this process (``scorer_factory`` may then supply a test scorer).
    At most a few chunks per worker are in flight, so memory stays flat on huge libraries.
    """
    if workers <= 1:
        scorer = scorer_factory(card) if scorer_factory else OnnxScorer(card, threads=1)
        for chunk in _chunks(paths, chunk_size):
            yield from analyse_chunk(chunk, card, scorer, batch_size, with_laplacian)
        return
    card_path = str(card.model_path.with_suffix(".json"))
    context = multiprocessing.get_context("spawn")  # rawpy/OpenMP and onnxruntime dislike fork
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(card_path, batch_size, with_laplacian),
    ) as pool:
        pending: set[Future[list[Analysis]]] = set()
        for chunk in _chunks(paths, chunk_size):
            pending.add(pool.submit(_run_chunk, chunk))
            if len(pending) >= workers * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield from future.result()
        for future in pending:
            yield from future.result()
