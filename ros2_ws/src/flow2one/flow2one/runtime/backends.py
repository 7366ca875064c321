"""One inference interface over three engines: ONNX Runtime, PyTorch and TensorRT.

Every backend runs the same form of a policy, `(points, [points_prev], proprio, [rgb], [depth],
noise (B, M, H, A)) -> actions (B, M, H, A)` (flow2one.runtime.sample_form.SampleForm: M candidates per observation, the
observation encoded once), on numpy arrays, so the policy node and the benchmarks never care which
engine is underneath. The backend is a parameter; one whose package (or
GPU) is missing fails when it is opened, with the package to install in the message, not on the first
observation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np

from flow2one.runtime.card import ModelCard, load_card
from flow2one.runtime.engine import INSTALL_HINTS, Backend, BackendUnavailable, require, require_cuda
from flow2one.runtime.sample_form import SampleForm

ONNX_FILE = "model.onnx"
BACKENDS = ("onnxruntime", "torch", "tensorrt")
__all__ = ["BACKENDS", "INSTALL_HINTS", "ONNX_FILE", "Backend", "BackendUnavailable", "OnnxRuntimeBackend",
           "TorchBackend", "open_backend", "require", "require_cuda"]


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime; on device=cuda it uses the TensorRT and CUDA execution providers it finds."""

    name = "onnxruntime"

    def __init__(self, onnx_path: Path, card: ModelCard, device: str = "cpu", threads: int = 1) -> None:
        super().__init__(card)
        ort = require("onnxruntime", self.name)
        available = ort.get_available_providers()
        if device.startswith("cuda"):
            gpu = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
            if not gpu:
                raise BackendUnavailable(
                    f"onnxruntime {ort.__version__} has no GPU execution provider (available: {available}); "
                    f"install onnxruntime-gpu for device={device}, or use device=cpu")
            providers = [*gpu, "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(int(threads), 0)
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not onnx_path.is_file():
            raise BackendUnavailable(f"{onnx_path} does not exist; export the model first: "
                                     f"flow2one export {onnx_path.parent}")
        self.session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
        self.providers = self.session.get_providers()
        names = [i.name for i in self.session.get_inputs()]
        if sorted(names) != sorted(self.input_names):
            raise ValueError(f"{onnx_path} takes inputs {names}, its card lists {list(self.input_names)}")

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["actions"], feeds)[0]


class TorchBackend(Backend):
    """PyTorch eager on CPU; on CUDA it replays one captured CUDA graph per batch size."""

    name = "torch"

    def __init__(self, model_dir: Path, card: ModelCard, device: str = "cpu", threads: int = 1,
                 cuda_graphs: bool = True, fp16: bool = False, sample_steps: int | None = None) -> None:
        super().__init__(card)
        torch = require_cuda(self.name) if device.startswith("cuda") else require("torch", self.name)
        self.torch = torch
        from flow2one.policy.checkpoint import load_policy

        if threads > 0:
            torch.set_num_threads(int(threads))
        module, _ = load_policy(model_dir)
        if sample_steps is not None:  # a multi-step kind run with another step count (Table I's 1-step teacher)
            if not hasattr(module, "export_steps"):
                raise ValueError(f"{model_dir}: a {card.kind} samples in a fixed number of passes; "
                                 "sample_steps applies to the teacher only")
            module.export_steps = int(sample_steps)
        if list(module.export_input_names) != list(self.input_names):
            raise ValueError(f"{model_dir}: the module takes {module.export_input_names}, its card lists "
                             f"{list(self.input_names)}; re-export it: flow2one export {model_dir}")
        self.module = SampleForm(module.to(device).eval())
        self.device = torch.device(device)
        self.autocast = fp16 and self.device.type == "cuda"
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[int, int], CudaGraphRunner] = {}

    def forward(self, **tensors: object) -> object:
        with self.torch.autocast("cuda", dtype=self.torch.float16, enabled=self.autocast):
            return self.module(*(tensors[k] for k in self.input_names)).float()

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            tensors = {k: torch.from_numpy(v).to(self.device, non_blocking=True) for k, v in feeds.items()}
            if not self.cuda_graphs:
                return self.forward(**tensors).cpu().numpy()
            key = tuple(tensors["noise"].shape[:2])  # (B, M): one captured graph per input shape
            if key not in self._graphs:
                self._graphs[key] = CudaGraphRunner(torch, self.forward, tensors)
            return self._graphs[key](tensors).cpu().numpy()


class CudaGraphRunner:
    """Captures `fn` on static input buffers once; each call copies inputs in and replays the graph.

    At batch 1 a one-step policy is launch-bound (hundreds of small kernels); replaying a graph removes
    the per-kernel CPU launch cost, which is most of the latency on a fast GPU.
    """

    def __init__(self, torch: ModuleType, fn: Callable[..., object], example: dict[str, object]) -> None:
        self.static_in = {k: v.clone() for k, v in example.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream, as torch.cuda.graphs requires
                fn(**self.static_in)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.static_out = fn(**self.static_in)

    def __call__(self, inputs: dict[str, object]) -> object:
        for k, v in inputs.items():
            self.static_in[k].copy_(v)
        self.graph.replay()
        return self.static_out


def open_backend(kind: str, model_dir: str | Path, device: str = "cpu", threads: int = 1, fp16: bool = True,
                 max_batch: int = 16, card: ModelCard | None = None, sample_steps: int | None = None) -> Backend:
    """Open `model_dir` with backend `kind` (one of BACKENDS); raises BackendUnavailable when it cannot run.
    `sample_steps` (torch only: the other engines run the exported graph) overrides a teacher's step count."""
    model_dir = Path(model_dir)
    card = card or load_card(model_dir)
    if sample_steps is not None and kind != "torch":
        raise ValueError(f"sample_steps needs the torch backend (the {kind} graph has its steps fixed at export)")
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(model_dir / ONNX_FILE, card, device=device, threads=threads)
    if kind == "torch":
        return TorchBackend(model_dir, card, device=device, threads=threads, fp16=fp16, sample_steps=sample_steps)
    if kind == "tensorrt":
        from flow2one.runtime.tensorrt_engine import TensorRTBackend

        reference = OnnxRuntimeBackend(model_dir / ONNX_FILE, card, threads=1)  # the engine's parity check
        return TensorRTBackend(model_dir / ONNX_FILE, card, reference, fp16=fp16, max_batch=max_batch)
    raise ValueError(f"unknown inference backend {kind!r}; choose one of {BACKENDS}")
