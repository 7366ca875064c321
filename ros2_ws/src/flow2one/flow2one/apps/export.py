"""Export a checkpoint's policy (encoder + one-step U-Net, noise as an input) to ONNX and check it.

Writes MODEL_DIR/model.onnx, taking noise (B, M, H, A) for M candidates per observation, runs the ONNX checker,
compares ONNX Runtime with PyTorch on random observations (max abs error, in robot units) and records
both in MODEL_DIR/card.yaml. With --tensorrt it also builds the fp16 TensorRT engine next to the model
(needs TensorRT 10 and an NVIDIA GPU).

Examples:
  flow2one export models/sim_student
  flow2one export models/sim_student --tol 1e-4 --tensorrt
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

from flow2one.runtime.backends import ONNX_FILE, OnnxRuntimeBackend
from flow2one.runtime.card import load_card
from flow2one.runtime.export import OPSET, export_model_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path, help="checkpoint directory (model.safetensors, config.yaml, card.yaml)")
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="largest accepted ONNX-vs-PyTorch abs error in robot units (default 1e-4)")
    p.add_argument("--tensorrt", action="store_true",
                   help="also build the fp16 TensorRT engine (TensorRT 10 + NVIDIA GPU)")
    p.add_argument("--max-batch", type=int, default=16, help="TensorRT engine's largest batch (candidates)")


def main(args: argparse.Namespace) -> int:
    from flow2one.policy.checkpoint import load_config

    load_config(args.model_dir)  # a missing or broken checkpoint fails now, with one line, not after the banner
    print(f"exporting {args.model_dir} (a paper-size model takes minutes) ...", file=sys.stderr, flush=True)
    report = export_model_dir(args.model_dir, opset=args.opset, tol=args.tol)
    if args.tensorrt:
        from flow2one.runtime.tensorrt_engine import TensorRTBackend

        card = load_card(args.model_dir)
        engine = TensorRTBackend(args.model_dir / ONNX_FILE, card, OnnxRuntimeBackend(args.model_dir / ONNX_FILE, card),
                                 max_batch=args.max_batch)
        report = replace(report, engine=str(engine.engine_file))
    print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    if not report.ok:
        print(f"parity check FAILED: max abs error {report.max_abs_err:.3g} > tol {report.tol:.3g}")
    return 0 if report.ok else 1
