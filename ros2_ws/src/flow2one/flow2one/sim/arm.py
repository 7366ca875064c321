"""Drive the (simulated) FR3 through franky the way a teleoperator does: one absolute target per step.

Scripted experts and the headless evaluator command the robot only through this libfranka client, so
demonstrations contain exactly what the real executor can do: asynchronous Cartesian re-targeting at
the chunk-step rate (ENVIRONMENT.md: reliable at 10-50 Hz) plus binary gripper commands.
"""

from __future__ import annotations

import os
import time

import numpy as np

from flow2one.geometry import matrix_to_quat, matrix_to_rot6d, quat_to_matrix, rot6d_to_matrix
from flow2one.sim.scene import HOME_Q
from flow2one.spec import ACTION_DIM, GRIPPER_OPEN

GRASP_FORCE = 30.0  # N
GRIPPER_SPEED = 0.1  # m/s (franky-sim caps the hand at 0.05)


class FrankyArm:
    """franky.Robot + franky.Gripper on one host; proprio and actions in the spec.ACTION_NAMES layout."""

    def __init__(self, hostname: str, dynamics: float = 0.3) -> None:
        import franky

        self._franky = franky
        # What a libfranka failure raises; franky raises motion-planner failures of async motions
        # (-101/-111) as plain RuntimeError.
        self.errors = (franky.Exception, RuntimeError)
        self.hostname, self.dynamics = hostname, dynamics
        self._closed = False
        self._future = None
        self.planner_errors = 0
        f = self._franky
        self.robot = f.Robot(self.hostname, realtime_config=f.RealtimeConfig.Ignore)
        # libfranka puts the calling thread on SCHED_FIFO 99 even with RealtimeConfig.Ignore whenever it may
        # (e.g. as root); every thread started from it later inherits that and starves the machine: undo it.
        if hasattr(os, "sched_setscheduler"):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        self.robot.relative_dynamics_factor = self.dynamics
        self.gripper = f.Gripper(self.hostname)

    def _read(self, fn, attempts: int = 5):
        """A state read, retried after error recovery; a link that stays broken raises (see SimRig)."""
        for i in range(attempts + 1):
            try:
                return fn()
            except self.errors:
                if i == attempts:
                    raise
                try:
                    self.robot.recover_from_errors()
                except self.errors:
                    pass
                time.sleep(0.05)

    def ee_pose(self) -> np.ndarray:
        """4x4 TCP pose in the base frame (franky's end-effector frame = the policy's EE)."""
        p = self._read(lambda: self.robot.current_cartesian_state.pose.end_effector_pose)
        T = np.eye(4)
        T[:3, :3] = quat_to_matrix(np.asarray(p.quaternion))
        T[:3, 3] = p.translation
        return T

    def proprio(self) -> np.ndarray:
        T = self.ee_pose()
        return np.concatenate([T[:3, 3], matrix_to_rot6d(T[:3, :3]), [self._read(lambda: self.gripper.width)]]).astype(np.float32)

    # --- commands ----------------------------------------------------------------------------------
    def command(self, action: np.ndarray) -> None:
        """Re-target the arm to `action` (10-D) without waiting; planner errors are recovered from."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,) or not np.isfinite(a).all():
            raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {a}")
        f = self._franky
        target = f.Affine(a[:3], matrix_to_quat(rot6d_to_matrix(a[3:9])))
        for attempt in range(2):
            try:
                self.robot.move(f.CartesianMotion(target), asynchronous=True)
                break
            except self.errors:  # the previous async motion failed (planner error -101/-111): recover, re-send
                self.planner_errors += 1
                self.robot.recover_from_errors()
        self.set_gripper(a[9] < GRIPPER_OPEN / 2)

    def set_gripper(self, closed: bool) -> bool:
        """Start opening/closing unless a gripper command is still running; True if one was sent."""
        if self._future is not None:
            if not self._future.wait(0.0):
                return False  # still running
            future, self._future = self._future, None
            future.get()  # a broken gripper session raises: SimRig gives the episode a new world
        if closed == self._closed:
            return False
        if closed:  # grasp anything (epsilon_outer = full width), as a teleoperator's button press does
            self._future = self.gripper.grasp_async(0.0, GRIPPER_SPEED, GRASP_FORCE,
                                                    epsilon_inner=0.0, epsilon_outer=GRIPPER_OPEN)
        else:
            self._future = self.gripper.move_async(GRIPPER_OPEN, GRIPPER_SPEED)
        self._closed = closed
        return True

    def gripper_busy(self) -> bool:
        return self._future is not None and not self._future.wait(0.0)

    def stop(self, timeout: float = 30.0) -> None:
        """Let the running motion end (its target is the last command) and clear errors."""
        try:
            if not self.robot.join_motion(timeout):
                raise TimeoutError(f"arm motion did not finish within {timeout} s (is franky-sim stepping?)")
        except self.errors:
            self.planner_errors += 1
            self.robot.recover_from_errors()

    def home(self, q: tuple[float, ...] = HOME_Q, timeout: float = 60.0) -> None:
        """Joint move to `q` and open the gripper: the start of every episode. Bounded waits throughout,
        because on an overloaded machine franky-sim can run at a fraction of real time."""
        f = self._franky
        self.stop(timeout)
        if self._future is not None and not self._future.wait(timeout):
            raise TimeoutError(f"gripper command did not finish within {timeout} s")
        self._future = self.gripper.move_async(GRIPPER_OPEN, GRIPPER_SPEED)
        self._closed = False
        self.robot.move(f.JointWaypointMotion([f.JointWaypoint(list(q))]), asynchronous=True)
        self.stop(timeout)
        if not self._future.wait(timeout):
            raise TimeoutError(f"gripper did not open within {timeout} s")

    def close(self) -> None:
        """Disconnect while the server is still up (libfranka's destructors talk to it)."""
        if getattr(self, "robot", None) is None:
            return
        try:
            self.stop(timeout=10.0)
        except (TimeoutError, *self.errors):
            pass
        if self._future is not None:
            self._future.wait(10.0)
        self._future = None
        self.robot = None
        self.gripper = None

    def __enter__(self) -> "FrankyArm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
