"""TensorRT 10 backend: builds an fp16 engine from model.onnx once and caches it next to the model.

An engine only runs on the GPU model and TensorRT version that built it, so both are in its file name
and a stale engine is never loaded on another machine. No machine of this project's CI has TensorRT:
this module is kept small; the naming and shape-profile logic are plain functions tested without it.
Written against the TensorRT 10 Python API (explicit batch is the default, tensors are addressed by
name; the binding-index API is gone).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from flow2one.runtime.engine import Backend, BackendUnavailable, require, require_cuda
from flow2one.runtime.card import ModelCard


def engine_path(onnx_path: Path, gpu_name: str, trt_version: str, fp16: bool, max_batch: int) -> Path:
    """model.onnx -> model.<gpu>.trt<version>.<fp16|fp32>.b<max batch>.engine in the same directory."""
    def slug(s: str) -> str:
        return re.sub(r"[^A-Za-z0-9.]+", "-", s).strip("-")

    prec = "fp16" if fp16 else "fp32"
    return onnx_path.with_name(f"{onnx_path.stem}.{slug(gpu_name)}.trt{slug(trt_version)}.{prec}.b{max_batch}.engine")


def profile_shapes(card: ModelCard, max_batch: int) -> dict[str, tuple[tuple[int, ...], ...]]:
    """(min, opt, max) shape per input of the optimisation profile: batch and candidates 1..max_batch,
    tuned for one observation with max_batch candidates (the policy node's call)."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    out = {}
    for k in card.input_names():
        s = card.inputs[k]
        out[k] = (((1, 1, *s), (1, max_batch, *s), (max_batch, max_batch, *s)) if k == "noise"
                  else ((1, *s), (1, *s), (max_batch, *s)))
    return out


def build_engine(onnx_path: Path, out_path: Path, card: ModelCard, fp16: bool, max_batch: int) -> Path:
    trt = require("tensorrt", "tensorrt")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile_shapes(card, max_batch).items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
    tmp = out_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(blob))
    tmp.replace(out_path)
    return out_path


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, onnx_path: Path, card: ModelCard, fp16: bool = True, max_batch: int = 16,
                 rebuild: bool = False) -> None:
        super().__init__(card)
        trt = require("tensorrt", self.name)
        torch = require_cuda(self.name)
        if not onnx_path.is_file():
            raise BackendUnavailable(f"{onnx_path} does not exist; export first: flow2one export {onnx_path.parent}")
        self.torch, self.max_batch = torch, max_batch
        path = engine_path(onnx_path, torch.cuda.get_device_name(), trt.__version__, fp16, max_batch)
        if rebuild or not path.is_file() or path.stat().st_mtime < onnx_path.stat().st_mtime:
            build_engine(onnx_path, path, card, fp16, max_batch)
        self.engine_file = path
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {path}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        if max(feeds["noise"].shape[:2]) > self.max_batch:
            raise ValueError(f"noise {feeds['noise'].shape} exceeds the engine's max_batch {self.max_batch}")
        with torch.cuda.stream(self.stream):
            inputs = {k: torch.from_numpy(v).cuda(non_blocking=True) for k, v in feeds.items()}
            for k, t in inputs.items():
                self.context.set_input_shape(k, tuple(t.shape))
                self.context.set_tensor_address(k, t.data_ptr())
            out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32,
                              device="cuda")
            self.context.set_tensor_address(self.output_name, out.data_ptr())
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
        self.stream.synchronize()
        return out.cpu().numpy()
