"""`flow2one demo`: the sim deploy graph (sim cameras -> pointcloud -> policy -> executor -> franky ->
franky-sim) driven like an operator would, with a real (tiny, untrained) student."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from flow2one.apps import demo


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    demo.add_arguments(p)
    return p.parse_args(list(argv))


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    """A tiny student with normalisers fitted to tabletop ranges (run on the torch backend: ONNX export is
    the runtime tests' business and costs more than the whole graph run here). With a cloud history, like
    the shipped models, so the policy node's points_prev path runs in the graph."""
    from flow2one.policy.checkpoint import save_policy
    from flow2one.policy.config import preset
    from flow2one.policy.factory import build_policy

    torch.manual_seed(0)
    policy = build_policy(preset("tiny", "student", history_steps=4))
    pts = torch.rand(8, 4096, 3) * torch.tensor([0.8, 1.0, 0.6]) + torch.tensor([0.1, -0.5, 0.0])
    home = torch.tensor([0.31, 0.0, 0.49, 1, 0, 0, 0, -1, 0, 0.08])
    proprio = home + 0.01 * torch.randn(8, 10)
    actions = home + 0.02 * torch.randn(8, 32, 10)  # small moves around the home pose
    policy.fit_normalizers({"points": pts, "proprio": proprio}, actions)
    d = tmp_path_factory.mktemp("models") / "sim_student"
    save_policy(d, policy, {"name": "sim_student", "trained_on": "test fixture"})
    return d


def test_demo_refuses_to_run_without_a_model(tmp_path, capsys) -> None:
    rc = demo.main(parse("--model-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")))
    err = capsys.readouterr().err
    assert rc == 2 and "no shipped model" in err and "make models" in err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "card.yaml").write_text("name: x\n")
    rc = demo.main(parse("--model-dir", str(tmp_path / "half"), "--out", str(tmp_path / "o")))
    assert rc == 2 and "model.onnx" in capsys.readouterr().err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_demo_runs_the_sim_graph_and_measures_it(tiny_student, tmp_path, domain_id, capsys) -> None:
    out = tmp_path / "demo"
    rc = demo.main(parse("--model-dir", str(tiny_student), "--backend", "torch", "--tasks", "reach_around",
                         "--episodes", "1", "--episode-s", "3.0", "--domain-id", str(domain_id), "--out", str(out)))
    # 3 s of sim: the graph re-plans at most 10 times a second (sim.yaml), so a short episode sees a few dozen chunks
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    s = json.loads((out / "summary.json").read_text())
    task = s["tasks"]["reach_around"]
    assert task["episodes"] == 1
    assert [e["seed"] for e in task["per_episode"]] == [200_000]  # the demo reset the sim to its seed
    for ep in task["per_episode"]:
        assert ep["chunks"] > 0 and ep["commands"] > 0  # policy -> executor -> franky really ran
        assert ep["sim_s"] >= 3.0
        assert ep["obs_to_command_ms"]["p50"] > 0
    assert task["obs_to_command_ms"]["p99"] >= task["obs_to_command_ms"]["p50"] > task["obs_to_chunk_ms"]["p50"] > 0
    assert task["graph"]["policy_counts"]["chunks"] >= sum(e["chunks"] for e in task["per_episode"])
    assert "success 0/1" in captured.out or "success 1/1" in captured.out
    assert (out / "strip.png").stat().st_size > 0 and (out / "trajectories.png").stat().st_size > 0
    # the per-stage breakdown of /flow2one/trace, in the summary, the printout and latency.png
    b = task["latency_breakdown"]
    assert b["chunks"] > 0 and b["complete"] > 0 and b["ordered"] == b["complete"]
    assert b["since_frame_ms"]["target_sent"]["p50"] > b["since_frame_ms"]["chunk_published"]["p50"] > 0
    assert "latency breakdown" in captured.out and (out / "latency.png").stat().st_size > 0
