"""Scripted-expert demonstrations in the sim -> the flow2one episode dataset (OUT/<task>/episode_*.npz).

Each episode: home the FR3 (franky-sim over libfranka), randomise the task from its seed, let the
task's expert (strategy drawn at random per episode, or in turn with --balance-modes) drive the arm
through control.FrankyRobot (the executor's franky adapter, with the sim graph's limits) at STEP_DT, and
record per step the measured proprio, the commanded target (the action) and the depth of every sim
camera; the 4,096-point clouds are computed after the episode with the same CloudPipeline, crop and
voxel size as the sim graph's pointcloud node. Failed expert episodes are skipped (and counted); the
next seed is tried until N successes or 2N attempts.

With --dagger-policy a trained policy drives instead (the deployed loop, as sim-eval runs it) and the
expert only labels the states it visits (DAgger); every episode is written, the policy's failures too.
Each state's chunk label is the expert's own plan from it, not the labels of the states that follow
(the policy's own path: where it hovered, they hovered too; results/replan/README.md, twenty-first stop).
With --dart-noise the expert drives, pushed off its path by a smooth random offset, and its clean target is
recorded (DART): states off the expert's path, each labelled with the way back. --dart-clean-grasp keeps the
arm on the expert's path from above the cube until the fingers close (pick_place).
With --wide-floor-z every episode is written twice: OUT/<task>/ with the sim graph's clouds, OUT/wide/<task>/
with clouds from the same depth images whose crop box reaches down to that floor (the table in them): `make models`
pretrains its teacher on those.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from flow2one.sim.demos import generate, generate_dagger
from flow2one.sim.tasks import TASKS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="all", choices=[*TASKS, "all"], help="task (default: all of them)")
    p.add_argument("--episodes", type=int, default=50, help="successful episodes to write per task")
    p.add_argument("--out", type=Path, required=True, help="dataset root; episodes go to OUT/<task>/")
    p.add_argument("--seed", type=int, default=0, help="seed of the first attempt (then seed+1, ...)")
    p.add_argument("--expert-lead", type=float, default=None, metavar="S",
                   help="record the measured TCP plus at most S seconds of the expert's speed toward its goal, "
                        "instead of its carrot (a label the observation determines; see results/replan/)")
    p.add_argument("--dart-noise", type=float, default=0.0, metavar="M",
                   help="DART: push the sent position off the expert's by a smooth random offset of M m (std per "
                        "axis, 0.5 s correlation) and record the expert's clean target, so the demos show the way "
                        "back from states off its path (default 0: none)")
    p.add_argument("--dart-clean-grasp", action="store_true",
                   help="with --dart-noise: no new offset from the arrival above the cube until the fingers close; "
                        "the offset fades over its 0.5 s correlation, so each grasp happens about where its label "
                        "says (pick_place; the other tasks have no grasp). 40 such demos were level with their "
                        "control, 80 lost pick_place after the grasp (results/replan/, twenty-fourth stop)")
    p.add_argument("--wide-floor-z", type=float, default=None, metavar="Z",
                   help="also write each episode to OUT/wide/<task>/ with clouds cropped at box floor Z m (base "
                        "frame; e.g. -0.01 keeps the table top at z 0) instead of config/sim.yaml's, from the same "
                        "rollout")
    p.add_argument("--balance-modes", action="store_true",
                   help="give episode k the task's mode k mod 2 (left, right, left, ...) instead of a random draw, "
                        "so both modes are as common in the demos (a random draw gave seeds 0-79 49 right and 31 "
                        "left; results/replan/, thirty-second stop)")
    p.add_argument("--images", action="store_true", help="also store rgb + depth of every camera and step")
    p.add_argument("--dagger-policy", type=Path, default=None, metavar="MODEL_DIR",
                   help="DAgger: this exported policy drives (through the deployed loop), the expert labels its "
                        "states; needs --expert-lead (a label that depends on the state alone)")
    p.add_argument("--policy-rate-hz", type=float, default=10.0, help="with --dagger-policy: re-plans per sim s")
    p.add_argument("--n-exec", type=int, default=32, help="with --dagger-policy: chunk steps executed at most")
    p.add_argument("--candidates", type=int, default=4, help="with --dagger-policy: candidates per inference")


def main(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    if not args.dart_noise >= 0.0:
        raise SystemExit(f"--dart-noise must be >= 0 m, got {args.dart_noise}")
    if args.dart_clean_grasp and not args.dart_noise:
        raise SystemExit("--dart-clean-grasp shapes --dart-noise's offset; give --dart-noise M > 0 with it")
    if args.wide_floor_z is not None:
        from flow2one.sim.cameras import sim_cloud_crop

        crop = sim_cloud_crop()
        try:
            crop.with_floor(args.wide_floor_z)
        except ValueError:
            raise SystemExit(f"--wide-floor-z must be below the crop box's top ({crop.workspace_max[2]:g} m), "
                             f"got {args.wide_floor_z}") from None
    tasks = list(TASKS) if args.task == "all" else [args.task]
    if args.dagger_policy is not None:
        if args.dart_noise:
            raise SystemExit("--dart-noise perturbs the expert's driving; with --dagger-policy the policy drives")
        if args.expert_lead is None:
            raise SystemExit("--dagger-policy needs --expert-lead: a carrot label depends on the expert's own "
                             "path, which the policy's states do not have")
        if args.images:
            raise SystemExit("--images is not written with --dagger-policy")
        if args.wide_floor_z is not None:
            raise SystemExit("--wide-floor-z is not written with --dagger-policy")
        if not (args.dagger_policy / "card.yaml").is_file():
            raise SystemExit(f"--dagger-policy {args.dagger_policy}: no card.yaml (an exported model directory)")
        report = {t: generate_dagger(t, args.out / t, args.episodes, args.dagger_policy, args.expert_lead,
                                     args.seed, args.policy_rate_hz, args.n_exec, args.candidates) for t in tasks}
    else:
        report = {t: generate(t, args.out / t, args.episodes, args.seed, args.images, expert_lead_s=args.expert_lead,
                              dart_noise_m=args.dart_noise, dart_clean_grasp=args.dart_clean_grasp,
                              wide=None if args.wide_floor_z is None else (args.out / "wide" / t, args.wide_floor_z),
                              balance_modes=args.balance_modes)
                  for t in tasks}
    print(json.dumps(report, indent=1))
    return 0 if all(r["episodes"] == args.episodes for r in report.values()) else 1
