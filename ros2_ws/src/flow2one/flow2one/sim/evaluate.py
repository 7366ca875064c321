"""Headless closed-loop evaluation in the sim: N seeded episodes of a policy on a task.

Reports success rate, time to success, the histogram of modes the task observed (which side of the
pillar, which cube, which puck), franky-sim's real-time factor and franky planner errors, as JSON on
stdout and in OUT/summary.json (each episode also as a line of OUT/<task>_episodes.jsonl when it ends); saves an image strip (front camera, one row per episode) of the first
few episodes to OUT/<task>_strip.png.

POLICY is `expert` (the task's scripted expert, modes drawn at random per episode), a checkpoint
directory (loaded with flow2one.policy.checkpoint.load_policy), or `package.module:function` naming a
factory that returns a callable obs -> (H, 10) chunk (obs: points (4096, 3), proprio (10,), optional
rgb (V, h, w, 3) / depth (V, h, w)). As in the deploy graph, the policy runs in its own thread and
re-plans at most --policy-rate-hz times per sim second (0: as soon as its last chunk is out), while the
newest chunk is executed like the executor does (at most n_exec steps, latency-aligned on the observation
stamp, short cross-fade); both default to the sim graph's settings (config/sim.yaml). A lost robot link
gets a new sim world and the episode again (3 attempts).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from flow2one.sim.tasks import TASKS
from flow2one.view.switch import add_view_arguments, view_params


def torch_batch(obs: dict[str, np.ndarray], enc) -> dict:
    """An unbatched sim observation -> the batch-1 tensors a policy with encoder config `enc` reads (images
    resized to the model's size)."""
    import cv2
    import torch

    h, w = enc.image_size

    def images(x: np.ndarray) -> torch.Tensor:
        views = [cv2.resize(v, (w, h), interpolation=cv2.INTER_NEAREST) for v in x[:enc.n_views]]
        return torch.from_numpy(np.stack(views))[None]

    batch = {"points": torch.from_numpy(np.asarray(obs["points"], np.float32))[None],
             "proprio": torch.from_numpy(np.asarray(obs["proprio"], np.float32))[None]}
    if enc.history_steps:
        batch["points_prev"] = torch.from_numpy(np.asarray(obs["points_prev"], np.float32))[None]
    if enc.use_rgb:
        batch["rgb"] = images(obs["rgb"])
    if enc.use_depth:
        batch["depth"] = images(obs["depth"]).float()
    return batch


def sampler(module, cfg, sample_kw: dict[str, Any] | None = None, seed: int = 0, candidates: int = 1):
    """obs (unbatched numpy) -> (H, 10) chunk callable for the sim rollout, from a loaded policy module
    (seeded noise); with candidates > 1, (M, H, 10) samples to pick from as the policy node does."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
        out = module.sample(torch_batch(obs, cfg.encoder), n_samples=candidates, generator=gen,
                            **(sample_kw or {}))[0].numpy()
        return out if candidates > 1 else out[0]

    return policy


def checkpoint_policy(path: str | Path):
    """(obs -> chunk callable, its encoder config) for a flow2one checkpoint directory."""
    from flow2one.policy.checkpoint import load_policy

    module, cfg = load_policy(path)
    return sampler(module, cfg), cfg.encoder


def resolve_policy(spec: str):
    """-> (callable or None for the expert, encoder config or None for points + proprio)."""
    if spec == "expert":
        return None, None
    if Path(spec).is_dir():
        return checkpoint_policy(spec)
    if ":" in spec:
        mod, fn = spec.split(":", 1)
        return getattr(importlib.import_module(mod), fn)(), None
    raise ValueError(f"policy {spec!r} is neither 'expert', a checkpoint directory, nor module:function")


def summarize(task: str, results: list, extra: dict | None = None) -> dict:
    ok = [r for r in results if r.success]
    tts = [r.time_to_success for r in ok if r.time_to_success is not None]
    modes = Counter(r.mode_name or "none" for r in results)
    return {
        "task": task,
        "episodes": len(results),
        "success_rate": len(ok) / max(len(results), 1),
        "successes": len(ok),
        "time_to_success_s": {"mean": float(np.mean(tts)) if tts else None,
                              "median": float(np.median(tts)) if tts else None},
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
             progress: bool = True, rate_hz: float | None = None, view=None) -> dict:
    from flow2one.sim.experts import make_expert
    from flow2one.sim.rig import SimRig
    from flow2one.sim.rollout import ChunkController, ExpertController, run_episode_safe

    fn, enc = resolve_policy(policy)
    results, rows = [], []
    controller = (ExpertController(make_expert(task, delay=delay)) if fn is None
                  else ChunkController(fn, n_exec=n_exec, encoder=enc, rate_hz=rate_hz))
    wall0 = time.perf_counter()
    log = None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        log = out / f"{task}_episodes.jsonl"
        log.unlink(missing_ok=True)
    with SimRig(task, cameras=fn is not None or strips > 0 or view is not None, cloud=fn is not None) as rig:
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
    if fn is not None and controller.inference_s:
        extra["inference_ms_median"] = 1e3 * float(np.median(controller.inference_s))
    summary = summarize(task, results, extra)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_strip(out / f"{task}_strip.png", rows)
    return summary


def graph_settings() -> dict[str, Any]:
    """The policy/executor settings of the sim graph (config/sim.yaml): the defaults of sim-eval and table1,
    so an evaluation runs a policy the way the demo's graph does."""
    from flow2one.graph import load_params

    p = load_params("sim")
    return {"n_exec": int(p["executor"]["n_exec"]), "rate_hz": float(p["policy"]["rate_hz"]),
            "candidates": int(p["policy"]["n_candidates"])}


def add_rate_arguments(p: argparse.ArgumentParser) -> dict[str, Any]:
    """--n-exec and --policy-rate-hz, defaulting to the sim graph's; returns those settings."""
    s = graph_settings()
    p.add_argument("--n-exec", type=int, default=s["n_exec"], help="steps of a chunk executed at most if no "
                   f"newer chunk arrives (the executor's n_exec; default {s['n_exec']}, the sim graph's)")
    p.add_argument("--policy-rate-hz", type=float, default=s["rate_hz"], help="start an inference at most this "
                   "often (sim time; the policy node's rate_hz), 0 = as soon as the previous chunk is out "
                   f"(default {s['rate_hz']:g}, the sim graph's)")
    return s


def rate_or_none(rate_hz: float) -> float | None:
    """--policy-rate-hz -> ChunkController's rate_hz (None: no cap). Raises SystemExit on a negative rate."""
    if not rate_hz >= 0:
        raise SystemExit(f"--policy-rate-hz must be >= 0 (0 = as soon as the last chunk is out), got {rate_hz}")
    return rate_hz or None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="all", choices=[*TASKS, "all"], help="task to evaluate (default: all)")
    p.add_argument("--policy", default="expert", help="'expert', a checkpoint directory, or module:function")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task (seeds seed..seed+N-1)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed")
    p.add_argument("--out", type=Path, default=Path("runs/sim_eval"), help="directory for summary.json and strips")
    p.add_argument("--strips", type=int, default=3, help="episodes with a saved image strip")
    p.add_argument("--strip-every", type=int, default=10, help="steps between strip frames")
    add_rate_arguments(p)
    p.add_argument("--delay", type=float, default=0.0, help="expert only: act on object state this many s old")
    add_view_arguments(p)


def main(args: argparse.Namespace) -> int:
    if args.episodes < 1 or args.n_exec < 1:
        raise SystemExit("--episodes and --n-exec must be >= 1")
    tasks = list(TASKS) if args.task == "all" else [args.task]
    rate_hz = rate_or_none(args.policy_rate_hz)
    view = None
    if view_params(args) is not None:  # no graph here: the loop logs through the view's logging module
        from flow2one.view.log import ViewLog
        from flow2one.view.sim_loop import SimLoopView

        view = SimLoopView(ViewLog(**view_params(args)))
    summaries = {t: evaluate(t, args.policy, args.episodes, args.seed, args.strips, args.strip_every,
                             args.n_exec, args.delay, args.out, rate_hz=rate_hz, view=view) for t in tasks}
    if view is not None:
        view.log.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=1))
    brief = {t: {k: v for k, v in s.items() if k != "per_episode"} for t, s in summaries.items()}
    print(json.dumps(brief, indent=1))
    return 0
