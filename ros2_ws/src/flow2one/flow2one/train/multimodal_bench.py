"""The mode-collapse benchmark: every policy kind trained on synthetic conditional trajectory distributions with
known modes, scored on mode coverage, mode frequencies, Chamfer to true samples and batch-1 latency."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flow2one.bench.timing import Timing
from flow2one.policy import api
from flow2one.policy.base import Policy
from flow2one.train import multimodal as mm

FULL = {"n_train": 12000, "n_distill_per_scenario": 200, "k": 16, "teacher_steps": 1500, "student_steps": 1500,
        "l1_steps": 1500, "regression_steps": 300, "batch_size": 128, "student_batch": 16,
        "eval_cond_per_scenario": 16, "eval_samples": 32, "down_dims": (16, 32, 64), "speed_reps": 10}
QUICK = {**FULL, "n_train": 300, "n_distill_per_scenario": 4, "k": 4, "teacher_steps": 10, "student_steps": 10,
         "l1_steps": 10, "regression_steps": 10, "eval_cond_per_scenario": 2, "eval_samples": 8, "speed_reps": 1}
METHODS = ("teacher_50step", "teacher_1step", "student_1step", "l1flow_2step", "regression_mse")


def _sampler(method: str, models: dict[str, Policy]):
    if method == "teacher_50step":
        return models["teacher"], {"steps": 50}, 50
    if method == "teacher_1step":
        return models["teacher"], {"steps": 1}, 1
    return {"student_1step": (models["student"], {}, 1), "l1flow_2step": (models["l1flow"], {}, 2),
            "regression_mse": (models["regression"], {}, 1)}[method]


def _latencies_ms(samplers: dict[str, tuple[Policy, dict[str, Any]]], reps: int) -> dict[str, float]:
    """Median batch-1 latency per method, measured round-robin so background load hits all methods alike."""
    cond = torch.as_tensor(mm.make_conditions(0, 1, np.random.default_rng(0)))
    times: dict[str, list[float]] = {m: [] for m in samplers}
    for r in range(reps + 1):
        for m, (policy, kw) in samplers.items():
            t0 = time.perf_counter()
            policy.sample(cond, 1, **kw)
            if r:  # the first round is warm-up
                times[m].append(time.perf_counter() - t0)
    return {m: Timing.of(t).ms_median for m, t in times.items()}


def _plot(path: Path, method: str, cond: np.ndarray, samples: np.ndarray) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(cond), figsize=(4 * len(cond), 4))
    paths = mm.mode_paths(cond)
    mode, dist = mm.assign_modes(cond, samples)
    for i, ax in enumerate(np.atleast_1d(axes)):
        for s in range(samples.shape[1]):
            on = dist[i, s] < mm.OFF_MODE_RMS
            ax.plot(*samples[i, s].T, color=f"C{mode[i, s]}" if on else "k", alpha=0.35, lw=1)
        for k in range(paths.shape[1]):
            if not np.isnan(paths[i, k]).any():
                ax.plot(*paths[i, k].T, "--", color=f"C{k}", lw=2, label=f"mode {k} (w={mm.SCENARIOS[i].weights[k]})")
        ax.set_title(f"{mm.SCENARIOS[i].n_modes} modes")
        ax.set_aspect("equal")
        ax.legend(fontsize=6, loc="best", framealpha=0.5)
    fig.suptitle(f"{method}: sampled trajectories (black = off-mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run(quick: bool = False, out: str | Path = "runs/multimodal_bench", seed: int = 0,
        progress: bool = True) -> dict[str, Any]:
    c = QUICK if quick else FULL
    t_start, cpu_start = time.perf_counter(), time.process_time()
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cond, traj = mm.training_data(c["n_train"], seed)
    cfg = api.vector_config(mm.COND_DIM, 2, horizon=mm.HORIZON, down_dims=c["down_dims"])
    cfg.student.k_teacher = cfg.student.n_hypotheses = c["k"]
    common = {"batch_size": c["batch_size"], "seed": seed, "progress": progress}
    timings, models = {}, {}

    def timed(name: str, fn):
        t0 = time.perf_counter()
        r = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        return r

    models["teacher"] = timed("train_teacher", lambda: api.fit_teacher(cond, traj, cfg, steps=c["teacher_steps"], **common))
    n_per = len(cond) // len(mm.SCENARIOS)
    pick = np.concatenate([np.arange(c["n_distill_per_scenario"]) + s * n_per for s in range(len(mm.SCENARIOS))])
    sets = timed("distill_set", lambda: api.teacher_sets(models["teacher"], cond[pick], k=c["k"], steps=50,
                                                         seed=seed, progress=progress))
    models["student"] = timed("train_student", lambda: api.fit_student(
        cond[pick], sets, cfg, steps=c["student_steps"], **{**common, "batch_size": c["student_batch"]}))
    models["l1flow"] = timed("train_l1flow", lambda: api.fit("l1flow", cond, traj, cfg, steps=c["l1_steps"], **common))
    models["regression"] = timed("train_regression", lambda: api.fit("regression", cond, traj, cfg,
                                                                     steps=c["regression_steps"], **common))
    rng = np.random.default_rng(seed + 1)
    eval_cond = [mm.make_conditions(s, c["eval_cond_per_scenario"], rng) for s in range(len(mm.SCENARIOS))]
    heldout = [mm.sample_true(ec, c["eval_samples"], rng)[0] for ec in eval_cond]
    plot_cond = np.stack([ec[0] for ec in eval_cond])
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    for method in METHODS:
        policy, kw, nfe = _sampler(method, models)
        gen = torch.Generator().manual_seed(seed + 2)
        per = {}
        for s, (ec, ho) in enumerate(zip(eval_cond, heldout)):
            samples = policy.sample(torch.as_tensor(ec), c["eval_samples"], generator=gen, **kw).numpy()
            per[f"{mm.SCENARIOS[s].n_modes}_modes"] = mm.metrics(ec, samples, ho)
        plot_samples = policy.sample(torch.as_tensor(plot_cond), 32, generator=gen, **kw).numpy()
        _plot(out / f"{method}.png", method, plot_cond, plot_samples)
        avg = {k: float(np.mean([p[k] for p in per.values()])) for k in next(iter(per.values()))}
        results[method] = {**{k: round(v, 4) for k, v in avg.items()}, "nfe": nfe,
                           "per_scenario": {n: {k: round(v, 4) for k, v in p.items()} for n, p in per.items()}}
    timings["evaluate"] = round(time.perf_counter() - t0, 1)
    lat = _latencies_ms({m: _sampler(m, models)[:2] for m in METHODS}, c["speed_reps"])
    for m in METHODS:
        results[m]["latency_ms_b1_cpu"] = round(lat[m], 3)
    teacher, student = results["teacher_50step"], results["student_1step"]
    base = teacher["latency_ms_b1_cpu"]
    speed = {f"{m}_speedup_vs_teacher_50step": round(base / results[m]["latency_ms_b1_cpu"], 2)
             for m in METHODS if m != "teacher_50step"}
    cov_ratio = student["mode_coverage"] / max(teacher["mode_coverage"], 1e-9)
    gap = 100 * (student["off_mode_fraction"] - teacher["off_mode_fraction"])
    collapse = {m: round(100 * (results[m]["off_mode_fraction"] - teacher["off_mode_fraction"]), 1)
                for m in ("teacher_1step", "regression_mse")}
    done = {"student_coverage_over_teacher": round(cov_ratio, 3), "student_off_mode_gap_points": round(gap, 1),
            "collapse_off_mode_gap_points": collapse,
            "pass": bool(cov_ratio >= 0.95 and abs(gap) <= 5.0 and min(collapse.values()) > 20.0)}
    report = {"benchmark": "multimodal", "quick": quick, "seed": seed, "settings": {k: v for k, v in c.items()},
              "threads": torch.get_num_threads(), "methods": results, "speed": speed, "done_when": done,
              "timings_s": timings, "wall_s": round(time.perf_counter() - t_start, 1),
              "cpu_s": round(time.process_time() - cpu_start, 1),
              "plots": sorted(str(p) for p in out.glob("*.png"))}
    (out / "results.json").write_text(json.dumps(report, indent=2))
    return report
