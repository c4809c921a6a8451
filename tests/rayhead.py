"""A real Ray head node on 127.0.0.1 (`ray start --head --block`) for tests and benchmarks: loopback only,
token authentication, no usage report, no cloud metadata look-ups.  Not part of the package."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def head_env() -> dict[str, str]:
    """This process's environment plus what a loopback-only head and its clients need."""
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token",
               RAY_AUTH_TOKEN=secrets.token_hex(16), RAY_USAGE_STATS_ENABLED="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # SIGTERM: stop now, no 30 s drain
               HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost")  # Ray asks cloud metadata servers
    env.pop("http_proxy", None)
    env.pop("RAY_ADDRESS", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_head(cpus: int, temp_dir: str, env: dict[str, str], timeout: float = 90) -> tuple[subprocess.Popen[bytes], int]:
    """Start a head node in its own process group; return it and its GCS port once that port answers.
    ``temp_dir`` must be short: Ray's socket paths must fit 107 bytes.  Raises RuntimeError."""
    port = free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp_dir}"],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not listening(port):
        if head.poll() is not None or time.monotonic() > deadline:
            stop_head(head)
            raise RuntimeError("ray start --head exited" if head.returncode is not None else "ray start --head did not come up")
        time.sleep(0.5)
    return head, port


def stop_head(head: subprocess.Popen[bytes]) -> None:
    """SIGTERM the head's process group (GCS, raylet, workers), SIGKILL after 40 s."""
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
