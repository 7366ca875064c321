"""Analytic depth images of a table with boxes, for the benchmark and tests (exact ground truth, no renderer).

Also the two-camera D435-like rig used by the benchmark, the example calibration and the tests, so they
all measure the same geometry.
"""

from __future__ import annotations

import numpy as np

from flow2one.perception.camera_model import CameraIntrinsics, CameraModel
from flow2one.perception.cloud import box_depth_interval, pixel_rays

D435_640 = CameraIntrinsics(640, 480, 615.0, 615.0, 320.0, 240.0)  # typical D435 color intrinsics at 640x480


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 base <- optical (z forward, x right, y down) pose of a camera at `eye` looking at `target`."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at: view direction is parallel to 'up'")
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    T[:3, 3] = eye
    return T


def two_camera_rig(intr: CameraIntrinsics = D435_640) -> list[CameraModel]:
    """Front and side cameras about 1 m from a table top centred at (0.5, 0, 0) in the base frame."""
    target = (0.5, 0.0, 0.05)
    return [CameraModel("front", intr, look_at((1.3, 0.0, 0.6), target)),
            CameraModel("side", intr, look_at((0.5, -0.8, 0.6), target))]


def table_scene(seed: int = 0, n_boxes: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    """A table slab (top at z = 0) and a few random boxes on it, as (min, max) corners."""
    rng = np.random.default_rng(seed)
    boxes = [(np.array([0.0, -0.6, -0.05]), np.array([1.0, 0.6, 0.0]))]
    for _ in range(n_boxes):
        c = rng.uniform([0.3, -0.25], [0.7, 0.25])
        half = rng.uniform(0.02, 0.06, size=3)
        boxes.append((np.array([c[0] - half[0], c[1] - half[1], 0.0]),
                      np.array([c[0] + half[0], c[1] + half[1], 2 * half[2]])))
    return boxes


def render_depth(cam: CameraModel, boxes: list[tuple[np.ndarray, np.ndarray]],
                 T_base_camera: np.ndarray | None = None) -> np.ndarray:
    """(h, w) float32 z-depth in metres of the nearest box along each pixel ray; 0 where nothing is hit."""
    T = cam.T_base_camera if T_base_camera is None else np.asarray(T_base_camera)
    rays = pixel_rays(cam.intrinsics) @ T[:3, :3].T
    depth = np.full(len(rays), np.inf)
    for lo, hi in boxes:
        near, _ = box_depth_interval(rays, T[:3, 3], np.asarray(lo, float), np.asarray(hi, float))
        depth = np.minimum(depth, near)
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(cam.intrinsics.height, cam.intrinsics.width).astype(np.float32)
