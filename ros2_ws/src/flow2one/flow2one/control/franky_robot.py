"""franky adapter: the only code that talks to libfranka (real Panda/FR3 or franky-sim alike).

Arm targets go out as asynchronous absolute CartesianMotions that keep holding their target
(return_when_finished=False): each new one pre-empts the previous and franky's Ruckig re-plans from the
current motion state, so re-targeting at the chunk-step rate (10-50 Hz, docs/ENVIRONMENT_FACTS.md) is smooth,
and "hold" simply means sending nothing new (a target franky already holds is therefore not sent again).
Ruckig's own Cartesian limits are set from the same SafetyLimits at connect, so the arm's motion between
targets is bounded as well as the targets.
Errors of asynchronous motions surface at poll/join; every franky exception becomes a RobotError that
says whether libfranka's automatic recovery may clear it.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass

import franky
import numpy as np

from flow2one.control.limits import SafetyLimits
from flow2one.control.safety import SafeCommand
from flow2one.geometry import matrix_to_quat, matrix_to_rot6d, quat_to_matrix

JOINT_NAMES: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
HELD_TOLERANCE = 1e-6  # a target this close (m; rotation-matrix entries) to the one franky holds is not re-sent
# a commanded motion slower than this (m/s and rad/s for the EE, rad/s per joint) is at rest for stop(): the
# velocity Ruckig's stop motion would start from, so there is nothing to decelerate and libfranka's stop ends it
REST_EE_SPEED, REST_EE_ANGULAR_SPEED, REST_DQ = 0.001, 0.01, 0.01

# Exceptions franky raises that are not subclasses of franky.Exception.
_FRANKY_ERRORS = (franky.Exception, franky.GripperException, franky.InvalidMotionTypeException,
                  franky.MotionReuseException, franky.ReactionRecursionException, RuntimeError)
_COMMUNICATION = (franky.NetworkException, franky.ProtocolException, franky.IncompatibleVersionException,
                  franky.RealtimeException)


class RobotError(RuntimeError):
    """A libfranka/franky failure. kind: 'communication' (reconnect needed), 'control' (reflex, planner
    or motion error: automatic recovery may clear it) or 'command' (a rejected request)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind

    @property
    def recoverable(self) -> bool:
        return self.kind != "communication"


def _wrap(exc: BaseException, what: str) -> RobotError:
    if isinstance(exc, _COMMUNICATION) or any(k in str(exc) for k in ("Net Exception", "UDP", "TCP")):
        kind = "communication"
    elif isinstance(exc, franky.CommandException):
        kind = "command"
    else:
        kind = "control"
    return RobotError(f"{what}: {type(exc).__name__}: {exc}", kind)


@dataclass(frozen=True)
class RobotStateSample:
    """One reading of the arm and gripper; `proprio` is the spec.PROPRIO layout."""

    t_ns: int  # wall clock (chunk clock) when read
    q: np.ndarray  # (7,) rad
    dq: np.ndarray  # (7,) rad/s
    tau: np.ndarray  # (7,) Nm
    ee: np.ndarray  # (4, 4) base -> EE
    gripper_width: float  # m
    mode: str  # libfranka robot mode (Idle, Move, Reflex, ...)
    robot_time_s: float  # the robot's own clock (libfranka state time; franky-sim: simulated time)

    @property
    def position(self) -> np.ndarray:
        return self.ee[:3, 3]

    @property
    def quaternion(self) -> np.ndarray:
        """(x, y, z, w)."""
        return matrix_to_quat(self.ee[:3, :3])

    def proprio(self) -> np.ndarray:
        return np.concatenate([self.ee[:3, 3], matrix_to_rot6d(self.ee[:3, :3]),
                               [self.gripper_width]]).astype(np.float32)


class FrankyRobot:
    """franky.Robot + franky.Gripper behind the small interface the Executor needs.

    `log`, when a list, receives ("command", t, position, rotation, gripper) for every target handed to
    franky, read back from the franky motion object itself (and "anchor" entries from the executor), so
    tests audit exactly what franky was asked to do.
    """

    def __init__(self, host: str, limits: SafetyLimits, jerk_factor: float = 0.5,
                 gripper_speed: float = 0.05, gripper_force: float = 30.0, gripper_close_below: float = 0.04,
                 gripper_deadband: float = 0.005, gripper_period_s: float = 0.1,
                 log: list | None = None, realtime: str = "enforce") -> None:
        self.host = host
        # Enforce: libfranka refuses to connect on a kernel without real-time capabilities instead of missing 1 kHz
        # cycles and raising communication_constraints_violation reflexes mid-motion. Ignore only in the sim.
        self._realtime = {"enforce": franky.RealtimeConfig.Enforce, "ignore": franky.RealtimeConfig.Ignore}[realtime]
        self.log = log
        self._gripper_speed, self._gripper_force = gripper_speed, gripper_force
        self._close_below, self._deadband = gripper_close_below, gripper_deadband
        self._gripper_period_ns = int(gripper_period_s * 1e9)
        self._limits, self._jerk_factor = limits, jerk_factor
        self.robot: franky.Robot | None = None
        self.gripper: franky.Gripper | None = None
        self._connect()
        self._motion_kind: str | None = None  # "cartesian" | "joint" | None: what is running
        self._held: tuple[np.ndarray, np.ndarray] | None = None  # the Cartesian target franky holds (with "cartesian")
        self._stopping = False
        self._gripper_future = None
        self._gripper_closed: bool | None = None
        self._gripper_sent = float("nan")
        self._gripper_width = float(self.gripper.width)
        self._gripper_read_ns = 0
        self._lock = threading.Lock()  # franky calls from the control thread and close()

    def _connect(self, attempts: int = 3) -> None:
        """Connect robot and gripper. A garbled handshake (ProtocolException "incorrect object size") can come
        from a server that has only just started listening and is retried; anything else fails at once."""
        for attempt in range(attempts):
            try:
                self.robot = franky.Robot(self.host, realtime_config=self._realtime)
                self.gripper = franky.Gripper(self.host)
                break
            except franky.ProtocolException as exc:
                if attempt == attempts - 1:
                    raise _wrap(exc, f"cannot connect to the robot at {self.host!r}") from exc
                time.sleep(0.5)
            except _FRANKY_ERRORS as exc:
                raise _wrap(exc, f"cannot connect to the robot at {self.host!r}") from exc
            finally:
                # libfranka puts the calling thread on SCHED_FIFO 99 even with RealtimeConfig.Ignore whenever it
                # may (e.g. as root); every thread started from it later inherits that and starves the machine.
                if hasattr(os, "sched_setscheduler"):
                    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        self._set_dynamics(self._limits, self._jerk_factor)

    def _set_dynamics(self, lim: SafetyLimits, jerk_factor: float) -> None:
        """Ruckig limits from the safety limits (translation limits are per axis: sqrt(3) * for the norm)."""
        r = self.robot
        r.relative_dynamics_factor = 1.0
        for limit, value in ((r.translation_velocity_limit, math.sqrt(3) * lim.lin_speed),
                             (r.translation_acceleration_limit, math.sqrt(3) * lim.max_lin_accel),
                             (r.rotation_velocity_limit, lim.ang_speed),
                             (r.rotation_acceleration_limit, lim.max_ang_accel),
                             (r.translation_jerk_limit, r.translation_jerk_limit.max * jerk_factor),
                             (r.rotation_jerk_limit, r.rotation_jerk_limit.max * jerk_factor)):
            limit.set(min(value, limit.max))

    # -- state ------------------------------------------------------------------------------------
    def read_state(self) -> RobotStateSample:
        now = time.time_ns()
        try:
            with self._lock:
                s = self.robot.state
                if now - self._gripper_read_ns >= self._gripper_period_ns:  # ~1 ms TCP round trip
                    self._gripper_width = float(self.gripper.width)
                    self._gripper_read_ns = now
        except _FRANKY_ERRORS as exc:
            raise _wrap(exc, "reading the robot state") from exc
        return RobotStateSample(now, np.array(s.q), np.array(s.dq), np.array(s.tau_J),
                                np.array(s.O_T_EE.matrix), self._gripper_width, s.robot_mode.name,
                                s.time.to_sec())

    # -- arm --------------------------------------------------------------------------------------
    def record(self, kind: str, cmd: SafeCommand) -> None:
        if self.log is not None:
            self.log.append((kind, cmd.t, cmd.position.copy(), cmd.rotation.copy(), cmd.gripper))

    def send(self, cmd: SafeCommand) -> None:
        """Re-target the arm (asynchronous) and the gripper."""
        affine = franky.Affine(cmd.position, matrix_to_quat(cmd.rotation))
        motion = franky.CartesianMotion(franky.RobotPose(affine), franky.ReferenceType.Absolute,
                                        return_when_finished=False)
        if self.log is not None:  # what franky holds, not what we meant
            sent = motion.target.pose.end_effector_pose
            self.log.append(("command", cmd.t, np.array(sent.translation), quat_to_matrix(np.array(sent.quaternion)),
                             cmd.gripper))
        try:
            with self._lock:
                if self._motion_kind == "joint":
                    raise RobotError("a joint motion (homing) is running; stop it first", "command")
                if not (self._motion_kind == "cartesian" and self._holds(cmd)):
                    self.robot.move(motion, asynchronous=True)
                    self._motion_kind = "cartesian"
                    self._held = (cmd.position.copy(), cmd.rotation.copy())
        except _FRANKY_ERRORS as exc:
            self._motion_kind = None
            raise _wrap(exc, "sending a Cartesian target") from exc
        self.set_gripper(cmd.gripper)

    def _holds(self, cmd: SafeCommand) -> bool:
        """Whether the running motion already holds `cmd`'s pose. franky's planner fails (Ruckig -111) now and
        then on a re-target less than ~1e-8 from where the arm rests (docs/ENVIRONMENT_FACTS.md), which a held
        target is; 1e-6 (m, rotation-matrix entries) is far below any motion and far above rounding."""
        return (self._held is not None and float(np.abs(self._held[0] - cmd.position).max()) <= HELD_TOLERANCE
                and float(np.abs(self._held[1] - cmd.rotation).max()) <= HELD_TOLERANCE)

    def poll(self) -> bool:
        """Raise the error of a failed asynchronous motion; True while a motion runs."""
        try:
            with self._lock:
                running = bool(self.robot.is_in_control)
                if not running and self._motion_kind is not None:
                    self.robot.join_motion(0.0)  # surfaces the exception of an aborted motion
                    self._motion_kind = None
                return running
        except _FRANKY_ERRORS as exc:
            self._motion_kind = None
            if self._stopping and "preempted" in str(exc):
                return False
            raise _wrap(exc, "asynchronous motion failed") from exc

    def stop(self, timeout: float = 1.0) -> None:
        """Decelerate to rest with Ruckig (stop motion of the running kind), hard stop if that stalls. An arm
        already at rest gets libfranka's stop only: Ruckig's stop from rest fails now and then with -111, as a
        re-sent held target does (docs/ENVIRONMENT_FACTS.md), and there is nothing to decelerate."""
        with self._lock:
            kind = self._motion_kind
            if kind is None and not self.robot.is_in_control:
                return
            self._stopping = True
            try:
                if self._at_rest(kind):
                    self.robot.stop()
                    self.robot.join_motion(timeout)
                    return
                stop = franky.JointStopMotion() if kind == "joint" else franky.CartesianStopMotion()
                self.robot.move(stop, asynchronous=True)
                if not self.robot.join_motion(timeout):
                    self.robot.stop()
                    self.robot.join_motion(timeout)
            except _FRANKY_ERRORS as exc:
                if "preempted" not in str(exc):
                    raise _wrap(exc, "stopping") from exc
            finally:
                self._stopping = False
                self._motion_kind = None

    def _at_rest(self, kind: str | None) -> bool:
        """Whether the running motion commands no velocity (the commanded, not the measured state: a stop
        motion plans from it, and franky-sim reports up to 0.1 rad/s in a joint of an arm that holds still)."""
        s = self.robot.state
        joints = float(np.abs(np.asarray(s.dq_d)).max()) < REST_DQ
        twist = s.O_dP_EE_c
        ee = (float(np.linalg.norm(twist.linear)) < REST_EE_SPEED
              and float(np.linalg.norm(twist.angular)) < REST_EE_ANGULAR_SPEED)
        return joints if kind == "joint" else ee if kind == "cartesian" else joints and ee

    def recover(self) -> bool:
        """libfranka's automatic error recovery (clears reflexes); False when it cannot."""
        try:
            with self._lock:
                self._motion_kind = None
                return bool(self.robot.recover_from_errors())
        except _FRANKY_ERRORS:
            return False

    def start_home(self, joints: tuple[float, ...], speed_factor: float) -> None:
        """Start an asynchronous joint motion to `joints` (call stop() first)."""
        try:
            with self._lock:
                motion = franky.JointWaypointMotion([franky.JointWaypoint(list(joints))],
                                                    relative_dynamics_factor=speed_factor)
                self.robot.move(motion, asynchronous=True)
                self._motion_kind = "joint"
        except _FRANKY_ERRORS as exc:
            self._motion_kind = None
            raise _wrap(exc, "starting the home motion") from exc

    # -- gripper ----------------------------------------------------------------------------------
    def set_gripper(self, width: float) -> None:
        """Close (grasp, so an object stops it without error) below close_below, else move to width.
        One gripper command at a time; the newest wish is sent when the running one finishes."""
        fut = self._gripper_future
        if fut is not None and not fut.wait(0.0):
            return
        closing = width < self._close_below
        try:
            with self._lock:
                if closing and self._gripper_closed is not True:
                    self._gripper_future = self.gripper.grasp_async(0.0, self._gripper_speed, self._gripper_force,
                                                                    epsilon_inner=0.0, epsilon_outer=1.0)
                    self._gripper_closed = True
                elif not closing and (self._gripper_closed is not False
                                      or abs(width - self._gripper_sent) > self._deadband):
                    self._gripper_future = self.gripper.move_async(width, self._gripper_speed)
                    self._gripper_closed, self._gripper_sent = False, width
        except _FRANKY_ERRORS as exc:
            raise _wrap(exc, "gripper command") from exc

    def wait_gripper(self, timeout: float) -> bool:
        """Wait for the running gripper command to end; False if it still runs after `timeout` s."""
        fut = self._gripper_future
        return fut is None or bool(fut.wait(timeout))

    def close(self) -> None:
        """Bring the arm to rest and let a running gripper command finish; the connection stays open."""
        if self.robot is None:
            return
        try:
            self.stop()
        except RobotError:
            pass
        fut = self._gripper_future
        if fut is not None:
            fut.wait(5.0)

    def disconnect(self) -> None:
        """close(), then drop the libfranka connections (franky closes them when its objects go), so a
        new client can connect even while something still references this adapter. Skipped while a
        motion or gripper command still runs: destroying franky objects under them is unsafe."""
        self.close()
        fut = self._gripper_future
        with self._lock:
            if self.robot is None or (fut is not None and not fut.wait(0.0)):
                return
            try:  # franky's motion thread must be gone: dropping the Robot under it crashes (seen)
                finished = self.robot.join_motion(1.0)
            except _FRANKY_ERRORS:
                finished = not self.robot.is_in_control
            if not finished or self.robot.is_in_control:
                return
            self.robot = self.gripper = self._gripper_future = None
