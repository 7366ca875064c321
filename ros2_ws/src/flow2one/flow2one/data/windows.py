"""Training windows from episodes: (observation at step t, the next H commanded actions).

A window's label is the H actions from t, or the step's own chunk label where the episode has one (DAgger:
the expert's plan from that state). Chunks running past an episode's end repeat its last action (the robot
holds its final target), as Diffusion Policy and PointFlowMatch do, so every step of every episode yields a
window. `points_prev` is the cloud `history_steps` steps before t, the first one for early steps (the
runtime, too, repeats its oldest cloud until it has history). With `motion_steps`, `proprio` is the proprio
at t followed by its change since `motion_steps` steps before t (zero at an episode's start, where the arm
is at rest; the runtime's ObservationAssembler computes the same from the robot states it kept).

A window that starts before an unpredictable event (`meta.event_t`, pop_up's pop) ends at it the same way:
what follows the event is not in its observation, and a chunk holding it teaches a policy to act it out at
a time it cannot know (both pop_up models dived before the pop, results/README.md, pop_up).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flow2one.data.episodes import Episode, list_episodes, read_episode
from flow2one.spec import HORIZON


def episode_windows(ep: Episode, horizon: int = HORIZON, stride: int = 1,
                    modalities: tuple[str, ...] = ("points", "proprio"),
                    history_steps: int = 0, motion_steps: int = 0) -> dict[str, np.ndarray]:
    """Arrays keyed by modality plus `action` (N, horizon, A) for windows starting every `stride` steps."""
    T = len(ep)
    if T == 0:
        raise ValueError("episode has no steps")
    starts = np.arange(0, T, stride)
    offset = np.broadcast_to(np.arange(horizon), (len(starts), horizon)).copy()  # steps into each window's chunk
    if ep.meta.event_t is not None:
        event = int(np.searchsorted(ep.t, ep.meta.event_t))  # the first step at or after the event
        before = starts < event
        offset[before] = np.minimum(offset[before], (event - 1 - starts[before])[:, None])
    if ep.action_chunk is None:
        out = {"action": ep.action[np.minimum(starts[:, None] + offset, T - 1)].astype(np.float32)}
    else:  # each step's own chunk label (a plan: not cut at the episode's end)
        j = np.minimum(offset, ep.action_chunk.shape[1] - 1)
        out = {"action": ep.action_chunk[starts[:, None], j].astype(np.float32)}
    for name in modalities:
        arr = getattr(ep, "points" if name == "points_prev" else name)
        if arr is None:
            raise ValueError(f"episode {ep.meta.task!r} has no {name!r} but the policy uses it")
        out[name] = arr[np.maximum(starts - history_steps, 0)] if name == "points_prev" else arr[starts]
    if motion_steps and "proprio" in out:
        now = out["proprio"]
        out["proprio"] = np.concatenate([now, now - ep.proprio[np.maximum(starts - motion_steps, 0)]], axis=1)
    return out


def load_windows(directory: str | Path, horizon: int = HORIZON, stride: int = 1,
                 modalities: tuple[str, ...] = ("points", "proprio"),
                 episodes: slice | None = None, history_steps: int = 0,
                 motion_steps: int = 0) -> dict[str, np.ndarray]:
    """All windows of a dataset directory (optionally a slice of its episodes, e.g. a held-out split).

    Also returns `episode` (N,) int: the index of the episode each window came from.
    """
    paths = list_episodes(directory)
    if episodes is not None:
        paths = paths[episodes]
    if not paths:
        raise ValueError(f"{directory}: no episode_*.npz files (dataset written by flow2one.data.episodes)")
    parts = []
    for i, p in enumerate(paths):
        w = episode_windows(read_episode(p), horizon, stride, modalities, history_steps, motion_steps)
        w["episode"] = np.full(len(w["action"]), i, dtype=np.int64)
        parts.append(w)
    return {k: np.concatenate([w[k] for w in parts]) for k in parts[0]}
