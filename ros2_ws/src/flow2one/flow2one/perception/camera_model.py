"""Pinhole intrinsics and camera-to-base extrinsics: the shared camera description.

The calibration files (calibration/*.yaml), CameraInfo messages, the sim cameras and the point-cloud
pipeline all convert to and from these two types.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str = "plumb_bob"
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0 and np.isfinite([self.cx, self.cy]).all()):
            raise ValueError(f"invalid focal lengths / principal point: {self}")

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, width: int, height: int, K: np.ndarray, **kw: object) -> CameraIntrinsics:
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        return cls(width, height, float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), **kw)


@dataclass(frozen=True)
class CameraModel:
    """A named camera: intrinsics and the pose of its optical frame in the robot base frame.

    `T_base_camera` maps points from the camera optical frame (x right, y down, z forward, REP 103) to
    the base frame. A wrist camera's pose changes with the arm; `mount` says which frame it is fixed to
    ("base" for external cameras, "ee" for the wrist camera, whose T is then ee->camera).
    """

    name: str
    intrinsics: CameraIntrinsics
    T_base_camera: np.ndarray = field(default_factory=lambda: np.eye(4))
    mount: str = "base"
    serial: str = ""

    def __post_init__(self) -> None:
        T = np.asarray(self.T_base_camera, dtype=np.float64)
        if T.shape != (4, 4) or not np.allclose(T[3], [0, 0, 0, 1]):
            raise ValueError(f"camera {self.name}: T_base_camera must be a 4x4 homogeneous transform")
        if not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-5):
            raise ValueError(f"camera {self.name}: rotation part of T_base_camera is not orthonormal")
        if self.mount not in ("base", "ee"):
            raise ValueError(f"camera {self.name}: mount must be 'base' or 'ee', got {self.mount!r}")
        object.__setattr__(self, "T_base_camera", T)
