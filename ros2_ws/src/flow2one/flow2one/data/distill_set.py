"""The distillation set on disk: observations and the frozen teacher's K trajectories for each.

One safetensors file; the student trains from it alone (the teacher is not loaded again). Metadata
carries the teacher's config so the student is built with the same architecture.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

SET_KEY = "teacher_set"


def save_distill_set(path: str | Path, obs: dict[str, np.ndarray | torch.Tensor],
                     teacher_set: np.ndarray | torch.Tensor, meta: dict[str, Any]) -> Path:
    """obs: arrays with N rows; teacher_set: (N, K, H, A) robot units. Written atomically."""
    ts = torch.as_tensor(teacher_set).float().contiguous()
    if ts.ndim != 4:
        raise ValueError(f"teacher_set must be (N, K, H, A), got {tuple(ts.shape)}")
    tensors = {SET_KEY: ts}
    for k, v in obs.items():
        t = torch.as_tensor(np.asarray(v) if not torch.is_tensor(v) else v).contiguous()
        if len(t) != len(ts):
            raise ValueError(f"obs {k!r} has {len(t)} rows, teacher_set has {len(ts)}")
        tensors[k] = t
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def load_distill_set(path: str | Path) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, Any]]:
    """-> (obs tensors, teacher_set (N, K, H, A), meta)."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise ValueError(f"{path}: not a readable distillation set: {exc}") from exc
    if SET_KEY not in tensors:
        raise ValueError(f"{path}: no {SET_KEY!r} tensor")
    ts = tensors.pop(SET_KEY)
    return tensors, ts, meta
