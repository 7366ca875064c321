"""Safety limits of the executor: one frozen, validated set shared by the filter, its audit and the node.

Translation limits are per Cartesian axis of the base frame (a box-shaped velocity set keeps the
workspace-box guarantee exact, see safety.py); rotation limits are on the rotation-vector norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from flow2one.spec import GRIPPER_CLOSED, GRIPPER_OPEN


@dataclass(frozen=True)
class SafetyLimits:
    workspace_min: tuple[float, float, float] = (0.25, -0.45, 0.005)  # m, base frame, of the EE target
    workspace_max: tuple[float, float, float] = (0.80, 0.45, 0.70)
    max_lin_speed: float = 0.25  # m/s, per axis
    max_lin_accel: float = 2.0  # m/s^2, per axis
    max_ang_speed: float = 1.0  # rad/s
    max_ang_accel: float = 10.0  # rad/s^2
    max_lin_step: float = 0.015  # m per command, per axis
    max_ang_step: float = 0.06  # rad per command
    max_lead: float = 0.08  # m per axis between the desired target and the measured EE position
    # Orientation: within max_rot_from_ref (geodesic) of a reference, default EE z pointing down.
    reference_rot6d: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0)
    max_rot_from_ref: float = 1.2  # rad
    gripper_min: float = GRIPPER_CLOSED
    gripper_max: float = GRIPPER_OPEN
    command_period: float = 0.05  # s, nominal time between commands; steps are limited per this period

    def __post_init__(self) -> None:
        lo, hi = self.workspace_min, self.workspace_max
        if len(lo) != 3 or len(hi) != 3:
            raise ValueError(f"workspace_min/max need 3 values, got {lo} and {hi}")
        if not all(math.isfinite(a) and math.isfinite(b) and a < b for a, b in zip(lo, hi)):
            raise ValueError(f"workspace_min {lo} must be finite and below workspace_max {hi} on every axis")
        for name in ("max_lin_speed", "max_lin_accel", "max_ang_speed", "max_ang_accel", "max_lin_step",
                     "max_ang_step", "max_lead", "command_period"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number, got {v}")
        if len(self.reference_rot6d) != 6 or not all(map(math.isfinite, self.reference_rot6d)):
            raise ValueError(f"reference_rot6d needs 6 finite values, got {self.reference_rot6d}")
        if not (self.rot_margin < self.max_rot_from_ref <= math.pi):
            raise ValueError(f"max_rot_from_ref must be in ({self.rot_margin:.3f}, pi] (it must exceed the braking "
                             f"margin ang_speed^2/(2*max_ang_accel) + one step), got {self.max_rot_from_ref}")
        if not (0.0 <= self.gripper_min < self.gripper_max <= 0.1):
            raise ValueError(f"need 0 <= gripper_min < gripper_max <= 0.1 m, got {self.gripper_min}, {self.gripper_max}")

    @property
    def lin_speed(self) -> float:
        """Effective per-axis speed bound: the step limit turned into a speed over one command period."""
        return min(self.max_lin_speed, self.max_lin_step / self.command_period)

    @property
    def ang_speed(self) -> float:
        return min(self.max_ang_speed, self.max_ang_step / self.command_period)

    @property
    def rot_margin(self) -> float:
        """How far the rotation stream can overrun a desired orientation: braking distance + one step.
        Desired orientations are kept this far inside the max_rot_from_ref ball."""
        return self.ang_speed**2 / (2 * self.max_ang_accel) + self.ang_speed * self.command_period
