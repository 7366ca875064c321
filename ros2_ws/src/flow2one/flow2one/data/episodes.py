"""The training dataset on disk: one compressed .npz per episode plus its metadata.

Scripted sim experts and the bag converter both write this format, so training never knows where a
demonstration came from. Writes are atomic (temp file + rename): a crash never leaves half an episode.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flow2one.perception.crop import CloudCrop, common_crop
from flow2one.spec import ACTION_DIM, N_POINTS, PROPRIO_DIM, STEP_DT


@dataclass
class EpisodeMeta:
    task: str
    source: str  # "sim-expert", "teleop", ...
    success: bool | None  # None: not known (a crashed recording, a third-party bag without a verdict)
    mode: int = -1  # index of the strategy the expert chose; -1 = unknown (human demos)
    seed: int | None = None
    dt: float = STEP_DT
    note: str = ""
    camera_names: list[str] = field(default_factory=list)
    # Episode time (s) of an event nothing before it predicts (pop_up's pop): windows that start before it
    # end there (data/windows.py). None: no such event.
    event_t: float | None = None
    # The point-cloud crop the episode's clouds were made with (flow2one.perception.crop.CloudCrop.to_dict()),
    # carried to the model card. None: not recorded (episodes written before it was).
    cloud_crop: dict[str, Any] | None = None

    def crop(self) -> CloudCrop | None:
        return None if self.cloud_crop is None else CloudCrop.from_params(self.cloud_crop, "episode cloud_crop")


@dataclass
class Episode:
    """Arrays sampled every `meta.dt` seconds, T steps.

    proprio[t]: measured state (ACTION_NAMES layout); action[t]: target commanded at step t;
    points[t]: (N_POINTS, 3) float32 cloud in the base frame; rgb/depth optional per camera view.
    """

    meta: EpisodeMeta
    t: np.ndarray  # (T,) float64 seconds from episode start
    proprio: np.ndarray  # (T, PROPRIO_DIM) float32
    action: np.ndarray  # (T, ACTION_DIM) float32
    points: np.ndarray  # (T, N_POINTS, 3) float32
    rgb: np.ndarray | None = None  # (T, V, h, w, 3) uint8
    depth: np.ndarray | None = None  # (T, V, h, w) float32 metres
    # (T, H, ACTION_DIM) float32: each step's own chunk label. DAgger writes the expert's plan from each state
    # here; without it a window's label is the next H actions, which in a DAgger episode follow the policy's path.
    action_chunk: np.ndarray | None = None

    def __post_init__(self) -> None:
        T = len(self.t)
        checks = {
            "proprio": (self.proprio, (T, PROPRIO_DIM)),
            "action": (self.action, (T, ACTION_DIM)),
            "points": (self.points, (T, N_POINTS, 3)),
        }
        for name, (arr, shape) in checks.items():
            if arr.shape != shape:
                raise ValueError(f"episode {name} has shape {arr.shape}, expected {shape}")
        c = self.action_chunk
        if c is not None and (c.ndim != 3 or c.shape[0] != T or c.shape[1] < 1 or c.shape[2] != ACTION_DIM):
            raise ValueError(f"episode action_chunk has shape {c.shape}, expected ({T}, H, {ACTION_DIM})")
        for name in ("proprio", "action", "points") + (("action_chunk",) if c is not None else ()):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"episode {name} contains NaN or inf")
        if T and np.any(np.diff(self.t) <= 0):
            raise ValueError("episode timestamps must increase strictly")
        for name in ("rgb", "depth"):
            arr = getattr(self, name)
            if arr is not None and (len(arr) != T or arr.shape[1] != len(self.meta.camera_names)):
                raise ValueError(f"episode {name} has shape {arr.shape}; expected T={T} and "
                                 f"{len(self.meta.camera_names)} views (meta.camera_names)")

    def __len__(self) -> int:
        return len(self.t)


def write_episode(directory: str | Path, index: int, episode: Episode) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"episode_{index:05d}.npz"
    arrays = {k: getattr(episode, k) for k in ("t", "proprio", "action", "points", "rgb", "depth", "action_chunk")}
    arrays = {k: v for k, v in arrays.items() if v is not None}
    arrays["meta"] = np.frombuffer(json.dumps(asdict(episode.meta)).encode(), dtype=np.uint8)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    return path


def read_episode(path: str | Path) -> Episode:
    path = Path(path)
    try:
        with np.load(path) as z:
            meta = EpisodeMeta(**json.loads(bytes(z["meta"]).decode()))
            return Episode(meta=meta, **{k: z[k] for k in z.files if k != "meta"})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable flow2one episode: {exc}") from exc


def read_meta(path: str | Path) -> EpisodeMeta:
    """An episode's metadata alone (the arrays stay compressed on disk)."""
    try:
        with np.load(path) as z:
            return EpisodeMeta(**json.loads(bytes(z["meta"]).decode()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a readable flow2one episode: {exc}") from exc


def dataset_crop(directory: str | Path) -> CloudCrop | None:
    """The point-cloud crop of every episode in `directory` (None: some episode does not record it)."""
    return common_crop((read_meta(p).crop() for p in list_episodes(directory)), str(directory))


def list_episodes(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("episode_*.npz"))
