"""`cull scan --ray` on a cluster of several nodes: a node lost in the middle of a scan.

Ray's own multi-node test harness (ray.cluster_utils.Cluster) starts a real head (GCS, no CPUs, so
every task runs on a worker node) and two worker nodes (each its own raylet and object store) on
127.0.0.1.  One node is killed while it analyses a chunk; Ray re-runs its tasks on the node left
and the scan ends with every photo scored exactly as the local pool scores it.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before any ray import: 127.0.0.1 stays loopback

import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

import cull.analyse
from cull.scan import ScanOptions, scan
from tests.conftest import EXAMPLES, blurred_image, save, sharp_image

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

MARKERS = "CULL_TEST_NODE_MARKERS"


def slow_and_mark_node() -> None:
    """In a Ray worker: every decode takes 0.4 s longer and first leaves a file named after the
    worker's node, so the test knows which node is busy and has time to kill it mid-chunk."""
    original = cull.analyse.decode_levels
    folder = Path(os.environ[MARKERS])
    node = ray.get_runtime_context().get_node_id()

    def decode(path: Path, long_side: int):  # type: ignore[no-untyped-def]
        (folder / node).touch()
        time.sleep(0.4)
        return original(path, long_side)

    cull.analyse.decode_levels = decode  # type: ignore[assignment]


def _key(result) -> tuple[object, ...]:  # type: ignore[no-untyped-def]
    row = result.row()
    return row["score"], row["verdict"], row["reason"], row["error"]


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(4):
        save(sharp_image(i), root / f"s{i}.jpg")
        save(blurred_image(i, 3), root / f"b{i}.jpg")
    for example in sorted(EXAMPLES.glob("*_*.jpg")):
        shutil.copy(example, root / example.name)
    return root


def test_a_node_lost_mid_scan_has_its_chunks_rerun_and_the_report_is_complete(tmp_path, monkeypatch, photos, card):
    from cull.cluster import connect, disconnect

    expected = {r.path.name: _key(r) for r in scan([photos], card, ScanOptions(workers=2, use_cache=False)).results}
    markers = tmp_path / "markers"
    markers.mkdir()
    # the node processes inherit this process's environment: markers, no usage report, no network
    for name, value in ((MARKERS, str(markers)), ("RAY_USAGE_STATS_ENABLED", "0"), ("HTTP_PROXY", "http://127.0.0.1:9"),
                        ("NO_PROXY", "127.0.0.1,localhost")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray workers cannot import tests/
    fast_failure_detection = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                              "health_check_failure_threshold": 4}
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "_system_config": fast_failure_detection})
    killed: list[str] = []
    try:
        doomed = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
        cluster.wait_for_nodes()
        info = connect(cluster.address)
        assert (info.nodes, info.cpus) == (3, 2)

        def kill_when_busy() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not (markers / doomed.node_id).exists():
                time.sleep(0.05)
            if (markers / doomed.node_id).exists():
                cluster.remove_node(doomed, allow_graceful=False)  # SIGKILL its raylet, store and workers
                killed.append(doomed.node_id)

        killer = threading.Thread(target=kill_when_busy, daemon=True)
        killer.start()
        result = scan([photos], card, ScanOptions(ray=True, use_cache=False), worker_setup=slow_and_mark_node)
        killer.join(timeout=5)
        assert killed, "the node never started analysing, so it was not killed mid-scan"
        assert {r.path.name: _key(r) for r in result.results} == expected
        alive = [n for n in ray.nodes() if n.get("Alive")]
        assert doomed.node_id not in {n["NodeID"] for n in alive}
    finally:
        disconnect()
        cluster.shutdown()
