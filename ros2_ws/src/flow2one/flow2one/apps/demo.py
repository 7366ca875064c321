"""The main job: the deploy graph with the shipped one-step student, driving franky-sim.

Runs the `sim` graph (flow2one/graph.py), the sim world and pointcloud nodes in child processes and policy +
executor in this one: sim cameras -> pointcloud node (4,096 points) -> policy node (models/sim_student, ONNX
Runtime) -> executor -> franky -> franky-sim, for a few episodes of each sim task. Like an operator would, it
homes the arm and opens the hand (/flow2one/executor/home; the executor then holds), randomises the scene
(/flow2one/sim/reset), starts the episode ("start" on /flow2one/episode) and reads success from
/flow2one/sim/task_status; it listens to the chunk and command topics to measure what a user cares about:
success, policy rate (chunks/s received) and observation -> command latency (chunk stamp = the observation's
robot-state time, the cloud's own instant with policy.state_at_cloud -> first franky command after the chunk
arrived), with the per-stage breakdown of
/flow2one/trace (flow2one/ros/trace.py). Writes OUT/summary.json, OUT/strip.png (front camera, one row per
task), OUT/trajectories.png (predicted chunks and the executed end-effector path), OUT/latency.png and
OUT/demo.rrd (the Rerun recording of every episode: `flow2one view OUT/demo.rrd`; --view watches it live).

Without a shipped model it stops with an error saying how to make one: it never reports success it
did not measure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from flow2one.ros.graph_episodes import (
    DEFAULT_MODEL,
    MAKE_HINT,
    REPO_ROOT,
    EpisodeLog,
    aggregate,
    fmt_ms,
    model_problem,
    run_task,
    save_plots,
    view_process,
)
from flow2one.view.switch import add_view_arguments, with_view


def add_arguments(p: argparse.ArgumentParser) -> None:
    from flow2one.sim.tasks import MULTI_TASK

    p.add_argument("--model-dir", default=DEFAULT_MODEL, help=f"student to deploy (default {DEFAULT_MODEL})")
    p.add_argument("--tasks", default=",".join(MULTI_TASK), help="comma list of sim tasks (default the shipped "
                   f"student's: {','.join(MULTI_TASK)})")
    p.add_argument("--episodes", type=int, default=2, help="episodes per task (default 2)")
    p.add_argument("--seed", type=int, default=200_000, help="seed of the first episode of each task")
    p.add_argument("--backend", default="onnxruntime", choices=("onnxruntime", "torch"), help="policy node backend")
    p.add_argument("--episode-s", type=float, default=None, help="end episodes after this many sim seconds "
                   "(default: each task's time limit)")
    p.add_argument("--max-wall", type=float, default=540.0, help="total wall-clock budget in s (episodes beyond "
                   "it are skipped and reported)")
    p.add_argument("--domain-id", type=int, default=int(os.environ.get("ROS_DOMAIN_ID", 0)),
                   help="ROS domain (default $ROS_DOMAIN_ID or 0): watch it live with RViz / Foxglove")
    p.add_argument("--out", type=Path, default=Path("outputs/demo"), help="summary.json, strip.png, trajectories.png, "
                   "demo.rrd")
    add_view_arguments(p, save_default="OUT/demo.rrd")


def main(args: argparse.Namespace) -> int:
    from flow2one.ros.trace import format_breakdown
    from flow2one.ros.trace import plot as plot_trace
    from flow2one.sim.tasks import TASKS

    model_dir = Path(args.model_dir)
    if not model_dir.is_absolute() and not model_dir.is_dir():
        model_dir = REPO_ROOT / model_dir
    problem = model_problem(model_dir, args.backend)
    if problem:
        print(f"flow2one demo: {problem}.\nThe demo deploys a trained student and has none to run: {MAKE_HINT}.",
              file=sys.stderr)
        return 2
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or set(tasks) - set(TASKS):
        raise SystemExit(f"--tasks {args.tasks!r}: choose from {', '.join(TASKS)}")
    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"flow2one demo: sim graph (sim cameras -> pointcloud -> policy [{model_dir.name}, {args.backend}] -> "
          f"executor -> franky -> franky-sim), {args.episodes} episode(s) of {', '.join(tasks)}; ROS domain "
          f"{args.domain_id}", flush=True)
    t0 = time.monotonic()
    logs: dict[str, list[EpisodeLog]] = {}
    infos: dict[str, Any] = {}
    if args.view_save == "OUT/demo.rrd":
        args.view_save = str(args.out / "demo.rrd")
    _, view = with_view(args, ["policy"], {}, own_process=True)
    with view_process(view.get("view"), args.domain_id):  # one view across the tasks' graphs: one recording
        for i, task in enumerate(tasks):
            budget = (args.max_wall - (time.monotonic() - t0)) / (len(tasks) - i)
            logs[task], infos[task] = run_task(task, model_dir, args.episodes, args.seed, args.backend,
                                               args.domain_id, budget, args.episode_s,
                                               overrides={"policy": view.get("policy") or {}},
                                               view=view.get("view") is not None)
    all_logs = [l for ls in logs.values() for l in ls]
    summary = {"model_dir": str(model_dir), "backend": args.backend, "wall_s": time.monotonic() - t0,
               "overall": aggregate(all_logs),
               "tasks": {t: {**aggregate(ls), "graph": infos[t], "per_episode": [l.summary() for l in ls]}
                         for t, ls in logs.items()}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    save_plots(args.out, logs)
    trace_rows = [r for log in all_logs for r in log.trace]
    if trace_rows:
        plot_trace(trace_rows, str(args.out / "latency.png"), "demo: latency per stage")
    print("\nresult (success; policy rate = chunks/s received; latency = observation stamp -> first franky command "
          "after the chunk arrived):")
    for t, s in summary["tasks"].items():
        skipped = s["graph"].get("skipped_episodes")
        print(f"  {t:13s} success {s.get('successes', 0)}/{s['episodes']}"
              + (f" ({skipped} skipped: {s['graph']['faults'][-1] if s['graph']['faults'] else 'time'})"
                 if skipped else "") + f"  policy {s.get('policy_rate_hz', 0):5.1f} "
              f"chunks/s  obs->command p50 {fmt_ms(s.get('obs_to_command_ms', {}).get('p50'))} ms, "
              f"p99 {fmt_ms(s.get('obs_to_command_ms', {}).get('p99'))} ms  sim RTF {s.get('sim_rtf', 0):.2f}")
    print(format_breakdown(summary["overall"].get("latency_breakdown", {})))
    print(f"wrote {args.out}/summary.json, strip.png, trajectories.png, latency.png"
          + (f", {args.view_save}" if args.view_save else "") + f" in {summary['wall_s']:.0f} s")
    silent = [e for s in summary["tasks"].values() for e in s["per_episode"] if e["chunks"] == 0]
    unrun = [t for t, ls in logs.items() if not ls]
    if silent or unrun:
        print("flow2one demo: the policy published no chunks in " + ", ".join(
              [f"{e['task']} episode (seed {e['seed']})" for e in silent] + [f"{t} (no episode ran)" for t in unrun])
              + ": the graph is not working. Its nodes' last /diagnostics:", file=sys.stderr)
        for name, d in (silent[-1]["diagnostics"] if silent else {}).items():
            print(f"  {name}: {d['message']}  " + ", ".join(f"{k}={v}" for k, v in d.items()
                                                             if k not in ("level", "message")), file=sys.stderr)
        return 1
    return 0
