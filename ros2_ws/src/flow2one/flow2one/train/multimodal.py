"""Conditional trajectory distributions with KNOWN modes, and the metrics that expose mode collapse.

Scenario s has n_s modes with unequal weights. A condition (one-hot scenario, c in [-1, 1]^2) moves the
start point, rotates the mode fan and bends every mode. Each mode is a planar 32-step path; samples
scatter around the mode path (length and lateral jitter). Because the modes are known, a sampled
trajectory can be assigned to its nearest mode or declared off-mode (e.g. the average of two modes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from flow2one.policy.chamfer import pairwise_sq_dist

HORIZON = 32


@dataclass(frozen=True)
class Scenario:
    weights: tuple[float, ...]

    @property
    def n_modes(self) -> int:
        return len(self.weights)


SCENARIOS = (Scenario((0.7, 0.3)), Scenario((0.5, 0.3, 0.2)), Scenario((0.4, 0.3, 0.2, 0.1)))
COND_DIM = len(SCENARIOS) + 2
OFF_MODE_RMS = 0.15  # a sample farther (RMS over the chunk) than this from every mode path is off-mode


def make_conditions(scenario: int, n: int, rng: np.random.Generator) -> np.ndarray:
    cond = np.zeros((n, COND_DIM), np.float32)
    cond[:, scenario] = 1.0
    cond[:, -2:] = rng.uniform(-1, 1, (n, 2))
    return cond


def mode_paths(cond: np.ndarray, length: np.ndarray | float = 1.0, lateral: np.ndarray | float = 0.0) -> np.ndarray:
    """(N, C) conditions -> (N, max_modes, H, 2) mode paths (modes beyond a scenario's count are NaN)."""
    n, max_m = len(cond), max(s.n_modes for s in SCENARIOS)
    scen = cond[:, :len(SCENARIOS)].argmax(1)
    c = cond[:, -2:]
    tau = np.linspace(0, 1, HORIZON)[None, None, :, None]
    n_modes = np.array([SCENARIOS[s].n_modes for s in scen])
    k = np.arange(max_m)[None, :]
    phi = 2 * np.pi * k / n_modes[:, None] + 0.6 * c[:, :1] + 0.3  # condition rotates the fan
    u = np.stack([np.cos(phi), np.sin(phi)], -1)[:, :, None, :]
    perp = np.stack([-np.sin(phi), np.cos(phi)], -1)[:, :, None, :]
    bend = 0.3 * c[:, 1][:, None, None, None]
    start = 0.3 * c[:, None, None, :]
    L = np.asarray(length).reshape(-1, 1, 1, 1) if np.ndim(length) else length
    lat = np.asarray(lateral).reshape(-1, 1, 1, 1) if np.ndim(lateral) else lateral
    paths = start + L * tau * u + (bend * 4 * tau * (1 - tau) + lat * tau) * perp
    paths[k.repeat(n, 0) >= n_modes[:, None]] = np.nan
    return paths.astype(np.float32)


def sample_true(cond: np.ndarray, n_per: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n_per true trajectories per condition: ((N, n_per, H, 2), mode index (N, n_per))."""
    n = len(cond)
    scen = cond[:, :len(SCENARIOS)].argmax(1)
    modes = np.stack([rng.choice(SCENARIOS[s].n_modes, n_per, p=SCENARIOS[s].weights) for s in scen])
    rep = np.repeat(cond, n_per, 0)
    paths = mode_paths(rep, 1.0 + 0.05 * rng.standard_normal(n * n_per), 0.03 * rng.standard_normal(n * n_per))
    traj = paths[np.arange(n * n_per), modes.reshape(-1)]
    return traj.reshape(n, n_per, HORIZON, 2), modes


def training_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n (condition, one trajectory) pairs spread evenly over the scenarios: what demonstrations look like."""
    rng = np.random.default_rng(seed)
    cond = np.concatenate([make_conditions(s, n // len(SCENARIOS), rng) for s in range(len(SCENARIOS))])
    traj, _ = sample_true(cond, 1, rng)
    return cond, traj[:, 0]


def assign_modes(cond: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """samples (N, S, H, 2) -> (nearest mode (N, S), RMS distance to it (N, S))."""
    paths = mode_paths(cond)  # (N, M, H, 2)
    d = np.sqrt(((samples[:, :, None] - paths[:, None]) ** 2).mean((-1, -2)))  # (N, S, M)
    d = np.where(np.isnan(d), np.inf, d)
    return d.argmin(-1), d.min(-1)


def metrics(cond: np.ndarray, samples: np.ndarray, true_heldout: np.ndarray) -> dict[str, float]:
    """Mode coverage, mode-frequency total variation, Chamfer (RMS) to held-out true samples, off-mode share.

    All conditions must belong to one scenario (so the weights are one vector).
    """
    scen = SCENARIOS[int(cond[0, :len(SCENARIOS)].argmax())]
    mode, dist = assign_modes(cond, samples)
    on = dist < OFF_MODE_RMS
    hit = np.stack([((mode == k) & on).any(1) for k in range(scen.n_modes)], 1)  # (N, M)
    counts = np.array([((mode == k) & on).sum() for k in range(scen.n_modes)], float)
    freq = counts / counts.sum() if counts.sum() else np.zeros_like(counts)
    tv = 0.5 * np.abs(freq - np.array(scen.weights)).sum() if counts.sum() else 1.0
    d = pairwise_sq_dist(torch.as_tensor(true_heldout), torch.as_tensor(samples)).sqrt()
    chamfer = (d.min(2).values.mean(1) + d.min(1).values.mean(1)).mean()
    return {"mode_coverage": float(hit.mean()), "mode_tv": float(tv), "chamfer_rms": float(chamfer),
            "off_mode_fraction": float(1 - on.mean())}
