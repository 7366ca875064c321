"""Teleop node: SpaceMouse (HID or spacenav Joy) -> chunks on CHUNK_TOPIC + episode events.

Each chunk is stamped now and holds the current target for `chunk_steps` steps (CONTRACTS allows any
length; a 1-point chunk expires after one step, 50 ms, which a loaded machine's delivery delay exceeds).
The executor treats these chunks like the policy's, so every teleop target passes its safety limits. Measured pose/gripper come from the executor's
robot-state topics; the teleop publishes nothing until it has seen a pose.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Empty, String
from trajectory_msgs.msg import JointTrajectory

from flow2one import spec
from flow2one.geometry import matrix_to_rot6d, quat_to_matrix
from flow2one.ros.convert import chunk_to_msg, joint_state_to_numpy, pose_stamped_to_numpy
from flow2one.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.qos import CHUNK_QOS, STATE_QOS
from flow2one.ros.runner import run_node_main
from flow2one.teleop.mapping import TeleopConfig, TeleopMapper
from flow2one.teleop.spacemouse import SpaceMouseReader, joy_to_input, open_spacemouse

HOME_TOPIC = "/flow2one/executor/home"


@dataclass(frozen=True)
class TeleopParams(TeleopConfig):
    input: str = "hid"  # "hid": pyspacemouse/hidapi; "joy": sensor_msgs/Joy from spacenav_node
    device: str = ""  # pyspacemouse model name ("" = first connected SpaceMouse)
    joy_topic: str = "/spacenav/joy"
    joy_scale: float = 1.0  # multiplies Joy axes (spacenav_node already normalises to about +-1)
    rate_hz: float = 1.0 / spec.STEP_DT  # chunk rate: the executor re-targets reliably at the step rate
    chunk_steps: int = 10  # the target repeated over this many steps: a chunk delayed in transit (or by a
    #                        loaded machine) is still current when it arrives; the next one replaces it
    max_pose_age_s: float = 0.5  # older measured pose -> publish nothing (robot state lost)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.input not in ("hid", "joy"):
            raise ValueError(f"input must be 'hid' or 'joy', got {self.input!r}")
        if not 0 < self.rate_hz <= 200:
            raise ValueError(f"rate_hz must be in (0, 200], got {self.rate_hz}")
        if not 1 <= self.chunk_steps <= spec.HORIZON:
            raise ValueError(f"chunk_steps must be in [1, {spec.HORIZON}], got {self.chunk_steps}")


class TeleopNode(Node):
    PARAMS = TeleopParams  # checked by the runner before any node starts

    def __init__(self, node_name: str = "teleop", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self.diag = Diagnostics(self)
        self.mapper = TeleopMapper(self.p)
        self._pose: tuple[np.ndarray, np.ndarray, float] | None = None  # xyz, R, receive time
        self._gripper: float | None = None
        self._chunk_pub = self.create_publisher(JointTrajectory, spec.CHUNK_TOPIC, CHUNK_QOS)
        self._event_pub = self.create_publisher(String, spec.EPISODE_TOPIC, 10)
        self.create_subscription(PoseStamped, spec.EE_POSE_TOPIC, self._on_pose, STATE_QOS)
        self.create_subscription(JointState, spec.JOINT_STATES_TOPIC, self._on_joints, STATE_QOS)
        self.create_subscription(Empty, HOME_TOPIC, lambda _: self.mapper.resync(), 10)
        self._reader: SpaceMouseReader | None = None
        if self.p.input == "joy":
            self.create_subscription(Joy, self.p.joy_topic, self._on_joy, 10)
        else:
            try:
                mouse = open_spacemouse(self.p.device)
            except (RuntimeError, ValueError, OSError) as exc:
                raise RuntimeError(f"teleop: no SpaceMouse over HID ({exc}); plug one in, check udev "
                                   "permissions on /dev/hidraw*, or set input:=joy with spacenav_node") from exc
            self._reader = SpaceMouseReader(mouse, self.mapper.update).start()
        self.create_timer(1.0 / self.p.rate_hz, self._tick)
        self.diag.set(WARN, "waiting for the robot pose", input=self.p.input)

    def _on_pose(self, msg: PoseStamped) -> None:
        xyz, quat = pose_stamped_to_numpy(msg)
        self._pose = (xyz, quat_to_matrix(quat), time.monotonic())

    def _on_joints(self, msg: JointState) -> None:
        names, pos, _, _ = joint_state_to_numpy(msg)
        if "gripper_width" in names:
            self._gripper = float(pos[names.index("gripper_width")])

    def _on_joy(self, msg: Joy) -> None:
        try:
            axes, buttons = joy_to_input(msg.axes, msg.buttons, self.p.joy_scale)
            self.mapper.update(axes, buttons, time.monotonic())
        except ValueError as exc:
            self.diag.set(ERROR, f"bad Joy message: {exc}")

    def _tick(self) -> None:
        now = time.monotonic()
        pose = self._pose if self._pose and now - self._pose[2] <= self.p.max_pose_age_s else None
        if self._reader is not None and self._reader.error is not None:
            self.diag.set(ERROR, f"SpaceMouse lost: {self._reader.error}")
        target = self.mapper.tick(now, *(pose[:2] if pose else (None, None)), self._gripper)
        if target is None:
            return
        for event in target.events:
            self._event_pub.publish(String(data=event))
            self.get_logger().info(f"episode event: {event}")
        if pose is None:  # robot state stale: do not command
            self.diag.set(WARN, "robot pose stale; not commanding")
            return
        action = np.concatenate([target.xyz, matrix_to_rot6d(target.rot), [target.gripper]])[None]
        action = np.repeat(action, self.p.chunk_steps, axis=0)
        self._chunk_pub.publish(chunk_to_msg(action.astype(np.float32), self.get_clock().now().nanoseconds,
                                             spec.STEP_DT))
        self.diag.set(OK, "recording" if self.mapper.recording else "teleoperating",
                      gripper=target.gripper)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


def main(args: list[str] | None = None) -> None:
    run_node_main("teleop", args)

