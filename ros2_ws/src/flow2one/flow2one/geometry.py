"""Rotation conversions shared by the action space, the executor and the sim (numpy, batched)."""

from __future__ import annotations

import numpy as np


def matrix_to_rot6d(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (..., 6): the first two columns, column-major ([R00, R10, R20, R01, R11, R21])."""
    rot = np.asarray(rot)
    return np.concatenate([rot[..., :, 0], rot[..., :, 1]], axis=-1)


def rot6d_to_matrix(r6: np.ndarray) -> np.ndarray:
    """(..., 6) -> (..., 3, 3) by Gram-Schmidt, so any non-degenerate 6-vector maps to a rotation."""
    r6 = np.asarray(r6, dtype=np.float64)
    a, b = r6[..., 0:3], r6[..., 3:6]
    x = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b - np.sum(x * b, axis=-1, keepdims=True) * x
    y = b / np.linalg.norm(b, axis=-1, keepdims=True)
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternion (..., 4) in (x, y, z, w) order, as ROS and franky use, -> (..., 3, 3)."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )


def matrix_to_quat(rot: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> quaternion (..., 4) in (x, y, z, w) order with w >= 0."""
    rot = np.asarray(rot, dtype=np.float64)
    m = rot.reshape(-1, 3, 3)
    out = np.empty((m.shape[0], 4))
    for i, r in enumerate(m):
        t = np.trace(r)
        if t > 0:
            s = 2.0 * np.sqrt(t + 1.0)
            out[i] = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
        else:
            k = int(np.argmax(np.diag(r)))
            j, l = (k + 1) % 3, (k + 2) % 3
            s = 2.0 * np.sqrt(1.0 + r[k, k] - r[j, j] - r[l, l])
            q = np.empty(4)
            q[k] = 0.25 * s
            q[j] = (r[j, k] + r[k, j]) / s
            q[l] = (r[l, k] + r[k, l]) / s
            q[3] = (r[l, j] - r[j, l]) / s
            out[i] = q
    out *= np.where(out[:, 3:4] < 0, -1.0, 1.0)
    return out.reshape(rot.shape[:-2] + (4,))


def rotation_angle(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """Geodesic angle in radians between rotation matrices (batched)."""
    rel = np.swapaxes(r_a, -1, -2) @ r_b
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(cos, -1.0, 1.0))
