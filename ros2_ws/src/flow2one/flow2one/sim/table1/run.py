"""Evaluate Table I: every policy on every task closed loop in franky-sim through the deployed path
(sim.rollout.PolicyController: the policy node's runtime.PolicyStep, the executor node's control.Executor,
control.FrankyRobot over libfranka) on the sim clock, each task in a child process of its own."""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from flow2one.bench.timing import Timing
from flow2one.sim.table1.config import EVAL_SEED0, Table1Config
from flow2one.sim.table1.report import merge, write
from flow2one.sim.table1.results import Cell, Inference, PolicyRow, Table1Report
from flow2one.sim.table1.statistics import cell_from_episodes
from flow2one.subprocesses import isolated


def inference_rate(step, obs, repeats: int) -> Inference:
    """The policy step's own inference time (batch 1, all its candidates: what the node reports) on the
    current thread setting, median of `repeats` calls after a warm-up call."""
    step.infer(obs)
    t = Timing.of([step.infer(obs).inference_s for _ in range(repeats)])
    return Inference(t.ms_median, t.hz)


def evaluate_task(cfg: Table1Config, task: str) -> tuple[dict[str, Cell], dict[str, Inference]]:
    """Every policy on one task in one SimWorld (the slow part: started once, anew after a lost link), each
    through the deployed loop (PolicyStep -> Executor -> FrankyRobot). -> (cells, inference) by policy key."""
    import torch
    from tqdm import tqdm

    from flow2one.sim.evaluate import apply_overrides, open_policy_step, policy_controller, save_strip, sim_executor_config
    from flow2one.sim.rig import SimRig
    from flow2one.sim.rollout import Observer, home, run_episode_safe

    apply_overrides(list(cfg.overrides))  # what the report records is what runs, however run() was called
    torch.set_num_threads(cfg.threads)
    cells: dict[str, Cell] = {}
    hz: dict[str, Inference] = {}
    groups = cfg.seed_groups
    strips = cfg.out / "strips"
    rig = SimRig(task, executor=sim_executor_config(n_exec=cfg.n_exec))
    try:
        home(rig.robot)
        rig.world.reset(EVAL_SEED0)
        probe = Observer(rig.world, rig.robot, rig.cams, rig.cloud)
        probe.step(0.0, rig.world.sim_time)
        for row in cfg.rows:
            step = open_policy_step(cfg.models / row.model, "torch", cfg.candidates,
                                    sample_steps=row.sample_kw.get("steps"), threads=cfg.threads)
            ctrl = policy_controller(step, cfg.n_exec, cfg.rate_hz, cfg.max_obs_age_s, cfg.camera_lag_steps)
            ctrl.reset(rig.world, rig.robot, np.random.default_rng(0))
            ctrl.feed(probe, with_points=True)  # a recorded sim observation, for the inference rate
            obs, _ = step.assembler.assemble(probe.stamp_ns, np.inf)
            torch.set_num_threads(1)
            hz[row.key] = inference_rate(step, obs, cfg.hz_repeats)
            torch.set_num_threads(cfg.threads)
            step.reset()
            results, frames_rows = [], []
            bar = tqdm(total=cfg.seeds * cfg.episodes, desc=f"table1 {task} {row.label}", file=sys.stderr)
            for s in groups:
                for e in range(cfg.episodes):
                    frames: list[np.ndarray] | None = [] if s == groups[0] and e < 2 else None
                    r = run_episode_safe(rig, ctrl, EVAL_SEED0 + 1000 * s + e, max_time=cfg.max_time,
                                         frame_every=10 if frames is not None else 0, frames=frames)
                    results.append(r)
                    if frames is not None:
                        frames_rows.append(frames)
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(x.success for x in results)}/{len(results)}", rtf=f"{r.rtf:.2f}")
            bar.close()
            ctrl.close()
            step.close()
            cell = cell_from_episodes(results, groups)
            cell.inference_ms_in_loop_median = 1e3 * float(np.median(ctrl.inference_s))
            cell.replans_per_sim_s = len(ctrl.inference_s) / max(sum(r.duration for r in results), 1e-9)
            cell.chunks_rejected, cell.chunks_stale, cell.chunks_kept_plan = ctrl.rejected, ctrl.stale, ctrl.kept_plan
            cells[row.key] = cell
            strips.mkdir(parents=True, exist_ok=True)
            tag = "_".join(f"{k}{v}" for k, v in row.sample_kw.items())
            save_strip(strips / f"{task}_{row.model}_{tag}.png", frames_rows)
    finally:
        rig.close()
    return cells, hz


def run(cfg: Table1Config) -> Table1Report:
    """Evaluate, write OUT/table1.{json,md} and the plots (OUT/table1.partial.json after each task, so a run
    stopped part-way can still be combined), and return the report."""
    missing = sorted({r.model for r in cfg.rows if not (cfg.models / r.model / "model.safetensors").is_file()})
    if missing:
        raise FileNotFoundError(f"no trained model for {missing} under {cfg.models}: run `make models` "
                                f"(or `flow2one reproduce`) first")
    cfg.out.mkdir(parents=True, exist_ok=True)
    report = Table1Report(created_utc=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), command=cfg.command,
                          models=str(cfg.models), settings=cfg.settings, seeds=cfg.seeds,
                          first_seed_group=cfg.first_group, tasks=[],
                          policies=[PolicyRow(r.key, r.label, r.passes) for r in cfg.rows], cells={},
                          cards={r.model: str(cfg.models / r.model / "card.yaml") for r in cfg.rows})
    measured: dict[str, list[Inference]] = {r.key: [] for r in cfg.rows}
    lock = threading.Lock()
    t0 = time.perf_counter()

    def one(task: str) -> None:
        cells, hz = isolated(evaluate_task, cfg, task, what=f"the evaluation process for {task}")
        with lock:
            report.cells[task] = cells
            report.tasks = [t for t in cfg.tasks if t in report.cells]
            for p in report.policies:  # one figure per policy: the median over the tasks' observations
                measured[p.key].append(hz[p.key])
                p.inference = Inference.median(measured[p.key])
            (cfg.out / "table1.partial.json").write_text(json.dumps(report.to_json(), indent=1, default=str))

    with ThreadPoolExecutor(max(1, min(cfg.jobs, len(cfg.tasks)))) as pool:  # each task in its own process
        list(pool.map(one, cfg.tasks))
    report.wall_s = time.perf_counter() - t0
    if cfg.merge_with is not None:
        report = merge(report, cfg.merge_with)
    write(report, cfg.out)
    (cfg.out / "table1.partial.json").unlink(missing_ok=True)
    return report
