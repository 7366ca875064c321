"""Scripted-expert demonstrations in the sim -> the flow2one episode dataset (OUT/<task>/episode_*.npz).

Each episode: home the FR3 (franky-sim over libfranka), randomise the task from its seed, let the
task's expert (strategy drawn at random per episode) drive the arm through control.FrankyRobot (the
executor's franky adapter, with the sim graph's limits) at STEP_DT, and
record per step the measured proprio, the commanded target (the action) and the depth of every sim
camera; the 4,096-point clouds are computed after the episode with the same CloudPipeline, crop and
voxel size as the sim graph's pointcloud node. Failed expert episodes are skipped (and counted); the
next seed is tried until N successes or 2N attempts.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flow2one.sim.demos import generate
from flow2one.sim.tasks import TASKS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="all", choices=[*TASKS, "all"], help="task (default: all of them)")
    p.add_argument("--episodes", type=int, default=50, help="successful episodes to write per task")
    p.add_argument("--out", type=Path, required=True, help="dataset root; episodes go to OUT/<task>/")
    p.add_argument("--seed", type=int, default=0, help="seed of the first attempt (then seed+1, ...)")
    p.add_argument("--expert-lead", type=float, default=None, metavar="S",
                   help="record the measured TCP plus at most S seconds of the expert's speed toward its goal, "
                        "instead of its carrot (a label the observation determines; see results/replan/)")
    p.add_argument("--images", action="store_true", help="also store rgb + depth of every camera and step")


def main(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    tasks = list(TASKS) if args.task == "all" else [args.task]
    report = {t: generate(t, args.out / t, args.episodes, args.seed, args.images, expert_lead_s=args.expert_lead)
              for t in tasks}
    print(json.dumps(report, indent=1))
    return 0 if all(r["episodes"] == args.episodes for r in report.values()) else 1
