"""Reproduce the shipped sim models: scripted-expert demos -> dataset -> CFM teacher -> distillation set
(K=16 teacher trajectories of H=32 steps per observation, 50 Euler steps) -> one-step IMLE student, plus
L1 Sample Flow (2 steps) and the MSE regression baseline; then export and ship them to models/sim_<kind>/.

Every stage is one `flow2one` command, printed before it runs so any stage can be redone by hand. A stage
whose output already exists is skipped, so an interrupted run continues where it stopped (--force redoes
all). Wall time per stage goes to WORK/timings.json and into each shipped model card.

One multi-task model per kind is trained on the demos of reach_around, pick_place and track: the point
cloud tells the tasks apart (pillar, cubes, pucks), and the demo graph then needs one model directory.
pop_up, the reaction-time task, gets models of its own (`--tasks pop_up`; none shipped, results/README.md,
pop_up): its pucks look like track's, and adding it to the multi-task models would change every model of Table I.

Scales (wall times on this 2-core CPU machine; each shipped card records its run's stage times):
  quick  smoke run: 1 demo per task, a few optimiser steps, the tiny preset (~1 min; what the tests run); its
         teacher pretrains on wide clouds (the same demos with the table in the box, `sim-demos --wide-floor-z`)
         and takes a last round on the graph's: the recipe measured for the small scale (results/replan/, 30th stop)
  small  the models shipped in models/: 80 demos per task, ~0.3 M-parameter models that also see the cloud
         0.2 s earlier and pool only the points above the table, teacher 10000 steps and two warm-started
         rounds of 12000 at half the learning rate (its grasp aim kept improving), distillation set of
         every training window (10,416 observations x K=16), student 8000 steps with 32 hypotheses, L1 Flow /
         regression 8000: ~1 h 38 min on the idle machine, + ~2.5 min of setup on a fresh one: demos 19 min
         (each task's in a process of its own, two at a time; 7.7 s per reach_around, 9.9 per pick_place, 6.7
         per track episode), teacher + its first round 38 min with L1 Flow and regression trained beside them
         in a second process (one thread each side), the last round 13, distill 13, student 14 minutes. The
         whole run was measured at 1 h 53 min with the demos one task after another
         (results/reproduce_small.json); the demos two at a time, 19 min against 34, are measured apart
         (results/reproduce_small_demos.json)
  full   the scale the method calls for: 100 demos per task, 20k steps per model (batch 64), K=16 on every
         4th window: about 11 h on an idle 2-core machine (measured per-step times x steps: teacher, L1 Flow
         and regression ~2 h each, student ~3.5 h, demos ~1 h); minutes per stage on one GPU

Examples:
  flow2one reproduce --scale quick --work runs/quick --ship ''     # smoke test, ships nothing
  flow2one reproduce --scale small                                 # = make models
  flow2one reproduce --scale small --tasks pop_up --work runs/reproduce_popup --ship runs/pop_up_models
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flow2one.sim.tasks import MULTI_TASK, TASKS
from flow2one.train.reproduce import REPO_ROOT, SCALES, reproduce


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", default="small", choices=list(SCALES), help="how much data and training (default small)")
    p.add_argument("--work", type=Path, default=None, help="working directory (default runs/reproduce_<scale>)")
    p.add_argument("--ship", default="models", help="copy the trained models to SHIP/sim_<kind>/ ('' = do not ship)")
    p.add_argument("--tasks", default=",".join(MULTI_TASK), help=f"comma list of sim tasks (default "
                   f"{','.join(MULTI_TASK)}, the multi-task models)")
    p.add_argument("--seed", type=int, default=0, help="first demo seed and training seed")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per stage")
    p.add_argument("--expert-lead", type=float, default=None, metavar="S",
                   help="demos record the measured TCP plus S seconds of the expert's speed toward its goal "
                        "(sim-demos --expert-lead; default: the scale's)")
    p.add_argument("--force", action="store_true", help="delete WORK and redo every stage")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="run every stage in this process, one after another, on all --threads (default: with 2+ "
                        "threads, L1 Flow and regression train in a second process beside the teacher rounds, "
                        "each side on half the threads)")
    p.add_argument("--stages", default="", help="comma list of stages to run (demos, teacher, distill, student, "
                   "l1flow, regression; default all); models are shipped once every stage is done")


def main(args: argparse.Namespace) -> int:
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise SystemExit(f"--tasks {args.tasks!r}: choose from {', '.join(TASKS)}")
    work = args.work or REPO_ROOT / "runs" / f"reproduce_{args.scale}"
    ship_to = None if not args.ship else (Path(args.ship) if Path(args.ship).is_absolute() else REPO_ROOT / args.ship)
    only = tuple(s.strip() for s in args.stages.split(",") if s.strip())
    known = ("demos", "teacher", "distill", "student", "l1flow", "regression")
    if set(only) - set(known):
        raise SystemExit(f"--stages {args.stages!r}: choose from {', '.join(known)}")
    summary = reproduce(args.scale, work, ship_to, tasks, args.seed, args.threads, args.force, only,
                        args.expert_lead, beside=not args.one_at_a_time)
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=1))
    return 0
