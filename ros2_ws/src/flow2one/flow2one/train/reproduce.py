"""The reproduction pipeline of the shipped sim models: scales, the stages (each one `flow2one` command, skipped
when done, so an interrupted run continues), and shipping the trained models to models/sim_<kind>/
with their cards and ONNX exports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from flow2one.fileio import write_text_atomic
from flow2one.paths import data_root
from flow2one.sim.tasks import MULTI_TASK
from flow2one.subprocesses import isolated
from flow2one.yamlio import load_yaml

REPO_ROOT = data_root()
KINDS = ("teacher", "student", "l1flow", "regression")
BASELINES = ("l1flow", "regression")
SHIP_FILES = ("model.safetensors", "config.yaml", "card.yaml", "model.onnx")
MAX_MODEL_BYTES = 5 * 1024 * 1024  # keep the repository small: every shipped file stays below this


@dataclass(frozen=True)
class Scale:
    episodes: int  # scripted-expert demos per task
    teacher_steps: int
    student_steps: int
    baseline_steps: int  # l1flow and regression
    batch_size: int
    stride: int  # a training window every STRIDE steps of each episode
    distill_obs: int  # observations in the distillation set (0 = every window)
    # M student samples per observation in the Chamfer loss. 32 against the teacher's K = 16: each teacher
    # sample has more student samples to be matched by. At 10 re-plans / s, held out, students of M 32 did
    # better than that of M 16 on pick_place over two training runs, and about as well on track and
    # reach_around (results/replan/, sixteenth stop), for ~1.7x the student stage's time (13.9 against 8 min on
    # two threads).
    hypotheses: int
    model: dict[str, Any] = field(default_factory=dict)  # PolicyConfig overrides of the "tiny" preset
    lr: float = 1e-3
    expert_lead_s: float | None = None  # sim-demos --expert-lead (None: the experts' carrot is recorded)
    # EncoderConfig settings the student stage sets (train.common.ENCODER_OPTIONS); none changes a weight, so
    # the student still starts from the teacher's one-step prediction.
    student_encoder: dict[str, float] = field(default_factory=dict)
    # Steps of each further teacher round: warm-started from the last round at half the learning rate, with the
    # next seed. The shipped teacher's aim at a pick_place cube kept improving past 10,000 steps (results/replan,
    # fourteenth stop), and a round of its own keeps the first round's schedule, and its checkpoint, as they were.
    teacher_continue: tuple[int, ...] = ()
    # The student stage's batch (0: half the teacher's).
    student_batch_size: int = 0
    # Wide pretraining: the teacher's first rounds see clouds whose crop box reaches down to this floor (the table
    # in them; sim-demos --wide-floor-z writes them from the same demos), and `last_round` = (steps, lr) fits it
    # to the graph's clouds, which distill, the student and the baselines see. Students started from a teacher
    # trained on the graph's cropped clouds alone aimed worse at pick_place's cubes than those started from one
    # that had seen the table first (results/replan/, twenty-ninth stop).
    wide_floor_z: float | None = None
    last_round: tuple[int, float] | None = None
    # sim-demos --balance-modes: each task's modes in turn. Drawn at random, seeds 0-79 gave every task 49
    # episodes of its right mode and 31 of its left (results/replan/, thirty-second stop).
    balance_modes: bool = False

    def __post_init__(self) -> None:
        if self.wide_floor_z is not None and self.last_round is None:
            raise ValueError("wide_floor_z needs last_round: distill refuses a teacher of another crop than its data")


# The CPU model: the tiny preset with a wider U-Net, ~0.3 M parameters (~1.3 MB) per kind. Measured on one
# loaded core: train step 0.16 s (teacher, batch 32), 0.3 s (student, batch 16 x M=16); sampling 5 ms
# (student, 1 pass) vs 0.26 s (teacher, 50 Euler steps). On a GPU, --config with the `paper` preset is the next step.
# Every sim model also sees the cloud HISTORY_STEPS control steps (0.2 s) earlier: the track pucks' direction
# of motion is invisible in one frame, and a policy that cannot see it trails the puck.
# The PointNet leaves out points at or below FLOOR_Z (EncoderConfig.points_floor_z): the sim table top is at z = 0,
# the lowest things on it (the pick_place pad, the track pucks) reach 0.01 and 0.02 m.
HISTORY_STEPS = 4
FLOOR_Z = 0.005
# The student is displaced from its first step (the arm's position input moved by 1.5 cm noise, scene and labels
# kept) and filters itself out of its cloud (the hand, within 0.1 m of the TCP in x-y from the fingertips up,
# and everything at or above 16 cm): a student that sees its own arm copies its pose, and re-planning several
# times a second it then holds still instead of going to the objects. With the arm out of the cloud the noisy
# position is all it knows of where it is: 3 cm pulled its grasp off the cube, and 0.75 cm aimed better offline
# but did worse in the loop (results/replan/, fourteenth stop).
STUDENT_SELF_FILTER = {"pose_noise": 0.015, "points_hand_radius": 0.1, "points_ceiling_z": 0.16}
CPU_MODEL = {"encoder": {"embed_dim": 64, "pointnet_dims": [16, 32], "point_dim": 32, "proprio_dim": 32,
                         "history_steps": HISTORY_STEPS, "points_floor_z": FLOOR_Z},
             "unet": {"down_dims": [32, 64], "n_groups": 8, "time_embed_dim": 32}}
SCALES: dict[str, Scale] = {
    "quick": Scale(episodes=1, teacher_steps=20, student_steps=10, baseline_steps=10, batch_size=8, stride=8,
                   distill_obs=16, hypotheses=4,
                   model={"encoder": {"history_steps": HISTORY_STEPS, "points_floor_z": FLOOR_Z}},
                   student_encoder=STUDENT_SELF_FILTER, teacher_continue=(10,), student_batch_size=4,
                   # a floor below the graph's box (config/sim.yaml), so the tests can tell the two clouds apart
                   wide_floor_z=-0.02, last_round=(10, 3e-4), balance_modes=True),
    "small": Scale(episodes=80, teacher_steps=10000, student_steps=8000, baseline_steps=8000, batch_size=16,
                   stride=2, distill_obs=0, hypotheses=32, model=CPU_MODEL, student_encoder=STUDENT_SELF_FILTER,
                   teacher_continue=(12000, 12000)),
    "full": Scale(episodes=100, teacher_steps=20000, student_steps=20000, baseline_steps=20000, batch_size=64,
                  stride=4, distill_obs=0, hypotheses=32, model=CPU_MODEL, lr=1e-4,
                  student_encoder=STUDENT_SELF_FILTER),
}


def model_config(scale: Scale, kind: str) -> dict[str, Any]:
    """The PolicyConfig (as config.yaml holds it) of `kind` at this scale: tiny preset + overrides."""
    from flow2one.policy.config import preset, to_dict

    cfg = to_dict(preset("tiny", kind))
    for section, values in scale.model.items():
        cfg[section] = {**cfg[section], **values}
    return cfg


@dataclass
class Stage:
    name: str
    argv: list[str]  # a `flow2one` command line
    output: Path  # exists -> the stage is done (a training stage's: see `done`)

    @property
    def done(self) -> bool:
        """A training stage's model.safetensors is also its mid-run checkpoint (train/loop.py), so one killed
        mid-stage leaves it behind: done only when the card beside it counts every step asked for (a kill between
        the weights and the card leaves no card: not done either)."""
        if not self.output.exists():
            return False
        if self.output.name != "model.safetensors":
            return True
        card = self.output.parent / "card.yaml"
        return card.is_file() and int(load_yaml(card, "model card").get("train_steps", 0)) >= int(
            self.argv[self.argv.index("--steps") + 1])


def plan(scale: Scale, work: Path, tasks: tuple[str, ...], seed: int, threads: int,
         teacher_threads: int | None = None) -> list[Stage]:
    """The stages, in order, as `flow2one` command lines; the teacher rounds get `teacher_threads` (default
    `threads`)."""
    from flow2one.train.common import encoder_flags

    data = work / "data"
    lead = [] if scale.expert_lead_s is None else ["--expert-lead", str(scale.expert_lead_s)]
    if scale.wide_floor_z is not None:
        lead += ["--wide-floor-z", str(scale.wide_floor_z)]
    if scale.balance_modes:
        lead.append("--balance-modes")
    stages = [Stage(f"demos:{t}", ["sim-demos", "--task", t, "--episodes", str(scale.episodes), "--seed",
                                   str(seed), "--out", str(data / t / "part0"), *lead], data / t / "DONE")
              for t in tasks]
    common = ["--batch-size", str(scale.batch_size), "--lr", str(scale.lr), "--seed", str(seed), "--threads",
              str(threads), "--stride", str(scale.stride)]
    merged = str(merged_dir(data))
    pretrain = str(merged_dir(data, wide=scale.wide_floor_z is not None))
    t_threads = str(teacher_threads or threads)
    for kind, steps in (("teacher", scale.teacher_steps), ("l1flow", scale.baseline_steps),
                        ("regression", scale.baseline_steps)):
        argv = [f"train-{kind}", "--data", pretrain if kind == "teacher" else merged, "--out", str(work / kind), "--steps", str(steps),
                "--config", str(work / f"{kind}.config.yaml"), *common, "--ckpt-every", str(max(steps // 4, 1)),
                "--resume"]
        if kind == "teacher":
            argv[argv.index("--threads") + 1] = t_threads
        stages.append(Stage(kind, argv, work / kind / "model.safetensors"))
    rounds = teacher_rounds(scale, work)
    later = [(steps, scale.lr / 2, pretrain) for steps in scale.teacher_continue]
    if scale.last_round is not None:
        later.append((*scale.last_round, merged))
    for k, (steps, lr, on) in enumerate(later, start=1):
        stages.insert(len(tasks) + k, Stage(f"teacher:{k}", [
            "train-teacher", "--data", on, "--out", str(rounds[k]), "--warm-start", str(rounds[k - 1]), "--steps",
            str(steps), "--batch-size", str(scale.batch_size), "--lr", str(lr), "--seed", str(seed + k),
            "--threads", t_threads, "--stride", str(scale.stride), "--ckpt-every", str(max(steps // 4, 1)),
            "--resume"], rounds[k] / "model.safetensors"))
    teacher, after = rounds[-1], len(tasks) + len(rounds)
    distill = work / "distill.safetensors"
    stages.insert(after, Stage("distill", [
        "distill", "--teacher", str(teacher), "--data", merged, "--out", str(distill), "--k", "16",
        "--steps", "50", "--stride", str(scale.stride), "--max-obs", str(scale.distill_obs), "--seed", str(seed),
        "--threads", str(threads)], distill))
    stages.insert(after + 1, Stage("student", [
        "train-student", "--data", str(distill), "--out", str(work / "student"), "--init-from", str(teacher),
        "--steps", str(scale.student_steps),
        "--hypotheses", str(scale.hypotheses), "--batch-size",
        str(scale.student_batch_size or max(scale.batch_size // 2, 1)), "--lr",
        str(scale.lr), "--seed", str(seed), "--threads", str(threads), "--ckpt-every",
        str(max(scale.student_steps // 4, 1)), "--resume", *encoder_flags(scale.student_encoder)],
        work / "student" / "model.safetensors"))
    return stages


def teacher_rounds(scale: Scale, work: Path) -> list[Path]:
    """Each teacher round's checkpoint directory; the last is the one the student is distilled from and that ships."""
    n = len(scale.teacher_continue) + (scale.last_round is not None)
    return [work / "teacher", *(work / f"teacher_{k}" for k in range(1, n + 1))]


def task_episodes(data: Path, task: str, wide: bool = False) -> list[Path]:
    """Every episode sim-demos wrote for `task` (data/<task>/part<k>/<task>/episode_*.npz; `wide`: their twins
    with wide clouds, data/<task>/part<k>/wide/<task>/)."""
    return sorted(data.glob(f"{task}/part*/{'wide/' if wide else ''}{task}/episode_*.npz"))


def merged_dir(data: Path, wide: bool = False) -> Path:
    return data / ("all_wide" if wide else "all")


def merge_datasets(data: Path, tasks: tuple[str, ...], wide: bool = False) -> Path:
    """data/all (`wide`: data/all_wide): links to every task's episodes, renumbered (load_windows reads one
    directory)."""
    out = merged_dir(data, wide)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    i = 0
    for t in tasks:
        eps = task_episodes(data, t, wide)
        if not eps:
            raise RuntimeError(f"{data / t}: sim-demos wrote no episodes")
        for p in eps:
            (out / f"episode_{i:05d}.npz").symlink_to(os.path.relpath(p, out))
            i += 1
    return out


def run_stage(stage: Stage) -> float:
    from flow2one.cli import main as cli_main

    t0 = time.perf_counter()
    print(f"\n=== {stage.name}: flow2one {' '.join(stage.argv)}", flush=True)
    rc = cli_main(list(stage.argv))
    if rc:
        raise RuntimeError(f"stage {stage.name} failed (exit {rc}): flow2one {' '.join(stage.argv)}")
    return time.perf_counter() - t0


def run_demos(stage: Stage, max_parts: int = 4) -> None:
    """sim-demos until the task has its episodes. On an overloaded machine franky-sim can stall and
    sim-demos stop with an error; the episodes written so far are kept and the rest is generated in a new
    part with fresh seeds (part k starts at seed + 1000 k), up to `max_parts` attempts."""
    from flow2one.cli import main as cli_main

    argv = list(stage.argv)
    task, want, seed0 = argv[2], int(argv[4]), int(argv[6])
    data = stage.output.parent.parent
    free = [k for k in range(100) if not (stage.output.parent / f"part{k}").exists()]  # never rewrite a part
    for part in free[:max_parts]:
        have = len(task_episodes(data, task))
        if have >= want:
            return
        argv[4], argv[6], argv[8] = str(want - have), str(seed0 + 1000 * part), str(stage.output.parent / f"part{part}")
        print(f"\n=== {stage.name}: flow2one {' '.join(argv)}", flush=True)
        try:
            cli_main(argv)  # exits 1 when the expert failed too often; what it wrote is kept
        except Exception as exc:  # noqa: BLE001 - any sim failure: keep the episodes, try a new part
            print(f"=== {stage.name}: sim-demos stopped ({type(exc).__name__}: {exc}); keeping what it wrote",
                  flush=True)
    if not task_episodes(data, task):
        raise RuntimeError(f"sim-demos wrote no {task} episodes in {max_parts} attempts")


def _demos_logged(stage: Stage, log: Path) -> None:
    """run_demos with this process's output, and that of its franky-sim, which inherits it, in `log`: two
    tasks' progress bars on one terminal would be unreadable."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    run_demos(stage)


def run_demo_stages(stages: list[Stage], workers: int, episodes: int) -> dict[str, float]:
    """Each task's demos in a child process of its own (log: data/<task>/demos.log), `workers` at a time, under
    one progress bar over every task's episodes. sim-demos keeps one core busy (one franky-sim and one renderer
    in lock-step), so on two cores two tasks at a time made `make models`' 240 demos in 19 min, against 34 one
    task after another (results/replan/, eighteenth stop). A task that fails is raised once the others are done,
    so their demos are kept. -> wall time by stage name."""
    from concurrent.futures import ThreadPoolExecutor, wait

    from tqdm import tqdm

    data = stages[0].output.parent.parent
    tasks = [s.name.split(":", 1)[1] for s in stages]

    def one(stage: Stage) -> float:
        t0 = time.perf_counter()
        log = stage.output.parent / "demos.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        tqdm.write(f"=== {stage.name}: {' '.join(stage.argv)} (in a process of its own; log: {log})", file=sys.stderr)
        try:
            isolated(_demos_logged, stage, log, what=f"the {stage.name} process")
        except Exception as exc:
            raise RuntimeError(f"{stage.name}: {exc} (log: {log})") from exc
        took = time.perf_counter() - t0
        stage.output.write_text(f"{took:.1f} s\n")
        return took

    def have() -> int:
        return sum(min(len(task_episodes(data, t)), episodes) for t in tasks)

    with ThreadPoolExecutor(max(1, min(workers, len(stages)))) as pool, \
            tqdm(total=episodes * len(tasks), initial=have(), desc="demos", unit="episode", file=sys.stderr) as bar:
        futures = {s.name: pool.submit(one, s) for s in stages}
        while not all(f.done() for f in futures.values()):
            wait(futures.values(), timeout=5.0)
            bar.update(have() - bar.n)
    return {name: f.result() for name, f in futures.items()}


def ship(work: Path, dest: Path, scale_name: str, tasks: tuple[str, ...], timings: dict[str, float],
         n_episodes: int) -> list[Path]:
    """Copy each trained kind to dest/sim_<kind>/ with a completed card; export ONNX (not the 50-step teacher)."""
    from flow2one.runtime.card import load_card, save_card
    from flow2one.runtime.export import export_model_dir

    shipped = []
    for kind in KINDS:
        src = teacher_rounds(SCALES[scale_name], work)[-1] if kind == "teacher" else work / kind
        out = dest / f"sim_{kind}"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for f in SHIP_FILES:
            if (src / f).is_file():
                shutil.copy2(src / f, out / f)
        card = load_card(out)
        stage_s = {k: round(v, 1) for k, v in timings.items()}
        card = replace(card, name=f"sim_{kind}", trained_on=(
            f"{n_episodes} scripted-expert sim demos ({', '.join(tasks)}; `flow2one sim-demos`), "
            f"`flow2one reproduce --scale {scale_name}"
            + ("" if tasks == MULTI_TASK else f" --tasks {','.join(tasks)}") + "`"),
            notes=f"{'multi-task' if len(tasks) > 1 else tasks[0]} {kind} for the franky-sim world; stage wall times "
                  f"(s, 2-core CPU): {stage_s}")
        save_card(out, card)
        if kind != "teacher":  # the policy node runs ONNX; the 50-step teacher is evaluated in PyTorch only
            report = export_model_dir(out)
            if not report.ok:
                raise RuntimeError(f"{out}: ONNX export parity failed: {report}")
        too_big = [p for p in out.iterdir() if p.stat().st_size > MAX_MODEL_BYTES]
        if too_big:
            raise RuntimeError(f"shipped files over {MAX_MODEL_BYTES >> 20} MB: {too_big}; use a smaller model")
        shipped.append(out)
    return shipped


def start_baselines(scale_name: str, work: Path, tasks: tuple[str, ...], seed: int, threads: int) -> subprocess.Popen:
    """l1flow and regression in a second `flow2one reproduce` on this WORK directory (its log: WORK/baselines.log).
    On one thread each beside the teacher, both sides train 1.3-1.5x slower than alone on two, and together they
    still finish ~6 min sooner than one stage after another (results/replan/, seventeenth stop)."""
    argv = [sys.executable, "-m", "flow2one.cli", "reproduce", "--scale", scale_name, "--work", str(work), "--ship",
            "", "--tasks", ",".join(tasks), "--seed", str(seed), "--threads", str(threads), "--stages",
            ",".join(BASELINES)]
    log = work / "baselines.log"
    print(f"\n=== {', '.join(BASELINES)}: beside the teacher, in a second process (log: {log})", flush=True)
    with log.open("a") as f:
        return subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)


def more_threads_when_done(proc: subprocess.Popen, threads: int) -> threading.Thread:
    """The running teacher round takes `threads` from its next step once the baselines' process ends: it ran on
    half of them beside it, and the other core would idle until the round's end (~12 min of the small scale's
    second round)."""
    from flow2one.train import loop

    def watch() -> None:
        proc.wait()
        loop.threads_wanted = threads

    watcher = threading.Thread(target=watch, name="baselines-watch", daemon=True)
    watcher.start()
    return watcher


def wait_baselines(proc: subprocess.Popen, work: Path) -> None:
    if proc.wait():
        raise RuntimeError(f"the l1flow/regression process failed (exit {proc.returncode}); see {work / 'baselines.log'}")


def read_timings(path: Path) -> dict[str, float]:
    return json.loads(path.read_text()) if path.is_file() else {}


def add_timings(path: Path, new: dict[str, float]) -> None:
    """Merge `new` into WORK/timings.json, re-read first: another process may be running other stages in this WORK
    directory. Written by rename, so neither process reads it half-written."""
    write_text_atomic(path, json.dumps({**read_timings(path), **new}, indent=1))


def reproduce(scale_name: str, work: Path, ship_to: Path | None, tasks: tuple[str, ...] = MULTI_TASK, seed: int = 0,
              threads: int = 2, force: bool = False, only: tuple[str, ...] = (),
              expert_lead_s: float | None = None, beside: bool = True) -> dict[str, Any]:
    """Run the missing stages (all, or those named in `only`: demos, teacher, distill, student, l1flow,
    regression), then ship; `expert_lead_s` overrides the scale's. Two processes may share a WORK directory when
    their `only` sets are disjoint. The tasks' demos run `threads` at a time, each in a child process. With
    `beside` and two or more threads, the baselines train in such a second process while the teacher rounds run,
    each side on half the threads; a teacher round that starts after the baselines are done, distill and the
    student get every thread."""
    t_start = time.perf_counter()
    scale = SCALES[scale_name]
    if expert_lead_s is not None:
        scale = replace(scale, expert_lead_s=expert_lead_s)
    if force and work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    for kind in ("teacher", "l1flow", "regression"):
        # atomic: a second process's start rewrites these while the teacher may be reading its own
        write_text_atomic(work / f"{kind}.config.yaml", yaml.safe_dump(model_config(scale, kind), sort_keys=False))
    timings_path = work / "timings.json"

    def wanted(stage: Stage) -> bool:
        return not only or stage.name.split(":")[0] in only

    stages = plan(scale, work, tasks, seed, threads)
    baselines_missing = any(wanted(s) and not s.done for s in stages if s.name in BASELINES)
    side = beside and threads >= 2 and baselines_missing and (not only or "teacher" in only)
    if side:
        stages = plan(scale, work, tasks, seed, threads, teacher_threads=threads // 2)
    demos = [s for s in stages if s.name.startswith("demos:") and wanted(s) and not s.done]
    demos_wall_s = 0.0
    if demos:
        t0 = time.perf_counter()
        add_timings(timings_path, run_demo_stages(demos, threads, scale.episodes))
        demos_wall_s = time.perf_counter() - t0
    merged = False
    proc: subprocess.Popen | None = None
    watcher: threading.Thread | None = None
    try:
        for stage in stages:
            if not wanted(stage) or stage.name.startswith("demos:") or (side and stage.name in BASELINES):
                continue
            if not merged:  # (re)link data/all once the demos are final
                for wide in {False, scale.wide_floor_z is not None}:
                    if demos or not merged_dir(work / "data", wide).is_dir():
                        merge_datasets(work / "data", tasks, wide)
                merged = True
                if side:
                    proc = start_baselines(scale_name, work, tasks, seed, threads - threads // 2)
            if proc is not None and (stage.name in ("distill", "student") or proc.poll() is not None):
                wait_baselines(proc, work)
                proc = None
            if side and proc is None and stage.name.startswith("teacher"):  # the baselines are done: every thread
                stage.argv[stage.argv.index("--threads") + 1] = str(threads)
            if proc is not None and watcher is None:
                watcher = more_threads_when_done(proc, threads)
            if stage.done:
                print(f"=== {stage.name}: done already ({stage.output})")
                continue
            add_timings(timings_path, {stage.name: run_stage(stage)})
        if proc is not None:
            wait_baselines(proc, work)
            proc = None
    finally:
        if proc is not None:  # this process failed: stop the other rather than leave it training unseen
            proc.terminate()
            proc.wait()
        if watcher is not None:  # a later training in this process starts on the threads it asks for
            from flow2one.train import loop

            watcher.join()
            loop.threads_wanted = 0
    timings = read_timings(timings_path)
    n_episodes = sum(len(task_episodes(work / "data", t)) for t in tasks)
    summary: dict[str, Any] = {"scale": scale_name, "settings": asdict(scale), "tasks": list(tasks),
                               "episodes": n_episodes, "stage_wall_s": timings,
                               "stage_wall_s_sum": sum(timings.values()), "baselines_beside_teacher": side,
                               "demos_wall_s": demos_wall_s, "demo_workers": min(threads, len(demos)),
                               "work": str(work)}
    missing = [s.name for s in stages if not s.done]
    if missing:
        summary["missing_stages"] = missing
    elif ship_to is not None:
        t0 = time.perf_counter()
        summary["shipped"] = [str(p) for p in ship(work, ship_to, scale_name, tasks, timings, n_episodes)]
        summary["stage_wall_s"]["ship+export"] = time.perf_counter() - t0
    summary["wall_s"] = time.perf_counter() - t_start  # this call's wall time: below the stage sum when beside
    (work / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
