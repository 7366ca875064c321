"""Closed-loop evaluation in the sim through the deployed path (runtime.PolicyStep -> control.Executor ->
FrankyRobot on the sim clock), shared by sim-eval and table1: the policy step and executor set up as the sim
graph sets them, episode summaries and image strips."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm


def open_policy_step(model_dir: str | Path, backend: str = "torch", candidates: int = 1, seed: int = 0,
                     sample_steps: int | None = None, threads: int = 1):
    """The policy node's step (runtime.PolicyStep) for a model directory (card.yaml + weights/ONNX)."""
    from flow2one.runtime.backends import open_backend
    from flow2one.runtime.card import load_card
    from flow2one.runtime.policy_step import PolicyStep
    from flow2one.sim.cameras import sim_cloud_crop

    card = load_card(model_dir)
    card.check(crop=sim_cloud_crop())  # the clouds it will see are the sim pointcloud node's
    engine = open_backend(backend, model_dir, threads=threads, max_batch=candidates, card=card,
                          sample_steps=sample_steps)
    settings = graph_settings()
    step = PolicyStep(card, engine, n_candidates=candidates, seed=seed, handoff_window_s=settings["handoff_window_s"],
                      keep_plan_within_m=settings["keep_plan_within_m"], state_at_cloud=settings["state_at_cloud"])
    step.warm_up()  # as the policy node does
    return step


def sim_executor_config(**changes: Any):
    """The executor node's configuration in the sim graph (config/sim.yaml), read when called."""
    from dataclasses import replace

    from flow2one.control.config import ExecutorConfig

    p = {k: tuple(v) if isinstance(v, list) else v for k, v in sim_params()["executor"].items()}
    return replace(ExecutorConfig(**p), **changes)


# Control steps (STEP_DT) the sim graph's camera data trails its newest robot state when an inference starts,
# rounded: the frame is ~20 ms old then (p50; 28 ms p99: perception, transport; `make demo`'s latency lines).
# It was 55 ms (p50) while the policy node waited out its rate cap on the clock, and one step then.
GRAPH_CAMERA_LAG_STEPS = 0


def policy_controller(step, n_exec: int, rate_hz: float | None, max_obs_age_s: float,
                      camera_lag_steps: int = GRAPH_CAMERA_LAG_STEPS):
    """PolicyController: `step` -> the sim graph's executor (with `n_exec`) on the sim clock, its camera data
    as late as the graph's."""
    from flow2one.sim.rollout import PolicyController

    return PolicyController(step, sim_executor_config(n_exec=n_exec), rate_hz=rate_hz, max_obs_age_s=max_obs_age_s,
                            camera_lag_steps=camera_lag_steps)


def summarize(task: str, results: list, extra: dict | None = None) -> dict:
    from flow2one.sim.rollout import reaction_median

    ok = [r for r in results if r.success]
    tts = [r.time_to_success for r in ok if r.time_to_success is not None]
    reacted, reaction = reaction_median(results)
    modes = Counter(r.mode_name or "none" for r in results)
    return {
        "task": task,
        "episodes": len(results),
        "success_rate": len(ok) / max(len(results), 1),
        "successes": len(ok),
        "time_to_success_s": {"mean": float(np.mean(tts)) if tts else None,
                              "median": float(np.median(tts)) if tts else None},
        "reaction_s": {"median": reaction, "episodes": reacted},
        "mode_histogram": dict(sorted(modes.items())),
        "mode_histogram_success": dict(sorted(Counter(r.mode_name or "none" for r in ok).items())),
        "failures": dict(Counter(r.reason for r in results if not r.success)),
        "sim_rtf": {"mean": float(np.mean([r.rtf for r in results])), "min": float(min(r.rtf for r in results))},
        "planner_errors": int(sum(r.planner_errors for r in results)),
        **(extra or {}),
        "per_episode": [r.to_dict() for r in results],
    }


def save_strip(path: Path, rows: list[list[np.ndarray]]) -> None:
    import cv2

    rows = [r for r in rows if r]
    if not rows:
        return
    n = max(len(r) for r in rows)
    h, w = rows[0][0].shape[:2]
    canvas = np.full((h * len(rows), w * n, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, img in enumerate(r):
            canvas[i * h:(i + 1) * h, j * w:(j + 1) * w] = img
    cv2.imwrite(str(path), canvas[:, :, ::-1])


def evaluate(task: str, policy: str = "expert", episodes: int = 50, seed: int = 0, strips: int = 3,
             strip_every: int = 10, n_exec: int = 8, delay: float = 0.0, out: Path | None = None,
             progress: bool = True, rate_hz: float | None = None, backend: str = "onnxruntime",
             candidates: int = 1, max_obs_age_s: float = 0.25, view=None,
             camera_lag_steps: int = GRAPH_CAMERA_LAG_STEPS) -> dict:
    from flow2one.sim.experts import make_expert
    from flow2one.sim.rig import SimRig
    from flow2one.sim.rollout import ExpertController, run_episode_safe

    is_policy = policy != "expert"
    if is_policy and not Path(policy).is_dir():
        raise ValueError(f"policy {policy!r} is neither 'expert' nor a model directory")
    results, rows = [], []
    controller = (policy_controller(open_policy_step(policy, backend, candidates), n_exec, rate_hz, max_obs_age_s,
                                    camera_lag_steps) if is_policy else ExpertController(make_expert(task, delay=delay)))
    wall0 = time.perf_counter()
    log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log = out / f"{task}_episodes.jsonl"
        log.unlink(missing_ok=True)
    with SimRig(task, cameras=is_policy or strips > 0 or view is not None, cloud=is_policy,
                executor=sim_executor_config()) as rig:
        try:
            bar = tqdm(range(episodes), desc=f"sim-eval {task}", disable=not progress, file=sys.stderr)
            for i in bar:
                frames: list[np.ndarray] | None = [] if i < strips else None
                r = run_episode_safe(rig, controller, seed + i, frame_every=strip_every if frames is not None else 0,
                                     frames=frames, view=view)
                results.append(r)
                if log is not None:  # one line per episode as it ends: a long run is never all-or-nothing
                    with log.open("a") as fh:
                        fh.write(json.dumps(r.to_dict()) + "\n")
                if frames is not None:
                    rows.append(frames)
                bar.set_postfix(success=f"{sum(x.success for x in results)}/{len(results)}", rtf=f"{r.rtf:.2f}")
        finally:
            controller.close()
    extra = {"policy": policy, "seed0": seed, "wall_s": time.perf_counter() - wall0}
    if is_policy and controller.inference_s:
        extra["inference_ms_median"] = 1e3 * float(np.median(controller.inference_s))
        extra.update(chunks_rejected=controller.rejected, chunks_stale=controller.stale,
                     chunks_kept_plan=controller.kept_plan)
    summary = summarize(task, results, extra)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_strip(out / f"{task}_strip.png", rows)
    return summary


# --set overrides of the sim graph's parameters, carried in the environment so the evaluation processes
# table1 spawns (multiprocessing "spawn": nothing else of the parent reaches them) read the same settings.
SET_ENV = "FLOW2ONE_SIM_SET"


# parameters with a flag of their own: --set would lose against the flag's default, so it refuses them
FLAGGED = {"policy": {"rate_hz": "--policy-rate-hz", "n_candidates": "--candidates",
                      "max_obs_age_s": "--max-obs-age-s", "backend": "--backend"},
           "executor": {"n_exec": "--n-exec"}}


def evaluated_params() -> dict[str, set[str]]:
    """The sim-graph parameters an evaluation reads besides its flags: every executor setting (the executor
    core runs as configured) and the policy step's hand-off window, plan keeping and state pairing. Others
    (the sim world's, the pointcloud node's) have their own forms here; a --set of one would change nothing
    and is refused."""
    from dataclasses import fields

    from flow2one.control.config import ExecutorConfig

    return {"policy": {"handoff_window_s", "keep_plan_within_m", "state_at_cloud"},
            "executor": {f.name for f in fields(ExecutorConfig)}}


def apply_overrides(items: list[str]) -> None:
    """`--set NODE.PARAM=VALUE` for this process and every evaluation process it starts."""
    import os

    from flow2one.graph import parse_overrides

    sim_params(items)  # a malformed item or an unknown node fails here, naming it
    read = evaluated_params()
    for node, values in parse_overrides(items).items():
        for param in values:
            if param in FLAGGED.get(node, {}):
                raise SystemExit(f"--set {node}.{param}: use {FLAGGED[node][param]}")
            if param not in read.get(node, ()):
                raise SystemExit(f"--set {node}.{param}: the evaluation does not read it; it reads "
                                 + "; ".join(f"{n}.{{{', '.join(sorted(ps - set(FLAGGED.get(n, {}))))}}}"
                                             for n, ps in read.items()))
    os.environ[SET_ENV] = json.dumps(items)  # exactly these: none given means none in force


def sim_params(items: list[str] | None = None) -> dict[str, dict]:
    """The sim graph's parameters (config/sim.yaml) with --set `items` (default: those in force)."""
    import os

    from flow2one.graph import load_params, parse_overrides

    p = load_params("sim")
    items = json.loads(os.environ.get(SET_ENV, "[]")) if items is None else items
    for node, values in parse_overrides(items).items():
        if node not in p:
            raise ValueError(f"--set: the sim graph has no node {node!r} ({', '.join(p)})")
        p[node].update(values)
    return p


def graph_settings() -> dict[str, Any]:
    """The policy/executor settings of the sim graph (config/sim.yaml and --set): the defaults of sim-eval
    and table1, so an evaluation runs a policy the way the demo's graph does."""
    p = sim_params()
    return {"n_exec": int(p["executor"]["n_exec"]), "rate_hz": float(p["policy"]["rate_hz"]),
            "candidates": int(p["policy"]["n_candidates"]), "max_obs_age_s": float(p["policy"]["max_obs_age_s"]),
            "backend": str(p["policy"]["backend"]),
            "handoff_window_s": float(p["policy"].get("handoff_window_s", 0.0)),
            "keep_plan_within_m": float(p["policy"].get("keep_plan_within_m", 0.0)),
            "state_at_cloud": bool(p["policy"].get("state_at_cloud", False))}
