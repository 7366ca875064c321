"""TensorRT 10 / 11 backend: builds an engine from model.onnx once, caches it next to the model, and refuses
it when it disagrees with ONNX Runtime.

An engine only runs on the GPU model and TensorRT version that built it, so both are in its file name
and a stale engine is never loaded on another machine. Precision differs by version: TensorRT 10 builds a
weakly typed network and picks fp16 kernels with BuilderFlag.FP16; TensorRT 11 removed that flag (weak typing
was deprecated in 10.12) and builds strongly typed networks whose precision is the ONNX file's, so an fp16
engine there needs an fp16 ONNX (MIXED_PRECISION_ONNX, made with ModelOpt AutoCast). No machine of this
project's CI has TensorRT: the build calls are checked against a fake module standing in for both versions
(tests/test_tensorrt_api.py) and the naming, profile and parity logic are plain functions tested without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from flow2one.runtime.card import ModelCard, example_inputs
from flow2one.runtime.engine import Backend, BackendUnavailable, require, require_cuda

# model.onnx converted to mixed fp16 with fp32 inputs/outputs (what TensorRT 11 needs for an fp16 engine):
#   python -m modelopt.onnx.autocast --onnx_path model.onnx --output_path model.fp16.onnx \
#       --low_precision_type fp16 --keep_io_types
MIXED_PRECISION_ONNX = "model.fp16.onnx"
# Largest accepted |engine - ONNX Runtime| on the card's example inputs, in robot units (m, rot6d, gripper m).
# fp16 keeps ~3 significant digits and errors grow through encoder and U-Net: 1 cm (0.01 in rot6d) is well above
# what a healthy fp16 engine shows and below what a diverging one (overflow, a mis-parsed op) does. fp32 engines
# use TF32 matmuls on Ampere and later (~1e-3 relative).
PARITY_TOL = {"fp16": 1e-2, "fp32": 1e-3}


class EngineMismatch(RuntimeError):
    """The TensorRT engine's actions differ from ONNX Runtime's by more than PARITY_TOL."""


def trt_major(trt) -> int:
    return int(str(trt.__version__).split(".")[0])


def build_plan(trt, onnx_path: Path, fp16: bool) -> tuple[Path, bool, bool]:
    """(ONNX file to parse, strongly typed network?, fp16 engine?) for this TensorRT.

    TensorRT 10 with BuilderFlag.FP16: the fp32 ONNX, weakly typed, the flag decides. Without the flag
    (11+): strongly typed, precision from the ONNX: model.fp16.onnx when fp16 is asked and it exists, else
    the fp32 model (an fp32 engine, named so; the caller warns).
    """
    if hasattr(trt.BuilderFlag, "FP16") and trt_major(trt) < 11:
        return onnx_path, False, fp16
    mixed = onnx_path.with_name(MIXED_PRECISION_ONNX)
    if fp16 and mixed.is_file():
        return mixed, True, True
    return onnx_path, True, False


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


def check_profile(network, shapes: dict[str, tuple[tuple[int, ...], ...]]) -> None:
    """The profile names exactly the network's inputs, with the ONNX's rank and static dimensions."""
    inputs = {network.get_input(i).name: tuple(network.get_input(i).shape) for i in range(network.num_inputs)}
    if set(inputs) != set(shapes):
        raise ValueError(f"optimisation profile inputs {sorted(shapes)} != the ONNX's inputs {sorted(inputs)}")
    for name, dims in inputs.items():
        for s in shapes[name]:
            if len(s) != len(dims) or any(d >= 0 and d != v for d, v in zip(dims, s)):
                raise ValueError(f"profile shape {s} of input {name!r} does not fit the ONNX's {dims} (-1: dynamic)")


def build_engine(onnx_path: Path, out_path: Path, card: ModelCard, fp16: bool, max_batch: int, trt=None) -> Path:
    """Parse, profile and build; the engine is written atomically. `trt` is the tensorrt module (tests: a fake)."""
    trt = trt or require("tensorrt", "tensorrt")
    source, strongly_typed, _ = build_plan(trt, onnx_path, fp16)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # 11.x: STRONGLY_TYPED is deprecated and ignored (always strongly typed); a later release may drop it.
    typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None) if strongly_typed else None
    flags = 0 if typed is None else 1 << int(typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(source.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {source}: {errors}")
    config = builder.create_builder_config()
    if fp16 and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    shapes = profile_shapes(card, max_batch)
    check_profile(network, shapes)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    blob = builder.build_serialized_network(network, config)
    if blob is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {source} (see its log above)")
    tmp = out_path.with_suffix(".tmp")
    tmp.write_bytes(bytes(blob))
    tmp.replace(out_path)
    return out_path


def engine_parity(run: Callable[[dict[str, np.ndarray]], np.ndarray],
                  reference: Callable[[dict[str, np.ndarray]], np.ndarray], card: ModelCard, max_batch: int,
                  fp16: bool) -> str:
    """Compare an engine with `reference` (ONNX Runtime, CPU, fp32) on the card's example inputs (one observation,
    max_batch candidates); returns the report line, raises EngineMismatch (with both outputs) beyond PARITY_TOL."""
    inputs = example_inputs(card, 1, max_batch, seed=0)
    ref = np.asarray(reference(inputs), dtype=np.float32)
    got = np.asarray(run(inputs), dtype=np.float32)
    tol = PARITY_TOL["fp16" if fp16 else "fp32"]
    err = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
    def first(a: np.ndarray) -> str:
        return np.array2string(a.reshape(-1)[:card.outputs["actions"][1]], precision=4, floatmode="fixed",
                               max_line_width=10_000)

    line = (f"TensorRT vs ONNX Runtime on the card's example inputs (1 x {max_batch} candidates): max |diff| "
            f"{err:.3g} (tol {tol:g}, {'fp16' if fp16 else 'fp32'}); first action TensorRT {first(got)} "
            f"ONNX Runtime {first(ref)}")
    if not err <= tol:
        raise EngineMismatch(f"refusing the engine: {line}; delete the engine to rebuild, or run backend "
                             f"onnxruntime / fp16 false")
    return line


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, onnx_path: Path, card: ModelCard, reference: Callable[[dict[str, np.ndarray]], np.ndarray],
                 fp16: bool = True, max_batch: int = 16, rebuild: bool = False) -> None:
        """`reference`: ONNX Runtime on the same model, which the engine must match before it is used."""
        super().__init__(card)
        trt = require("tensorrt", self.name)
        torch = require_cuda(self.name)
        if not onnx_path.is_file():
            raise BackendUnavailable(f"{onnx_path} does not exist; export first: flow2one export {onnx_path.parent}")
        self.torch, self.max_batch = torch, max_batch
        _, _, self.fp16 = build_plan(trt, onnx_path, fp16)
        self.notes: list[str] = []
        if fp16 and not self.fp16:
            self.notes.append(f"TensorRT {trt.__version__} builds strongly typed networks and "
                              f"{MIXED_PRECISION_ONNX} is missing: building fp32 (see tensorrt_engine.py for "
                              f"the ModelOpt AutoCast command that makes the fp16 ONNX)")
        path = engine_path(onnx_path, torch.cuda.get_device_name(), trt.__version__, self.fp16, max_batch)
        if rebuild or not path.is_file() or path.stat().st_mtime < onnx_path.stat().st_mtime:
            build_engine(onnx_path, path, card, fp16, max_batch, trt=trt)
        self.engine_file = path
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load {path}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.notes.append(engine_parity(self, reference, card, max_batch, self.fp16))

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
