"""The point-cloud crop a model was trained on, carried from the demos to the model card and checked where it runs.

A model trained on clouds of one crop box runs on clouds of another without an error and aims wrong: with the
box floor at z 0.005 the table is left out and all 4,096 points describe objects and the gripper, so a student
trained on such clouds and fed the table's points sees a scene it never saw. So each episode records the box
and voxel size its clouds were made with (EpisodeMeta.cloud_crop), training writes the one crop of its
episodes on the model card, and the policy node, `preflight` and the sim evaluations refuse a card whose crop
is not the one their point-cloud pipeline applies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

# Differences below this (metres) are the same box: YAML and JSON round trips of the same numbers.
TOLERANCE_M = 1e-6


@dataclass(frozen=True)
class CloudCrop:
    workspace_min: tuple[float, float, float]  # base frame, metres
    workspace_max: tuple[float, float, float]
    voxel_size: float  # metres

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.isfinite(lo).all() and np.isfinite(hi).all()
                                                       and (hi > lo).all()):
            raise ValueError(f"cloud crop box must be 3 finite values each with max > min, got {self.workspace_min} "
                             f".. {self.workspace_max}")
        if not (np.isfinite(self.voxel_size) and self.voxel_size > 0):
            raise ValueError(f"cloud crop voxel_size must be > 0, got {self.voxel_size}")

    @classmethod
    def from_params(cls, p: Mapping[str, Any], source: str = "cloud crop") -> CloudCrop:
        """From a pointcloud node's parameters or a card's `cloud_crop` (both name the three values alike)."""
        try:
            return cls(tuple(float(x) for x in p["workspace_min"]), tuple(float(x) for x in p["workspace_max"]),
                       float(p["voxel_size"]))
        except KeyError as exc:
            raise ValueError(f"{source}: lacks {exc.args[0]}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {"workspace_min": list(self.workspace_min), "workspace_max": list(self.workspace_max),
                "voxel_size": self.voxel_size}

    def with_floor(self, z: float) -> CloudCrop:
        """This box with its floor at `z` (ValueError, as any box, when not finite and below the top)."""
        return replace(self, workspace_min=(*self.workspace_min[:2], float(z)))

    def same(self, other: CloudCrop) -> bool:
        a = np.array([*self.workspace_min, *self.workspace_max, self.voxel_size])
        b = np.array([*other.workspace_min, *other.workspace_max, other.voxel_size])
        return bool(np.all(np.abs(a - b) <= TOLERANCE_M))

    def __str__(self) -> str:
        def v(xs: Iterable[float]) -> str:
            return "[" + ", ".join(f"{x:g}" for x in xs) + "]"
        return f"box {v(self.workspace_min)} .. {v(self.workspace_max)} m, voxel {self.voxel_size:g} m"


def common_crop(crops: Iterable[CloudCrop | None], source: str) -> CloudCrop | None:
    """The one crop of a dataset's episodes; None when any episode does not record one (older recordings).

    Raises ValueError when two episodes record different crops: a model trained on both fits neither."""
    found: CloudCrop | None = None
    for crop in crops:
        if crop is None:
            return None
        if found is None:
            found = crop
        elif not crop.same(found):
            raise ValueError(f"{source}: episodes were recorded with different point-cloud crops ({found}; {crop}); "
                             "train on one crop")
    return found


@dataclass(frozen=True)
class LinkedCropParams:
    """Node parameters that hold the pointcloud node's crop: flow2one.graph.LINKS fills them from its section
    of the same parameter files, so a node checks or records the crop its clouds really have."""

    cloud_workspace_min: tuple[float, ...] = (0.0, 0.0, 0.0)
    cloud_workspace_max: tuple[float, ...] = (0.0, 0.0, 0.0)
    cloud_voxel_size: float = 0.0  # 0: not known (the node was started without the pointcloud node's section)

    @property
    def cloud_crop(self) -> CloudCrop | None:
        if self.cloud_voxel_size == 0.0:
            return None
        return CloudCrop(tuple(self.cloud_workspace_min), tuple(self.cloud_workspace_max), self.cloud_voxel_size)
