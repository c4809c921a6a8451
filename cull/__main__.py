"""`python -m cull` and the `cull` command.

Kept free of imports at module level: worker processes (cull.forkserver.worker_context: a fork server
or spawn) run the parent's main script again in each worker (for `cull`, the console script that imports
``main`` from here), so whatever this module imports every worker would import too (the whole
command-line layer, typer and tqdm: ~0.2 s of CPU per worker, per pool).
"""


def main() -> None:
    import sys

    from cull.forkserver import start_early

    start_early(sys.argv[1:])  # the workers' fork server loads on another core while the command line does
    from cull.cli import app

    app(prog_name="cull")


if __name__ == "__main__":
    main()
