"""Scripted-expert demonstrations in the sim, written as the same episode files a teleoperated recording becomes."""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from flow2one.spec import HORIZON


def to_episode(rec, result, pipeline, camera_names: list[str], with_images: bool, event_t: float | None = None,
               action_chunk: np.ndarray | None = None):
    """`pipeline`: the sim pointcloud node's CloudPipeline (a SimRig's `pipeline`); its crop is recorded."""
    from flow2one.data.episodes import Episode, EpisodeMeta

    points = np.stack([pipeline.process(d, T) for d, T in zip(rec.depth, rec.T_base_ee)]).astype(np.float32)
    meta = EpisodeMeta(task=result.task, source="sim-expert", success=result.success, mode=result.mode,
                       seed=result.seed, camera_names=camera_names if with_images else [], event_t=event_t,
                       note=f"chosen_mode={result.chosen_mode} mode_name={result.mode_name}",
                       cloud_crop=pipeline.crop.to_dict())
    images = {}
    if with_images:
        images = {"rgb": np.stack([np.stack(r) for r in rec.rgb]),
                  "depth": np.stack([np.stack(d) for d in rec.depth]).astype(np.float32)}
    return Episode(meta=meta, t=np.asarray(rec.t, dtype=np.float64), proprio=np.stack(rec.proprio),
                   action=np.stack(rec.action), points=points, action_chunk=action_chunk, **images)


def relabel(task, rec, mode: int, lead_s: float, ahead: int = 4,
            horizon: int = HORIZON) -> tuple[np.ndarray, np.ndarray, int]:
    """The expert's label (lead_s: a function of the state, so the policy's states can be labelled after the
    fact) for every state of `rec`, and its own plan of `horizon` labels from each (`Expert.imagine`, on the
    objects as they went on to move), in `mode` when the task saw one, else in the mode whose labels point
    where the arm went `ahead` steps later: a label that turns the policy to the other mode would teach it to
    switch. -> (actions (T, 10), chunk labels (T, horizon, 10), mode used)."""
    from flow2one.sim.experts import make_expert

    tcp = np.stack([p[:3] for p in rec.proprio])
    later = tcp[np.minimum(np.arange(len(tcp)) + ahead, len(tcp) - 1)]
    T, best = len(rec.proprio), None
    for m in [mode] if mode >= 0 else range(len(task.modes)):
        expert = make_expert(task.name, mode=m, lead_s=lead_s)
        expert.reset(task, rec.info[0], np.random.default_rng(0))
        acts, chunks = [], []
        for t, (p, i) in enumerate(zip(rec.proprio, rec.info)):
            chunks.append(expert.imagine(p, [rec.info[min(t + k, T - 1)] for k in range(horizon)]))
            acts.append(expert.act(p, i))
        acts = np.stack(acts).astype(np.float32)
        miss = float(np.linalg.norm(acts[:, :3] - later, axis=1).mean())
        if best is None or miss < best[0]:
            best = (miss, acts, np.stack(chunks), m)
    return best[1:]


def generate_dagger(task: str, out: Path, episodes: int, policy: Path, expert_lead_s: float, seed: int = 0,
                    rate_hz: float = 10.0, n_exec: int = 32, candidates: int = 4, progress: bool = True) -> dict:
    """DAgger data: `policy` drives the arm through the deployed loop (evaluation's PolicyController), and
    every state it visits is written with the expert's label for that state. The states where the policy
    goes wrong (an arm that creeps when it re-plans every 0.1 s) are the ones expert demos never visit.
    Every episode is written, failures first of all; meta.success is the policy's outcome.
    Each state also gets the expert's own plan from it as its chunk label (`relabel`): a window's next H
    per-step labels follow the policy's path, and where it hovered they hovered too (pick_place: 1-17% of
    them closed the hand; results/replan/, twenty-first stop)."""
    from flow2one.data.episodes import write_episode
    from flow2one.sim.evaluate import open_policy_step, policy_controller, sim_executor_config
    from flow2one.sim.rig import SimRig
    from flow2one.sim.rollout import Recording, run_episode_safe

    out.mkdir(parents=True, exist_ok=True)
    modes, wins = Counter(), 0
    wall0 = time.perf_counter()
    controller = policy_controller(open_policy_step(policy, "onnxruntime", candidates, seed=seed), n_exec,
                                   rate_hz, 0.25)
    with SimRig(task, cloud=True, executor=sim_executor_config()) as rig:
        names = [c.name for c in rig.world.cameras()]
        bar = tqdm(range(episodes), desc=f"dagger {task}", disable=not progress, file=sys.stderr)
        try:
            for i in bar:
                rec = Recording()
                result = run_episode_safe(rig, controller, seed + i, record=rec)
                if not rec.t:  # the robot link was lost on every attempt: nothing visited, nothing to label
                    continue
                rec.action[:], chunks, mode = relabel(rig.world.task, rec, result.mode, expert_lead_s)
                ep = to_episode(rec, result, rig.pipeline, names, False, rig.world.task.event_time(rig.world.task.params),
                                action_chunk=chunks)
                ep.meta.source, ep.meta.mode = "sim-dagger", mode
                ep.meta.note = f"policy={policy} rate_hz={rate_hz} policy_mode={result.mode_name}"
                write_episode(out, i, ep)
                wins += result.success
                modes[rig.world.task.modes[mode]] += 1
                bar.set_postfix(policy_success=f"{wins}/{i + 1}", rtf=f"{result.rtf:.2f}")
        finally:
            bar.close()
            controller.close()
    return {"task": task, "dir": str(out), "episodes": len(list(out.glob("episode_*.npz"))), "policy": str(policy),
            "rate_hz": rate_hz, "policy_success_rate": wins / episodes, "label_modes": dict(modes),
            "expert_lead_s": expert_lead_s, "wall_s": time.perf_counter() - wall0}


def generate(task: str, out: Path, episodes: int, seed: int = 0, with_images: bool = False,
             progress: bool = True, expert_lead_s: float | None = None, dart_noise_m: float = 0.0,
             dart_clean_grasp: bool = False, wide: tuple[Path, float] | None = None,
             balance_modes: bool = False) -> dict:
    """`wide` = (DIR, Z): each episode is also written to DIR with its clouds cropped at box floor Z (from the same
    depth images, so the second cloud costs no rollout): `make models` pretrains its teacher on such clouds.
    `balance_modes`: episode k is given mode k mod (number of modes), retried with the same mode when the expert
    fails, so the modes are as even as the count allows. Drawn at random, seeds 0-79 gave every task 49 episodes of
    its right mode and 31 of its left, and the students trained on them rarely took the left cube
    (results/replan/, thirty-second stop)."""
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
        pipeline = make_cloud_pipeline(cameras)
        wide_pipeline = None if wide is None else make_cloud_pipeline(cameras, wide[1])
        names = [c.name for c in cameras]
        expert = make_expert(task, lead_s=expert_lead_s)
        controller = ExpertController(expert, dart_noise_m=dart_noise_m, dart_clean_grasp=dart_clean_grasp)
        n_modes = len(rig.world.task.modes)
        bar = tqdm(total=episodes, desc=f"sim-demos {task}", disable=not progress, file=sys.stderr)
        try:
            while written < episodes and attempts < 2 * episodes:
                if balance_modes:
                    expert.forced_mode = written % n_modes
                rec = Recording()
                result = run_episode_safe(rig, controller, seed + attempts, record=rec, record_rgb=with_images)
                attempts += 1
                rtfs.append(result.rtf)
                if not result.success:
                    continue
                event_t = rig.world.task.event_time(rig.world.task.params)
                if wide_pipeline is not None:  # first: an episode in `out` always has its wide twin
                    write_episode(wide[0], written, to_episode(rec, result, wide_pipeline, names, with_images, event_t))
                write_episode(out, written, to_episode(rec, result, pipeline, names, with_images, event_t))
                written += 1
                modes[result.mode_name] += 1
                bar.update(1)
                bar.set_postfix(attempts=attempts, rtf=f"{result.rtf:.2f}")
        finally:
            bar.close()
    return {"task": task, "dir": str(out), "episodes": written, "attempts": attempts,
            "expert_success_rate": written / max(attempts, 1), "mode_histogram": dict(modes),
            "expert_lead_s": expert_lead_s, "dart_noise_m": dart_noise_m,
            "dart_clean_grasp": dart_clean_grasp, "balance_modes": balance_modes,
            "wide": None if wide is None else [str(wide[0]), wide[1]],
            "sim_rtf_mean": float(np.mean(rtfs)) if rtfs else None,
            "wall_s": time.perf_counter() - wall0}
