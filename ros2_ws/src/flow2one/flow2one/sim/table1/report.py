"""Table I as markdown and plots, the paper's claims checked against it, and one table from several runs
(`--merge-with`, `--combine`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flow2one.sim.table1.config import EVAL_SEED0, REGRESSION, ROWS, STUDENT, TEACHER, TEACHER_1STEP
from flow2one.sim.table1.results import Table1Report, load, save
from flow2one.sim.table1.statistics import Z_ONE_SIDED_5PCT, pool, z_higher

SPEEDUP_GOAL = 14.0  # the paper's student vs 50-step teacher inference rate
KEEP_GOAL = 0.95  # static tasks: the student keeps this fraction of the teacher's success


def _groups_text(report: Table1Report) -> str:
    return " or ".join(map(str, report.seed_group_counts() or [report.seeds])) + " seed group(s)"


def markdown(report: Table1Report) -> str:
    tasks, s = report.tasks, report.settings
    teacher = report.inference(TEACHER)
    lines = [f"# Table I analog: closed-loop success in the sim and inference rate ({report.created_utc})", "",
             f"Command: `{report.command}`", "",
             f"{s.episodes_per_seed} episodes per seed group, {_groups_text(report)} per task and policy "
             f"(group g: seeds {EVAL_SEED0} + 1000 g + episode, never seen in training); success = mean ± std over "
             "seed groups. "
             f"Inference: one CPU thread, batch 1, {s.candidates} candidate(s) per call, median "
             "(Hz = chunks/s). Re-plans/s: chunks per sim second inside the rollout, where the policy thread "
             "shares both cores with franky-sim and rendering (mean over tasks). "
             + (f"Inference starts at most {s.policy_rate_hz:g} times per sim second. "
                if s.policy_rate_hz else "Each policy re-plans as soon as its last chunk is out. ")
             + f"Executor: at most {s.n_exec} steps of a chunk."
             + (f" Camera data reaches the policy {s.camera_lag_steps} control step(s) after the robot state of "
                "its instant." if s.camera_lag_steps else "")
             + (f" Sim graph parameters changed: {', '.join(s.overrides)}." if s.overrides else ""), "",
             "| policy | passes | " + " | ".join(f"{t} success" for t in tasks)
             + " | inference ms | Hz | speed-up vs teacher | re-plans/s in loop |",
             "|---|---|" + "---|" * len(tasks) + "---|---|---|---|"]
    for p in report.policies:
        cells = [report.cells[t][p.key] for t in tasks]
        texts = [f"{100 * c.success_mean:.0f} ± {100 * c.success_std:.0f}% ({c.successes}/{c.episodes})" for c in cells]
        h = p.inference
        ratio = f"{h.hz / teacher.hz:.1f}x" if h and teacher else "n/a"
        replans = [c.replans_per_sim_s for c in cells]
        replans_cell = f"{np.mean(replans):.1f}" if None not in replans else "n/a"
        timing = f"{h.ms_median:.1f} | {h.hz:.1f}" if h else "n/a | n/a"
        lines.append(f"| {p.label} | {p.passes} | " + " | ".join(texts) + f" | {timing} | {ratio} | {replans_cell} |")
    lines += ["", "## Modes used (all episodes; successful ones in brackets)", "",
              "| policy | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for p in report.policies:
        cells = [", ".join(f"{m}: {n} [{c.mode_histogram_success.get(m, 0)}]" for m, n in sorted(c.mode_histogram.items()))
                 for c in (report.cells[t][p.key] for t in tasks)]
        lines.append(f"| {p.label} | " + " | ".join(cells) + " |")
    lines += ["", "## Failure reasons", "", "| policy | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for p in report.policies:
        fails = [", ".join(f"{k}: {v}" for k, v in report.cells[t][p.key].failures.items()) or "-" for t in tasks]
        lines.append(f"| {p.label} | " + " | ".join(fails) + " |")
    from flow2one.sim.tasks import TASKS, Task  # mujoco: loaded only when a report is written

    eventful = [t for t in tasks if TASKS[t].event_time is not Task.event_time]
    if eventful:
        lines += ["", "## Reaction: from the event to the first command heading for what it revealed",
                  "", "(median sim s; episodes with such a command)", "",
                  "| policy | " + " | ".join(eventful) + " |", "|---|" + "---|" * len(eventful)]
        for p in report.policies:
            cells = [report.cells[t][p.key] for t in eventful]
            lines.append(f"| {p.label} | " + " | ".join(
                f"{c.reaction_s_median:.2f} s ({c.reacted}/{c.episodes})" if c.reacted else f"- (0/{c.episodes})"
                for c in cells) + " |")
    lines += ["", "## Against the paper's claims", ""] + [f"- {c}" for c in report.checks]
    lines += ["", "Plots: `table1_modes.png` (mode histograms), `table1_success_vs_hz.png`. "
              "Raw numbers: `table1.json`.",
              "Sim real-time factor (mean over episodes): " + ", ".join(
                  f"{t} {np.mean([c.sim_rtf_mean for c in report.cells[t].values()]):.2f}" for t in tasks), ""]
    return "\n".join(lines)


def checks(report: Table1Report) -> list[str]:
    """The paper's acceptance figures, stated plainly whether they held or not."""
    from flow2one.sim.tasks import TASKS

    out = []
    t50, stu = report.inference(TEACHER), report.inference(STUDENT)
    if t50 and stu:
        r = stu.hz / t50.hz
        out.append(f"student {r:.1f}x the teacher's inference rate (goal >= {SPEEDUP_GOAL:g}x): "
                   f"{'met' if r >= SPEEDUP_GOAL else 'NOT met'}")
    for t in report.tasks:
        cells = report.cells[t]
        if TEACHER not in cells or STUDENT not in cells:
            continue
        sc, tc = cells[STUDENT], cells[TEACHER]
        s, te = sc.success_mean, tc.success_mean
        if TASKS[t].dynamic:
            z = z_higher(sc.successes, sc.episodes, tc.successes, tc.episodes)
            verdict = ("NOT met" if s <= te else f"met (z = {z:.1f})" if z >= Z_ONE_SIDED_5PCT
                       else f"higher, but not significantly (z = {z:.1f} < {Z_ONE_SIDED_5PCT}): NOT shown")
            out.append(f"{t} (dynamic): student {100 * s:.0f}% vs teacher {100 * te:.0f}% "
                       f"(goal: student higher): {verdict}")
        else:
            verdict = ("NOT shown (the teacher never succeeded: nothing to keep 95% of)" if te == 0
                       else "met" if s >= KEEP_GOAL * te else "NOT met")
            out.append(f"{t}: student {100 * s:.0f}% vs teacher {100 * te:.0f}% (goal >= 95% of teacher): {verdict}")
        for naive in (TEACHER_1STEP, REGRESSION):
            if naive in cells:
                n = cells[naive]
                modes = {m: c for m, c in n.mode_histogram.items() if m != "none"}
                out.append(f"{t}: {report.policy(naive).label} {100 * n.success_mean:.0f}% (student {100 * s:.0f}%); "
                           f"modes {modes or 'none'}: "
                           + ("lower than the student, as the paper reports" if n.success_mean < s else
                              "no collapse visible here (not lower than the student)"))
    return out


def plots(report: Table1Report, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, labels = report.tasks, [p.label for p in report.policies]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for ax, t in zip(axes[0], tasks):
        cells = [report.cells[t][p.key] for p in report.policies]
        modes = sorted({m for c in cells for m in c.mode_histogram})
        width = 0.8 / max(len(modes), 1)
        for j, m in enumerate(modes):
            ax.bar(np.arange(len(cells)) + j * width, [c.mode_histogram.get(m, 0) for c in cells], width, label=m)
        ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2, labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{t}: modes per episode")
        ax.set_ylabel("episodes")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "table1_modes.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    timed = [p for p in report.policies if p.inference is not None]
    for t in tasks:
        xs = [p.inference.hz for p in timed]
        ys = [100 * report.cells[t][p.key].success_mean for p in timed]
        ax.scatter(xs, ys, label=t)
        for x, y, p in zip(xs, ys, timed):
            ax.annotate(p.label, (x, y), fontsize=6)
    ax.set_xscale("log")
    ax.set_xlabel("inference rate (Hz, 1 CPU thread)")
    ax.set_ylabel("success %")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "table1_success_vs_hz.png", dpi=100)
    plt.close(fig)


def write(report: Table1Report, out: Path) -> None:
    """OUT/table1.json, table1.md and the plots; the claims are checked anew on what the report now holds."""
    report.checks = checks(report)
    out.mkdir(parents=True, exist_ok=True)
    save(report, out / "table1.json")
    (out / "table1.md").write_text(markdown(report))
    plots(report, out)


def merge(report: Table1Report, other_path: Path) -> Table1Report:
    """`report` completed with the cells (task x policy) of another table1.json evaluated the same way, which
    may hold other policies, other tasks or both; a cell in both is pooled when their seed groups are disjoint
    (`--first-seed-group`), an error otherwise. A policy's inference figure is the first file's that has it."""
    other = load(other_path)
    mine, theirs = report.settings, other.settings
    for key in ("episodes_per_seed", "n_exec", "candidates", "policy_rate_hz", "max_obs_age_s", "overrides",
                "camera_lag_steps"):
        if getattr(theirs, key) != getattr(mine, key):
            raise ValueError(f"{other_path}: {key} {getattr(theirs, key)!r} differs from {getattr(mine, key)!r}: "
                             f"the rows would not be comparable")
    labels = {p.key: p.label for p in report.policies + other.policies}
    for task, cells in other.cells.items():
        for key, cell in cells.items():
            have = report.cells.setdefault(task, {}).get(key)
            if have is None:
                report.cells[task][key] = cell
                continue
            groups = have.seed_groups + cell.seed_groups
            if len(set(groups)) < len(groups):
                raise ValueError(f"{other_path}: {task} / {labels[key]} is also in an earlier file, on the same seed groups")
            report.cells[task][key] = pool(have, cell, groups)
    order = [r.key for r in ROWS]
    for p in other.policies:
        mine_p = report.policy(p.key)
        if mine_p is None:
            report.policies.append(p)
        elif mine_p.inference is None:
            mine_p.inference = p.inference
    report.policies.sort(key=lambda p: order.index(p.key) if p.key in order else len(order))
    report.tasks += [t for t in other.tasks if t not in report.tasks]
    report.cards = {**other.cards, **report.cards}
    if other.command and other.command != report.command:
        report.command = f"{report.command}` + `{other.command}"
    return report


def combine(paths: list[Path], out: Path) -> Table1Report:
    """One table from table1.json files evaluated separately (same settings; cells of tasks x policies that are
    disjoint or on disjoint seed groups), or from the table1.partial.json of a run stopped part-way (the
    tasks it finished)."""
    report = load(paths[0])
    for p in paths[1:]:
        report = merge(report, p)
    write(report, out)
    return report
