"""Headless closed-loop evaluation in the sim: N seeded episodes of a policy on a task.

Reports success rate, time to success, the histogram of modes the task observed (which side of the
pillar, which cube, which puck), franky-sim's real-time factor and franky planner errors, as JSON on
stdout and in OUT/summary.json (each episode also as a line of OUT/<task>_episodes.jsonl when it ends);
saves an image strip (front camera, one row per episode) of the first few episodes to OUT/<task>_strip.png.

POLICY is `expert` (the task's scripted expert, modes drawn at random per episode) or a model directory
(card.yaml + weights or ONNX). A model runs the deployed path (sim/rollout.PolicyController): the policy
node's step (runtime.PolicyStep) in its own thread, re-planning at most --policy-rate-hz times per sim
second (0: as soon as its last chunk is out), and the executor node's core (control.Executor: scheduler,
blending, safety filter, watchdog) on the sim clock; settings default to the sim graph's (config/sim.yaml).
A lost robot link gets a new sim world and the episode again (3 attempts).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flow2one.sim.evaluate import GRAPH_CAMERA_LAG_STEPS, apply_overrides, evaluate, graph_settings
from flow2one.sim.tasks import TASKS
from flow2one.view.switch import add_view_arguments, view_params


def add_rate_arguments(p: argparse.ArgumentParser) -> dict[str, Any]:
    """--n-exec and --policy-rate-hz, defaulting to the sim graph's; returns those settings."""
    s = graph_settings()
    p.add_argument("--n-exec", type=int, default=s["n_exec"], help="steps of a chunk executed at most if no "
                   f"newer chunk arrives (the executor's n_exec; default {s['n_exec']}, the sim graph's)")
    p.add_argument("--policy-rate-hz", type=float, default=s["rate_hz"], help="start an inference at most this "
                   "often (sim time; the policy node's rate_hz), 0 = as soon as the previous chunk is out "
                   f"(default {s['rate_hz']:g}, the sim graph's)")
    p.add_argument("--max-obs-age-s", type=float, default=s["max_obs_age_s"], help="a chunk whose inference "
                   "took longer (wall time) is discarded, as the policy node discards it (the node's "
                   f"max_obs_age_s; default {s['max_obs_age_s']:g}, the sim graph's)")
    p.add_argument("--camera-lag-steps", type=int, default=GRAPH_CAMERA_LAG_STEPS, help="hand the policy each "
                   "control step's cloud and images this many steps (0.05 s each) after that step's robot state, "
                   "as a camera path that slow would (default "
                   f"{GRAPH_CAMERA_LAG_STEPS}: the sim graph's frames are ~20 ms old when an inference starts; "
                   "on the robot, round `flow2one latency`'s frame -> inference start to steps)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help="override another parameter of the sim graph's policy or executor node, e.g. "
                        "executor.blend_s=0.2 or policy.handoff_window_s=0.3 (VALUE parsed as YAML; repeatable)")
    return s


def rate_or_none(rate_hz: float) -> float | None:
    """--policy-rate-hz -> PolicyController's rate_hz (None: no cap). Raises SystemExit on a negative rate."""
    if not rate_hz >= 0:
        raise SystemExit(f"--policy-rate-hz must be >= 0 (0 = as soon as the last chunk is out), got {rate_hz}")
    return rate_hz or None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="all", choices=[*TASKS, "all"], help="task to evaluate (default: all)")
    p.add_argument("--policy", default="expert", help="'expert' or a model directory (card.yaml + weights/ONNX)")
    p.add_argument("--episodes", type=int, default=50, help="episodes per task (seeds seed..seed+N-1)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed")
    p.add_argument("--out", type=Path, default=Path("runs/sim_eval"), help="directory for summary.json and strips")
    p.add_argument("--strips", type=int, default=3, help="episodes with a saved image strip")
    p.add_argument("--strip-every", type=int, default=10, help="steps between strip frames")
    s = add_rate_arguments(p)
    p.add_argument("--backend", default=s["backend"],
                   help=f"inference engine (default {s['backend']}, the sim graph's)")
    p.add_argument("--candidates", type=int, default=s["candidates"], help="M samples per re-plan (the policy "
                   f"node's n_candidates; default {s['candidates']}, the sim graph's)")
    p.add_argument("--delay", type=float, default=0.0, help="expert only: act on object state this many s old")
    add_view_arguments(p)


def main(args: argparse.Namespace) -> int:
    if args.episodes < 1 or args.n_exec < 1 or args.camera_lag_steps < 0:
        raise SystemExit("--episodes and --n-exec must be >= 1, --camera-lag-steps >= 0")
    apply_overrides(args.set)
    tasks = list(TASKS) if args.task == "all" else [args.task]
    rate_hz = rate_or_none(args.policy_rate_hz)
    view = None
    if view_params(args) is not None:  # no graph here: the loop logs through the view's logging module
        from flow2one.view.log import ViewLog
        from flow2one.view.sim_loop import SimLoopView

        view = SimLoopView(ViewLog(**view_params(args)))
    summaries = {t: evaluate(t, args.policy, args.episodes, args.seed, args.strips, args.strip_every,
                             args.n_exec, args.delay, args.out, rate_hz=rate_hz, backend=args.backend,
                             candidates=args.candidates, max_obs_age_s=args.max_obs_age_s, view=view,
                             camera_lag_steps=args.camera_lag_steps) for t in tasks}
    if view is not None:
        view.log.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summaries, indent=1))
    brief = {t: {k: v for k, v in s.items() if k != "per_episode"} for t, s in summaries.items()}
    print(json.dumps(brief, indent=1))
    return 0
