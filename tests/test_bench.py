"""`flow2one bench` (what `make bench` runs) prints one valid JSON object; figures are not asserted here
(speed belongs to the benchmark), only that the transport benchmark really moved messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import flow2one.bench
from flow2one.bench import BENCHES, module_name, timing
from flow2one.bench.timing import MachineShare, Timing, time_calls
from flow2one.paths import repo_root

REPO = repo_root()
BENCH_DIR = Path(flow2one.bench.__file__).parent


def _bench(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    return subprocess.run([sys.executable, "-m", "flow2one.cli", "bench", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)


def test_registered_benchmarks_resolve() -> None:
    """Every key names a module of flow2one/bench/ with run(quick), and every module there is registered."""
    import importlib

    for name in BENCHES:
        assert callable(importlib.import_module(module_name(name)).run), name
    modules = {p.stem for p in BENCH_DIR.glob("*.py")} - {"__init__", "timing"}
    assert modules == set(BENCHES)


def test_timing_helper_warms_up_and_takes_medians() -> None:
    calls = []
    t = time_calls(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7 and t.n == 5 and t.cpu is not None
    fixed = Timing.of([0.001, 0.002, 0.010])
    assert fixed.ms_median == 2.0 and fixed.hz == 500.0 and fixed.ms(100) == 10.0


def test_machine_share_counts_steal_of_all_cpu_time_once(monkeypatch) -> None:
    from collections import namedtuple

    Times = namedtuple("Times", "user system idle steal guest guest_nice")
    seq = iter([Times(10, 5, 100, 0, 4, 0), Times(20, 5, 110, 20, 9, 0)])  # guest lies inside user: not added
    monkeypatch.setattr(timing.psutil, "cpu_times", lambda: next(seq))
    share = MachineShare().read()
    assert share["cpu_steal_pct"] == 50.0 and share["load_avg_1min"] >= 0


def test_ros_transport_quick_prints_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = _bench("ros_transport", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report == json.loads(out.read_text())
    assert report["meta"]["quick"] is True
    r = report["ros_transport"]
    for stream in ("image_640x480_rgb8", "pointcloud2_4096_xyz"):
        for qos in ("sensor_qos", "best_effort"):
            fig = r["transport"][stream][qos]
            assert fig["sent"] == r["messages_per_config"] > 0
            assert 0 <= fig["received"] <= fig["sent"]
        reliable = r["transport"][stream]["sensor_qos"]
        assert reliable["received"] > 0 and 0 < reliable["p50_ms"] <= reliable["p99_ms"]
    for conv in r["conversion"].values():
        assert conv["numpy_to_msg_ms"] > 0 and conv["naive_numpy_to_msg_ms"] > 0
        assert conv["msg_to_numpy_speedup"] > 0


def test_unknown_benchmark_is_an_error() -> None:
    proc = _bench("no_such_bench")
    assert proc.returncode == 2
    assert "unknown benchmark(s) ['no_such_bench']" in proc.stderr
    listed = _bench("--list")
    assert listed.returncode == 0 and "ros_transport" in listed.stdout
