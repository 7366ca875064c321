"""Rotation-vector maps (Rodrigues) for the safety filter's angular limits.

scipy is not a dependency of the robot image; these two small functions are all the filter needs.
"""

from __future__ import annotations

import numpy as np


def log(rot: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) -> rotation vector (3,) (axis * angle, angle in [0, pi])."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    angle = float(np.arccos(cos))
    w = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    if angle < 1e-7:
        return w / 2.0
    if np.pi - angle < 1e-4:  # near pi the skew part vanishes; take the axis from the symmetric part
        sym = (rot + np.eye(3)) / 2.0
        k = int(np.argmax(np.diag(sym)))
        axis = sym[:, k] / np.sqrt(max(sym[k, k], 1e-12))
        axis /= np.linalg.norm(axis)
        if np.dot(axis, w) < 0:
            axis = -axis
        return axis * angle
    return w * (angle / (2.0 * np.sin(angle)))


def exp(w: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) -> rotation matrix (3, 3)."""
    angle = float(np.linalg.norm(w))
    k = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    if angle < 1e-9:
        return np.eye(3) + k
    k /= angle
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)
