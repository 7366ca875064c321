"""The TensorRT engine build against the API surfaces of TensorRT 10 and 11, without TensorRT.

No CI machine has TensorRT or a GPU, so a small fake `tensorrt` module stands in for each version with the
parts of the API the build touches (TensorRT 10: weakly typed networks, BuilderFlag.FP16, STRONGLY_TYPED = 1;
TensorRT 11: BuilderFlag.FP16 removed, STRONGLY_TYPED = 0 and deprecated). Its parser reads the real
exported ONNX, so the optimisation profile is checked against the model's actual inputs. The parity gate
and the ONNX operator audit run on the real shipped model with ONNX Runtime.
"""

from __future__ import annotations

import shutil
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from flow2one.paths import repo_root
from flow2one.runtime.backends import OnnxRuntimeBackend
from flow2one.runtime.card import load_card
from flow2one.runtime.tensorrt_engine import (
    MIXED_PRECISION_ONNX,
    PARITY_TOL,
    EngineMismatch,
    build_engine,
    build_plan,
    engine_parity,
    profile_shapes,
)
from flow2one.runtime.trt_onnx_audit import audit_onnx

MODEL = repo_root() / "models" / "sim_student"


def fake_tensorrt(version: str) -> types.SimpleNamespace:
    """A `tensorrt` module of `version` (10.x or 11.x) that records every builder call in `.calls`."""
    major = int(version.split(".")[0])
    calls: list[tuple] = []
    flags = {"TF32": 7} | ({"FP16": 0} if major < 11 else {})
    creation = {"STRONGLY_TYPED": 1} if major < 11 else {"STRONGLY_TYPED": 0}

    class Tensor:
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            self.name, self.shape = name, shape

    class Network:
        def __init__(self) -> None:
            self.inputs: list[Tensor] = []

        @property
        def num_inputs(self) -> int:
            return len(self.inputs)

        def get_input(self, i: int) -> Tensor:
            return self.inputs[i]

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: object) -> None:
            self.network = network

        def parse(self, data: bytes) -> bool:
            calls.append(("parse", data))
            g = onnx.load_from_string(data).graph
            init = {i.name for i in g.initializer}
            for i in g.input:
                if i.name not in init:
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in i.type.tensor_type.shape.dim)
                    self.network.inputs.append(Tensor(i.name, dims))
            return True

    class Profile:
        def set_shape(self, name: str, lo, opt, hi) -> None:
            calls.append(("set_shape", name, tuple(lo), tuple(opt), tuple(hi)))

    class Config:
        def set_flag(self, flag: int) -> None:
            calls.append(("set_flag", flag))

        def add_optimization_profile(self, profile: Profile) -> int:
            calls.append(("add_optimization_profile",))
            return 0

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int = 0) -> Network:
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes:
            calls.append(("build_serialized_network",))
            return b"engine"

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            pass

    return types.SimpleNamespace(
        __version__=version, calls=calls, Logger=Logger, Builder=Builder, OnnxParser=OnnxParser,
        BuilderFlag=types.SimpleNamespace(**flags), NetworkDefinitionCreationFlag=types.SimpleNamespace(**creation))


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sim_student"
    shutil.copytree(MODEL, d, ignore=shutil.ignore_patterns("*.engine", "*.safetensors"))
    return d


def onnx_inputs(path: Path) -> dict[str, tuple]:
    g = onnx.load(str(path)).graph
    return {i.name: tuple(d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim) for i in g.input}


def check_profile_calls(calls: list[tuple], onnx_path: Path, max_batch: int) -> None:
    """One set_shape per ONNX input, (min, opt, max) fitting its static dims, batch 1..max_batch, then added."""
    card = load_card(onnx_path.parent)
    shapes = {c[1]: c[2:] for c in calls if c[0] == "set_shape"}
    assert shapes == profile_shapes(card, max_batch)
    inputs = onnx_inputs(onnx_path)
    assert set(shapes) == set(inputs)
    for name, dims in inputs.items():
        for s in shapes[name]:
            assert len(s) == len(dims) and all(d == v for d, v in zip(dims, s) if isinstance(d, int))
        assert shapes[name][0][0] == 1 and shapes[name][2][0] == max_batch
    assert [c[0] for c in calls].index("add_optimization_profile") < [c[0] for c in calls].index(
        "build_serialized_network")


def test_tensorrt10_fp16_is_a_builder_flag_on_a_weakly_typed_network(model_dir: Path) -> None:
    trt = fake_tensorrt("10.13.3.9")
    onnx_path, out = model_dir / "model.onnx", model_dir / "model.x.engine"
    build_engine(onnx_path, out, load_card(model_dir), fp16=True, max_batch=8, trt=trt)
    assert ("create_network", 0) in trt.calls
    assert ("set_flag", trt.BuilderFlag.FP16) in trt.calls
    assert ("parse", onnx_path.read_bytes()) in trt.calls
    check_profile_calls(trt.calls, onnx_path, 8)
    assert out.read_bytes() == b"engine" and not out.with_suffix(".tmp").exists()
    assert build_plan(trt, onnx_path, fp16=True) == (onnx_path, False, True)


def test_tensorrt10_fp32_sets_no_precision_flag(model_dir: Path) -> None:
    trt = fake_tensorrt("10.13.3.9")
    build_engine(model_dir / "model.onnx", model_dir / "e.engine", load_card(model_dir), fp16=False, max_batch=4,
                 trt=trt)
    assert not [c for c in trt.calls if c[0] == "set_flag"] and ("create_network", 0) in trt.calls


def test_tensorrt11_fp16_builds_strongly_typed_from_the_fp16_onnx(model_dir: Path) -> None:
    trt = fake_tensorrt("11.4.0.106")
    mixed = model_dir / MIXED_PRECISION_ONNX
    shutil.copy(model_dir / "model.onnx", mixed)  # same inputs as an AutoCast file with --keep_io_types
    build_engine(model_dir / "model.onnx", model_dir / "e.engine", load_card(model_dir), fp16=True, max_batch=8,
                 trt=trt)
    assert ("create_network", 1 << 0) in trt.calls  # TensorRT 11's STRONGLY_TYPED value
    assert not [c for c in trt.calls if c[0] == "set_flag"]  # BuilderFlag.FP16 does not exist there
    assert [c[1] for c in trt.calls if c[0] == "parse"] == [mixed.read_bytes()]
    check_profile_calls(trt.calls, mixed, 8)
    assert build_plan(trt, model_dir / "model.onnx", fp16=True) == (mixed, True, True)


def test_tensorrt11_without_an_fp16_onnx_builds_fp32(model_dir: Path) -> None:
    trt = fake_tensorrt("11.4.0.106")
    onnx_path = model_dir / "model.onnx"
    assert build_plan(trt, onnx_path, fp16=True) == (onnx_path, True, False)
    build_engine(onnx_path, model_dir / "e.engine", load_card(model_dir), fp16=True, max_batch=2, trt=trt)
    assert [c[1] for c in trt.calls if c[0] == "parse"] == [onnx_path.read_bytes()]
    assert not [c for c in trt.calls if c[0] == "set_flag"]


def test_a_profile_that_does_not_fit_the_onnx_is_refused_before_building(model_dir: Path) -> None:
    import dataclasses

    trt = fake_tensorrt("10.13.3.9")
    card = load_card(model_dir)
    wrong = dataclasses.replace(card, inputs={**card.inputs, "points": (2048, 3), "points_prev": (2048, 3)})
    with pytest.raises(ValueError, match=r"profile shape .* of input 'points' does not fit"):
        build_engine(model_dir / "model.onnx", model_dir / "e.engine", wrong, fp16=True, max_batch=4, trt=trt)
    assert ("build_serialized_network",) not in trt.calls and not (model_dir / "e.engine").exists()


def test_engine_parity_accepts_fp16_noise_and_refuses_a_diverging_engine() -> None:
    card = load_card(MODEL)
    ort = OnnxRuntimeBackend(MODEL / "model.onnx", card, threads=1)
    rng = np.random.default_rng(0)
    near = engine_parity(lambda x: ort(x) + rng.uniform(-1e-3, 1e-3, size=ort(x).shape), ort, card,
                         max_batch=4, fp16=True)
    assert "max |diff|" in near and f"tol {PARITY_TOL['fp16']:g}" in near
    with pytest.raises(EngineMismatch, match=r"refusing the engine.*tol 0.01.*TensorRT \[.*ONNX Runtime \["):
        engine_parity(lambda x: ort(x) + 0.05, ort, card, max_batch=4, fp16=True)
    with pytest.raises(EngineMismatch):  # fp32 is held to the tighter bound
        engine_parity(lambda x: ort(x) + 5e-3, ort, card, max_batch=4, fp16=False)


@pytest.mark.parametrize("name", ["sim_student", "sim_l1flow", "sim_regression"])
def test_shipped_models_use_only_operators_tensorrt_parses(name: str) -> None:
    assert audit_onnx(MODEL.parent / name / "model.onnx") == []


def test_audit_names_unsupported_operators_and_dynamic_axes(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    axes = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Unique", ["x"], ["u"], name="uniq"),
             helper.make_node("ReduceMax", ["u", "axes"], ["y"], name="rmax"),
             helper.make_node("MyOp", ["x"], ["z"], name="custom", domain="my.domain")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x, axes], [y]),
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("my.domain", 1)])
    onnx.save(model, tmp_path / "m.onnx")
    problems = audit_onnx(tmp_path / "m.onnx")
    assert any("Unique node 'uniq'" in p and "not supported" in p for p in problems)
    assert any("ReduceMax node 'rmax'" in p and "must be an initializer" in p for p in problems)
    assert any("custom domain 'my.domain'" in p for p in problems)
    assert len(problems) == 3
