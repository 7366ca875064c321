"""The reproduce pipeline and the Table I command, end to end at the smallest scale: real franky-sim demos,
real training of every kind, real ONNX export, real closed-loop sim evaluation."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from flow2one.apps import reproduce as reproduce_cmd
from flow2one.apps import sim_eval, table1
from flow2one.paths import repo_root
from flow2one.sim.cameras import sim_cloud_crop
from flow2one.sim.evaluate import GRAPH_CAMERA_LAG_STEPS, open_policy_step
from flow2one.sim.table1 import report as t1report
from flow2one.sim.table1.config import ROWS, STUDENT, TEACHER, Table1Config
from flow2one.sim.table1.results import Cell, Table1Report, load
from flow2one.sim.table1.run import run as run_table1
from flow2one.sim.table1.statistics import z_higher
from flow2one.train import reproduce as pipeline

RESULTS = repo_root() / "results"


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> tuple[Path, dict]:
    """One quick reproduce run (1 reach_around demo, a few steps per model), shipped to a temp models dir; on two
    threads, as `make models` runs it, so the baselines train in a second process beside the teacher."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("reproduce")
    summary = pipeline.reproduce("quick", root / "work", root / "models", tasks=("reach_around",), threads=2)
    return root, summary


def test_reproduce_ships_every_kind_with_a_card(reproduced) -> None:
    from flow2one.policy.checkpoint import load_policy
    from flow2one.runtime.card import load_card

    root, summary = reproduced
    assert summary["episodes"] == 1
    stages = set(summary["stage_wall_s"])
    assert {"demos:reach_around", "teacher", "teacher:1", "teacher:2", "distill", "student", "l1flow", "regression",
            "ship+export"} <= stages
    # the teacher that ships, and that the set was sampled from, is the last round's, warm-started from the one
    # before; the rounds before it trained on the wide clouds, the last on the graph's
    work, scale = root / "work", pipeline.SCALES["quick"]
    shipped = load_card(root / "models" / "sim_teacher")
    assert shipped.extra["warm_start"] == str(work / "teacher_1")
    assert shipped.extra["train"]["lr"] == scale.last_round[1] and shipped.extra["data"] == str(work / "data" / "all")
    assert load_card(work / "teacher_1").extra["train"]["lr"] == scale.lr / 2
    for wide_round in ("teacher", "teacher_1"):
        card = load_card(work / wide_round)
        assert card.extra["data"] == str(work / "data" / "all_wide")
        assert card.crop.workspace_min[2] == scale.wide_floor_z != sim_cloud_crop().workspace_min[2]
    for kind in pipeline.KINDS:
        d = root / "models" / f"sim_{kind}"
        card = load_card(d)
        assert card.kind == kind and card.name == f"sim_{kind}"
        assert "reproduce --scale quick" in card.trained_on and "reach_around" in card.trained_on
        assert card.crop == sim_cloud_crop()  # the demos' crop, carried through every stage to the card
        assert all(p.stat().st_size < pipeline.MAX_MODEL_BYTES for p in d.iterdir())
        assert not (d / "train_state.pt").exists() and not (d / "tb").exists()
        assert (d / "model.onnx").is_file() == (kind != "teacher")
        policy, cfg = load_policy(d)
        assert cfg.encoder.history_steps == pipeline.HISTORY_STEPS  # every shipped kind sees the cloud history
        # the student alone is displaced and filters itself out of its cloud, as the scale says
        filtered = {k: getattr(cfg.encoder, k) for k in pipeline.STUDENT_SELF_FILTER}
        assert (filtered == pipeline.STUDENT_SELF_FILTER) == (kind == "student")
        obs = {"points": torch.rand(1, 4096, 3), "points_prev": torch.rand(1, 4096, 3), "proprio": torch.rand(1, 10)}
        out = policy.sample(obs, n_samples=2)
        assert out.shape == (1, 2, 32, 10) and torch.isfinite(out).all()
    # the distillation set really is K=16 teacher trajectories of H=32 per observation
    from flow2one.data.distill_set import load_distill_set

    obs, sets, meta = load_distill_set(root / "work" / "distill.safetensors")
    assert tuple(sets.shape[1:]) == (16, 32, 10) and meta["k"] == 16 and meta["steps"] == 50
    assert meta["teacher"] == str(root / "work" / "teacher_2")


def test_wide_demos_are_the_same_episodes_with_the_table_in_their_clouds(reproduced) -> None:
    from flow2one.data.episodes import read_episode

    root, _ = reproduced
    data, floor = root / "work" / "data", pipeline.SCALES["quick"].wide_floor_z
    graph, wide = (pipeline.task_episodes(data, "reach_around", w) for w in (False, True))
    assert len(graph) == len(wide) == 1
    a, b = read_episode(graph[0]), read_episode(wide[0])
    for k in ("t", "proprio", "action"):  # one rollout, recorded once
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert a.meta.seed == b.meta.seed and b.meta.cloud_crop["workspace_min"][2] == floor
    assert a.meta.seed == 0 and a.meta.mode == 0  # the scale's balance_modes (drawn at random, seed 0 is the right side)
    for ep, crop in ((a, sim_cloud_crop()), (b, replace(sim_cloud_crop(), workspace_min=(
            *sim_cloud_crop().workspace_min[:2], floor)))):  # each cloud lies in the box its episode records
        assert ep.meta.cloud_crop == crop.to_dict()
        assert (ep.points >= np.asarray(crop.workspace_min) - 1e-6).all()
        assert (ep.points <= np.asarray(crop.workspace_max) + 1e-6).all()
    assert a.points.shape == b.points.shape and not np.array_equal(a.points, b.points)


def test_baselines_train_beside_the_teacher_on_half_the_threads(reproduced) -> None:
    root, summary = reproduced
    work = root / "work"
    assert summary["baselines_beside_teacher"]
    log = (work / "baselines.log").read_text()
    for kind in pipeline.BASELINES:  # trained by the second process, on one thread, and timed in the summary
        line = next(ln for ln in log.splitlines() if ln.startswith(f"=== {kind}: flow2one train-{kind}"))
        assert " --threads 1 " in line and summary["stage_wall_s"][kind] > 0
    ran = [ln.split(":")[0].removeprefix("=== ") for ln in log.splitlines() if ": flow2one " in ln]
    assert ran == list(pipeline.BASELINES)  # and nothing else: the teacher, distill and student ran in this one
    threads = {s.name: s.argv[s.argv.index("--threads") + 1]
               for s in pipeline.plan(pipeline.SCALES["small"], work, ("reach_around",), 0, 2, teacher_threads=1)
               if "--threads" in s.argv}
    # the teacher rounds share the cores with the baselines; distill and the student run alone on both
    assert threads == {"teacher": "1", "teacher:1": "1", "teacher:2": "1", "l1flow": "2", "regression": "2",
                       "distill": "2", "student": "2"}
    assert summary["wall_s"] > 0


def test_a_teacher_round_takes_every_thread_once_the_baselines_end() -> None:
    """The other core is not left idle until the round ends: the loop takes the threads at its next step."""
    from flow2one.policy import api
    from flow2one.train import loop

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    try:
        watcher = pipeline.more_threads_when_done(proc, 2)
        assert loop.threads_wanted == 0  # not while the baselines run
        watcher.join(20)
        assert loop.threads_wanted == 2
        torch.set_num_threads(1)
        cond, traj = torch.zeros(8, 1).numpy(), torch.zeros(8, 16, 1).numpy()
        api.fit_teacher(cond, traj, api.vector_config(1, 1, horizon=16, down_dims=(16, 32), embed_dim=16,
                                                      hidden_dim=32), steps=2, batch_size=4, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        loop.threads_wanted = 0
        torch.set_num_threads(1)


def test_a_failed_baseline_process_fails_the_run(tmp_path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exit 3.*baselines.log"):
        pipeline.wait_baselines(proc, tmp_path)


def test_demos_of_two_tasks_run_side_by_side(tmp_path) -> None:
    """sim-demos keeps one core busy, so on two threads two tasks make their demos at once, each in a child
    process of its own with its own log."""
    tasks = ("reach_around", "track")
    summary = pipeline.reproduce("quick", tmp_path, None, tasks=tasks, threads=2, only=("demos",))
    assert summary["demo_workers"] == 2 and summary["episodes"] == 2
    took = [summary["stage_wall_s"][f"demos:{t}"] for t in tasks]
    assert summary["demos_wall_s"] < 0.8 * sum(took)  # side by side, not one after another
    for t in tasks:
        assert (tmp_path / "data" / t / "DONE").is_file()
        assert f"sim-demos --task {t} " in (tmp_path / "data" / t / "demos.log").read_text()
    assert summary["missing_stages"][0] == "teacher"  # --stages demos ran the demos and nothing else


def test_a_failed_demos_child_is_named_with_its_log(tmp_path) -> None:
    out = tmp_path / "data" / "track"
    stage = pipeline.Stage("demos:track", ["sim-demos", "--task", "track", "--episodes", "1", "--seed", "x", "--out",
                                           str(out / "part0")], out / "DONE")
    with pytest.raises(RuntimeError, match=r"demos:track: invalid literal .*\(log: .*track/demos.log\)"):
        pipeline.run_demo_stages([stage], workers=1, episodes=1)
    assert not stage.output.exists()  # not marked done: a rerun makes them


def test_a_failing_child_process_is_raised_in_the_parent() -> None:
    from flow2one.subprocesses import isolated

    with pytest.raises(ValueError, match="invalid literal"):  # an exception in the child: raised as it is
        isolated(int, "x", what="int")
    with pytest.raises(RuntimeError, match="the exiting child died 2 times .exit 3."):  # died: retried once
        isolated(os._exit, 3, what="the exiting child")


def test_reproduce_resumes_without_redoing_stages(reproduced) -> None:
    root, first = reproduced
    again = pipeline.reproduce("quick", root / "work", None, tasks=("reach_around",), threads=1)
    assert {k: v for k, v in again["stage_wall_s"].items() if k != "ship+export"} == \
        {k: v for k, v in first["stage_wall_s"].items() if k != "ship+export"}
    assert json.loads((root / "work" / "timings.json").read_text()).keys() >= {"teacher", "student"}


def test_a_stage_killed_after_a_checkpoint_is_resumed_not_skipped(reproduced, tmp_path) -> None:
    """A mid-run checkpoint writes the same model.safetensors a finished stage does; the card's step count tells
    them apart, and the rerun trains the stage on from its train_state.pt instead of shipping it half-trained."""
    root, _ = reproduced
    work = tmp_path / "work"
    work.mkdir()
    (work / "data").symlink_to(root / "work" / "data")
    shutil.copytree(root / "work" / "regression", work / "regression")
    card_path = work / "regression" / "card.yaml"
    card = yaml.safe_load(card_path.read_text())
    steps = pipeline.SCALES["quick"].baseline_steps
    assert card["train_steps"] == steps
    stage = next(s for s in pipeline.plan(pipeline.SCALES["quick"], work, ("reach_around",), 0, 1)
                 if s.name == "regression")
    assert stage.done
    card_path.write_text(yaml.safe_dump({**card, "train_steps": steps // 2}))  # as the checkpoint at half wrote it
    assert not stage.done
    card_path.rename(card_path.with_suffix(".kept"))  # killed between writing the weights and the card
    assert not stage.done
    card_path.with_suffix(".kept").rename(card_path)
    summary = pipeline.reproduce("quick", work, None, tasks=("reach_around",), threads=1, only=("regression",))
    assert "regression" in summary["stage_wall_s"] and "regression" not in summary["missing_stages"]
    assert yaml.safe_load(card_path.read_text())["train_steps"] == steps and stage.done


def test_reproduce_rejects_bad_arguments(tmp_path) -> None:
    p = argparse.ArgumentParser()
    reproduce_cmd.add_arguments(p)
    with pytest.raises(SystemExit, match="--tasks"):
        reproduce_cmd.main(p.parse_args(["--tasks", "fly", "--work", str(tmp_path)]))
    with pytest.raises(SystemExit, match="--stages"):
        reproduce_cmd.main(p.parse_args(["--stages", "teacher,dance", "--work", str(tmp_path)]))


def test_cpu_model_fits_the_size_budget() -> None:
    from flow2one.policy.config import from_dict
    from flow2one.policy.factory import build_policy

    for kind in pipeline.KINDS:
        cfg = pipeline.model_config(pipeline.SCALES["small"], "teacher")
        policy = build_policy(from_dict({**cfg, "kind": kind}))
        assert 4 * sum(p.numel() for p in policy.parameters()) < pipeline.MAX_MODEL_BYTES / 2


def test_table1_rows_run_the_passes_they_name(reproduced) -> None:
    """Each row's policy step (as Table I opens it) runs as many network passes per chunk as the row says:
    counted, since timing three calls of a toy model cannot tell 8 passes from 1 on a loaded machine."""
    root, _ = reproduced
    for row in (replace(ROWS[0], sample_kw={"steps": 8}, passes="8"), *ROWS[1:]):
        step = open_policy_step(root / "models" / row.model, "torch", 2, sample_steps=row.sample_kw.get("steps"))
        calls: list[int] = []
        step.backend.module.policy.net.register_forward_hook(lambda *_: calls.append(1))
        step.warm_up(calls=1)
        assert len(calls) == int(row.passes), row.label


def test_table1_closed_loop_report(reproduced) -> None:
    root, _ = reproduced
    out = root / "results"
    # The teacher row (the table's reference, whatever its step count) samples with 8 Euler steps here: beside
    # franky-sim on a slow 2-core machine one 50-step chunk of this model took 2.1 s, longer than an episode,
    # so the row would never re-plan and its in-loop figures would be empty.
    teacher = replace(ROWS[0], label="teacher (8 steps)", sample_kw={"steps": 8}, passes="8")
    rows = (teacher, *ROWS[1:3])  # teacher 8, teacher 1-step, student
    # 2 candidates per re-plan: the rollout keeps the one continuing the executing chunk (policy node rule)
    cfg = Table1Config(models=root / "models", out=out, tasks=("reach_around",), rows=rows, seeds=2, episodes=1,
                       hz_repeats=3, max_time=1.5, command="test", candidates=2, camera_lag_steps=1)
    report = run_table1(cfg)
    for row in rows:
        r = report.cells["reach_around"][row.key]
        assert r.episodes == 2 and len(r.success_per_seed) == 2 and r.seed_groups == [0, 1]
        assert 0.0 <= r.success_mean <= 1.0 and r.inference_ms_in_loop_median > 0
        eps = r.per_episode  # inference runs beside control: at most one new chunk per control step
        assert 0 < r.replans_per_sim_s * sum(e.duration for e in eps) <= sum(e.steps for e in eps) + 1e-6
        assert sum(r.mode_histogram.values()) == 2
    # Each row's inference is timed and reported in its own units. How much faster the student is belongs to
    # the policy_speed benchmark: here three timed calls of a toy model beside franky-sim are noise (a fresh
    # clone once timed the 1-pass student at 23 ms and the 8-step teacher at 30).
    for row in rows:
        inf = report.inference(row.key)
        assert inf.ms_median > 0 and inf.hz == pytest.approx(1e3 / inf.ms_median)
    md = (out / "table1.md").read_text()
    assert all(row.label in md for row in rows) and "goal >= 14x" in md
    assert (out / "table1_modes.png").stat().st_size > 0 and (out / "table1_success_vs_hz.png").stat().st_size > 0
    full = json.loads((out / "table1.json").read_text())
    assert full["seeds"] == 2 and full["candidates"] == 2 and full["format"] == 2
    assert full["camera_lag_steps"] == 1 and "1 control step(s) after the robot state" in md
    assert load(out / "table1.json").to_json() == full  # the JSON form is the whole report

    # cells (task x row) evaluated in separate runs combine into one table; runs evaluated differently, or
    # holding the same cell twice, do not
    student = ROWS[2].label
    first = {**full, "rows": [r for r in full["rows"] if r != student],
             "results": {t: {k: v for k, v in res.items() if k != student} for t, res in full["results"].items()},
             "inference": {k: v for k, v in full["inference"].items() if k != student}}
    second = {**full, "rows": [student], "results": {t: {student: res[student]} for t, res in full["results"].items()},
              "inference": {student: full["inference"][student]}}
    other_task = {**full, "tasks": ["track"], "results": {"track": full["results"]["reach_around"]}}
    for name, rep in (("a", first), ("b", second), ("d", other_task)):
        (out / f"{name}.json").write_text(json.dumps(rep))
    combined = t1report.combine([out / "a.json", out / "b.json"], out / "combined")
    assert [p.key for p in combined.policies] == [r.key for r in rows] and combined.cells == report.cells
    assert [p.inference for p in combined.policies] == [p.inference for p in report.policies]
    combined = t1report.combine([out / "a.json", out / "b.json", out / "d.json"], out / "combined")
    assert combined.tasks == ["reach_around", "track"] and combined.cells["track"] == report.cells["reach_around"]
    assert "track" in (out / "combined" / "table1.md").read_text()
    (out / "c.json").write_text(json.dumps({**second, "episodes_per_seed": 3}))
    with pytest.raises(ValueError, match="episodes_per_seed"):
        t1report.combine([out / "a.json", out / "c.json"], out / "bad")
    # the same cell on other seed groups (--first-seed-group) pools: statistics over all groups
    more = {**second, "results": {t: {student: {**res[student], "seed_groups": [5, 6]}} for t, res in full["results"].items()}}
    (out / "f.json").write_text(json.dumps(more))
    pooled = t1report.combine([out / "b.json", out / "f.json"], out / "pooled").cells["reach_around"][STUDENT]
    one = report.cells["reach_around"][STUDENT]
    assert pooled.seed_groups == [0, 1, 5, 6] and pooled.episodes == 4 == len(pooled.per_episode)
    assert pooled.successes == 2 * one.successes and pooled.success_per_seed == 2 * one.success_per_seed
    assert (pooled.chunks_stale, pooled.chunks_kept_plan) == (2 * one.chunks_stale, 2 * one.chunks_kept_plan)
    assert pooled.success_mean == pytest.approx(one.success_mean)
    assert "4 seed group(s)" in (out / "pooled" / "table1.md").read_text()
    (out / "e.json").write_text(json.dumps({**second, "policy_rate_hz": 2.5}))  # re-planned at another rate
    with pytest.raises(ValueError, match="policy_rate_hz"):
        t1report.combine([out / "a.json", out / "e.json"], out / "bad")
    (out / "g.json").write_text(json.dumps({**second, "overrides": ["policy.handoff_window_s=0.3"]}))  # --set
    with pytest.raises(ValueError, match="overrides"):
        t1report.combine([out / "a.json", out / "g.json"], out / "bad")
    lagless = {k: v for k, v in second.items() if k != "camera_lag_steps"}  # a file from before the lag
    (out / "h.json").write_text(json.dumps(lagless))
    assert load(out / "h.json").settings.camera_lag_steps == 0
    with pytest.raises(ValueError, match="camera_lag_steps"):
        t1report.combine([out / "a.json", out / "h.json"], out / "bad")
    with pytest.raises(ValueError, match="reach_around / .* is also in an earlier file"):
        t1report.combine([out / "a.json", out / "b.json", out / "b.json"], out / "bad")


def test_table1_reads_the_shipped_results(tmp_path) -> None:
    """Every table1.json in results/ (written before the report had types and row keys) loads into the typed
    report, and `--combine` of one gives back its table."""
    files = sorted(RESULTS.glob("**/table1.json"))
    assert RESULTS / "table1_shared_loop" / "table1.json" in files
    for f in files:
        raw = json.loads(f.read_text())
        rep = load(f)
        assert [p.label for p in rep.policies] == raw["rows"] and rep.tasks == raw["tasks"]
        for t in rep.tasks:
            for p in rep.policies:
                cell, old = rep.cells[t][p.key], raw["results"][t][p.label]
                assert (cell.successes, cell.episodes, cell.success_mean) == (old["successes"], old["episodes"],
                                                                              old["success_mean"])
                assert len(cell.per_episode) == len(old["per_episode"]) and cell.mode_histogram == old["mode_histogram"]
            assert rep.inference(p.key).ms_median == raw["inference"][p.label]["ms_median"]
        assert Table1Report.from_json(rep.to_json()) == rep
    shared = RESULTS / "table1_shared_loop"
    args = argparse.ArgumentParser()
    table1.add_arguments(args)
    assert table1.main(args.parse_args(["--combine", str(shared / "table1.json"), "--out", str(tmp_path)])) == 0
    assert (tmp_path / "table1.md").read_text() == (shared / "table1.md").read_text()
    # The same results, plus the reaction fields this file predates: empty, since neither task has an event.
    combined = json.loads((tmp_path / "table1.json").read_text())["results"]
    for cells in combined.values():
        for cell in cells.values():
            assert (cell.pop("reacted"), cell.pop("reaction_s_median")) == (0, None)
            assert all(e.pop("reaction_s") is None for e in cell["per_episode"])
    assert combined == json.loads((shared / "table1.json").read_text())["results"]


def test_table1_says_when_models_are_missing(tmp_path, capsys) -> None:
    p = argparse.ArgumentParser()
    table1.add_arguments(p)
    assert table1.main(p.parse_args(["--models", str(tmp_path), "--out", str(tmp_path / "r")])) == 1
    assert "make models" in capsys.readouterr().err
    assert not (tmp_path / "r" / "table1.md").exists()


def test_evaluations_default_to_the_sim_graphs_rate_and_horizon(tmp_path) -> None:
    from flow2one.graph import load_params

    params = load_params("sim")
    for module in (table1, sim_eval):
        p = argparse.ArgumentParser()
        module.add_arguments(p)
        args = p.parse_args([])
        assert args.n_exec == params["executor"]["n_exec"] and args.policy_rate_hz == params["policy"]["rate_hz"]
        assert args.camera_lag_steps == GRAPH_CAMERA_LAG_STEPS  # the graph's camera data is as late
    p = argparse.ArgumentParser()
    table1.add_arguments(p)
    assert p.parse_args([]).candidates == params["policy"]["n_candidates"]
    assert sim_eval.rate_or_none(0.0) is None and sim_eval.rate_or_none(2.5) == 2.5  # 0: no cap
    with pytest.raises(SystemExit, match="policy-rate-hz must be >= 0"):
        sim_eval.rate_or_none(-1.0)
    with pytest.raises(SystemExit, match="n-exec must be >= 1"):
        table1.main(p.parse_args(["--models", str(tmp_path), "--n-exec", "0"]))
    with pytest.raises(SystemExit, match="camera-lag-steps >= 0"):
        table1.main(p.parse_args(["--models", str(tmp_path), "--camera-lag-steps", "-1"]))


def _cell(k: int, n: int = 36) -> Cell:
    return Cell(success_mean=k / n, success_std=0.0, success_per_seed=[k / n], episodes=n, successes=k,
                mode_histogram={}, mode_histogram_success={}, failures={}, time_to_success_s=None, sim_rtf_mean=1.0,
                planner_errors=0, seed_groups=[0])


def test_dynamic_goal_needs_a_significant_difference() -> None:
    assert z_higher(15, 36, 7, 36) == pytest.approx(2.05, abs=0.01)  # 42% vs 19% of 36: shown
    assert z_higher(29, 72, 25, 72) < 1.64  # 40% vs 35%: a few episodes are noise
    assert z_higher(0, 36, 0, 36) == 0.0 and z_higher(7, 36, 15, 36) < 0
    # Both moving-object tasks get the dynamic goal (student higher, significantly), the static one its own.
    tasks = ["track", "pop_up", "reach_around"]
    rep = load(RESULTS / "table1_shared_loop" / "table1.json")
    rep.tasks, rep.cells = tasks, {t: {TEACHER: _cell(7), STUDENT: _cell(15)} for t in tasks}
    lines = t1report.checks(rep)
    for t in ("track", "pop_up"):
        assert f"{t} (dynamic): student 42% vs teacher 19% (goal: student higher): met (z = 2.0)" in lines
    assert "reach_around: student 42% vs teacher 19% (goal >= 95% of teacher): met" in lines


def test_reaction_is_reported_for_tasks_with_an_event() -> None:
    """Table I gives, per policy, the median reaction over the episodes that reacted (pop_up's event), in a
    section of its own with a column only for tasks that have an event."""
    from flow2one.sim.rollout import EpisodeResult
    from flow2one.sim.table1.statistics import cell_from_episodes

    eps = [EpisodeResult(task="pop_up", seed=i, success=False, failed=False, time_to_success=None, mode=-1,
                         mode_name="", chosen_mode=-1, steps=1, duration=1.0, wall_s=1.0, rtf=1.0, planner_errors=0,
                         reaction_s=r) for i, r in enumerate([0.3, 0.5, None, 0.1])]
    cell = cell_from_episodes(eps, [0])
    assert (cell.reacted, cell.reaction_s_median) == (3, 0.3)
    rep = load(RESULTS / "table1_shared_loop" / "table1.json")
    keys = [p.key for p in rep.policies]
    rep.tasks = ["track", "pop_up"]
    rep.cells = {"track": {k: _cell(7, 4) for k in keys}, "pop_up": {k: cell for k in keys}}
    md = t1report.markdown(rep)
    section = md.split("## Reaction")[1].split("##")[0]
    assert "| policy | pop_up |" in section and "track" not in section
    assert all(f"| {p.label} | 0.30 s (3/4) |" in section for p in rep.policies)


def test_set_overrides_reach_the_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    """`--set` of sim-eval/table1: the sim graph's parameters as the evaluation (and its spawned processes,
    through the environment) read them; parameters with a flag of their own are refused."""
    from flow2one.graph import load_params
    from flow2one.sim.evaluate import SET_ENV, apply_overrides, graph_settings, sim_executor_config

    monkeypatch.setenv(SET_ENV, "[]")  # restored after the test, whatever apply_overrides sets
    assert graph_settings()["handoff_window_s"] == load_params("sim")["policy"]["handoff_window_s"] != 0.45
    apply_overrides(["policy.handoff_window_s=0.45", "executor.blend_s=0.2"])
    assert graph_settings()["handoff_window_s"] == 0.45 and sim_executor_config().blend_s == 0.2
    assert graph_settings()["state_at_cloud"] is load_params("sim")["policy"]["state_at_cloud"]
    apply_overrides([f"policy.state_at_cloud={not load_params('sim')['policy']['state_at_cloud']}"])
    assert graph_settings()["state_at_cloud"] is not load_params("sim")["policy"]["state_at_cloud"]
    with pytest.raises(SystemExit, match="--policy-rate-hz"):
        apply_overrides(["policy.rate_hz=10"])
    with pytest.raises(ValueError, match="no node 'planner'"):
        apply_overrides(["planner.x=1"])
    with pytest.raises(SystemExit, match="policy.handof_window_s: the evaluation does not read it"):
        apply_overrides(["policy.handof_window_s=0.3"])  # a typo is refused, not ignored


def test_replan_sweep_script(reproduced, tmp_path: Path) -> None:
    """scripts/replan_sweep.sh, the sweep README gives labs: one Table I run per rate, its settings recorded."""
    root, _ = reproduced
    env = {**os.environ, "EPISODES": "1", "FLOW2ONE": f"{sys.executable} -m flow2one.cli",
           "TABLE1_ARGS": "--max-time 1.0 --set policy.handoff_window_s=0.3"}
    proc = subprocess.run(["bash", str(repo_root() / "scripts" / "replan_sweep.sh"), str(root / "models"),
                           str(tmp_path / "sweep"), "reach_around", "40", "1", "10"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert proc.stdout.startswith("rate 10: | student (1 step) | 1 |"), proc.stdout
    report = json.loads((tmp_path / "sweep" / "rate_10" / "table1.json").read_text())
    assert report["policy_rate_hz"] == 10 and report["n_exec"] == 32 and report["first_seed_group"] == 40
    assert report["overrides"] == ["policy.handoff_window_s=0.3"]
