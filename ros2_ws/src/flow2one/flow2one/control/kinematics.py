"""Panda / FR3 kinematics for the joint-space guard: forward kinematics, geometric Jacobian, a small IK.

Hand-written (numpy, a few lines) because the guard must work before any robot connection: franky's
`Robot.model` loads libfranka's model library from the robot at connect time, which franky-sim and a
test machine do not serve. Panda and FR3 share these modified-DH parameters (Franka's documentation);
they differ in joint limits, which `JOINT_LIMITS` lists per generation. EE = flange + Franka Hand TCP
(0.1034 m along the flange z, rotated -45 deg about it), which is libfranka's default F_T_EE.
"""

from __future__ import annotations

import numpy as np

from flow2one.control import so3

# (a, d, alpha) per joint, Craig's modified DH: T_i = RotX(alpha) TransX(a) RotZ(q_i) TransZ(d).
_DH = ((0.0, 0.333, 0.0), (0.0, 0.0, -np.pi / 2), (0.0, 0.316, np.pi / 2), (0.0825, 0.0, np.pi / 2),
       (-0.0825, 0.384, -np.pi / 2), (0.0, 0.0, np.pi / 2), (0.088, 0.0, np.pi / 2))
_FLANGE_D = 0.107
_HAND_D = 0.1034

# Hardware joint limits (rad, rad/s) per robot generation, from Franka's datasheets.
JOINT_LIMITS: dict[str, dict[str, tuple[float, ...]]] = {
    "panda": {"q_min": (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973),
              "q_max": (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973),
              "dq_max": (2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61)},
    "fr3": {"q_min": (-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159),
            "q_max": (2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159),
            "dq_max": (2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26)},
}
# Both generations at once: the stack runs unchanged on either arm (and franky-sim is an FR3).
JOINT_LIMITS["both"] = {
    "q_min": tuple(np.maximum(JOINT_LIMITS["panda"]["q_min"], JOINT_LIMITS["fr3"]["q_min"])),
    "q_max": tuple(np.minimum(JOINT_LIMITS["panda"]["q_max"], JOINT_LIMITS["fr3"]["q_max"])),
    "dq_max": tuple(np.minimum(JOINT_LIMITS["panda"]["dq_max"], JOINT_LIMITS["fr3"]["dq_max"])),
}


def _rot_x(alpha: float) -> np.ndarray:
    c, s = np.cos(alpha), np.sin(alpha)
    return np.array([[1.0, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1]])


def _rot_z(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])


def _trans(x: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[0, 3], t[2, 3] = x, z
    return t


_EE = _trans(0.0, _FLANGE_D) @ _trans(0.0, _HAND_D) @ _rot_z(-np.pi / 4)


def fk_frames(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (base->EE (4, 4), joint axes z_i (7, 3), joint origins p_i (7, 3)) in the base frame."""
    t = np.eye(4)
    axes, origins = np.empty((7, 3)), np.empty((7, 3))
    for i, (a, d, alpha) in enumerate(_DH):
        t = t @ _rot_x(alpha) @ _trans(a, 0.0)
        axes[i], origins[i] = t[:3, 2], t[:3, 3]
        t = t @ _rot_z(float(q[i])) @ _trans(0.0, d)
    return t @ _EE, axes, origins


def fk(q: np.ndarray) -> np.ndarray:
    """Base -> EE pose (4, 4) of joint configuration q (7,)."""
    return fk_frames(q)[0]


def fk_and_jacobian(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(base -> EE pose (4, 4), geometric Jacobian (6, 7) at the EE in the base frame, rows (v, w))."""
    ee, axes, origins = fk_frames(q)
    jv = np.cross(axes, ee[:3, 3] - origins)
    return ee, np.concatenate([jv.T, axes.T], axis=0)


def jacobian(q: np.ndarray) -> np.ndarray:
    """Geometric Jacobian (6, 7) at the EE in the base frame: rows (v, w)."""
    return fk_and_jacobian(q)[1]


def manipulability(j: np.ndarray) -> float:
    """Yoshikawa's measure sqrt(det(J J^T)): 0 at a singularity."""
    return float(np.sqrt(max(np.linalg.det(j @ j.T), 0.0)))


def pose_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """6-D error (dp, rotation vector) that takes `current` to `target` (both 4x4), base frame."""
    return np.concatenate([target[:3, 3] - current[:3, 3], so3.log(target[:3, :3] @ current[:3, :3].T)])


def dls_step(j: np.ndarray, twist: np.ndarray, damping: float = 1e-3) -> np.ndarray:
    """Joint motion (7,) for a 6-D EE motion by damped least squares (bounded near singularities)."""
    return j.T @ np.linalg.solve(j @ j.T + damping * np.eye(6), twist)


def ik(target: np.ndarray, q_seed: np.ndarray, iters: int = 50, tol: float = 1e-7) -> np.ndarray:
    """Joint configuration near q_seed that reaches `target` (4, 4) by damped Newton steps."""
    q = np.asarray(q_seed, dtype=np.float64).copy()
    for _ in range(iters):
        err = pose_error(target, fk(q))
        if np.abs(err).max() < tol:
            break
        q += dls_step(jacobian(q), err, 1e-6)
    return q
