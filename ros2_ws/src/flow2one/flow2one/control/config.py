"""Executor configuration: one flat, validated dataclass, which is also the executor node's ROS parameters."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from flow2one.control import kinematics
from flow2one.control.joint_guard import JointGuard
from flow2one.control.kinematics import JOINT_LIMITS
from flow2one.control.limits import SafetyLimits
from flow2one.control.safety import SafetyFilter
from flow2one.spec import STEP_DT

# Panda/FR3 "ready" pose: elbow up, flange down, in front of the base.
HOME_JOINTS = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
REALTIME_MODES = ("enforce", "ignore")


@dataclass(frozen=True)
class ExecutorConfig:
    robot_host: str = "172.16.0.2"  # FCI address; franky-sim: 127.0.0.1
    realtime: str = "enforce"  # libfranka RealtimeConfig: enforce on the robot (refuse to start without rtprio), ignore in sim
    n_exec: int = 8  # steps of each chunk executed before it counts as used up (receding horizon)
    command_rate_hz: float = 1.0 / STEP_DT  # franky re-targeting rate (chunk-step rate; 10-50 Hz is safe)
    retarget_on_chunk: bool = True  # a new chunk re-targets at once (>= 20 ms after the last command), then the rate
    state_rate_hz: float = 100.0  # robot state reading/publishing rate
    lookahead_s: float = STEP_DT  # a command aims at the plan this far ahead (where the arm should be next)
    blend_s: float = 0.1  # cross-fade from the executing plan to a new chunk
    max_future_s: float = 0.5  # reject chunks stamped further in the future (clock skew)
    stop_after_s: float = 1.0  # no valid chunk for this long -> stop (hold before that)
    max_recoveries: int = 3  # automatic error recoveries allowed per recovery_window_s before FAULT
    recovery_window_s: float = 60.0
    jerk_factor: float = 0.5  # fraction of franky's max Cartesian jerk
    home_joints: tuple[float, ...] = HOME_JOINTS
    home_speed_factor: float = 0.2
    # Homing is the start of an episode: the arm at home_joints and the hand open (GRIPPER_OPEN), as every
    # evaluation episode starts. A hand left closed told the next pick_place episode it held a cube.
    home_opens_gripper: bool = True
    # After homing, take no chunk until an episode start (EPISODE_TOPIC "start", Executor.start_episode): the
    # policy would otherwise drive the arm through a scene an operator is still setting up.
    hold_after_home: bool = False
    gripper_speed: float = 0.05  # m/s
    gripper_force: float = 30.0  # N
    gripper_close_below: float = 0.04  # m: commanded widths below this grasp, above move
    gripper_deadband: float = 0.005  # m
    # Joint-space guard (control/joint_guard.py): "panda", "fr3" or "both" (the tighter of the two).
    robot_generation: str = "both"
    joint_margin: float = 0.1  # rad kept free of each hardware joint limit
    joint_speed_factor: float = 0.9  # fraction of the hardware joint speed a command may demand
    # Yoshikawa measure; below it, moves toward the singularity are refused. pick_place's release over the pad
    # (EE ~(0.36, 0, 0.05)) sits at 0.009-0.010: a floor of 0.01 refused 57-165 of its targets per `make demo`,
    # holding the cube above the pad. What a singularity costs, joint speed, is checked on every move's path.
    min_manipulability: float = 0.005
    measured_box_tolerance: float = 0.01  # m a measured EE may lie outside the box before it is a FAULT
    # rad a measured EE may be tilted past max_rot_from_ref before it is a FAULT: the cone bounds the commands,
    # and franky's Cartesian tracking can still carry the arm past them (a loaded franky-sim did, 1.36 rad).
    measured_cone_tolerance: float = 0.03
    # SafetyLimits, flattened for ROS parameters (see control/limits.py for meaning).
    workspace_min: tuple[float, ...] = SafetyLimits.workspace_min
    workspace_max: tuple[float, ...] = SafetyLimits.workspace_max
    max_lin_speed: float = SafetyLimits.max_lin_speed
    max_lin_accel: float = SafetyLimits.max_lin_accel
    max_ang_speed: float = SafetyLimits.max_ang_speed
    max_ang_accel: float = SafetyLimits.max_ang_accel
    max_lin_step: float = SafetyLimits.max_lin_step
    max_ang_step: float = SafetyLimits.max_ang_step
    max_lead: float = SafetyLimits.max_lead
    reference_rot6d: tuple[float, ...] = SafetyLimits.reference_rot6d
    max_rot_from_ref: float = SafetyLimits.max_rot_from_ref

    def __post_init__(self) -> None:
        if not self.robot_host:
            raise ValueError("robot_host must not be empty")
        if self.realtime not in REALTIME_MODES:
            raise ValueError(f"realtime must be one of {REALTIME_MODES}, got {self.realtime!r}")
        if self.n_exec < 1:
            raise ValueError(f"n_exec must be >= 1, got {self.n_exec}")
        if not (1.0 <= self.command_rate_hz <= 50.0):
            raise ValueError(f"command_rate_hz must be in [1, 50] (franky's planner fails above ~50 Hz), "
                             f"got {self.command_rate_hz}")
        if not (self.command_rate_hz <= self.state_rate_hz <= 1000.0):
            raise ValueError(f"state_rate_hz must be in [command_rate_hz, 1000], got {self.state_rate_hz}")
        for name in ("lookahead_s", "blend_s", "max_future_s"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.stop_after_s > 0 and self.recovery_window_s > 0 and self.max_recoveries >= 0):
            raise ValueError("stop_after_s and recovery_window_s must be > 0, max_recoveries >= 0")
        if len(self.home_joints) != 7:
            raise ValueError(f"home_joints needs 7 values, got {len(self.home_joints)}")
        for name in ("jerk_factor", "home_speed_factor"):
            if not (0 < getattr(self, name) <= 1):
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not (0 < self.gripper_speed <= 0.1 and self.gripper_force > 0):
            raise ValueError("gripper_speed must be in (0, 0.1] m/s and gripper_force > 0")
        self.limits()  # validates the limit fields
        if self.robot_generation not in JOINT_LIMITS:
            raise ValueError(f"robot_generation must be one of {sorted(JOINT_LIMITS)}, got {self.robot_generation!r}")
        if not (0 <= self.joint_margin < 0.5 and 0 < self.joint_speed_factor <= 1 and self.min_manipulability >= 0
                and 0 <= self.measured_box_tolerance <= 0.1 and 0 <= self.measured_cone_tolerance <= 0.2):
            raise ValueError("need 0 <= joint_margin < 0.5 rad, 0 < joint_speed_factor <= 1, min_manipulability >= 0, "
                             "0 <= measured_box_tolerance <= 0.1 m and 0 <= measured_cone_tolerance <= 0.2 rad")
        why = self.joint_guard().check_configuration(np.asarray(self.home_joints, dtype=np.float64))
        if why is not None:
            raise ValueError(f"home_joints: {why}")
        home = kinematics.fk(np.asarray(self.home_joints, dtype=np.float64))
        lim, filt = self.limits(), SafetyFilter(self.limits())
        if not filt.inside(home[:3, 3]) or filt.deviation(home[:3, :3]) > lim.max_rot_from_ref:
            raise ValueError(f"home_joints put the EE at {np.round(home[:3, 3], 3).tolist()}, "
                             f"{filt.deviation(home[:3, :3]):.2f} rad from the reference orientation: outside the "
                             f"workspace box or the orientation limit")

    def joint_guard(self) -> JointGuard:
        return JointGuard(self.robot_generation, self.joint_margin, self.joint_speed_factor, self.min_manipulability,
                          self.limits(), 1.0 / self.state_rate_hz)

    def limits(self) -> SafetyLimits:
        names = {f.name for f in fields(SafetyLimits)}
        kw = {f.name: getattr(self, f.name) for f in fields(self) if f.name in names}
        return SafetyLimits(**kw, command_period=1.0 / self.command_rate_hz)
