"""The last check before franky: every target passes `SafetyFilter.filter` or is not sent.

Guarantees, for every command relative to the previous one (or to the anchor, the measured pose taken
when streaming (re)starts), with tau = min(time since the previous command, command_period):
  - all values finite, rotation orthonormal (a 6-D rotation is re-orthonormalised, degenerate ones rejected);
  - position inside the workspace box, orientation within max_rot_from_ref of the reference;
  - per-axis speed |dp/tau| <= limits.lin_speed and per-axis acceleration |dv| <= max_lin_accel * tau;
  - angular speed |w| <= limits.ang_speed and angular acceleration |dw| <= max_ang_accel * tau;
  - gripper width inside [gripper_min, gripper_max].
The box and the acceleration bound hold together because velocity toward each wall is capped by the
braking distance v^2 / (2a): from any admissible state, braking at max_lin_accel stays in the box, so
the admissible set is never empty (see `_axis_bounds`). `audit` re-checks a recorded command stream
against these rules from the poses alone, independently of the filter's internal state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flow2one.control import so3
from flow2one.control.limits import SafetyLimits
from flow2one.geometry import rot6d_to_matrix
from flow2one.spec import ACTION_DIM

# A gap this many command periods long means franky held the last target: velocity restarts from 0.
GAP_PERIODS = 2.0
MIN_PERIOD = 1e-4  # s; commands closer than this repeat the previous one (no division by ~0)
_EPS = 1e-9


@dataclass(frozen=True)
class SafeCommand:
    """A target that passed the filter: what the adapter hands to franky."""

    t: float  # s, the filter's clock (monotonic)
    position: np.ndarray  # (3,) m
    rotation: np.ndarray  # (3, 3)
    gripper: float  # m
    clamped: tuple[str, ...] = field(default=())  # which limits changed the desired target

    def action(self) -> np.ndarray:
        """The command in the 10-D action layout (xyz, rot6d, gripper)."""
        r = self.rotation
        return np.concatenate([self.position, r[:, 0], r[:, 1], [self.gripper]])


class RejectedTarget(ValueError):
    """A desired target that cannot be made safe (non-finite, wrong shape, degenerate rotation)."""


def _braking_speed(dist: np.ndarray, tau: float, accel: float) -> np.ndarray:
    """Largest speed v >= 0 with v*tau + v^2/(2a) <= dist: still able to stop within `dist`."""
    dist = np.maximum(dist, 0.0)
    return accel * (np.sqrt(tau * tau + 2.0 * dist / accel) - tau)


def validate_action(action: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Shape/finiteness/rotation checks of one 10-D action -> (xyz, rotation matrix, gripper)."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (ACTION_DIM,):
        raise RejectedTarget(f"action must have shape ({ACTION_DIM},), got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise RejectedTarget("action has NaN/inf values")
    c0, c1 = a[3:6], a[6:9]
    n0 = np.linalg.norm(c0)
    if n0 < 1e-6 or np.linalg.norm(c1 - np.dot(c1, c0) / n0**2 * c0) < 1e-6 * max(1.0, np.linalg.norm(c1)):
        raise RejectedTarget("rotation 6-D columns are degenerate (zero or parallel)")
    rot = rot6d_to_matrix(a[3:9])
    if not np.all(np.isfinite(rot)):
        raise RejectedTarget("rotation 6-D columns are degenerate")
    return a[:3].copy(), rot, float(a[9])


class SafetyFilter:
    """Stateful limiter of a target stream; `anchor` it on the measured pose before streaming."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self._lo = np.asarray(limits.workspace_min, dtype=np.float64)
        self._hi = np.asarray(limits.workspace_max, dtype=np.float64)
        self._ref = rot6d_to_matrix(np.asarray(limits.reference_rot6d))
        self._last: SafeCommand | None = None
        self._v = np.zeros(3)
        self._w = np.zeros(3)

    @property
    def last(self) -> SafeCommand | None:
        return self._last

    def inside(self, position: np.ndarray) -> bool:
        p = np.asarray(position, dtype=np.float64)
        return bool(np.all(np.isfinite(p)) and np.all(p >= self._lo) and np.all(p <= self._hi))

    def anchor(self, t: float, position: np.ndarray, rotation: np.ndarray, gripper: float) -> SafeCommand:
        """Restart from a measured pose at rest. Raises RejectedTarget when that pose is outside the box."""
        position = np.asarray(position, dtype=np.float64)
        if not self.inside(position):
            raise RejectedTarget(f"measured EE position {np.round(position, 4).tolist()} is outside the "
                                 f"workspace box {self.limits.workspace_min}..{self.limits.workspace_max}")
        dev = float(np.linalg.norm(so3.log(self._ref.T @ np.asarray(rotation, dtype=np.float64))))
        if dev > self.limits.max_rot_from_ref:
            raise RejectedTarget(f"measured EE orientation is {dev:.2f} rad from the reference orientation "
                                 f"(max_rot_from_ref {self.limits.max_rot_from_ref})")
        g = float(np.clip(gripper, self.limits.gripper_min, self.limits.gripper_max))
        self._last = SafeCommand(t, position.copy(), np.asarray(rotation, dtype=np.float64).copy(), g)
        self._v[:] = 0.0
        self._w[:] = 0.0
        return self._last

    def filter(self, t: float, action: np.ndarray, measured_position: np.ndarray | None = None) -> SafeCommand:
        """The safe command closest to `action` at time t; raises RejectedTarget for unusable input."""
        if self._last is None:
            raise RuntimeError("SafetyFilter.filter before anchor()")
        lim, prev = self.limits, self._last
        p_des, r_des, g_des = validate_action(action)
        clamped: list[str] = []
        elapsed = t - prev.t
        if elapsed > GAP_PERIODS * lim.command_period:
            self._v[:] = 0.0
            self._w[:] = 0.0
        tau = min(max(elapsed, 0.0), lim.command_period)
        if tau < MIN_PERIOD:  # (almost) no time has passed: the only admissible command is the previous one
            return prev

        # Translation: box, lead, braking-aware speed, acceleration (all per axis).
        lo, hi = self._lo, self._hi
        if measured_position is not None and np.all(np.isfinite(measured_position)):
            lo = np.maximum(lo, measured_position - lim.max_lead)
            hi = np.minimum(hi, measured_position + lim.max_lead)
            lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        p_box = np.clip(p_des, lo, hi)
        if not np.array_equal(p_box, p_des):
            clamped.append("workspace")
        v_des = (p_box - prev.position) / tau
        v_lo, v_hi = self._axis_bounds(prev.position, tau)
        if np.any(v_des < v_lo - 1e-12) or np.any(v_des > v_hi + 1e-12):
            clamped.append("linear")  # a hard limit binds (the braking cap below only avoids overshoot)
        # Toward the desired point no faster than can stop there (costs v^2/2a of lag on moving targets).
        v_cap = _braking_speed(np.abs(p_box - prev.position), tau, lim.max_lin_accel)
        v_new = np.clip(np.clip(v_des, -v_cap, v_cap), v_lo, v_hi)  # hard bounds last: they always win
        fallback = v_lo > v_hi  # float round-off only: brake instead
        if np.any(fallback):
            brake = np.sign(self._v) * np.maximum(np.abs(self._v) - lim.max_lin_accel * tau, 0.0)
            v_new = np.where(fallback, brake, v_new)
        p_new = np.clip(prev.position + v_new * tau, self._lo, self._hi)

        # Rotation: a ball around the reference orientation (kept rot_margin inside, the room the
        # stream needs to brake), then speed and acceleration on the base-frame rotation vector.
        dev = so3.log(self._ref.T @ r_des)
        radius = lim.max_rot_from_ref - lim.rot_margin
        if np.linalg.norm(dev) > radius:
            r_des = self._ref @ so3.exp(dev * (radius / np.linalg.norm(dev)))
            clamped.append("orientation")
        e = so3.log(r_des @ prev.rotation.T)
        w_des = e / tau
        if np.linalg.norm(w_des) > lim.ang_speed or np.linalg.norm(w_des - self._w) > lim.max_ang_accel * tau:
            clamped.append("angular")
        w_cap = float(_braking_speed(np.linalg.norm(e), tau, lim.max_ang_accel))
        if np.linalg.norm(w_des) > w_cap:  # soft: approach without overshoot; the hard bounds follow
            w_des = w_des * (w_cap / np.linalg.norm(w_des))
        w_new = self._ball_step(w_des, self._w, lim.max_ang_accel * tau, lim.ang_speed)
        r_new = so3.exp(w_new * tau) @ prev.rotation
        u, _, vt = np.linalg.svd(r_new)  # re-orthonormalise: round-off must not accumulate over hours
        r_new = u @ vt

        g = float(np.clip(g_des, lim.gripper_min, lim.gripper_max))
        if g != g_des:
            clamped.append("gripper")
        self._v = (p_new - prev.position) / tau
        self._w = so3.log(r_new @ prev.rotation.T) / tau
        self._last = SafeCommand(t, p_new, r_new, g, tuple(clamped))
        return self._last

    def _axis_bounds(self, p: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
        """Per-axis admissible velocity interval: speed, acceleration and braking distance to the walls."""
        lim = self.limits
        a = lim.max_lin_accel
        v_hi = np.minimum.reduce([self._v + a * tau, np.full(3, lim.lin_speed),
                                  _braking_speed(self._hi - p, tau, a)])
        v_lo = np.maximum.reduce([self._v - a * tau, np.full(3, -lim.lin_speed),
                                  -_braking_speed(p - self._lo, tau, a)])
        return v_lo, v_hi

    @staticmethod
    def _ball_step(w_des: np.ndarray, w_prev: np.ndarray, dmax: float, wmax: float) -> np.ndarray:
        """Closest-ish point to w_des with |w - w_prev| <= dmax and |w| <= wmax (w_prev inside the second ball)."""
        d = w_des - w_prev
        n = np.linalg.norm(d)
        w = w_prev + d * (dmax / n) if n > dmax else w_des.copy()
        if np.linalg.norm(w) > wmax:
            # Walk from w_prev (inside both balls) toward w: the sphere |x| = wmax is crossed once.
            d = w - w_prev
            a, b, c = d @ d, 2 * w_prev @ d, w_prev @ w_prev - wmax * wmax
            s = (-b + np.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a) if a > 0 else 0.0
            w = w_prev + min(max(s, 0.0), 1.0) * d
            if np.linalg.norm(w) > wmax:  # round-off
                w *= wmax / np.linalg.norm(w)
        return w


def audit(records: list[tuple[str, float, np.ndarray, np.ndarray, float]], limits: SafetyLimits,
          tol: float = 1e-7) -> list[str]:
    """Violations in a recorded stream of ("anchor" | "command", t, position, rotation, gripper).

    Recomputes speeds and accelerations from consecutive poses only, so it checks what franky was
    asked to do, not what the filter believes.
    """
    out: list[str] = []
    lo, hi = np.asarray(limits.workspace_min), np.asarray(limits.workspace_max)
    ref = rot6d_to_matrix(np.asarray(limits.reference_rot6d))
    prev = None
    v_prev, w_prev = np.zeros(3), np.zeros(3)
    for i, (kind, t, p, r, g) in enumerate(records):
        p, r = np.asarray(p, dtype=np.float64), np.asarray(r, dtype=np.float64)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(r)) and np.isfinite(g)):
            out.append(f"#{i}: non-finite command")
            continue
        if kind == "anchor":
            prev, v_prev, w_prev = (t, p, r), np.zeros(3), np.zeros(3)
            continue
        if np.any(p < lo - tol) or np.any(p > hi + tol):
            out.append(f"#{i}: position {p.tolist()} outside the box")
        if np.abs(r.T @ r - np.eye(3)).max() > 1e-6 or abs(np.linalg.det(r) - 1) > 1e-6:
            out.append(f"#{i}: rotation not orthonormal")
        if np.linalg.norm(so3.log(ref.T @ r)) > limits.max_rot_from_ref + 1e-6:
            out.append(f"#{i}: orientation {np.linalg.norm(so3.log(ref.T @ r)):.3f} rad from the reference")
        if not (limits.gripper_min - tol <= g <= limits.gripper_max + tol):
            out.append(f"#{i}: gripper {g} out of range")
        if prev is None:
            out.append(f"#{i}: command before any anchor")
            continue
        t0, p0, r0 = prev
        elapsed = t - t0
        if elapsed > GAP_PERIODS * limits.command_period:
            v_prev, w_prev = np.zeros(3), np.zeros(3)
        tau = min(elapsed, limits.command_period)
        if tau <= 0:
            if np.abs(p - p0).max() > tol or np.abs(r - r0).max() > 1e-6:
                out.append(f"#{i}: moved with no time elapsed")
            continue
        v = (p - p0) / tau
        w = so3.log(r @ r0.T) / tau
        if np.abs(v).max() > limits.lin_speed + tol:
            out.append(f"#{i}: linear speed {np.abs(v).max():.4f} > {limits.lin_speed:.4f} m/s")
        if np.abs(v - v_prev).max() > limits.max_lin_accel * tau + tol:
            out.append(f"#{i}: linear accel {np.abs(v - v_prev).max() / tau:.3f} > {limits.max_lin_accel} m/s^2")
        if np.linalg.norm(w) > limits.ang_speed + 1e-6:
            out.append(f"#{i}: angular speed {np.linalg.norm(w):.4f} > {limits.ang_speed:.4f} rad/s")
        if np.linalg.norm(w - w_prev) > limits.max_ang_accel * tau + 1e-6:
            out.append(f"#{i}: angular accel {np.linalg.norm(w - w_prev) / tau:.3f} > {limits.max_ang_accel}")
        prev, v_prev, w_prev = (t, p, r), v, w
    return out
