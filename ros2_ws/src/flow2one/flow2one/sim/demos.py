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
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flow2one.sim.tasks import TASKS


def to_episode(rec, result, cloud, camera_names: list[str], with_images: bool, event_t: float | None = None):
    from flow2one.data.episodes import Episode, EpisodeMeta

    points = np.stack([cloud.process(d, T) for d, T in zip(rec.depth, rec.T_base_ee)]).astype(np.float32)
    meta = EpisodeMeta(task=result.task, source="sim-expert", success=result.success, mode=result.mode,
                       seed=result.seed, camera_names=camera_names if with_images else [], event_t=event_t,
                       note=f"chosen_mode={result.chosen_mode} mode_name={result.mode_name}")
    images = {}
    if with_images:
        images = {"rgb": np.stack([np.stack(r) for r in rec.rgb]),
                  "depth": np.stack([np.stack(d) for d in rec.depth]).astype(np.float32)}
    return Episode(meta=meta, t=np.asarray(rec.t, dtype=np.float64), proprio=np.stack(rec.proprio),
                   action=np.stack(rec.action), points=points, **images)


def generate(task: str, out: Path, episodes: int, seed: int = 0, with_images: bool = False,
             progress: bool = True) -> dict:
    from flow2one.data.episodes import write_episode
    from flow2one.sim.cameras import make_cloud_pipeline
    from flow2one.sim.evaluate import sim_executor_config
    from flow2one.sim.experts import make_expert
    from flow2one.sim.rig import SimRig
    from flow2one.sim.rollout import ExpertController, Recording, run_episode_safe

    out.mkdir(parents=True, exist_ok=True)
    written, attempts, modes, rtfs = 0, 0, Counter(), []
    wall0 = time.perf_counter()
    # the demo's cloud is computed from its recorded depth; the robot has the sim graph's executor limits
    with SimRig(task, cloud=False, executor=sim_executor_config()) as rig:
        cameras = rig.world.cameras()
        cloud = make_cloud_pipeline(cameras)
        controller = ExpertController(make_expert(task))
        bar = tqdm(total=episodes, desc=f"sim-demos {task}", disable=not progress, file=sys.stderr)
        try:
            while written < episodes and attempts < 2 * episodes:
                rec = Recording()
                result = run_episode_safe(rig, controller, seed + attempts, record=rec, record_rgb=with_images)
                attempts += 1
                rtfs.append(result.rtf)
                if not result.success:
                    continue
                event_t = rig.world.task.event_time(rig.world.task.params)
                write_episode(out, written, to_episode(rec, result, cloud, [c.name for c in cameras], with_images,
                                                       event_t))
                written += 1
                modes[result.mode_name] += 1
                bar.update(1)
                bar.set_postfix(attempts=attempts, rtf=f"{result.rtf:.2f}")
        finally:
            bar.close()
    return {"task": task, "dir": str(out), "episodes": written, "attempts": attempts,
            "expert_success_rate": written / max(attempts, 1), "mode_histogram": dict(modes),
            "sim_rtf_mean": float(np.mean(rtfs)) if rtfs else None, "wall_s": time.perf_counter() - wall0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="all", choices=[*TASKS, "all"], help="task (default: all of them)")
    p.add_argument("--episodes", type=int, default=50, help="successful episodes to write per task")
    p.add_argument("--out", type=Path, required=True, help="dataset root; episodes go to OUT/<task>/")
    p.add_argument("--seed", type=int, default=0, help="seed of the first attempt (then seed+1, ...)")
    p.add_argument("--images", action="store_true", help="also store rgb + depth of every camera and step")


def main(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise SystemExit("--episodes must be >= 1")
    tasks = list(TASKS) if args.task == "all" else [args.task]
    report = {t: generate(t, args.out / t, args.episodes, args.seed, args.images) for t in tasks}
    print(json.dumps(report, indent=1))
    return 0 if all(r["episodes"] == args.episodes for r in report.values()) else 1
