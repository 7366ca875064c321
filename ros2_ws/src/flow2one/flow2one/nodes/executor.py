"""Executor node: action chunks in, safe franky targets out, robot state published (thin ROS layer).

All logic lives in flow2one.control (ROS-free): this node converts messages, declares the
ExecutorConfig parameters, and publishes what the control thread reports. The control thread calls the
publish callbacks directly, so COMMAND_TOPIC carries exactly what was handed to franky, when it was.
"""

from __future__ import annotations

import time

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Empty, String
from trajectory_msgs.msg import JointTrajectory

from flow2one import spec
from flow2one.control.config import ExecutorConfig
from flow2one.control.executor import CommandEvent, Executor, State
from flow2one.control.franky_robot import JOINT_NAMES, FrankyRobot, RobotStateSample
from flow2one.control.plan import ChunkRejected
from flow2one.ros.convert import chunk_to_msg, msg_to_chunk, numpy_to_joint_state, numpy_to_pose_stamped
from flow2one.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.qos import CHUNK_QOS, RECORD_QOS, STATE_QOS
from flow2one.ros.runner import run_node_main
from flow2one.ros.trace import TracePublisher

HOME_TOPIC = "/flow2one/executor/home"  # std_msgs/Empty: move to the home joint configuration
ESTOP_RESET_TOPIC = "/flow2one/executor/estop_reset"  # std_msgs/Empty: release a latched e-stop
STATE_NAMES = (*JOINT_NAMES, "gripper_width")
_LEVEL = {State.FAULT: ERROR, State.ESTOP: WARN, State.HOMING: WARN}


class ExecutorNode(Node):
    PARAMS = ExecutorConfig  # checked by the runner before any node starts

    def __init__(self, node_name: str = "executor", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self.diag = Diagnostics(self, hardware_id=self.p.robot_host)
        self._joint_pub = self.create_publisher(JointState, spec.JOINT_STATES_TOPIC, STATE_QOS)
        self._pose_pub = self.create_publisher(PoseStamped, spec.EE_POSE_TOPIC, STATE_QOS)
        self._cmd_pub = self.create_publisher(JointTrajectory, spec.COMMAND_TOPIC, RECORD_QOS)
        self.trace = TracePublisher(self)
        self.robot = FrankyRobot(self.p.robot_host, self.p.limits(), jerk_factor=self.p.jerk_factor,
                            gripper_speed=self.p.gripper_speed, gripper_force=self.p.gripper_force,
                            gripper_close_below=self.p.gripper_close_below, gripper_deadband=self.p.gripper_deadband,
                            realtime=self.p.realtime)
        self.control = Executor(self.p, self.robot, clock_ns=lambda: self.get_clock().now().nanoseconds,
                                 on_state=self._publish_state, on_command=self._publish_command,
                                 on_event=self._log_event)
        self.create_subscription(JointTrajectory, spec.CHUNK_TOPIC, self._on_chunk, CHUNK_QOS)
        self.create_subscription(Bool, spec.ESTOP_TOPIC, self._on_estop, 10)
        self.create_subscription(Empty, ESTOP_RESET_TOPIC, self._on_estop_reset, 10)
        self.create_subscription(Empty, HOME_TOPIC, lambda _: self.control.request_home(), 10)
        # "start" (the operator's, the teleop node's or the demo's) ends a hold after homing (hold_after_home)
        self.create_subscription(String, spec.EPISODE_TOPIC,
                                 lambda m: self.control.start_episode() if m.data == "start" else None, 10)
        self.create_timer(1.0, self._update_diagnostics)
        self._closed = False
        self.control.start()
        self.diag.set(OK, "connected", robot_host=self.p.robot_host)
        self.get_logger().info(f"connected to the robot at {self.p.robot_host}")

    def _on_chunk(self, msg: JointTrajectory) -> None:
        received = time.monotonic()
        try:
            chunk = msg_to_chunk(msg)
            self.control.submit_chunk(chunk.actions, chunk.stamp_ns, chunk.dt, received_mono=received)
        except ChunkRejected as exc:
            self.get_logger().warning(f"chunk rejected: {exc}", throttle_duration_sec=1.0)
        except ValueError as exc:  # malformed message
            self.control.counters["chunks_malformed"] += 1
            self.get_logger().warning(f"malformed chunk: {exc}", throttle_duration_sec=1.0)

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self.control.estop_latched:
            self.get_logger().warning("e-stop: latched (release: False on the e-stop topic after the stop, or "
                                   f"an Empty on {ESTOP_RESET_TOPIC})")
        elif not msg.data and self.control.estop_latched:
            self.get_logger().info("e-stop: release requested by a False on the e-stop topic")
        self.control.set_estop(bool(msg.data))

    def _on_estop_reset(self, _: Empty) -> None:
        self.get_logger().info(f"e-stop: release requested on {ESTOP_RESET_TOPIC}")
        self.control.reset_estop()

    def _publish_state(self, s: RobotStateSample) -> None:
        if not self.context.ok():  # shutting down (SIGINT): close() follows
            return
        stamp = self.get_clock().now().nanoseconds
        self._joint_pub.publish(numpy_to_joint_state(STATE_NAMES, np.append(s.q, s.gripper_width),
                                                     np.append(s.dq, 0.0), np.append(s.tau, 0.0), stamp_ns=stamp))
        self._pose_pub.publish(numpy_to_pose_stamped(s.position, s.quaternion, stamp, spec.BASE_FRAME))

    def _publish_command(self, e: CommandEvent) -> None:
        if not self.context.ok():
            return
        self._cmd_pub.publish(chunk_to_msg(e.command.action()[None], e.t_ns, spec.STEP_DT))
        if e.first_of_chunk:  # franky's move() has returned: the chunk acts on the robot from now
            self.trace.emit(chunk=e.chunk_stamp_ns, chunk_received=e.chunk_received_ns,
                            retarget_allowed=e.retarget_allowed_ns, control_turn=e.t_ns,
                            franky_call=e.franky_call_ns, target_sent=self.trace.now_ns())

    def _log_event(self, event: str) -> None:
        if self.context.ok():
            self.get_logger().info(event)

    def _update_diagnostics(self) -> None:
        st = self.control.status()
        self.diag.set(_LEVEL.get(self.control.state, OK), f"{st.pop('state')}: {st.pop('message')}", **st)

    def close(self) -> None:
        """Bring the arm to rest and release franky (runner and SIGINT path call this)."""
        if not self._closed:
            self._closed = True
            self.control.close()
            if not self.control.thread_alive:
                self.robot.disconnect()


def main(args: list[str] | None = None) -> None:
    run_node_main("executor", args)


if __name__ == "__main__":
    main()
