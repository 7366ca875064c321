"""Inference benchmark: one-step student vs 50-step teacher with the same encoder, small and paper size.

Both policies are randomly initialised (speed does not depend on the weights) and share the encoder
weights. The student runs through ONNX Runtime (the deployed path) and PyTorch eager; the teacher
through PyTorch eager with its 50 Euler steps (exporting 50 unrolled U-Nets to ONNX is impractical).
Batch 1, one CPU thread, medians; ratios come from the same run.
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from flow2one.bench.timing import time_calls
from flow2one.policy.config import preset
from flow2one.policy.factory import build_policy
from flow2one.runtime.backends import OnnxRuntimeBackend
from flow2one.runtime.card import card_for_policy
from flow2one.runtime.export import example_inputs, export_onnx, torch_reference

GOAL_HZ = 125.0


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Wall-clock median/p90 and the median CPU time of this thread: on a shared, loaded machine the
    wall clock includes waiting for a core, the CPU time is the work itself (the rate an idle core gives)."""
    t = time_calls(fn, repeats, warmup)
    return {"median_ms": round(t.ms_median, 3), "p90_ms": round(t.ms(90), 3), "hz": round(t.hz, 1),
            "cpu_median_ms": round(t.cpu_ms_median, 3), "hz_on_idle_core": round(1e3 / t.cpu_ms_median, 1),
            "repeats": repeats}


def compare(size: str, quick: bool) -> dict:
    torch.manual_seed(0)
    student = build_policy(preset(size, kind="student")).eval()
    teacher = build_policy(preset(size, kind="teacher")).eval()
    teacher.encoder.load_state_dict(student.encoder.state_dict())  # same encoder, same weights
    card = card_for_policy(student, f"{size}_student", "random weights (benchmark)")
    x1 = example_inputs(card, batch=1, candidates=1)
    x4 = example_inputs(card, batch=1, candidates=4)
    n = 10 if quick else 50
    n_teacher = 2 if quick else 5
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        path = export_onnx(student, card, Path(d) / "model.onnx")
        export_s = time.perf_counter() - t0
        ort = OnnxRuntimeBackend(path, card, threads=1)
        s_ort = timed(lambda: ort(x1), n)
        s_ort4 = timed(lambda: ort(x4), n)
    s_torch = timed(lambda: torch_reference(student, x1), n)
    t_torch = timed(lambda: torch_reference(teacher, x1), n_teacher, warmup=1)
    return {
        "parameters_student": sum(p.numel() for p in student.parameters()),
        "inputs": {k: list(v) for k, v in card.inputs.items()},
        "teacher_steps": teacher.export_steps,
        "onnx_export_s": round(export_s, 1),
        "student_onnxruntime": s_ort,
        "student_onnxruntime_4_candidates": s_ort4,
        "student_torch": s_torch,
        "teacher_torch": t_torch,
        "speedup_student_vs_teacher_torch": round(t_torch["median_ms"] / s_torch["median_ms"], 1),
        "speedup_student_onnxruntime_vs_teacher_torch": round(t_torch["median_ms"] / s_ort["median_ms"], 1),
        "cost_4_vs_1_candidates": round(s_ort4["median_ms"] / s_ort["median_ms"], 2),
        "student_onnxruntime_meets_125hz": s_ort["hz"] >= GOAL_HZ,
        "student_onnxruntime_meets_125hz_on_idle_core": s_ort["hz_on_idle_core"] >= GOAL_HZ,
    }


def run(quick: bool = False) -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict = {"cpu": platform.processor() or platform.machine(), "threads": 1, "batch": 1,
                     "load_avg_1min_at_start": round(os.getloadavg()[0], 2),
                     "goal_student_hz": GOAL_HZ, "gpu": "none lent in this run" if not torch.cuda.is_available()
                     else torch.cuda.get_device_name()}
        for size in tqdm(("small", "paper"), desc="student vs teacher", unit="model"):
            out[size] = compare(size, quick)
        return out
    finally:
        torch.set_num_threads(threads)
