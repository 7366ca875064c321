"""Latency traces of a graph, stage by stage (camera frame -> cloud -> policy -> chunk -> executor -> franky
target), under the current or the old scheduling (flow2one.ros.trace.AFTER / BEFORE): the runs behind
`flow2one latency`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flow2one.ros.trace import BEFORE

# goals (ms, p50 and p99) for the figures compared: the reaction time the method's argument needs
GOALS = {"sim": {"obs_to_chunk_ms": (15.0, 40.0), "obs_to_command_ms": (25.0, 60.0)},
         "probe": {"obs_to_chunk_ms": (None, 20.0)}}



def _pct(a, q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(a, q)), 2) if len(a) else None


def trace_sim(name: str, sched: dict[str, Any], model_dir: Path, task: str, seconds: float, domain: int,
              rate_hz: float | None = None, candidates: int | None = None) -> tuple[dict, list]:
    """One episode of the sim graph as `flow2one demo` runs it, under scheduling `sched`: (figures, trace rows)."""
    import numpy as np

    from flow2one.ros import graph_episodes as demo
    from flow2one.ros.runner import EXECUTOR_ENV
    from flow2one.ros.trace import breakdown

    if not model_dir.is_absolute() and not model_dir.is_dir():
        model_dir = demo.REPO_ROOT / model_dir
    policy = {"rate_hz": rate_hz or 30.0, **sched["policy"]}
    if candidates:
        policy["n_candidates"] = candidates
    old = os.environ.get(EXECUTOR_ENV)
    os.environ[EXECUTOR_ENV] = sched["ros_executor"]  # this process's runner and the child processes
    try:
        logs, info = demo.run_task(task, model_dir, 1, 300_000, "onnxruntime", domain,
                                   wall_budget=6 * seconds + 120, episode_s=seconds,
                                   overrides={"policy": policy, "executor": sched["executor"]})
    finally:
        if old is None:
            os.environ.pop(EXECUTOR_ENV)
        else:
            os.environ[EXECUTOR_ENV] = old
    rows = [r for log in logs for r in log.trace]
    to_chunk = np.concatenate([log.latencies_ms()[0] for log in logs]) if logs else np.array([])
    to_cmd = np.concatenate([log.latencies_ms()[1] for log in logs]) if logs else np.array([])
    wall = sum(log.wall_s for log in logs)
    return {"scheduling": name, "policy": policy, "episodes": len(logs),
            "chunks": len(to_chunk), "policy_rate_hz": round(len(to_chunk) / max(wall, 1e-9), 2),
            "obs_to_chunk_ms": {"p50": _pct(to_chunk, 50), "p99": _pct(to_chunk, 99)},
            "obs_to_command_ms": {"p50": _pct(to_cmd, 50), "p99": _pct(to_cmd, 99)},
            "sim_rtf": round(sum(float(log.status.get("t", 0)) for log in logs) / max(wall, 1e-9), 2),
            "inference_ms_p50": info.get("policy_inference_ms_p50"), "faults": info.get("faults", []),
            "trace": breakdown(rows)}, rows


def trace_probe(name: str, sched: dict[str, Any], model: Path, seconds: float, domain: int,
                rate_hz: float | None = None, candidates: int | None = None) -> tuple[dict, list]:
    """The policy node beside a 30 Hz observation probe in this process: (figures, trace rows)."""
    from flow2one.bench.policy_graph_latency import measure

    res, rows = measure(model, candidates or 4, seconds, domain, before=sched is BEFORE, rate_hz=rate_hz or 125.0)
    res["scheduling"] = name
    res["obs_to_chunk_ms"] = {"p50": res.get("latency_ms_p50"), "p99": res.get("latency_ms_p99")}
    return res, rows


def trace_listen(seconds: float, domain: int) -> tuple[dict, list]:
    """The trace of a graph already running on `domain`, collected for `seconds`."""
    from flow2one.ros.runner import GraphRunner
    from flow2one.ros.trace import TraceCollector, breakdown

    with GraphRunner("deploy", nodes=[], domain_id=domain) as runner:
        collector = TraceCollector(runner.context)
        runner.add_node(collector)
        runner.nodes["latency_trace"] = collector
        time.sleep(seconds)
        rows = collector.rows()
    return {"scheduling": "as running", "domain_id": domain, "trace": breakdown(rows)}, rows


def compare(graph: str, runs: list[dict]) -> dict[str, Any]:
    """Median over repeats of each figure, per scheduling, with after/before ratios and the goals."""
    import numpy as np

    out: dict[str, Any] = {}
    for metric, (goal50, goal99) in GOALS[graph].items():
        row: dict[str, Any] = {"goal_p50": goal50, "goal_p99": goal99}
        for name in ("before", "after"):
            for q in ("p50", "p99"):
                vals = [r[metric][q] for r in runs if r["scheduling"] == name and r.get(metric, {}).get(q) is not None]
                row[f"{name}_{q}"] = round(float(np.median(vals)), 2) if vals else None
        for q in ("p50", "p99"):
            b, a = row[f"before_{q}"], row[f"after_{q}"]
            row[f"ratio_{q}"] = round(a / b, 3) if a is not None and b else None
        out[metric] = row
    return out
