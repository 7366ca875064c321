"""An independent checker of the executor's command stream, written from SafetyLimits' documented meaning.

It shares no code with flow2one.control (its own rotation maths, its own reading of the limits), so a
bug in the filter cannot hide in the checker. The contract it checks, for each command relative to the
previous command (or anchor) with tau = min(elapsed, command_period), velocities restarting from zero
after a gap of more than GAP_PERIODS command periods (franky holds the last target meanwhile):
  finite values; position in the workspace box; |position - measured EE| <= max_lead per axis (the
  measured EE read for that command); per-axis speed <= lin_speed and per-axis velocity change <=
  max_lin_accel * tau; orientation within max_rot_from_ref (geodesic) of the reference; angular speed
  <= ang_speed and angular velocity change <= max_ang_accel * tau; gripper within its range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

GAP_PERIODS = 2.0  # part of the contract (control/safety.py): a longer gap means franky held, v = 0


@dataclass
class Record:
    kind: str  # "anchor" | "command"
    t: float
    position: np.ndarray
    rotation: np.ndarray
    gripper: float
    measured: np.ndarray | None = None  # measured EE position read for this command


def _quat(r: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion (w, x, y, z), Shepperd's method."""
    tr = np.trace(r)
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        return np.array([0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s])
    i = int(np.argmax(np.diag(r)))
    j, k = (i + 1) % 3, (i + 2) % 3
    s = 2.0 * math.sqrt(max(1.0 + r[i, i] - r[j, j] - r[k, k], 1e-300))
    q = np.empty(4)
    q[0] = (r[k, j] - r[j, k]) / s
    q[1 + i] = 0.25 * s
    q[1 + j] = (r[j, i] + r[i, j]) / s
    q[1 + k] = (r[k, i] + r[i, k]) / s
    return q


def rotvec(r: np.ndarray) -> np.ndarray:
    """Rotation matrix -> rotation vector (angle in [0, pi]) via the quaternion."""
    q = _quat(r)
    if q[0] < 0:
        q = -q
    v = q[1:]
    n = np.linalg.norm(v)
    if n < 1e-15:
        return 2.0 * v
    return v / n * (2.0 * math.atan2(n, q[0]))


def angle(r: np.ndarray) -> float:
    return float(np.linalg.norm(rotvec(r)))


def check(records: list[Record], limits, tol: float = 1e-7, rot_tol: float = 1e-6) -> list[str]:
    """Every violation of the contract above, as readable strings (empty: the stream is within limits)."""
    out: list[str] = []
    lo, hi = np.asarray(limits.workspace_min, float), np.asarray(limits.workspace_max, float)
    c0, c1 = np.asarray(limits.reference_rot6d[:3], float), np.asarray(limits.reference_rot6d[3:], float)
    x = c0 / np.linalg.norm(c0)
    y = c1 - x * (x @ c1)
    y /= np.linalg.norm(y)
    ref = np.stack([x, y, np.cross(x, y)], axis=1)
    lin_speed = min(limits.max_lin_speed, limits.max_lin_step / limits.command_period)
    ang_speed = min(limits.max_ang_speed, limits.max_ang_step / limits.command_period)
    prev: Record | None = None
    v_prev, w_prev = np.zeros(3), np.zeros(3)
    for i, rec in enumerate(records):
        p, r, g = np.asarray(rec.position, float), np.asarray(rec.rotation, float), float(rec.gripper)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(r)) and math.isfinite(g)):
            out.append(f"#{i} {rec.kind}: non-finite")
            continue
        if np.abs(r.T @ r - np.eye(3)).max() > 1e-6 or abs(np.linalg.det(r) - 1.0) > 1e-6:
            out.append(f"#{i} {rec.kind}: rotation not orthonormal")
            continue
        if np.any(p < lo - tol) or np.any(p > hi + tol):
            out.append(f"#{i} {rec.kind}: position {np.round(p, 4).tolist()} outside the box")
        dev = angle(ref.T @ r)
        if dev > limits.max_rot_from_ref + rot_tol:
            out.append(f"#{i} {rec.kind}: orientation {dev:.4f} rad from the reference > {limits.max_rot_from_ref}")
        if not (limits.gripper_min - tol <= g <= limits.gripper_max + tol):
            out.append(f"#{i} {rec.kind}: gripper {g} outside [{limits.gripper_min}, {limits.gripper_max}]")
        if rec.kind == "anchor":
            prev, v_prev, w_prev = rec, np.zeros(3), np.zeros(3)
            continue
        if rec.measured is not None:
            lead = np.abs(p - np.asarray(rec.measured, float)).max()
            if not lead <= limits.max_lead + tol:
                out.append(f"#{i}: {lead:.4f} m from the measured EE > max_lead {limits.max_lead}")
        if prev is None:
            out.append(f"#{i}: command before any anchor")
            continue
        elapsed = rec.t - prev.t
        if elapsed > GAP_PERIODS * limits.command_period:
            v_prev, w_prev = np.zeros(3), np.zeros(3)
        tau = min(elapsed, limits.command_period)
        if tau <= 0:
            if np.abs(p - prev.position).max() > tol or np.abs(r - prev.rotation).max() > 1e-6:
                out.append(f"#{i}: moved with no time elapsed")
            continue
        v = (p - prev.position) / tau
        w = rotvec(r @ prev.rotation.T) / tau
        if np.abs(v).max() > lin_speed + tol:
            out.append(f"#{i}: linear speed {np.abs(v).max():.4f} > {lin_speed:.4f} m/s")
        if np.abs(v - v_prev).max() > limits.max_lin_accel * tau + tol:
            out.append(f"#{i}: linear accel {np.abs(v - v_prev).max() / tau:.3f} > {limits.max_lin_accel} m/s^2")
        if np.linalg.norm(w) > ang_speed + rot_tol:
            out.append(f"#{i}: angular speed {np.linalg.norm(w):.4f} > {ang_speed:.4f} rad/s")
        if np.linalg.norm(w - w_prev) > limits.max_ang_accel * tau + rot_tol:
            out.append(f"#{i}: angular accel {np.linalg.norm(w - w_prev) / tau:.3f} > {limits.max_ang_accel} rad/s^2")
        prev, v_prev, w_prev = rec, v, w
    return out


def max_deviation(records: list[Record], limits) -> float:
    """Largest geodesic distance of any command from the reference orientation (rad)."""
    c0, c1 = np.asarray(limits.reference_rot6d[:3], float), np.asarray(limits.reference_rot6d[3:], float)
    x = c0 / np.linalg.norm(c0)
    y = c1 - x * (x @ c1)
    y /= np.linalg.norm(y)
    ref = np.stack([x, y, np.cross(x, y)], axis=1)
    devs = [angle(ref.T @ np.asarray(r.rotation)) for r in records if np.all(np.isfinite(r.rotation))]
    return max(devs, default=0.0)
