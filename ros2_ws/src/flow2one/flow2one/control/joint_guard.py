"""Joint-space guard: a Cartesian command the arm could only follow past its joint limits, faster than
its joints can move, or into a singularity is refused before it reaches franky.

The safety filter bounds the EE; near a singularity a 1 rad/s EE rotation can ask for many rad/s at a
joint, and the box says nothing about the elbow. libfranka would stop such motions with a reflex (a
FAULT mid-task); refusing the target instead keeps franky on the last admissible one, and the
executor's watchdog stops the arm if nothing admissible follows. Checks use the measured joint angles
and the commanded step, linearised with the Jacobian (commands are a few mm and mrad apart).
"""

from __future__ import annotations

import numpy as np

from flow2one.control import kinematics
from flow2one.control.safety import SafeCommand


class JointGuard:
    def __init__(self, generation: str, margin: float, speed_factor: float, min_manipulability: float) -> None:
        lim = kinematics.JOINT_LIMITS[generation]
        self.q_lo = np.asarray(lim["q_min"]) + margin
        self.q_hi = np.asarray(lim["q_max"]) - margin
        # A Cartesian command leaves the redundant (elbow) motion to the robot's controller, which the
        # linearised check cannot predict: a measured joint this close to its hardware limit stops the arm.
        self.q_lo_hard = np.asarray(lim["q_min"]) + margin / 2
        self.q_hi_hard = np.asarray(lim["q_max"]) - margin / 2
        self.dq_max = np.asarray(lim["dq_max"]) * speed_factor
        self.min_manipulability = min_manipulability

    def violation(self, q: np.ndarray) -> np.ndarray:
        """Per joint, how far (rad) q is outside the limits less the margin (0 inside)."""
        return np.maximum.reduce([np.zeros(7), self.q_lo - q, q - self.q_hi])

    def check_measured(self, q: np.ndarray) -> str | None:
        """Why the measured joints must stop the arm (within half the margin of a hardware limit), or None."""
        over = np.maximum(self.q_lo_hard - q, q - self.q_hi_hard)
        if np.any(over > 0):
            i = int(np.argmax(over))
            return (f"joint {i + 1} measured at {q[i]:.3f} rad, within {self.q_hi_hard[i] - self.q_hi[i]:.3f} rad "
                    f"of its hardware limit")
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

    def check(self, q: np.ndarray, measured_ee: np.ndarray, cmd: SafeCommand, prev: SafeCommand,
              tau: float) -> str | None:
        """Why `cmd` (following `prev` after tau s) must not be sent with the arm at q, or None."""
        q = np.asarray(q, dtype=np.float64)
        jac = kinematics.jacobian(q)
        if tau > 0:
            twist = np.concatenate([(cmd.position - prev.position) / tau,
                                    kinematics.so3.log(cmd.rotation @ prev.rotation.T) / tau])
            dq = np.abs(kinematics.dls_step(jac, twist))
            if np.any(dq > self.dq_max):
                i = int(np.argmax(dq / self.dq_max))
                return f"joint {i + 1} would move at {dq[i]:.2f} rad/s (max {self.dq_max[i]:.2f})"
        target = np.eye(4)
        target[:3, :3], target[:3, 3] = cmd.rotation, cmd.position
        q_next = q + kinematics.dls_step(jac, kinematics.pose_error(target, measured_ee))
        if not np.all(np.isfinite(q_next)):
            return "joint prediction is not finite (bad joint or pose reading)"
        before, after = self.violation(q), self.violation(q_next)
        if np.any(after > before + 1e-9):  # moving out of (or deeper beyond) the limits; moving back is fine
            i = int(np.argmax(after - before))
            return f"joint {i + 1} would reach {q_next[i]:.3f} rad (allowed [{self.q_lo[i]:.3f}, {self.q_hi[i]:.3f}])"
        m_now, m_next = kinematics.manipulability(jac), kinematics.manipulability(kinematics.jacobian(q_next))
        if m_next < self.min_manipulability and m_next < m_now:
            return f"manipulability would drop to {m_next:.4f} (min {self.min_manipulability}): near a singularity"
        return None
