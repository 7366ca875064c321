"""Chunk hand-off for a one-step policy: of M candidates, keep the one that continues the current chunk.

A multimodal policy may switch modes between consecutive chunks (pass left, then right of an obstacle),
and averaging chunks (temporal ensembling) blends modes into a path neither would take. The one-step
student makes M samples as cheap as one batched pass, so we sample M and keep the candidate closest to
the part of the chunk being executed that overlaps it in time (as IMLE Policy does).
"""

from __future__ import annotations

import numpy as np

from flow2one import spec

# Per-dimension weights of the consistency distance: metres and rot6d components matter alike, the
# gripper less (the loss weights of the action space).
WEIGHTS = np.asarray(spec.ACTION_LOSS_WEIGHTS, dtype=np.float32)


def resample_tail(prev: np.ndarray, prev_stamp_ns: int, prev_dt: float, stamp_ns: int, dt: float,
                  horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The previous chunk linearly interpolated at this chunk's step times.

    Returns (values (horizon, A), valid (horizon,) bool): step i of the new chunk is valid where its time
    stamp_ns + i*dt lies within the previous chunk's span.
    """
    t = (stamp_ns - prev_stamp_ns) * 1e-9 + np.arange(horizon) * dt  # seconds since prev stamp
    pos = t / prev_dt
    valid = (pos >= 0) & (pos <= len(prev) - 1)
    lo = np.clip(np.floor(pos).astype(int), 0, len(prev) - 1)
    hi = np.clip(lo + 1, 0, len(prev) - 1)
    frac = np.clip(pos - lo, 0.0, 1.0)[:, None]
    return (1 - frac) * prev[lo] + frac * prev[hi], valid


def select_candidate(candidates: np.ndarray, stamp_ns: int, dt: float, prev: np.ndarray | None = None,
                     prev_stamp_ns: int = 0, prev_dt: float = spec.STEP_DT,
                     weights: np.ndarray = WEIGHTS, window_s: float = 0.0) -> tuple[int, np.ndarray]:
    """candidates (M, H, A) stamped `stamp_ns`; prev (H', A) the chunk being executed, or None.

    window_s > 0 scores only the first window_s seconds of the overlap: the committed prefix, the part of
    the executing plan the arm follows while inference runs and the new chunk blends in. Re-planning many
    times a second, that is where a new chunk must continue the old one (position and velocity); the old
    plan's far tail is a guess the new observation may rightly revise. 0 scores the whole overlap.

    Returns (index of the kept candidate, cost per candidate (M,)). With no previous chunk, or no time
    overlap with it, every cost is 0 and candidate 0 (an unbiased sample) is kept.
    """
    candidates = np.asarray(candidates, dtype=np.float32)
    if candidates.ndim != 3 or candidates.shape[0] < 1:
        raise ValueError(f"candidates must be (M >= 1, H, A), got shape {candidates.shape}")
    m, h, a = candidates.shape
    if weights.shape != (a,):
        raise ValueError(f"weights shape {weights.shape} does not match action dim {a}")
    costs = np.zeros(m, dtype=np.float32)
    if prev is None or m == 1:
        return 0, costs
    prev = np.asarray(prev, dtype=np.float32)
    if prev.ndim != 2 or prev.shape[1] != a:
        raise ValueError(f"previous chunk must be (H', {a}), got shape {prev.shape}")
    target, valid = resample_tail(prev, prev_stamp_ns, prev_dt, stamp_ns, dt, h)
    if window_s > 0:
        valid &= np.arange(h) * dt <= window_s + 1e-9
    if not valid.any():
        return 0, costs
    diff = candidates[:, valid] - target[valid][None]
    costs = (weights * diff * diff).sum(-1).mean(-1).astype(np.float32)
    return int(np.argmin(costs)), costs


def agrees_with_plan(chunk: np.ndarray, stamp_ns: int, dt: float, prev: np.ndarray | None, prev_stamp_ns: int,
                     prev_dt: float, within_m: float) -> bool:
    """Whether `chunk` only restates the executing plan `prev`: the plan covers at least half of the chunk's
    steps, and over that overlap the chunk's positions stay within `within_m` of it on average. Such a chunk
    need not replace the plan. Re-planned many times a second, a one-step policy that replaces its plan each
    time executes only first steps, predicted for an arm at rest, and creeps (results/replan/README.md); kept
    plans execute whole, while a chunk that departs from the plan (the scene changed) still replaces it."""
    if prev is None or not within_m > 0:
        return False
    target, valid = resample_tail(np.asarray(prev, np.float32), prev_stamp_ns, prev_dt, stamp_ns, dt, len(chunk))
    if 2 * int(valid.sum()) < len(chunk):
        return False
    return float(np.linalg.norm(chunk[valid, :3] - target[valid, :3], axis=1).mean()) < within_m
