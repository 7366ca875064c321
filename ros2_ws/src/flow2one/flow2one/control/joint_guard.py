"""Joint-space guard: a Cartesian command the arm could only follow past its joint limits, faster than
its joints can move, or into a singularity is refused before it reaches franky.

The safety filter bounds the EE; near a singularity a 1 rad/s EE rotation can ask for many rad/s at a
joint, and the box says nothing about the elbow. libfranka would stop such motions with a reflex (a
FAULT mid-task); refusing the target instead keeps franky on the last admissible one, and the
executor's watchdog stops the arm if nothing admissible follows.

A target is judged by the motion franky will make to reach it, not by the step from the last command:
the arm lags its commands, and franky's planner closes that gap along a straight EE path at up to its
Cartesian speed limits. So the guard follows that path from the measured joints in a few re-linearised
steps (one linear step from an arm near a singularity under-predicts the elbow's motion) and checks the
joint positions and the joint speeds that path needs at franky's speeds, and the manipulability where it ends.
"""

from __future__ import annotations

import math

import numpy as np

from flow2one.control import kinematics, so3
from flow2one.control.limits import SafetyLimits
from flow2one.control.safety import SafeCommand

PATH_STEPS = 4  # re-linearisations along the path to a target (a few mm and mrad apart at the usual lead)
# A measured joint is judged by where it would come to rest if the arm were stopped now: up to two state
# periods before the stop starts (the reading that shows it, then the tick that acts), then braking.
# franky-sim's Cartesian stop took joints moving at 0.5-0.6 rad/s 0.024-0.029 rad further, i.e. ~9 rad/s^2
# after a 10 ms tick; 8 rad/s^2 leaves room for a slower stop.
STOP_DECEL = 8.0  # rad/s^2


class JointGuard:
    def __init__(self, generation: str, margin: float, speed_factor: float, min_manipulability: float,
                 limits: SafetyLimits | None = None, state_period_s: float = 0.01) -> None:
        lim = kinematics.JOINT_LIMITS[generation]
        self.q_lo = np.asarray(lim["q_min"]) + margin
        self.q_hi = np.asarray(lim["q_max"]) - margin
        # A Cartesian command leaves the redundant (elbow) motion to the robot's controller, which the
        # path check cannot predict exactly: a measured joint that would stop this close to its hardware
        # limit stops the arm, as does one faster than the hardware allows.
        self.q_lo_hard = np.asarray(lim["q_min"]) + margin / 2
        self.q_hi_hard = np.asarray(lim["q_max"]) - margin / 2
        self.dq_hw = np.asarray(lim["dq_max"])
        self.dq_max = self.dq_hw * speed_factor
        self.min_manipulability = min_manipulability
        self.stop_reaction_s = 2 * state_period_s
        # franky's Cartesian limits as control/franky_robot.py sets them (translation per axis -> norm)
        lim_c = limits or SafetyLimits()
        self.v_max, self.a_lin = math.sqrt(3) * lim_c.lin_speed, math.sqrt(3) * lim_c.max_lin_accel
        self.w_max, self.a_ang = lim_c.ang_speed, lim_c.max_ang_accel

    def violation(self, q: np.ndarray) -> np.ndarray:
        """Per joint, how far (rad) q is outside the limits less the margin (0 inside)."""
        return np.maximum.reduce([np.zeros(7), self.q_lo - q, q - self.q_hi])

    def check_measured(self, q: np.ndarray, dq: np.ndarray) -> str | None:
        """Why the measured joints must stop the arm, or None: a joint faster than its hardware allows, or
        one that, stopped now, would come to rest within half the margin of a hardware limit."""
        fast = np.abs(dq) / self.dq_hw
        if np.any(fast > 1.0):
            i = int(np.argmax(fast))
            return f"joint {i + 1} measured at {dq[i]:.2f} rad/s, beyond its hardware speed {self.dq_hw[i]:.2f}"
        rest = q + dq * self.stop_reaction_s + dq * np.abs(dq) / (2 * STOP_DECEL)
        over = np.maximum.reduce([self.q_lo_hard - q, q - self.q_hi_hard, self.q_lo_hard - rest, rest - self.q_hi_hard])
        if np.any(over > 0):
            i = int(np.argmax(over))
            return (f"joint {i + 1} measured at {q[i]:.3f} rad ({dq[i]:+.2f} rad/s) would stop within "
                    f"{self.q_hi_hard[i] - self.q_hi[i]:.3f} rad of its hardware limit")
        return None

    def check_configuration(self, q: np.ndarray) -> str | None:
        """Why a joint configuration (e.g. the home pose) is not allowed, or None."""
        v = self.violation(np.asarray(q, dtype=np.float64))
        if np.any(v > 0):
            i = int(np.argmax(v))
            return f"joint {i + 1} at {q[i]:.3f} rad is outside [{self.q_lo[i]:.3f}, {self.q_hi[i]:.3f}] (limit less margin)"
        m = kinematics.manipulability(kinematics.jacobian(q))
        if m < self.min_manipulability:
            return f"manipulability {m:.4f} below {self.min_manipulability} (near a singularity)"
        return None

    def approach_twist(self, err: np.ndarray) -> np.ndarray:
        """The EE twist of franky's move along `err` (6,): time-synchronised, each part at the peak speed its
        distance allows (a triangular profile) up to its limit, so a few mm are not judged at full speed."""
        d_lin, d_ang = float(np.linalg.norm(err[:3])), float(np.linalg.norm(err[3:]))
        duration = max(d_lin / max(min(self.v_max, math.sqrt(self.a_lin * d_lin)), 1e-12),
                       d_ang / max(min(self.w_max, math.sqrt(self.a_ang * d_ang)), 1e-12))
        return err / duration if duration > 0 else np.zeros(6)

    def path(self, q: np.ndarray, err: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(joints, Jacobian) at PATH_STEPS + 1 points of the straight EE path from q along `err` (6,), each
        step re-linearised where the last one ended; it stops early at a non-finite prediction. The path
        starts at the model's pose of q, so a model-to-robot offset in the measured pose is not a motion."""
        ee, jac = kinematics.fk_and_jacobian(q)
        start, points = ee, [(q, jac)]
        for k in range(1, PATH_STEPS + 1):
            waypoint = np.eye(4)
            waypoint[:3, :3] = so3.exp(k / PATH_STEPS * err[3:]) @ start[:3, :3]
            waypoint[:3, 3] = start[:3, 3] + k / PATH_STEPS * err[:3]
            q = q + kinematics.dls_step(jac, kinematics.pose_error(waypoint, ee))
            if not np.all(np.isfinite(q)):
                break
            ee, jac = kinematics.fk_and_jacobian(q)
            points.append((q, jac))
        return points

    def check(self, q: np.ndarray, measured_ee: np.ndarray, cmd: SafeCommand, prev: SafeCommand,
              tau: float) -> str | None:
        """Why `cmd` (following `prev` after tau s) must not be sent with the arm at q, or None."""
        q = np.asarray(q, dtype=np.float64)
        target = np.eye(4)
        target[:3, :3], target[:3, 3] = cmd.rotation, cmd.position
        err = kinematics.pose_error(target, measured_ee)
        twists = [self.approach_twist(err)]
        if tau > 0:  # the commanded step itself, which the arm follows once it has caught up
            twists.append(np.concatenate([(cmd.position - prev.position) / tau,
                                          so3.log(cmd.rotation @ prev.rotation.T) / tau]))
        points = self.path(q, err)
        if len(points) <= PATH_STEPS:
            return "joint prediction is not finite (bad joint or pose reading)"
        before, m_now = self.violation(q), kinematics.manipulability(points[0][1])
        for q_k, jac in points:
            for twist in twists:
                dq = np.abs(kinematics.dls_step(jac, twist))
                if np.any(dq > self.dq_max):
                    i = int(np.argmax(dq / self.dq_max))
                    return f"joint {i + 1} would move at {dq[i]:.2f} rad/s (max {self.dq_max[i]:.2f})"
            after = self.violation(q_k)
            if np.any(after > before + 1e-9):  # moving out of (or deeper beyond) the limits; moving back is fine
                i = int(np.argmax(after - before))
                return f"joint {i + 1} would reach {q_k[i]:.3f} rad (allowed [{self.q_lo[i]:.3f}, {self.q_hi[i]:.3f}])"
        # where the move ends, not on the way: a path that dips 1 % and rises again is no move toward a singularity,
        # and the joint speeds on the way, which is what a singularity costs, are checked above
        m = kinematics.manipulability(points[-1][1])
        if m < self.min_manipulability and m < m_now:
            return f"manipulability would drop to {m:.4f} (min {self.min_manipulability}): near a singularity"
        return None
