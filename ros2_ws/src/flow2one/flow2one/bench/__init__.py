"""The benchmarks of `flow2one bench`: one module per benchmark, named after its key, each with
`run(quick: bool) -> dict` (JSON-able figures, medians with a baseline measured in the same run), all timing
through `bench.timing`. Modules are imported only when their benchmark runs, so one benchmark's heavy or
ROS-only imports cost the others nothing."""

from __future__ import annotations

import importlib

# Register a benchmark by adding its key here and a module flow2one/bench/<key>.py with run(quick).
BENCHES: tuple[str, ...] = ("ros_transport", "policy_inference", "policy_graph_latency", "perception_cloud",
                            "policy_speed", "bag_recording", "executor_latency", "sim_world", "view_overhead")


def module_name(name: str) -> str:
    return f"{__name__}.{name}"


def run_bench(name: str, quick: bool = False) -> dict:
    if name not in BENCHES:
        raise KeyError(f"unknown benchmark {name!r}; known: {', '.join(BENCHES)}")
    return importlib.import_module(module_name(name)).run(quick=quick)
