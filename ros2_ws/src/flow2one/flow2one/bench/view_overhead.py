"""`flow2one bench view_overhead`: does watching slow the control path? The demo's sim graph (shipped student,
ONNX Runtime) runs the same episodes with the view off and on (its own process, live web viewer + .rrd file,
as `flow2one demo --view` has it), alternating off/on so machine load drifts into both; reports the policy
rate (chunks/s received) and observation -> first command latency, medians over the rounds, and on/off
ratios."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from flow2one.ros import graph_episodes as demo


def _round(view: dict | None, model: Path, task: str, episodes: int, episode_s: float, domain_id: int) -> dict:
    with demo.view_process(view, domain_id):
        logs, _ = demo.run_task(task, model, episodes, 300_000, "onnxruntime", domain_id, 600.0, episode_s,
                                overrides={"policy": {"markers_every": 1}} if view else None, view=view is not None)
    agg = demo.aggregate(logs)
    lat = agg.get("obs_to_command_ms", {})
    return {"policy_rate_hz": agg.get("policy_rate_hz"), "obs_to_command_ms_p50": lat.get("p50"),
            "obs_to_command_ms_p99": lat.get("p99"), "sim_rtf": agg.get("sim_rtf"),
            "episodes": len(logs), "load_avg_1min": os.getloadavg()[0]}


def run(quick: bool = False) -> dict:
    model = demo.REPO_ROOT / demo.DEFAULT_MODEL
    rounds, episodes, episode_s = (1, 1, 4.0) if quick else (2, 2, 8.0)
    domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0"))
    out: dict[str, list[dict]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            out["off"].append(_round(None, model, "reach_around", episodes, episode_s, domain_id))
            view = {"live": True, "save": str(Path(tmp) / f"round{r}.rrd"), "grpc_port": 9886, "web_port": 9096}
            out["on"].append(_round(view, model, "reach_around", episodes, episode_s, domain_id))

    def med(mode: str, key: str) -> float | None:
        vals = [x[key] for x in out[mode] if x[key] is not None]
        return float(np.median(vals)) if vals else None

    keys = ("policy_rate_hz", "obs_to_command_ms_p50", "obs_to_command_ms_p99")
    summary = {mode: {k: med(mode, k) for k in keys} for mode in out}
    ratio = {k: (summary["on"][k] / summary["off"][k]) if summary["off"][k] else None for k in keys}
    return {"task": "reach_around", "rounds": out, "median": summary, "ratio_on_over_off": ratio,
            "note": "view on = view node in its own process, web viewer served + .rrd written, markers_every 1"}
