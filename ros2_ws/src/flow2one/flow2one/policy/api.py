"""Generic (condition vector -> trajectory) API over the same teacher / student / Chamfer code.

Only the encoder differs from the robot policies (a `VectorEncoder` instead of the observation encoder).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from flow2one.policy.base import Policy
from flow2one.policy.config import EncoderConfig, PolicyConfig, UNetConfig
from flow2one.policy.factory import build_policy


def vector_config(cond_dim: int, action_dim: int, horizon: int = 32, kind: str = "teacher",
                  down_dims: tuple[int, ...] = (32, 64, 128), embed_dim: int = 64, hidden_dim: int = 128,
                  **sections: Any) -> PolicyConfig:
    """A small CPU-sized config for condition vectors; `sections` may replace flow=/student= sub-configs."""
    return PolicyConfig(kind=kind, horizon=horizon, action_dim=action_dim,
                        encoder=EncoderConfig(kind="vector", cond_dim=cond_dim, embed_dim=embed_dim,
                                              hidden_dim=hidden_dim),
                        unet=UNetConfig(down_dims=tuple(down_dims), n_groups=8, time_embed_dim=32), **sections)


def _train(kind: str, cfg: PolicyConfig, cond: Any, data: dict[str, Any], normalizer_actions: Any,
           **train_kw: Any) -> Policy:
    from flow2one.train.loop import TrainSettings, train_policy  # the loop lives with the CLIs that share it
    progress = train_kw.pop("progress", True)
    device = train_kw.pop("device", "cpu")
    policy = build_policy(cfg.with_kind(kind))
    cond_t = torch.as_tensor(np.asarray(cond), dtype=torch.float32)
    policy.fit_normalizers({"cond": cond_t}, torch.as_tensor(np.asarray(normalizer_actions), dtype=torch.float32))
    return train_policy(policy, {"cond": cond_t, **data}, TrainSettings(**train_kw), progress=progress, device=device)


def fit(kind: str, cond: Any, traj: Any, cfg: PolicyConfig, **train_kw: Any) -> Policy:
    """Train a teacher, l1flow or regression policy on (N, C) conditions and (N, H, A) trajectories."""
    traj_t = torch.as_tensor(np.asarray(traj), dtype=torch.float32)
    if traj_t.shape[1:] != (cfg.horizon, cfg.action_dim) or len(traj_t) != len(cond):
        raise ValueError(f"traj must be (N={len(cond)}, {cfg.horizon}, {cfg.action_dim}), got {tuple(traj_t.shape)}")
    return _train(kind, cfg, cond, {"action": traj_t}, traj_t, **train_kw)


def fit_teacher(cond: Any, traj: Any, cfg: PolicyConfig, **train_kw: Any) -> Policy:
    return fit("teacher", cond, traj, cfg, **train_kw)


@torch.no_grad()
def teacher_sets(teacher: Policy, cond: Any, k: int = 16, batch_size: int = 256, steps: int | None = None,
                 seed: int = 0, progress: bool = True) -> torch.Tensor:
    """The frozen teacher's K trajectories per condition: (N, K, H, A) robot units."""
    gen = torch.Generator().manual_seed(seed)
    cond_t = torch.as_tensor(np.asarray(cond), dtype=torch.float32)
    kw = {"steps": steps} if steps else {}
    teacher.eval()
    out = [teacher.sample(cond_t[i:i + batch_size], k, generator=gen, **kw)
           for i in tqdm(range(0, len(cond_t), batch_size), desc="teacher sets", disable=not progress)]
    return torch.cat(out)


def fit_student(cond: Any, sets: Any, cfg: PolicyConfig, **train_kw: Any) -> Policy:
    """Distil a one-step student from (N, C) conditions and their (N, K, H, A) teacher sets (no teacher needed)."""
    sets_t = torch.as_tensor(np.asarray(sets), dtype=torch.float32)
    if sets_t.ndim != 4 or len(sets_t) != len(cond):
        raise ValueError(f"sets must be (N={len(cond)}, K, H, A), got {tuple(sets_t.shape)}")
    return _train("student", cfg, cond, {"teacher_set": sets_t}, sets_t.flatten(0, 1), **train_kw)
