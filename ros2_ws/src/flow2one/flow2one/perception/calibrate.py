"""Camera extrinsics from ChArUco board views: fixed board, eye-to-hand and eye-in-hand hand-eye, with the
spread of the pose that must stay constant across views as the check that the board scale and poses are right."""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from flow2one.geometry import quat_to_matrix
from flow2one.perception.camera_model import CameraIntrinsics
from flow2one.perception.charuco import (
    BoardSpec,
    average_poses,
    camera_from_fixed_board,
    detect_board,
    eye_in_hand,
    eye_to_hand,
    pose_spread,
)

MODES = ("fixed-board", "eye-to-hand", "eye-in-hand")
# A right board scale and good poses give sub-millimetre spread in the sim and a few mm on a real arm; a
# wrong --square/--marker or mismatched --poses gives centimetres to decimetres. Above these, --write refuses.
MAX_SPREAD_M = 0.01
MAX_SPREAD_DEG = 2.0


def parse_pose(value: object, where: str) -> np.ndarray:
    """A 4x4 matrix, {xyz, quat_xyzw}, or 7 numbers 'x y z qx qy qz qw' -> 4x4."""
    try:
        if isinstance(value, str):
            value = [float(v) for v in value.replace(",", " ").split()]
        if isinstance(value, dict):
            value = [*value["xyz"], *value["quat_xyzw"]]
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape == (4, 4):
            return arr
        if arr.shape == (7,):
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = quat_to_matrix(arr[3:]), arr[:3]
            return T
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{where}: cannot read a pose: {exc}") from exc
    raise ValueError(f"{where}: a pose is a 4x4 matrix, {{xyz, quat_xyzw}} or 7 numbers, got {value!r}")


def calibrate(mode: str, images: dict[str, np.ndarray], intr: CameraIntrinsics, spec: BoardSpec,
              robot_poses: dict[str, np.ndarray] | None = None, board_pose: np.ndarray | None = None,
              method: str = "park") -> tuple[np.ndarray, dict]:
    """The camera's T (base->camera, or ee->camera for eye-in-hand) and a report of what was used.

    The report's `spread_m` / `spread_deg` is the self-consistency check: the pose that must be constant
    across views (board in base, board in ee, or camera in base), recomputed per view with the result.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "fixed-board" and not robot_poses:
        raise ValueError(f"mode {mode} needs the robot pose of every image (--poses)")
    if mode == "fixed-board" and board_pose is None:
        raise ValueError("mode fixed-board needs the board's pose in the base frame (--board-pose)")
    used, skipped, rms = [], [], []
    views: list[np.ndarray] = []
    for name, img in tqdm(sorted(images.items()), desc="detecting board", disable=len(images) < 10):
        if robot_poses is not None and mode != "fixed-board" and name not in robot_poses:
            raise ValueError(f"no robot pose for image {name}")
        det = detect_board(img, spec, intr)
        if det is None:
            skipped.append(name)
            continue
        used.append(name)
        views.append(det.T_camera_board)
        rms.append(det.rms_px)
    need = 1 if mode == "fixed-board" else 3
    if len(views) < need:
        raise ValueError(f"board found in {len(views)} image(s) ({len(skipped)} without it); {mode} needs >= {need}")
    if mode == "fixed-board":
        T = camera_from_fixed_board(board_pose, views)
        constant = [board_pose @ np.linalg.inv(v) for v in views]
    else:
        ee = [robot_poses[n] for n in used]
        if mode == "eye-in-hand":
            T = eye_in_hand(ee, views, method)
            constant = [e @ T @ v for e, v in zip(ee, views)]  # board in base
        else:
            T = eye_to_hand(ee, views, method)
            constant = [np.linalg.inv(e) @ T @ v for e, v in zip(ee, views)]  # board in ee
    spread_m, spread_deg = pose_spread(constant)
    report = {"mode": mode, "views_used": len(used), "views_without_board": skipped,
              "reprojection_rms_px": float(np.mean(rms)), "spread_m": spread_m, "spread_deg": spread_deg,
              "constant_pose": average_poses(constant).round(6).tolist()}
    return T, report
