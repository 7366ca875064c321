"""6-DoF input -> end-effector target (ROS-free): deadband, scaling, axis remap, workspace, lead limit.

The teleop integrates a velocity command into an absolute EE target (the action space is absolute
targets). The target is clamped to a workspace box and kept within `max_lead_*` of the measured pose,
so a robot that stalls (or an executor that limits speed) never lets the target run away; the executor
still applies its own safety limits to whatever comes out of here.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from flow2one.spec import GRIPPER_CLOSED, GRIPPER_OPEN
from flow2one.teleop.buttons import ButtonMapper

FRAMES = ("base", "tool")


@dataclass(frozen=True)
class TeleopConfig:
    """Mapping settings (also the teleop node's ROS parameters)."""

    axis_map: tuple[int, ...] = (0, 1, 2, 3, 4, 5)  # output axis i (x y z roll pitch yaw) <- input axis_map[i]
    axis_signs: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    deadband: float = 0.1  # fraction of full deflection ignored (the puck never rests exactly at 0)
    max_linear_speed: float = 0.15  # m/s at full deflection
    max_angular_speed: float = 0.6  # rad/s at full deflection
    frame: str = "base"  # "base": push away = +x of the robot base; "tool": relative to the gripper
    rotation_enabled: bool = True
    workspace_min: tuple[float, ...] = (0.25, -0.45, 0.02)  # m, base frame
    workspace_max: tuple[float, ...] = (0.80, 0.45, 0.70)
    max_lead_m: float = 0.05  # target never further than this from the measured EE position
    max_lead_rad: float = 0.3
    input_timeout_s: float = 0.5  # no input for this long (device lost) -> zero velocity
    buttons: tuple[str, ...] = ("gripper_toggle", "episode_toggle")  # short press action per button
    long_press: tuple[str, ...] = ("", "episode_discard")  # held >= long_press_s ("" = none)
    long_press_s: float = 1.0

    def __post_init__(self) -> None:
        if sorted(self.axis_map) != list(range(6)):
            raise ValueError(f"axis_map must be a permutation of 0..5, got {self.axis_map}")
        if len(self.axis_signs) != 6 or any(abs(s) != 1.0 for s in self.axis_signs):
            raise ValueError(f"axis_signs must be six values of +1 or -1, got {self.axis_signs}")
        if not 0.0 <= self.deadband < 1.0:
            raise ValueError(f"deadband must be in [0, 1), got {self.deadband}")
        if self.max_linear_speed <= 0 or self.max_angular_speed <= 0:
            raise ValueError("max_linear_speed and max_angular_speed must be > 0")
        if self.frame not in FRAMES:
            raise ValueError(f"frame must be one of {FRAMES}, got {self.frame!r}")
        lo, hi = np.asarray(self.workspace_min), np.asarray(self.workspace_max)
        if lo.shape != (3,) or hi.shape != (3,) or np.any(lo >= hi):
            raise ValueError(f"workspace_min {self.workspace_min} must be 3 values below workspace_max "
                             f"{self.workspace_max}")
        if self.max_lead_m <= 0 or self.max_lead_rad <= 0 or self.input_timeout_s <= 0:
            raise ValueError("max_lead_m, max_lead_rad and input_timeout_s must be > 0")
        ButtonMapper(self.buttons, self.long_press, self.long_press_s)  # validates the action names


def apply_deadband(a: np.ndarray, deadband: float) -> np.ndarray:
    """Zero inside the band, rescaled outside so full deflection still gives 1 (no jump at the edge)."""
    a = np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0)
    mag = np.maximum(np.abs(a) - deadband, 0.0) / (1.0 - deadband)
    return np.sign(a) * mag


def exp_so3(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vector -> matrix (Rodrigues)."""
    theta = float(np.linalg.norm(rotvec))
    if theta < 1e-12:
        return np.eye(3)
    k = rotvec / theta
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * K + (1 - np.cos(theta)) * (K @ K)


def log_so3(rot: np.ndarray) -> np.ndarray:
    """Matrix -> rotation vector (angle in [0, pi])."""
    cos = np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0)
    theta = float(np.arccos(cos))
    if theta < 1e-9:
        return np.zeros(3)
    if np.pi - theta < 1e-6:  # near 180 degrees: the axis is a column of (R + I) / 2 = k k^T
        m = (rot + np.eye(3)) / 2.0
        i = int(np.argmax(np.diag(m)))
        axis = m[:, i] / np.sqrt(m[i, i])
        return theta * axis / np.linalg.norm(axis)
    w = np.array([rot[2, 1] - rot[1, 2], rot[0, 2] - rot[2, 0], rot[1, 0] - rot[0, 1]])
    return theta * w / (2.0 * np.sin(theta))


@dataclass
class TeleopTarget:
    xyz: np.ndarray  # (3,) m, base frame
    rot: np.ndarray  # (3, 3)
    gripper: float  # commanded width, m
    events: list[str] = field(default_factory=list)  # EPISODE_TOPIC events raised since the last tick


class TeleopMapper:
    """Holds the latest input and integrates it into an EE target at each `tick` (thread-safe)."""

    def __init__(self, config: TeleopConfig) -> None:
        self.c = config
        self.buttons = ButtonMapper(config.buttons, config.long_press, config.long_press_s)
        self._lock = threading.Lock()
        self._axes = np.zeros(6)
        self._input_t: float | None = None
        self._last_tick: float | None = None
        self.xyz: np.ndarray | None = None
        self.rot: np.ndarray | None = None
        self.gripper: float | None = None
        self.recording = False
        self._events: list[str] = []

    def velocity(self, raw_axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw normalised axes (6,) -> (linear m/s, angular rad/s) in the configured frame."""
        raw = np.asarray(raw_axes, dtype=np.float64)
        if raw.shape != (6,) or not np.isfinite(raw).all():
            raise ValueError(f"expected 6 finite axis values, got {raw_axes!r}")
        a = apply_deadband(raw[list(self.c.axis_map)] * np.asarray(self.c.axis_signs), self.c.deadband)
        lin = a[:3] * self.c.max_linear_speed
        ang = a[3:] * self.c.max_angular_speed if self.c.rotation_enabled else np.zeros(3)
        return lin, ang

    def update(self, axes: np.ndarray, buttons: tuple[int, ...] | list[int], t: float) -> None:
        """New device input at time t (seconds, same clock as tick)."""
        self.velocity(axes)  # validates before anything is stored
        with self._lock:
            self._axes = np.asarray(axes, dtype=np.float64)
            self._input_t = t
            for action in self.buttons.update(buttons, t):
                self._apply(action)

    def _apply(self, action: str) -> None:
        if action == "gripper_toggle":
            self.gripper = GRIPPER_CLOSED if (self.gripper or 0.0) > 0.5 * GRIPPER_OPEN else GRIPPER_OPEN
        elif action == "gripper_open":
            self.gripper = GRIPPER_OPEN
        elif action == "gripper_close":
            self.gripper = GRIPPER_CLOSED
        elif action == "episode_toggle":
            self._events.append("success" if self.recording else "start")
            self.recording = not self.recording
        elif action == "episode_start":
            self._events.append("start")
            self.recording = True
        elif action in ("episode_stop", "episode_success", "episode_failure", "episode_discard"):
            if self.recording:
                self._events.append(action.split("_")[1])
                self.recording = False

    def tick(self, t: float, measured_xyz: np.ndarray | None = None, measured_rot: np.ndarray | None = None,
             measured_gripper: float | None = None) -> TeleopTarget | None:
        """Integrate the held input over the time since the last tick; None until a pose was measured."""
        with self._lock:
            events, self._events = self._events, []
            for action in self.buttons.poll(t):
                self._apply(action)
            events += self._events
            self._events = []
            if self.xyz is None:
                if measured_xyz is None or measured_rot is None:
                    self._last_tick = t
                    return None
                self.xyz = np.array(measured_xyz, dtype=np.float64)
                self.rot = np.array(measured_rot, dtype=np.float64)
            if self.gripper is None:
                self.gripper = (GRIPPER_OPEN if measured_gripper is None or measured_gripper > 0.5 * GRIPPER_OPEN
                                else GRIPPER_CLOSED)
            dt = 0.0 if self._last_tick is None else max(0.0, t - self._last_tick)
            self._last_tick = t
            fresh = self._input_t is not None and t - self._input_t <= self.c.input_timeout_s
            lin, ang = self.velocity(self._axes) if fresh else (np.zeros(3), np.zeros(3))
            if self.c.frame == "tool":
                lin = self.rot @ lin
                self.rot = self.rot @ exp_so3(ang * dt)
            else:
                self.rot = exp_so3(ang * dt) @ self.rot
            self.xyz = self.xyz + lin * dt
            self._limit(measured_xyz, measured_rot)
            return TeleopTarget(self.xyz.copy(), self.rot.copy(), float(self.gripper), events)

    def _limit(self, measured_xyz: np.ndarray | None, measured_rot: np.ndarray | None) -> None:
        self.xyz = np.clip(self.xyz, self.c.workspace_min, self.c.workspace_max)
        if measured_xyz is not None:
            lead = self.xyz - measured_xyz
            dist = float(np.linalg.norm(lead))
            if dist > self.c.max_lead_m:
                self.xyz = np.asarray(measured_xyz) + lead * (self.c.max_lead_m / dist)
        if measured_rot is not None:
            rv = log_so3(np.asarray(measured_rot).T @ self.rot)
            angle = float(np.linalg.norm(rv))
            if angle > self.c.max_lead_rad:
                self.rot = np.asarray(measured_rot) @ exp_so3(rv * (self.c.max_lead_rad / angle))

    def resync(self) -> None:
        """Forget the target: the next tick starts again from the measured pose (after a homing move)."""
        with self._lock:
            self.xyz = self.rot = None
