"""The analog of the paper's Table I on our sim tasks: closed-loop success and inference rate of every
policy kind, plus the modes each one used.

Rows: the CFM teacher with 50 Euler steps, the same teacher with 1 step (the naive one-step baseline),
the distilled one-step student, L1 Sample Flow (2 steps) and MSE regression. Each runs closed loop in
franky-sim through the deployed path (flow2one.sim.rollout.PolicyController: the policy node's
runtime.PolicyStep, the executor node's control.Executor with its safety filter and watchdog, and
control.FrankyRobot over libfranka), on the sim clock, with inference in its own thread as in the deploy
graph: a policy re-plans at most the sim graph's policy rate_hz times per sim second (config/sim.yaml;
--policy-rate-hz 0: as soon as its previous chunk is out), and the robot meanwhile executes the newest
chunk, so a slow policy acts on old observations, which costs on the dynamic task as on the robot.

Success is given as mean and standard deviation over evaluation seed groups (each group a fresh set of
randomised episodes, seeds disjoint from the training demos). Inference rate is measured separately on
one CPU thread (batch 1, median of repeated calls on a recorded sim observation) and also inside the
loop. Writes OUT/table1.md, OUT/table1.json and plots (mode histograms, success vs rate).

Examples:
  flow2one table1                                    # shipped models/sim_*, 3 seed groups x 4 episodes
  flow2one table1 --seeds 1 --episodes 1 --tasks reach_around --out runs/t1   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flow2one.paths import data_root
from flow2one.sim.evaluate import SET_ENV

REPO_ROOT = data_root()
EVAL_SEED0 = 100_000  # sim-demos uses seeds from 0: evaluation episodes never repeat a training scene


@dataclass(frozen=True)
class Row:
    label: str
    model: str  # models/<model>
    sample_kw: dict[str, Any] = field(default_factory=dict)  # Policy.sample keyword arguments
    passes: str = ""  # network passes per chunk, for the table


ROWS: tuple[Row, ...] = (
    Row("teacher (50 steps)", "sim_teacher", {"steps": 50}, "50"),
    Row("teacher 1-step", "sim_teacher", {"steps": 1}, "1"),
    Row("student (1 step)", "sim_student", {}, "1"),
    Row("L1 Flow (2 steps)", "sim_l1flow", {}, "2"),
    Row("regression", "sim_regression", {}, "1"),
)


def inference_hz(step, obs, repeats: int) -> dict[str, float]:
    """Median wall time of one policy step (batch 1, all its candidates) on the current thread setting."""
    step.infer(obs)  # warm-up
    times = [step.infer(obs).inference_s for _ in range(repeats)]
    med = float(np.median(times))
    return {"ms_median": 1e3 * med, "hz": 1.0 / med}


def seed_stats(results: list, groups: int) -> dict[str, Any]:
    """Success mean/std over seed groups, mode histograms, time to success."""
    per_group = np.array_split(np.array([r.success for r in results], dtype=float), groups)
    rates = [float(g.mean()) for g in per_group if len(g)]
    ok = [r for r in results if r.success]
    tts = [r.time_to_success for r in ok if r.time_to_success is not None]
    return {
        "success_mean": float(np.mean(rates)), "success_std": float(np.std(rates)), "success_per_seed": rates,
        "episodes": len(results), "successes": len(ok),
        "mode_histogram": dict(Counter(r.mode_name or "none" for r in results)),
        "mode_histogram_success": dict(Counter(r.mode_name or "none" for r in ok)),
        "failures": dict(Counter(r.reason for r in results if not r.success)),
        "time_to_success_s": float(np.mean(tts)) if tts else None,
        "sim_rtf_mean": float(np.mean([r.rtf for r in results])),
        "planner_errors": int(sum(r.planner_errors for r in results)),
    }


def evaluate_task(task: str, rows: list[Row], models: Path, seeds: int, episodes: int, n_exec: int,
                  hz_repeats: int, max_time: float | None, strips: Path | None, threads: int = 1,
                  candidates: int = 1, rate_hz: float | None = None, first_group: int = 0,
                  max_obs_age_s: float = 0.25) -> tuple[dict, dict]:
    """Every row on one task in one SimWorld (the slow part: started once, anew after a lost link), each
    through the deployed loop (PolicyStep -> Executor -> FrankyRobot). -> (results, hz)."""
    import torch
    from tqdm import tqdm

    from flow2one.sim.evaluate import open_policy_step, policy_controller, save_strip, sim_executor_config
    from flow2one.sim.rig import SimRig
    from flow2one.sim.rollout import Observer, home, run_episode_safe

    torch.set_num_threads(threads)
    out: dict[str, Any] = {}
    hz: dict[str, Any] = {}
    groups = list(range(first_group, first_group + seeds))
    rig = SimRig(task, executor=sim_executor_config(n_exec=n_exec))
    try:
        home(rig.robot)
        rig.world.reset(EVAL_SEED0)
        probe = Observer(rig.world, rig.robot, rig.cams, rig.cloud)
        probe.step(0.0, rig.world.sim_time)
        for row in rows:
            step = open_policy_step(models / row.model, "torch", candidates, sample_steps=row.sample_kw.get("steps"),
                                    threads=threads)
            ctrl = policy_controller(step, n_exec, rate_hz, max_obs_age_s)
            ctrl.reset(rig.world, rig.robot, np.random.default_rng(0))
            ctrl.feed(probe, with_points=True)  # a recorded sim observation, for the inference rate
            obs, why = step.assembler.assemble(probe.stamp_ns, np.inf)
            torch.set_num_threads(1)
            hz[row.label] = inference_hz(step, obs, hz_repeats)
            torch.set_num_threads(threads)
            step.reset()
            results, frames_rows = [], []
            bar = tqdm(total=seeds * episodes, desc=f"table1 {task} {row.label}", file=sys.stderr)
            for s in groups:
                for e in range(episodes):
                    frames: list[np.ndarray] | None = [] if strips is not None and s == groups[0] and e < 2 else None
                    ep_seed = EVAL_SEED0 + 1000 * s + e
                    r = run_episode_safe(rig, ctrl, ep_seed, max_time=max_time,
                                         frame_every=10 if frames is not None else 0, frames=frames)
                    results.append(r)
                    if frames is not None:
                        frames_rows.append(frames)
                    bar.update(1)
                    bar.set_postfix(success=f"{sum(x.success for x in results)}/{len(results)}", rtf=f"{r.rtf:.2f}")
            bar.close()
            ctrl.close()
            step.close()
            out[row.label] = seed_stats(results, seeds)
            out[row.label]["seed_groups"] = groups
            out[row.label]["inference_ms_in_loop_median"] = 1e3 * float(np.median(ctrl.inference_s))
            out[row.label]["replans_per_sim_s"] = len(ctrl.inference_s) / max(sum(r.duration for r in results), 1e-9)
            out[row.label]["chunks_rejected"] = ctrl.rejected
            out[row.label]["chunks_stale"] = ctrl.stale
            out[row.label]["per_episode"] = [r.to_dict() for r in results]
            if strips is not None:
                strips.mkdir(parents=True, exist_ok=True)
                tag = "_".join(f"{k}{v}" for k, v in row.sample_kw.items())
                save_strip(strips / f"{task}_{row.model}_{tag}.png", frames_rows)
    finally:
        rig.close()
    return out, hz


def markdown(report: dict[str, Any]) -> str:
    tasks, rows = report["tasks"], report["rows"]
    hz = report["inference"]
    teacher = "teacher (50 steps)"
    lines = [f"# Table I analog: closed-loop success in the sim and inference rate ({report['created_utc']})", "",
             f"Command: `{report['command']}`", "",
             f"{report['episodes_per_seed']} episodes per seed group, {_groups_text(report)} per task and policy "
             f"(group g: seeds {EVAL_SEED0} + 1000 g + episode, never seen in training); success = mean ± std over "
             "seed groups. "
             f"Inference: one CPU thread, batch 1, {report.get('candidates', 1)} candidate(s) per call, median "
             "(Hz = chunks/s). Re-plans/s: chunks per sim second inside the rollout, where the policy thread "
             "shares both cores with franky-sim and rendering (mean over tasks). "
             + (f"Inference starts at most {report['policy_rate_hz']:g} times per sim second. "
                if report.get("policy_rate_hz") else "Each policy re-plans as soon as its last chunk is out. ")
             + f"Executor: at most {report['n_exec']} steps of a chunk.", "",
             "| policy | passes | " + " | ".join(f"{t} success" for t in tasks)
             + " | inference ms | Hz | speed-up vs teacher | re-plans/s in loop |",
             "|---|---|" + "---|" * len(tasks) + "---|---|---|---|"]
    for label in rows:
        cells = []
        for t in tasks:
            r = report["results"][t][label]
            cells.append(f"{100 * r['success_mean']:.0f} ± {100 * r['success_std']:.0f}% "
                         f"({r['successes']}/{r['episodes']})")
        h = hz[label]
        ratio = f"{h['hz'] / hz[teacher]['hz']:.1f}x" if teacher in hz else "n/a"
        replans = [report["results"][t][label].get("replans_per_sim_s") for t in tasks]
        replans_cell = f"{np.mean(replans):.1f}" if None not in replans else "n/a"
        lines.append(f"| {label} | {report['passes'][label]} | " + " | ".join(cells)
                     + f" | {h['ms_median']:.1f} | {h['hz']:.1f} | {ratio} | {replans_cell} |")
    lines += ["", "## Modes used (all episodes; successful ones in brackets)", "",
              "| policy | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for label in rows:
        cells = []
        for t in tasks:
            r = report["results"][t][label]
            cells.append(", ".join(f"{m}: {n} [{r['mode_histogram_success'].get(m, 0)}]"
                                   for m, n in sorted(r["mode_histogram"].items())))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Failure reasons", "", "| policy | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for label in rows:
        fails = [", ".join(f"{k}: {v}" for k, v in report["results"][t][label]["failures"].items()) or "-"
                 for t in tasks]
        lines.append(f"| {label} | " + " | ".join(fails) + " |")
    lines += ["", "## Against the paper's claims", ""] + [f"- {c}" for c in report["checks"]]
    lines += ["", "Plots: `table1_modes.png` (mode histograms), `table1_success_vs_hz.png`. "
              "Raw numbers: `table1.json`.",
              "Sim real-time factor (mean over episodes): " + ", ".join(
                  f"{t} {np.mean([report['results'][t][l]['sim_rtf_mean'] for l in rows]):.2f}" for t in tasks), ""]
    return "\n".join(lines)


def z_higher(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Two-proportion z statistic of cell a's success rate over cell b's, episodes pooled (1.64: a is higher
    with one-sided p = 0.05): a handful of episodes between two rows is noise at these sample sizes."""
    n1, n2, k1, k2 = a["episodes"], b["episodes"], a["successes"], b["successes"]
    p = (k1 + k2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    return (k1 / n1 - k2 / n2) / se if se > 0 else 0.0


def checks(report: dict[str, Any]) -> list[str]:
    """The issue's acceptance figures, stated plainly whether they held or not."""
    from flow2one.sim.tasks import TASKS

    res, hz, out = report["results"], report["inference"], []
    t50, stu = "teacher (50 steps)", "student (1 step)"
    if t50 in hz and stu in hz:
        r = hz[stu]["hz"] / hz[t50]["hz"]
        out.append(f"student {r:.1f}x the teacher's inference rate (goal >= 14x): {'met' if r >= 14 else 'NOT met'}")
    for t in report["tasks"]:
        if t50 not in res[t] or stu not in res[t]:
            continue
        s, te = res[t][stu]["success_mean"], res[t][t50]["success_mean"]
        if TASKS[t].dynamic:
            z = z_higher(res[t][stu], res[t][t50])
            verdict = ("NOT met" if s <= te else f"met (z = {z:.1f})" if z >= 1.64
                       else f"higher, but not significantly (z = {z:.1f} < 1.64): NOT shown")
            out.append(f"{t} (dynamic): student {100 * s:.0f}% vs teacher {100 * te:.0f}% "
                       f"(goal: student higher): {verdict}")
        else:
            verdict = ("NOT shown (the teacher never succeeded: nothing to keep 95% of)" if te == 0
                       else "met" if s >= 0.95 * te else "NOT met")
            out.append(f"{t}: student {100 * s:.0f}% vs teacher {100 * te:.0f}% (goal >= 95% of teacher): {verdict}")
        for naive in ("teacher 1-step", "regression"):
            if naive in res[t]:
                n = res[t][naive]
                modes = {m: c for m, c in n["mode_histogram"].items() if m != "none"}
                out.append(f"{t}: {naive} {100 * n['success_mean']:.0f}% (student {100 * s:.0f}%); "
                           f"modes {modes or 'none'}: "
                           + ("lower than the student, as the paper reports" if n["success_mean"] < s else
                              "no collapse visible here (not lower than the student)"))
    return out


def plots(report: dict[str, Any], out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, rows = report["tasks"], report["rows"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        modes = sorted({m for l in rows for m in report["results"][t][l]["mode_histogram"]})
        width = 0.8 / max(len(modes), 1)
        for j, m in enumerate(modes):
            vals = [report["results"][t][l]["mode_histogram"].get(m, 0) for l in rows]
            ax.bar(np.arange(len(rows)) + j * width, vals, width, label=m)
        ax.set_xticks(np.arange(len(rows)) + 0.4 - width / 2, rows, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{t}: modes per episode")
        ax.set_ylabel("episodes")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "table1_modes.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for t in tasks:
        xs = [report["inference"][l]["hz"] for l in rows]
        ys = [100 * report["results"][t][l]["success_mean"] for l in rows]
        ax.scatter(xs, ys, label=t)
        for x, y, l in zip(xs, ys, rows):
            ax.annotate(l, (x, y), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("inference rate (Hz, 1 CPU thread)")
    ax.set_ylabel("success %")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "table1_success_vs_hz.png", dpi=100)
    plt.close(fig)


def _child(send, fn, args) -> None:
    from flow2one.subprocesses import die_with_parent

    die_with_parent()  # a killed `table1` must not leave its evaluations running (they hold franky-sims)
    try:
        send.send((True, fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - handed to the parent
        send.send((False, exc))
    finally:
        send.close()
        os._exit(0)  # skip interpreter teardown: abandoned libfranka clients must not be destroyed


def isolated(fn, *args, retries: int = 1):
    """fn(*args) in a fresh child process. The sim stack (MuJoCo + EGL + franky) has been seen to segfault
    or hang in teardown on this overloaded machine; in a child that costs one retry of one task, not the
    whole table."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    for attempt in range(retries + 1):
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(send, fn, args))
        proc.start()
        send.close()
        try:
            ok, value = recv.recv()
        except EOFError:  # the child died without an answer
            ok, value = None, None
        proc.join(10.0)
        if proc.is_alive():
            proc.kill()
        if ok:
            return value
        if ok is False:
            raise value
        if attempt == retries:
            raise RuntimeError(f"the evaluation process for {args[0]} died twice (exit {proc.exitcode})")
        print(f"table1: the evaluation process died ({args[0]}, exit {proc.exitcode}); retrying once",
              file=sys.stderr)


def run(models: Path, out: Path, tasks: list[str], rows: list[Row], seeds: int, episodes: int, n_exec: int = 8,
        hz_repeats: int = 20, max_time: float | None = None, command: str = "", threads: int = 1,
        jobs: int = 1, merge_with: Path | None = None, candidates: int = 1,
        rate_hz: float | None = None, first_group: int = 0, max_obs_age_s: float = 0.25) -> dict[str, Any]:
    missing = sorted({r.model for r in rows if not (models / r.model / "model.safetensors").is_file()})
    if missing:
        raise FileNotFoundError(f"no trained model for {missing} under {models}: run `make models` "
                                f"(or `flow2one reproduce`) first")
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"created_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command,
                              "models": str(models), "tasks": tasks, "rows": [r.label for r in rows],
                              "passes": {r.label: r.passes for r in rows}, "seeds": seeds,
                              "episodes_per_seed": episodes, "n_exec": n_exec, "candidates": candidates,
                              "policy_rate_hz": rate_hz, "max_obs_age_s": max_obs_age_s,
                              "first_seed_group": first_group, "set": sorted(json.loads(os.environ.get(SET_ENV, "[]"))),
                              "results": {}, "inference": {},
                              "cards": {r.model: str(models / r.model / "card.yaml") for r in rows}}
    t0 = time.perf_counter()

    def one(t: str) -> None:
        res, hz = isolated(evaluate_task, t, rows, models, seeds, episodes, n_exec, hz_repeats, max_time,
                           out / "strips", threads, candidates, rate_hz, first_group, max_obs_age_s)
        with lock:
            report["results"][t] = res
            for label, h in hz.items():  # one figure per row: the median over the tasks' observations
                report["inference"].setdefault(label, []).append(h)
            (out / "table1.partial.json").write_text(json.dumps(report, indent=1, default=str))

    lock = threading.Lock()
    with ThreadPoolExecutor(max(1, min(jobs, len(tasks)))) as pool:  # each task in its own process
        list(pool.map(one, tasks))
    report["results"] = {t: report["results"][t] for t in tasks}
    report["wall_s"] = time.perf_counter() - t0
    report = reduced(report)
    if merge_with is not None:
        report = merge(report, merge_with)
    write(report, out)
    (out / "table1.partial.json").unlink(missing_ok=True)
    return report


def reduced(report: dict[str, Any]) -> dict[str, Any]:
    """One inference figure per row: the median over the tasks' measurements (a table1.partial.json, which
    a run writes after each task, still holds them per task)."""
    report["inference"] = {l: hs if isinstance(hs, dict) else
                           {"ms_median": float(np.median([h["ms_median"] for h in hs])),
                            "hz": float(1e3 / np.median([h["ms_median"] for h in hs]))}
                           for l, hs in report["inference"].items()}
    report["tasks"] = [t for t in report["tasks"] if t in report["results"]]  # a partial run: the tasks done
    return report


def write(report: dict[str, Any], out: Path) -> None:
    report["checks"] = checks(report)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table1.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "table1.md").write_text(markdown(report))
    plots(report, out)


def _seed_groups(report: dict[str, Any], cell: dict[str, Any]) -> list[int]:
    return cell.get("seed_groups", list(range(report["seeds"])))  # files from before groups were recorded


def _groups_text(report: dict[str, Any]) -> str:
    counts = sorted({len(_seed_groups(report, c)) for cells in report["results"].values() for c in cells.values()})
    return " or ".join(map(str, counts or [report["seeds"]])) + " seed group(s)"


def pool(a: dict[str, Any], b: dict[str, Any], groups: list[int]) -> dict[str, Any]:
    """One cell from two evaluated on disjoint seed groups: success statistics over all their groups; the
    in-loop inference figures weighted by episodes (their medians are not re-computable)."""
    from flow2one.sim.rollout import EpisodeResult

    eps = a["per_episode"] + b["per_episode"]
    cell = seed_stats([EpisodeResult(**e) for e in eps], len(groups))
    w = np.array([a["episodes"], b["episodes"]], dtype=float)
    for key in ("inference_ms_in_loop_median", "replans_per_sim_s"):
        cell[key] = float(np.dot(w, [a[key], b[key]]) / w.sum())
    cell.update(chunks_rejected=a["chunks_rejected"] + b["chunks_rejected"], per_episode=eps, seed_groups=groups)
    return cell


def merge(report: dict[str, Any], other_path: Path) -> dict[str, Any]:
    """`report` completed with the cells (task x row) of another table1.json evaluated the same way, which
    may hold other rows, other tasks or both; a cell in both is pooled when their seed groups are disjoint
    (`--first-seed-group`), an error otherwise. A row's inference figure is the first file's that has it."""
    other = reduced(json.loads(Path(other_path).read_text()))
    defaults = {"candidates": 1, "set": []}  # files from before a setting existed ran with its default
    for key in ("episodes_per_seed", "n_exec", "candidates", "policy_rate_hz", "max_obs_age_s", "set"):
        if other.get(key, defaults.get(key)) != report.get(key, defaults.get(key)):
            raise ValueError(f"{other_path}: {key} {other.get(key)!r} differs from {report.get(key)!r}: "
                             f"the rows would not be comparable")
    for task, cells in other["results"].items():
        for row, cell in cells.items():
            cell = {**cell, "seed_groups": _seed_groups(other, cell)}
            mine = report["results"].setdefault(task, {}).get(row)
            if mine is None:
                report["results"][task][row] = cell
                continue
            groups = _seed_groups(report, mine) + cell["seed_groups"]
            if len(set(groups)) < len(groups):
                raise ValueError(f"{other_path}: {task} / {row} is also in an earlier file, on the same seed groups")
            report["results"][task][row] = pool(mine, cell, groups)
    order = [r.label for r in ROWS]
    report["rows"] = sorted(set(report["rows"]) | set(other["rows"]),
                            key=lambda r: order.index(r) if r in order else len(order))
    report["tasks"] = report["tasks"] + [t for t in other["tasks"] if t not in report["tasks"]]
    for key in ("inference", "passes"):
        report[key] = {**other[key], **report[key]}
    report["cards"] = {**other.get("cards", {}), **report.get("cards", {})}
    if other.get("command") and other["command"] != report.get("command"):
        report["command"] = f"{report.get('command')}` + `{other['command']}"
    return report


def combine(paths: list[Path], out: Path) -> dict[str, Any]:
    """One table from table1.json files evaluated separately (same settings; cells of tasks x rows that are
    disjoint or on disjoint seed groups), or from the table1.partial.json of a run stopped part-way (the
    tasks it finished)."""
    report = reduced(json.loads(paths[0].read_text()))
    for p in paths[1:]:
        report = merge(report, p)
    write(report, out)
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    from flow2one.sim.evaluate import add_rate_arguments
    from flow2one.sim.tasks import MULTI_TASK, TASKS

    p.add_argument("--models", type=Path, default=REPO_ROOT / "models", help="directory holding sim_<kind>/ models")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "results", help="where table1.md/.json and plots go")
    p.add_argument("--tasks", default=",".join(MULTI_TASK), help=f"comma list of sim tasks ({', '.join(TASKS)}; "
                   f"default the shipped multi-task models' {','.join(MULTI_TASK)}; pop_up needs models trained on it, "
                   "results/README.md 3d)")
    p.add_argument("--rows", default="", help=f"comma list of row numbers 0-{len(ROWS) - 1} "
                   f"({'; '.join(f'{i}: {r.label}' for i, r in enumerate(ROWS))}); default all")
    p.add_argument("--seeds", type=int, default=3, help="evaluation seed groups (spread is over these)")
    p.add_argument("--first-seed-group", type=int, default=0, help="evaluate seed groups from this one on: "
                   "more episodes for cells of an earlier run, which --combine then pools")
    p.add_argument("--episodes", type=int, default=4, help="episodes per seed group, task and policy")
    s = add_rate_arguments(p)
    p.add_argument("--candidates", type=int, default=s["candidates"], help="M samples per re-plan, the one "
                   "continuing the executing chunk kept (the policy node's n_candidates; default "
                   f"{s['candidates']}, the sim graph's); inference is timed for all M")
    p.add_argument("--hz-repeats", type=int, default=20, help="calls timed for the inference rate")
    p.add_argument("--max-time", type=float, default=None, help="cap each episode at this many sim seconds")
    p.add_argument("--threads", type=int, default=1, help="torch threads inside the rollout")
    p.add_argument("--merge-with", type=Path, default=None, help="an earlier table1.json (same settings) whose "
                   "cells complete this table (other rows/tasks) or pool with it (other seed groups)")
    p.add_argument("--combine", type=Path, nargs="+", default=None, metavar="JSON",
                   help="evaluate nothing: write OUT/table1.* from these table1.json files (task x row "
                   "cells: disjoint ones side by side, the same cell on other seed groups pooled) or from the "
                   "table1.partial.json of a run stopped part-way (the tasks it finished)")
    p.add_argument("--jobs", type=int, default=1, help="tasks evaluated at once, each in its own process with its "
                   "own franky-sim (results are paced by sim time, so they hold under load; wall time does not)")


def main(args: argparse.Namespace) -> int:
    import torch

    from flow2one.sim.evaluate import apply_overrides, rate_or_none
    from flow2one.sim.tasks import TASKS

    torch.set_num_threads(args.threads)
    if args.combine:
        combine(args.combine, args.out)
        print((args.out / "table1.md").read_text())
        return 0
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not tasks or set(tasks) - set(TASKS):
        raise SystemExit(f"--tasks {args.tasks!r}: choose from {', '.join(TASKS)}")
    try:
        rows = [ROWS[int(i)] for i in args.rows.split(",")] if args.rows else list(ROWS)
    except (ValueError, IndexError):
        raise SystemExit(f"--rows {args.rows!r}: comma list of numbers 0-{len(ROWS) - 1}") from None
    if min(args.seeds, args.episodes, args.candidates, args.n_exec) < 1 or args.first_seed_group < 0:
        raise SystemExit("--seeds, --episodes, --candidates and --n-exec must be >= 1, --first-seed-group >= 0")
    rate_hz = rate_or_none(args.policy_rate_hz)
    apply_overrides(args.set)
    given = sys.argv[2:] if sys.argv[1:2] == ["table1"] else []
    settings = {"--n-exec": args.n_exec, "--policy-rate-hz": args.policy_rate_hz, "--candidates": args.candidates,
                "--max-obs-age-s": args.max_obs_age_s}
    # the settings spelled out, so the recorded command still means the same once sim.yaml's defaults change
    command = " ".join(["flow2one table1", *given, *(f"{k} {v:g}" for k, v in settings.items() if k not in given)])
    try:
        report = run(args.models, args.out, tasks, rows, args.seeds, args.episodes, args.n_exec, args.hz_repeats,
                     args.max_time, command, args.threads, args.jobs, args.merge_with, args.candidates,
                     rate_hz, args.first_seed_group, args.max_obs_age_s)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print((args.out / "table1.md").read_text())
    return 0 if report else 1
