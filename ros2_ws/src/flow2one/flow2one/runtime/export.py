"""Checkpoint -> ONNX with a parity check against PyTorch; the model card records what the runtime needs."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from flow2one.runtime.backends import ONNX_FILE, OnnxRuntimeBackend
from flow2one.runtime.card import ModelCard, complete_card, example_inputs, save_card
from flow2one.runtime.sample_form import SampleForm

if TYPE_CHECKING:
    from google.protobuf.message import Message  # an onnx.ModelProto, or any of its parts

OPSET = 18
MAX_BATCH = 1024  # upper bound of the batch axis in the exported graph


def torch_reference(policy: nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        return SampleForm(policy)(*(torch.from_numpy(inputs[k]) for k in policy.export_input_names)).numpy()


def export_onnx(policy: nn.Module, card: ModelCard, path: Path, opset: int = OPSET) -> Path:
    """torch.onnx.export (torch.export-based) with dynamic batch and candidate axes, then the ONNX checker."""
    import onnx

    policy = policy.eval()
    names = card.input_names()
    example = example_inputs(card, batch=2, candidates=3)  # distinct sizes > 1 keep both axes symbolic
    args = tuple(torch.from_numpy(example[k]) for k in names)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    cands = torch.export.Dim("candidates", min=1, max=MAX_BATCH)
    dims = tuple({0: batch, 1: cands} if k == "noise" else {0: batch} for k in names)
    tmp = path.with_suffix(".onnx.tmp")
    torch.onnx.export(SampleForm(policy).eval(), args, str(tmp), input_names=list(names),
                      output_names=["actions"], dynamic_shapes=(dims,),
                      opset_version=opset, external_data=False, dynamo=True, verbose=False)
    model = strip_debug_info(onnx.load(str(tmp)))
    onnx.save(model, str(tmp))
    onnx.checker.check_model(str(tmp), full_check=True)
    tmp.replace(path)
    return path


def strip_debug_info(model: Message, _top: bool = True) -> Message:
    """The exporter's debug annotations removed, in place: every doc_string and every metadata_props below
    the model (graph, nodes, values, functions, subgraphs: torch's stack traces, FX nodes, module scopes,
    the ExportedProgram's signature). The stack traces name files by absolute path (this machine's venv,
    home and checkout), which a shipped model must not carry; no runtime reads any of it (ONNX Runtime,
    TensorRT and our backends read the graph and weights, the card the rest). The model's own
    metadata_props are kept; graph and weights are untouched."""
    for field, value in model.ListFields():
        if field.name == "doc_string" or (field.name == "metadata_props" and not _top):
            model.ClearField(field.name)
        elif field.type == field.TYPE_MESSAGE and field.name != "metadata_props":
            for sub in (value,) if hasattr(value, "ListFields") else value:  # one message, or a repeated field
                strip_debug_info(sub, _top=False)
    return model


def parity(policy: nn.Module, onnx_path: Path, card: ModelCard,
           shapes: tuple[tuple[int, int], ...] = ((1, 1), (1, 4), (3, 2)), seed: int = 1) -> float:
    """Max abs error between ONNX Runtime (CPU) and PyTorch over random inputs of several
    (batch, candidates) sizes."""
    backend = OnnxRuntimeBackend(onnx_path, card, threads=1)
    err = 0.0
    for i, (b, m) in enumerate(shapes):
        inputs = example_inputs(card, b, m, seed + i)
        err = max(err, float(np.abs(backend(inputs) - torch_reference(policy, inputs)).max()))
    return err


@dataclass(frozen=True)
class ExportReport:
    onnx: str
    max_abs_err: float
    tol: float
    opset: int
    export_s: float
    torch_version: str
    engine: str = ""

    @property
    def ok(self) -> bool:
        return self.max_abs_err <= self.tol


def export_model_dir(model_dir: str | Path, opset: int = OPSET, tol: float = 1e-4) -> ExportReport:
    """Export, check and record: model_dir gets model.onnx and an updated card.yaml."""
    from flow2one.policy.checkpoint import load_policy

    model_dir = Path(model_dir)
    policy, _ = load_policy(model_dir)
    policy = policy.float().eval()
    card = complete_card(model_dir, policy)
    t0 = time.perf_counter()
    path = export_onnx(policy, card, model_dir / ONNX_FILE, opset=opset)
    seconds = time.perf_counter() - t0
    err = parity(policy, path, card)
    report = ExportReport(onnx=str(path), max_abs_err=err, tol=tol, opset=opset, export_s=round(seconds, 2),
                          torch_version=str(torch.__version__))
    save_card(model_dir, replace(card, export={"onnx": ONNX_FILE, "opset": opset, "parity_max_abs_err": err,
                                                "torch_version": str(torch.__version__)}))
    return report
