"""The `cull` command as installed: a console script whose worker processes stay light."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples" / "photos"


def _console_script() -> Path:
    script = Path(sys.executable).parent / "cull"
    if not script.exists():
        pytest.skip("the cull console script is not installed beside this Python")
    return script


def test_the_console_script_runs_the_light_entry_point() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["cull"] == "cull.__main__:main"
    probe = "import sys, cull.__main__; print(sorted(m for m in sys.modules if m.split('.')[0] in ('cull', 'typer', 'tqdm')))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "['cull', 'cull.__main__']"


def test_scan_workers_started_by_the_console_script_do_not_import_the_command_line(tmp_path: Path) -> None:
    """Spawned workers run the parent's main script again; the `cull` script must not drag the whole
    command-line layer (typer, tqdm, every command) into each of them."""
    script = _console_script()
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in sorted(EXAMPLES.glob("*.jpg"))[:4]:
        shutil.copy(path, photos)
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "CULL_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([str(script), "scan", str(photos), "--workers", "2", "--no-xmp", "--show", "none"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _imports(done.stderr, "onnxruntime") == 2  # each worker loaded the model: both really ran
    assert _imports(done.stderr, "cull.cli") == 1  # the parent alone
    assert _imports(done.stderr, "typer") == 1


def _imports(importtime_log: str, module: str) -> int:
    """How many processes imported ``module`` (-X importtime lists a module once per process)."""
    return len(re.findall(rf"\|\s+{re.escape(module)}$", importtime_log, re.MULTILINE))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux's way (spawn elsewhere)")
def test_the_fork_server_preloads_nothing_that_starts_threads_but_numpy() -> None:
    """Workers fork from a server that imported cull.runner (Linux): onnxruntime starts a thread when
    imported and must be imported in each worker after the fork, never by cull.runner itself."""
    from cull.runner import worker_context

    probe = ("import sys, os, cull.runner; print('onnxruntime' in sys.modules, 'rawpy' in sys.modules, "
             "len(os.listdir('/proc/self/task')))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert done.stdout.split() == ["False", "False", "1"]  # no thread at all once BLAS is held to one
    assert worker_context().get_start_method() == "forkserver"


def test_the_fork_server_starts_early_only_for_commands_that_analyse() -> None:
    from cull.forkserver import command_of, start_early

    assert command_of(["-v", "scan", "photos"]) == "scan"
    assert command_of(["scan", "photos", "--help"]) is None and command_of([]) is None
    assert not start_early(["move", "--rejects", "photos"])
    assert not start_early(["--version"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is Linux's way (spawn elsewhere)")
def test_scan_starts_the_fork_server_before_the_command_line_loads() -> None:
    """`cull scan` starts the workers' fork server first thing, so that the server's imports run while the
    command line layer loads; a pool started later forks its workers from that same server."""
    probe = (
        "import sys, multiprocessing.forkserver as fs\n"
        "from cull.forkserver import start_early\n"
        "assert start_early(['scan', 'photos'])\n"
        "started = fs._forkserver._forkserver_pid\n"
        "print('typer' in sys.modules, 'numpy' in sys.modules, started is not None)\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from cull.forkserver import worker_context\n"
        "with ProcessPoolExecutor(1, mp_context=worker_context()) as pool:\n"
        "    print(pool.submit(sum, [1, 2]).result(), fs._forkserver._forkserver_pid == started)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["False", "False", "True", "3", "True"]


def test_scan_help_names_the_extra_that_ray_needs() -> None:
    """The help formatter takes [ray] for markup and drops it unless escaped."""
    from typer.testing import CliRunner

    from cull.cli import app

    result = CliRunner().invoke(app, ["scan", "--help"], env={"COLUMNS": "300", "TERM": "dumb"})
    assert result.exit_code == 0 and "cull-focus[ray]" in result.output
