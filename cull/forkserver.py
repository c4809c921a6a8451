"""How analysis workers start, kept light enough to import before anything else.

Linux: workers are forked from a fork server that imported the analysis code (numpy, Pillow, cull) once,
instead of each worker importing it afresh (spawn: ~0.15 s of CPU per worker, per pool).  Nothing
imported there starts a thread but numpy's BLAS, which is fork-safe; onnxruntime (it starts a thread
when imported) and rawpy (OpenMP) are imported by each worker after the fork.  Elsewhere: spawn.

The `cull` command starts the fork server first thing for the commands that analyse photos
(``start_early``), so that its imports run on another core while the command line layer loads,
and the workers are forked the moment there is work.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence

PRELOAD = ["cull.runner"]  # what the fork server imports once, for every worker it forks
ANALYSING_COMMANDS = frozenset({"scan", "eval", "calibrate"})  # commands whose work runs in worker processes


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context analysis workers start in (see the module docstring)."""
    if not sys.platform.startswith("linux"):
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def command_of(argv: Sequence[str]) -> str | None:
    """The sub-command an argument list runs (the first argument that is not an option), if any;
    None when help is asked for."""
    if "--help" in argv or "-h" in argv:
        return None
    return next((arg for arg in argv if not arg.startswith("-")), None)


def start_early(argv: Sequence[str]) -> bool:
    """Start the fork server now when ``argv`` runs a command that analyses photos (Linux; a no-op
    elsewhere and when it is already running).  Never raises: the pool starts it later otherwise."""
    if command_of(argv) not in ANALYSING_COMMANDS or worker_context().get_start_method() != "forkserver":
        return False
    import signal

    try:
        from multiprocessing import forkserver

        # started ignoring Ctrl-C, as it ignores it once loaded: a Ctrl-C while it imports would print its
        # own traceback beside the command's (the command stops the pool and its workers itself)
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
    except Exception:  # noqa: BLE001 - an optimisation only: the first pool starts the server as before
        return False
    return True
