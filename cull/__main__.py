"""`python -m cull` and the `cull` command.

Kept free of imports at module level: worker processes (cull.forkserver.worker_context: a fork server
or spawn) run the parent's main script again in each worker (for `cull`, the console script that imports
``main`` from here), so whatever this module imports every worker would import too (the whole
command-line layer, typer and tqdm: ~0.2 s of CPU per worker, per pool).
"""


def main() -> None:
    import sys

    from cull.forkserver import start_early

    _stop_cleanly_on_termination()
    try:
        start_early(sys.argv[1:])  # the workers' fork server loads on another core while the command line does
        from cull.cli import app
    except KeyboardInterrupt:  # Ctrl-C while the command is still loading: nothing done yet, no traceback
        sys.exit(130)
    app(prog_name="cull")


def _stop_cleanly_on_termination() -> None:
    """SIGTERM (``timeout``, ``kill``, a process manager) and SIGHUP (the terminal closed) end the command
    as an exception does: worker pools shut down, temporary files are removed, nothing is left running.
    The default action would end this process alone and leave its workers waiting for work for ever."""
    import signal
    import sys

    def stop(signum: int, frame: object) -> None:
        runner = sys.modules.get("cull.runner")
        if runner is not None and runner.stop_pools(128 + signum):
            return  # workers ended; the pool raises SystemExit where it is safe to
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


if __name__ == "__main__":
    main()
