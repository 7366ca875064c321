"""The analog of the paper's Table I on our sim tasks: closed-loop success and inference rate of every
policy kind, plus the modes each one used.

Rows: the CFM teacher with 50 Euler steps, the same teacher with 1 step (the naive one-step baseline),
the distilled one-step student, L1 Sample Flow (2 steps) and MSE regression. Each runs closed loop in
franky-sim through the deployed path (flow2one.sim.rollout.PolicyController: the policy node's
runtime.PolicyStep, the executor node's control.Executor with its safety filter and watchdog, and
control.FrankyRobot over libfranka), on the sim clock, with inference in its own thread as in the deploy
graph: a policy re-plans at most the sim graph's policy rate_hz times per sim second (config/sim.yaml;
--policy-rate-hz 0: as soon as its previous chunk is out), and the robot meanwhile executes the newest
chunk, so a slow policy acts on old observations, which costs on the dynamic task as on the robot.

Success is given as mean and standard deviation over evaluation seed groups (each group a fresh set of
randomised episodes, seeds disjoint from the training demos). Inference rate is measured separately on
one CPU thread (batch 1, median of repeated calls on a recorded sim observation) and also inside the
loop. Writes OUT/table1.md, OUT/table1.json and plots (mode histograms, success vs rate).

Examples:
  flow2one table1                                    # shipped models/sim_*, 3 seed groups x 4 episodes
  flow2one table1 --seeds 1 --episodes 1 --tasks reach_around --out runs/t1   # smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flow2one.apps.sim_eval import add_rate_arguments, rate_or_none
from flow2one.paths import data_root
from flow2one.sim.evaluate import apply_overrides
from flow2one.sim.table1.config import ROWS, Table1Config

REPO_ROOT = data_root()


def add_arguments(p: argparse.ArgumentParser) -> None:
    from flow2one.sim.tasks import MULTI_TASK, TASKS

    p.add_argument("--models", type=Path, default=REPO_ROOT / "models", help="directory holding sim_<kind>/ models")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results", help="where table1.md/.json and plots go")
    p.add_argument("--tasks", default=",".join(MULTI_TASK), help=f"comma list of sim tasks ({', '.join(TASKS)}; "
                   f"default the shipped multi-task models' {','.join(MULTI_TASK)}; pop_up needs models trained on it, "
                   "results/README.md, pop_up)")
    p.add_argument("--rows", default="", help=f"comma list of row numbers 0-{len(ROWS) - 1} "
                   f"({'; '.join(f'{i}: {r.label}' for i, r in enumerate(ROWS))}); default all")
    p.add_argument("--seeds", type=int, default=3, help="evaluation seed groups (spread is over these)")
    p.add_argument("--first-seed-group", type=int, default=0, help="evaluate seed groups from this one on: "
                   "more episodes for cells of an earlier run, which --combine then pools")
    p.add_argument("--episodes", type=int, default=4, help="episodes per seed group, task and policy")
    s = add_rate_arguments(p)
    p.add_argument("--candidates", type=int, default=s["candidates"], help="M samples per re-plan, the one "
                   "continuing the executing chunk kept (the policy node's n_candidates; default "
                   f"{s['candidates']}, the sim graph's); inference is timed for all M")
    p.add_argument("--hz-repeats", type=int, default=20, help="calls timed for the inference rate")
    p.add_argument("--max-time", type=float, default=None, help="cap each episode at this many sim seconds")
    p.add_argument("--threads", type=int, default=1, help="torch threads inside the rollout")
    p.add_argument("--merge-with", type=Path, default=None, help="an earlier table1.json (same settings) whose "
                   "cells complete this table (other rows/tasks) or pool with it (other seed groups)")
    p.add_argument("--combine", type=Path, nargs="+", default=None, metavar="JSON",
                   help="evaluate nothing: write OUT/table1.* from these table1.json files (task x row "
                   "cells: disjoint ones side by side, the same cell on other seed groups pooled) or from the "
                   "table1.partial.json of a run stopped part-way (the tasks it finished)")
    p.add_argument("--jobs", type=int, default=1, help="tasks evaluated at once, each in its own process with its "
                   "own franky-sim (results are paced by sim time, so they hold under load; wall time does not)")


def main(args: argparse.Namespace) -> int:
    import torch

    from flow2one.sim.table1.report import combine
    from flow2one.sim.table1.run import run
    from flow2one.sim.tasks import TASKS

    torch.set_num_threads(args.threads)
    if args.combine:
        combine(args.combine, args.out)
        print((args.out / "table1.md").read_text())
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or set(tasks) - set(TASKS):
        raise SystemExit(f"--tasks {args.tasks!r}: choose from {', '.join(TASKS)}")
    try:
        rows = [ROWS[int(i)] for i in args.rows.split(",")] if args.rows else list(ROWS)
    except (ValueError, IndexError):
        raise SystemExit(f"--rows {args.rows!r}: comma list of numbers 0-{len(ROWS) - 1}") from None
    if (min(args.seeds, args.episodes, args.candidates, args.n_exec) < 1 or args.first_seed_group < 0
            or args.camera_lag_steps < 0):
        raise SystemExit("--seeds, --episodes, --candidates and --n-exec must be >= 1, --first-seed-group and "
                         "--camera-lag-steps >= 0")
    rate_hz = rate_or_none(args.policy_rate_hz)
    apply_overrides(args.set)
    given = sys.argv[2:] if sys.argv[1:2] == ["table1"] else []
    settings = {"--n-exec": args.n_exec, "--policy-rate-hz": args.policy_rate_hz, "--candidates": args.candidates,
                "--max-obs-age-s": args.max_obs_age_s, "--camera-lag-steps": args.camera_lag_steps}
    # the settings spelled out, so the recorded command still means the same once sim.yaml's defaults change
    command = " ".join(["flow2one table1", *given, *(f"{k} {v:g}" for k, v in settings.items() if k not in given)])
    cfg = Table1Config(models=args.models, out=args.out, tasks=tuple(tasks), rows=tuple(rows), seeds=args.seeds,
                       episodes=args.episodes, first_group=args.first_seed_group, n_exec=args.n_exec,
                       candidates=args.candidates, rate_hz=rate_hz, max_obs_age_s=args.max_obs_age_s,
                       camera_lag_steps=args.camera_lag_steps,
                       hz_repeats=args.hz_repeats, max_time=args.max_time, threads=args.threads, jobs=args.jobs,
                       merge_with=args.merge_with, command=command, overrides=tuple(args.set))
    try:
        report = run(cfg)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((args.out / "table1.md").read_text())
    return 0 if report else 1
