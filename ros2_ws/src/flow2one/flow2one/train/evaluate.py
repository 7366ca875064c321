"""Offline evaluation of a checkpoint on held-out episodes: sampled chunks against the recorded actions."""

from __future__ import annotations

import time

import numpy as np
import torch

from flow2one.policy.checkpoint import load_policy
from flow2one.train import common


def _slice(text: str) -> slice:
    parts = [int(x) if x.strip() else None for x in text.split(":")]
    if len(parts) == 1:
        return slice(parts[0], parts[0] + 1)
    return slice(*parts)


POSE_SHIFT_M = 0.02
GAIN_STEPS = 8  # the chunk's first 0.4 s: what executes before a low-rate re-plan


def sample_chunks(policy, obs: dict[str, np.ndarray], n_samples: int, seed: int, kw: dict) -> np.ndarray:
    """Samples in batches of 16 from one seeded generator: the same seed draws the same noise, so two calls
    differ only by their observations."""
    gen = torch.Generator().manual_seed(seed)
    n = len(next(iter(obs.values())))
    return torch.cat([policy.sample({m: v[i:i + 16] for m, v in obs.items()}, n_samples, generator=gen, **kw)
                      for i in range(0, n, 16)]).numpy()


def pose_gain(policy, obs: dict[str, np.ndarray], n_samples: int, seed: int, kw: dict | None = None) -> float:
    """How far the chunk's start moves per metre the EE position input moves (x and y, median over windows).

    0: the chunk is placed from the rest of the observation; 1: it moves with the arm's own pose. In demos the
    TCP sits on the expert's target, so copying the pose scores well offline, and in closed loop such a policy
    holds whatever offset it has (results/replan, "copycat").
    """
    def start_xy(o: dict[str, np.ndarray]) -> np.ndarray:
        return sample_chunks(policy, o, n_samples, seed, kw or {})[..., :GAIN_STEPS, :2].mean((1, 2))

    base, gains = start_xy(obs), []
    for axis in (0, 1):
        proprio = obs["proprio"].copy()
        proprio[:, axis] += POSE_SHIFT_M
        gains.append(np.median((start_xy({**obs, "proprio": proprio})[:, axis] - base[:, axis]) / POSE_SHIFT_M))
    return float(np.mean(gains))


def evaluate(ckpt: str, data_dir: str, episodes: str = ":", n_samples: int = 16, steps: int = 0,
             max_windows: int = 256, stride: int = 4, seed: int = 0) -> dict:
    policy, cfg = load_policy(ckpt)
    data = common.policy_windows(data_dir, cfg, stride, _slice(episodes))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(data["action"]))[:max_windows])
    obs = {m: data[m][pick] for m in common.config_modalities(cfg)}
    kw = {"steps": steps} if steps and cfg.kind == "teacher" else {}
    samples = sample_chunks(policy, obs, n_samples, seed, kw)
    truth = data["action"][pick][:, None]
    pos = np.linalg.norm(samples[..., :3] - truth[..., :3], axis=-1).mean(-1)  # (N, S) mean over the chunk
    grip = np.abs(samples[..., -1] - truth[..., -1]).mean(-1)
    one = {m: v[:1] for m, v in obs.items()}
    policy.sample(one, 1, **kw)
    lat = []
    for _ in range(10):
        t0 = time.perf_counter()
        policy.sample(one, 1, **kw)
        lat.append(time.perf_counter() - t0)
    return {"ckpt": ckpt, "kind": cfg.kind, "windows": int(len(pick)), "n_samples": n_samples,
            "pos_err_best_of_n_m": float(pos.min(1).mean()), "pos_err_mean_m": float(pos.mean()),
            "gripper_err_mean_m": float(grip.mean()), "sample_spread_m": float(samples[..., :3].std(1).mean()),
            "pose_gain": pose_gain(policy, obs, n_samples, seed, kw) if "proprio" in obs else None,
            "latency_ms_b1_cpu": 1000 * float(np.median(lat))}
