"""What every inference engine shares: the Backend interface (inputs checked against the model card on
every call) and the errors and imports that say what to install. Kept apart from backends.py so the
TensorRT engine, which backends.py opens, does not import its opener."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from types import ModuleType

import numpy as np

from flow2one.runtime.card import IO_DTYPES, ModelCard

# What to install for each backend (shown when it is missing).
INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime (CPU) or onnxruntime-gpu (CUDA / TensorRT execution providers)",
    "torch": "pip install torch (a CUDA build for device=cuda)",
    "tensorrt": "pip install 'tensorrt-cu12>=10,<11' (or 11.x with an fp16 ONNX: tensorrt_engine.py; needs an "
                "NVIDIA GPU and driver) and a CUDA build of torch",
}


class BackendUnavailable(RuntimeError):
    """The chosen backend cannot run here: a package, a GPU or an exported file is missing."""


def require(package: str, backend: str) -> ModuleType:
    """Import `package` or fail with what to install to use `backend`."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise BackendUnavailable(
            f"inference backend '{backend}' needs the Python package '{package}', which cannot be imported "
            f"({exc}); install it: {INSTALL_HINTS[backend]}") from exc


def require_cuda(backend: str) -> ModuleType:
    torch = require("torch", backend)
    if not torch.cuda.is_available():
        raise BackendUnavailable(f"inference backend '{backend}' on a GPU needs CUDA, and torch "
                                 f"{torch.__version__} sees no CUDA device; install a CUDA build of torch "
                                 f"on a machine with an NVIDIA GPU, or use device=cpu")
    return torch


class Backend(ABC):
    """Runs a policy's export form; inputs are checked against the model card on every call."""

    name: str = ""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.input_names = card.input_names()

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """inputs: {name: (B, *card shape)}, noise (B, M, H, A) -> actions (B, M, H, A) float32, robot units."""
        missing = [k for k in self.input_names if k not in inputs]
        extra = [k for k in inputs if k not in self.input_names]
        if missing or extra:
            raise ValueError(f"model '{self.card.name}' takes inputs {list(self.input_names)}; "
                             f"missing {missing}, unexpected {extra}")
        feeds: dict[str, np.ndarray] = {}
        batch = None
        for k in self.input_names:
            arr = np.ascontiguousarray(inputs[k], dtype=IO_DTYPES[k])
            lead = 2 if k == "noise" else 1
            if arr.shape[lead:] != self.card.inputs[k] or arr.ndim != lead + len(self.card.inputs[k]) or (
                    batch is not None and arr.shape[0] != batch):
                dims = ", ".join(["B", "M"][:lead] + [str(d) for d in self.card.inputs[k]])
                raise ValueError(f"input '{k}' has shape {arr.shape}, model '{self.card.name}' expects "
                                 f"({dims}) with one B for all inputs")
            batch = arr.shape[0]
            feeds[k] = arr
        out = self._run(feeds)
        return np.asarray(out, dtype=np.float32)

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...

    def close(self) -> None:
        """Release sessions / device memory (default: nothing)."""
