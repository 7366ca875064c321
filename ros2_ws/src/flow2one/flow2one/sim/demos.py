"""Scripted-expert demonstrations in the sim, written as the same episode files a teleoperated recording becomes."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm


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
             progress: bool = True, expert_lead_s: float | None = None) -> dict:
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
        controller = ExpertController(make_expert(task, lead_s=expert_lead_s))
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
            "expert_lead_s": expert_lead_s, "sim_rtf_mean": float(np.mean(rtfs)) if rtfs else None,
            "wall_s": time.perf_counter() - wall0}
