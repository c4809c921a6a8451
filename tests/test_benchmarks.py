"""The benchmark scripts' own helpers still run against the current package (they are not timed here)."""

from benchmarks.scan_throughput import EXAMPLES, stage_costs


def test_soft_library_stage_breakdown_times_every_stage_of_a_photo():
    costs = stage_costs(EXAMPLES[:3], rounds=1)
    assert list(costs) == ["DCT 1/8 decode", "analysis-scale decode", "patch selection", "network, 64 patches"]
    assert all(0 < ms < 10_000 for ms in costs.values()), costs
