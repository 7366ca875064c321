"""Multimodal benchmark: the metrics tell true samples from averaged ones, and the command runs end to end."""

from __future__ import annotations

import json

import numpy as np
import torch

from flow2one import cli
from flow2one.train import multimodal as mm
from flow2one.train.multimodal_bench import METHODS

torch.set_num_threads(1)


def test_metrics_separate_true_samples_from_mode_averages() -> None:
    rng = np.random.default_rng(0)
    for s, scen in enumerate(mm.SCENARIOS):
        cond = mm.make_conditions(s, 16, rng)
        samples, modes = mm.sample_true(cond, 200, rng)
        freq = np.bincount(modes.ravel(), minlength=scen.n_modes) / modes.size
        assert np.abs(freq - scen.weights).max() < 0.03  # unequal weights are honoured
        good = mm.metrics(cond, samples, mm.sample_true(cond, 200, rng)[0])
        assert good["mode_coverage"] == 1.0 and good["off_mode_fraction"] == 0.0 and good["mode_tv"] < 0.05
        mean = np.repeat(samples.mean(1, keepdims=True), 200, 1)  # what MSE regression produces
        bad = mm.metrics(cond, mean, samples)
        assert bad["off_mode_fraction"] > 0.5 and bad["chamfer_rms"] > 10 * good["chamfer_rms"]
        one_mode = np.repeat(samples[:, :1], 200, 1)  # collapse onto one mode: on-mode, but coverage drops
        assert mm.metrics(cond, one_mode, samples)["mode_coverage"] <= 1 / scen.n_modes + 1e-9


def test_conditions_move_the_modes() -> None:
    rng = np.random.default_rng(1)
    c = mm.make_conditions(2, 2, rng)
    c[1, -2:] = -c[0, -2:]
    paths = mm.mode_paths(c)
    assert np.isnan(mm.mode_paths(mm.make_conditions(0, 1, rng))[0, 2:]).all()  # 2-mode scenario
    assert np.abs(paths[0] - paths[1]).max() > 0.1


def test_quick_benchmark_prints_json_and_saves_plots(tmp_path, capsys) -> None:
    assert cli.main(["multimodal-bench", "--quick", "--out", str(tmp_path), "--no-progress"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["methods"]) == set(METHODS)
    for m in METHODS:
        r = report["methods"][m]
        assert 0 <= r["off_mode_fraction"] <= 1 and 0 <= r["mode_coverage"] <= 1 and r["latency_ms_b1_cpu"] > 0
        assert set(r["per_scenario"]) == {"2_modes", "3_modes", "4_modes"}
        assert (tmp_path / f"{m}.png").stat().st_size > 1000
    assert "student_1step_speedup_vs_teacher_50step" in report["speed"] and "pass" in report["done_when"]
    assert json.loads((tmp_path / "results.json").read_text())["methods"].keys() == report["methods"].keys()
