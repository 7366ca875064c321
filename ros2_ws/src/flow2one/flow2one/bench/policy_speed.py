"""Benchmark `policy_speed`: batch-1 CPU inference rate of the one-step student vs the 50-step teacher
(and L1 Flow's 2 steps), same architecture, for the small and the paper-size config.

Weights are random: latency does not depend on their values, and no trained paper-size model exists here.
--quick measures the small config only.
"""

from __future__ import annotations

from typing import Any

import torch

from flow2one.bench.timing import time_calls
from flow2one.policy.config import preset
from flow2one.policy.factory import build_policy


def _obs(cfg) -> dict[str, torch.Tensor]:
    e = cfg.encoder
    obs = {"points": torch.rand(1, 4096, 3), "proprio": torch.rand(1, 10)}
    if e.history_steps:
        obs["points_prev"] = torch.rand(1, 4096, 3)
    if e.use_rgb:
        obs["rgb"] = torch.randint(0, 256, (1, e.n_views, *e.image_size, 3), dtype=torch.uint8)
    if e.use_depth:
        obs["depth"] = torch.rand(1, e.n_views, *e.image_size)
    return obs


def run(quick: bool = False, threads: int = 1) -> dict[str, Any]:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict[str, Any] = {"threads": threads, "batch": 1, "device": "cpu"}
    try:
        for size in ("small",) if quick else ("small", "paper"):  # paper-size 50-step teacher: ~10 s a sample
            res: dict[str, Any] = {}
            for kind, kw, nfe in (("student", {}, 1), ("teacher", {"steps": 50}, 50), ("l1flow", {}, 2)):
                policy = build_policy(preset(size, kind)).eval()
                obs = _obs(policy.cfg)
                reps = (2 if quick else 3) if kind == "teacher" else (3 if quick else 20)
                ms = time_calls(lambda: policy.sample(obs, 1, **kw), reps, cpu_clock=None).ms_median
                res[kind] = {"nfe": nfe, "median_ms": round(ms, 2), "hz": round(1000 / ms, 1),
                             "parameters_m": round(sum(p.numel() for p in policy.parameters()) / 1e6, 2)}
            res["student_speedup_vs_teacher_50step"] = round(res["teacher"]["median_ms"] / res["student"]["median_ms"], 1)
            res["l1flow_speedup_vs_teacher_50step"] = round(res["teacher"]["median_ms"] / res["l1flow"]["median_ms"], 1)
            out[size] = res
    finally:
        torch.set_num_threads(old)
    return out
