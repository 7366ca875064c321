"""The last check before franky: every target passes `SafetyFilter.filter` or is not sent.

Guarantees, for every command relative to the previous one (or to the anchor, the measured pose taken
when streaming (re)starts), with tau = min(time since the previous command, command_period):
  - all values finite, rotation orthonormal (a 6-D rotation is re-orthonormalised, degenerate ones rejected);
  - position inside the workspace box and within max_lead (per axis) of the measured EE position;
  - per-axis speed |dp/tau| <= limits.lin_speed and per-axis acceleration |dv| <= max_lin_accel * tau;
  - orientation within max_rot_from_ref of the reference;
  - angular speed |w| <= limits.ang_speed and angular acceleration |dw| <= max_ang_accel * tau;
  - gripper width inside [gripper_min, gripper_max].
Walls (box and lead) and the acceleration bound hold together because velocity toward each wall is
capped by the braking distance v^2 / (2a): from any admissible state, braking at max_lin_accel stays
inside, so the admissible set is never empty (see `_axis_bounds`). The cone is a wall for the rotation
stream in the same way: the angular speed is capped so that braking stops short of max_rot_from_ref
(the geodesic distance grows by at most |w| tau per command), and the angular velocity is the exact
projection onto the intersection of the speed and acceleration balls. When the measured EE moves so that
no admissible command exists (it is farther from the last command than tracking allows), the filter
raises MeasuredPoseFault instead of dragging the command after it. `audit` re-checks a recorded
command stream against these rules from the poses alone, independently of the filter's internal state.
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
_ROT_GUARD = 1e-9  # rad kept free of the cone edge for round-off


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


class MeasuredPoseFault(RejectedTarget):
    """The measured EE is where no admissible command can follow from the last one: a sensor fault, a
    collision or lost tracking. The executor stops and faults; it never follows such a reading."""


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
    # The 6-D rotation is scale-free: normalise each column by its largest entry first, so huge values
    # (1e200) do not overflow the norms below and tiny ones do not underflow them.
    c0, c1 = a[3:6], a[6:9]
    s0, s1 = np.abs(c0).max(), np.abs(c1).max()
    if s0 == 0.0 or s1 == 0.0:
        raise RejectedTarget("rotation 6-D columns are degenerate (zero)")
    c0, c1 = c0 / s0, c1 / s1
    n0 = np.linalg.norm(c0)
    if np.linalg.norm(c1 - np.dot(c1, c0) / n0**2 * c0) < 1e-6 * np.linalg.norm(c1):
        raise RejectedTarget("rotation 6-D columns are degenerate (parallel)")
    rot = rot6d_to_matrix(np.concatenate([c0, c1]))
    if not np.all(np.isfinite(rot)):
        raise RejectedTarget("rotation 6-D columns are degenerate")
    return a[:3].copy(), rot, float(a[9])


def project_two_balls(x: np.ndarray, c: np.ndarray, r_c: float, r_0: float) -> np.ndarray:
    """The point closest to x in {|w - c| <= r_c} and {|w| <= r_0} (the intersection must not be empty).

    Exact: x itself if admissible; else its projection on one ball when that lies in the other; else
    the closest point of the circle where the two spheres meet (the optimum then touches both)."""
    if np.linalg.norm(x - c) <= r_c and np.linalg.norm(x) <= r_0:
        return x.copy()
    d = x - c
    on_c = c + d * (r_c / np.linalg.norm(d)) if np.linalg.norm(d) > r_c else x.copy()
    if np.linalg.norm(on_c) <= r_0 * (1 + 1e-12):
        return on_c
    on_0 = x * (r_0 / np.linalg.norm(x)) if np.linalg.norm(x) > r_0 else x.copy()
    if np.linalg.norm(on_0 - c) <= r_c * (1 + 1e-12):
        return on_0
    dist = float(np.linalg.norm(c))
    if dist < 1e-15:  # concentric: the smaller ball, handled above unless round-off
        return x * (min(r_c, r_0) / max(np.linalg.norm(x), 1e-300))
    n = c / dist
    h = (r_0 * r_0 - r_c * r_c + dist * dist) / (2.0 * dist)  # the circle's plane: w . n = h
    rho = np.sqrt(max(r_0 * r_0 - h * h, 0.0))
    perp = x - np.dot(x, n) * n
    if np.linalg.norm(perp) < 1e-15:  # x on the axis: every circle point is as close; take any
        perp = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    return h * n + rho * perp / np.linalg.norm(perp)


class SafetyFilter:
    """Stateful limiter of a target stream; `anchor` it on the measured pose before streaming.

    `propose` computes the next command without committing it (so a later guard can still refuse it),
    `commit` makes it the previous command; `filter` does both."""

    def __init__(self, limits: SafetyLimits) -> None:
        self.limits = limits
        self._lo = np.asarray(limits.workspace_min, dtype=np.float64)
        self._hi = np.asarray(limits.workspace_max, dtype=np.float64)
        self._ref = rot6d_to_matrix(np.asarray(limits.reference_rot6d))
        self._last: SafeCommand | None = None
        self._v = np.zeros(3)
        self._w = np.zeros(3)
        self._pending: tuple[SafeCommand, np.ndarray, np.ndarray] | None = None

    @property
    def last(self) -> SafeCommand | None:
        return self._last

    def inside(self, position: np.ndarray) -> bool:
        p = np.asarray(position, dtype=np.float64)
        return bool(np.all(np.isfinite(p)) and np.all(p >= self._lo) and np.all(p <= self._hi))

    def deviation(self, rotation: np.ndarray) -> float:
        """Geodesic distance (rad) of a rotation from the reference orientation."""
        return float(np.linalg.norm(so3.log(self._ref.T @ np.asarray(rotation, dtype=np.float64))))

    def anchor(self, t: float, position: np.ndarray, rotation: np.ndarray, gripper: float) -> SafeCommand:
        """Restart from a measured pose at rest. Raises RejectedTarget when that pose is unusable."""
        position = np.asarray(position, dtype=np.float64)
        rotation = np.asarray(rotation, dtype=np.float64)
        if not (np.all(np.isfinite(rotation)) and np.isfinite(gripper)):
            raise RejectedTarget("measured EE pose has NaN/inf values")
        if np.abs(rotation.T @ rotation - np.eye(3)).max() > 1e-4 or abs(np.linalg.det(rotation) - 1.0) > 1e-4:
            raise RejectedTarget("measured EE rotation is not a rotation matrix")
        if not self.inside(position):
            raise RejectedTarget(f"measured EE position {np.round(position, 4).tolist()} is outside the "
                                 f"workspace box {self.limits.workspace_min}..{self.limits.workspace_max}")
        dev = self.deviation(rotation)
        if not dev <= self.limits.max_rot_from_ref:
            raise RejectedTarget(f"measured EE orientation is {dev:.2f} rad from the reference orientation "
                                 f"(max_rot_from_ref {self.limits.max_rot_from_ref})")
        u, _, vt = np.linalg.svd(rotation)
        g = float(np.clip(gripper, self.limits.gripper_min, self.limits.gripper_max))
        self._last = SafeCommand(t, position.copy(), u @ vt, g)
        self._v[:] = 0.0
        self._w[:] = 0.0
        self._pending = None
        return self._last

    def filter(self, t: float, action: np.ndarray, measured_position: np.ndarray | None = None) -> SafeCommand:
        """The safe command closest to `action` at time t, committed; raises RejectedTarget for unusable input."""
        cmd = self.propose(t, action, measured_position)
        self.commit(cmd)
        return cmd

    def commit(self, cmd: SafeCommand) -> None:
        """Make a proposed command the previous one (it is being sent)."""
        if self._pending is not None and self._pending[0] is cmd:
            self._last, self._v, self._w = self._pending
        self._pending = None

    def propose(self, t: float, action: np.ndarray, measured_position: np.ndarray | None = None) -> SafeCommand:
        """The safe command closest to `action` at time t, not yet committed."""
        if self._last is None:
            raise RuntimeError("SafetyFilter.filter before anchor()")
        lim, prev = self.limits, self._last
        p_des, r_des, g_des = validate_action(action)
        clamped: list[str] = []
        elapsed = t - prev.t
        v_prev, w_prev = (np.zeros(3), np.zeros(3)) if elapsed > GAP_PERIODS * lim.command_period else (self._v, self._w)
        tau = min(max(elapsed, 0.0), lim.command_period)
        if tau < MIN_PERIOD:  # (almost) no time has passed: the only admissible command is the previous one
            self._pending = None
            return prev

        # Translation: walls (box, and the lead around the measured EE), braking-aware speed, acceleration.
        lo, hi = self._lo, self._hi
        if measured_position is not None:
            m = np.asarray(measured_position, dtype=np.float64)
            if not np.all(np.isfinite(m)):
                raise MeasuredPoseFault("measured EE position has NaN/inf values")
            lag = np.abs(prev.position - m)
            if np.any(lag > lim.max_lead):
                axis = int(np.argmax(lag))
                raise MeasuredPoseFault(
                    f"measured EE is {lag[axis]:.3f} m from the last command on axis {'xyz'[axis]} (max_lead "
                    f"{lim.max_lead} m): sensor fault, collision or lost tracking")
            lo, hi = np.maximum(lo, m - lim.max_lead), np.minimum(hi, m + lim.max_lead)
        p_box = np.clip(p_des, lo, hi)
        if not np.array_equal(p_box, p_des):
            clamped.append("workspace")
        v_des = (p_box - prev.position) / tau
        v_lo, v_hi = self._axis_bounds(prev.position, tau, v_prev, lo, hi)
        if measured_position is not None and np.any(v_lo > v_hi + 1e-12):
            # Only a measurement that moved back toward the command can do this (the box is fixed and the
            # stream keeps its braking distance from every wall): the lead wall came closer than braking allows.
            axis = int(np.argmax(v_lo - v_hi))
            raise MeasuredPoseFault(
                f"measured EE moved {abs(m[axis] - prev.position[axis]):.3f} m from the last command on axis "
                f"{'xyz'[axis]} faster than the command can brake within max_lead {lim.max_lead} m "
                f"(sensor fault, collision or lost tracking)")
        if np.any(v_des < v_lo - 1e-12) or np.any(v_des > v_hi + 1e-12):
            clamped.append("linear")  # a hard limit binds (the braking cap below only avoids overshoot)
        # Toward the desired point no faster than can stop there (costs v^2/2a of lag on moving targets).
        v_cap = _braking_speed(np.abs(p_box - prev.position), tau, lim.max_lin_accel)
        v_new = np.clip(np.clip(v_des, -v_cap, v_cap), np.minimum(v_lo, v_hi), v_hi)  # hard bounds last
        p_new = np.clip(prev.position + v_new * tau, lo, hi)  # round-off only

        # Rotation: desired orientations are kept rot_margin inside the cone (room to brake smoothly);
        # the command itself is held inside it by the speed cap below, whatever the desired stream does.
        dev = so3.log(self._ref.T @ r_des)
        radius = lim.max_rot_from_ref - lim.rot_margin
        if np.linalg.norm(dev) > radius:
            r_des = self._ref @ so3.exp(dev * (radius / np.linalg.norm(dev)))
            clamped.append("orientation")
        e = so3.log(r_des @ prev.rotation.T)
        w_des = e / tau
        # |w| tau + |w|^2 / (2 alpha) <= room: this step plus braking ends inside the cone (triangle inequality
        # of the geodesic distance), and the acceleration ball always reaches below this cap (see module doc).
        room = lim.max_rot_from_ref - self.deviation(prev.rotation) - _ROT_GUARD
        w_max = min(lim.ang_speed, float(_braking_speed(room, tau, lim.max_ang_accel)))
        if np.linalg.norm(w_des) > w_max or np.linalg.norm(w_des - w_prev) > lim.max_ang_accel * tau:
            clamped.append("angular")
        w_cap = float(_braking_speed(np.linalg.norm(e), tau, lim.max_ang_accel))
        if np.linalg.norm(w_des) > w_cap:  # soft: approach without overshoot; the hard bounds follow
            w_des = w_des * (w_cap / np.linalg.norm(w_des))
        w_new = self._ball_step(w_des, w_prev, lim.max_ang_accel * tau, w_max)
        r_new = so3.exp(w_new * tau) @ prev.rotation
        u, _, vt = np.linalg.svd(r_new)  # re-orthonormalise: round-off must not accumulate over hours
        r_new = u @ vt

        g = float(np.clip(g_des, lim.gripper_min, lim.gripper_max))
        if g != g_des:
            clamped.append("gripper")
        cmd = SafeCommand(t, p_new, r_new, g, tuple(clamped))
        self._pending = (cmd, (p_new - prev.position) / tau, so3.log(r_new @ prev.rotation.T) / tau)
        return cmd

    def _axis_bounds(self, p: np.ndarray, tau: float, v_prev: np.ndarray, lo: np.ndarray,
                     hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-axis admissible velocity interval: speed, acceleration and braking distance to the walls."""
        lim = self.limits
        a = lim.max_lin_accel
        v_hi = np.minimum.reduce([v_prev + a * tau, np.full(3, lim.lin_speed), _braking_speed(hi - p, tau, a)])
        v_lo = np.maximum.reduce([v_prev - a * tau, np.full(3, -lim.lin_speed), -_braking_speed(p - lo, tau, a)])
        return v_lo, v_hi

    @staticmethod
    def _ball_step(w_des: np.ndarray, w_prev: np.ndarray, dmax: float, wmax: float) -> np.ndarray:
        """The point closest to w_des with |w - w_prev| <= dmax and |w| <= wmax."""
        return project_two_balls(np.asarray(w_des, dtype=np.float64), np.asarray(w_prev, dtype=np.float64),
                                 dmax, wmax)


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
