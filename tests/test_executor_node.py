"""ExecutorNode over real rclpy (loopback, own domain) against franky-sim over the libfranka protocol."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Empty, String
from trajectory_msgs.msg import JointTrajectory

from flow2one import spec
from flow2one.control.config import HOME_JOINTS
from flow2one.control.franky_sim import FrankySimProcess
from flow2one.geometry import matrix_to_rot6d, quat_to_matrix
from flow2one.nodes.executor import HOME_TOPIC, STATE_NAMES
from flow2one.ros.convert import chunk_to_msg, joint_state_to_numpy, msg_to_chunk, pose_stamped_to_numpy
from flow2one.ros.qos import CHUNK_QOS, STATE_QOS
from flow2one.ros.runner import GraphRunner
from tests.helpers import wait_for
from tests.test_control_franky import franky_sim  # noqa: F401  (module-scoped sim fixture)

DOWN6 = matrix_to_rot6d(np.diag([1.0, -1.0, -1.0]))


class Probe(Node):
    """Plays policy/teleop/operator: publishes chunks, e-stop, home; records what the executor publishes."""

    def __init__(self, context) -> None:
        super().__init__("executor_probe", context=context)
        self.chunks = self.create_publisher(JointTrajectory, spec.CHUNK_TOPIC, CHUNK_QOS)
        self.estop = self.create_publisher(Bool, spec.ESTOP_TOPIC, 10)
        self.home = self.create_publisher(Empty, HOME_TOPIC, 10)
        self.episode = self.create_publisher(String, spec.EPISODE_TOPIC, 10)
        self.joints: list[JointState] = []
        self.poses: list[tuple[float, np.ndarray, np.ndarray]] = []
        self.commands: list[tuple[float, JointTrajectory]] = []
        self.diag: list[DiagnosticArray] = []
        self.create_subscription(JointState, spec.JOINT_STATES_TOPIC, self.joints.append, STATE_QOS)
        self.create_subscription(PoseStamped, spec.EE_POSE_TOPIC, self._pose, STATE_QOS)
        self.create_subscription(JointTrajectory, spec.COMMAND_TOPIC,
                                 lambda m: self.commands.append((time.monotonic(), m)), CHUNK_QOS)
        self.create_subscription(DiagnosticArray, spec.DIAGNOSTICS_TOPIC, self.diag.append, 10)

    def _pose(self, m: PoseStamped) -> None:
        xyz, q = pose_stamped_to_numpy(m)
        self.poses.append((time.monotonic(), xyz, q))

    def position(self) -> np.ndarray:
        return self.poses[-1][1]

    def send(self, positions: np.ndarray, stamp_ns: int | None = None, gripper: float = 0.08) -> None:
        acts = np.stack([np.concatenate([p, DOWN6, [gripper]]) for p in np.atleast_2d(positions)])
        stamp = self.get_clock().now().nanoseconds if stamp_ns is None else stamp_ns
        self.chunks.publish(chunk_to_msg(acts, stamp, spec.STEP_DT))

    def at_rest(self, window_s: float = 0.3, tol: float = 2e-4) -> bool:
        """The EE moved less than `tol` over the last `window_s` (and states arrived in that window)."""
        now = time.monotonic()
        recent = [xyz for t, xyz, _ in self.poses[-50:] if t > now - window_s]
        return len(recent) >= 3 and float(np.ptp(np.stack(recent), axis=0).max()) < tol

    def status(self) -> str:
        for arr in reversed(self.diag):
            for s in arr.status:
                if s.name == "flow2one/executor":
                    return s.message
        return ""


def stream_to(probe: Probe, goal: np.ndarray, seconds: float, rate_hz: float = 25.0, points: int = 32,
              until_within: float | None = None, until=lambda: True, gripper: float = 0.08) -> bool:
    """Publish chunks holding `goal` for `seconds` (or until the EE is within `until_within` of it and
    `until()` holds: franky-sim runs slower than real time on a busy machine). Returns whether the goal
    was reached."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        probe.send(np.repeat(goal[None], points, 0), gripper=gripper)
        time.sleep(1.0 / rate_hz)
        if until_within is not None and np.linalg.norm(probe.position() - goal) < until_within and until():
            return True
    return until_within is None


@pytest.fixture
def graph(franky_sim: FrankySimProcess, domain_id: int):  # noqa: F811
    runner = GraphRunner("sim", nodes=["executor"], domain_id=domain_id, num_threads=2,
                         overrides={"executor": {"robot_host": franky_sim.host, "stop_after_s": 1.0,
                                                      "state_rate_hz": 25.0}})  # fewer messages: a busy 2-core box
    with runner:
        probe = Probe(runner.context)
        runner.add_node(probe)
        assert wait_for(lambda: len(probe.poses) > 5 and len(probe.joints) > 5, 15.0), "no robot state published"
        yield runner, probe


def test_state_chunks_commands_estop_and_home(graph):
    runner, probe = graph
    node = runner.nodes["executor"]
    # robot state: 7 joints + gripper width; EE pose = the proprio layout's xyz/rotation
    names, q, _, _ = joint_state_to_numpy(probe.joints[-1])
    assert names == STATE_NAMES and 0.0 <= q[7] <= 0.08
    state = node.control.latest
    np.testing.assert_allclose(state.proprio()[:3], probe.position(), atol=5e-3)
    np.testing.assert_allclose(quat_to_matrix(probe.poses[-1][2]), state.ee[:3, :3], atol=1e-3)

    # 32-step policy chunks move the arm to the commanded goal; COMMAND_TOPIC echoes what franky got
    start = probe.position().copy()
    goal = start + np.array([-0.03, 0.03, -0.02])
    def commanded_goal() -> bool:  # the newest command the probe received (they arrive with a delay)
        return bool(probe.commands) and np.allclose(msg_to_chunk(probe.commands[-1][1]).actions[0, :3], goal, atol=1e-4)

    assert stream_to(probe, goal, 40.0, until_within=0.002, until=commanded_goal), probe.position() - goal
    print(f"\ncommands sent {node.control.counters['commands']}, received on {spec.COMMAND_TOPIC}: "
          f"{len(probe.commands)}; joint states received {len(probe.joints)}")
    assert node.control.counters["commands"] >= 4 and len(probe.commands) >= node.control.counters["commands"] // 2
    sent = [msg_to_chunk(m) for _, m in probe.commands]
    assert all(c.actions.shape == (1, spec.ACTION_DIM) for c in sent)
    lo, hi = np.array(node.control.limits.workspace_min), np.array(node.control.limits.workspace_max)
    assert all(np.all(c.actions[0, :3] >= lo) and np.all(c.actions[0, :3] <= hi) for c in sent)

    # 1-point teleop chunks stamped now are executed the same way
    goal2 = goal + np.array([0.0, -0.02, 0.0])
    assert stream_to(probe, goal2, 40.0, rate_hz=20.0, points=1, until_within=0.002), probe.position() - goal2

    # e-stop: the arm stops, chunks are ignored until released
    probe.estop.publish(Bool(data=True))
    assert wait_for(lambda: node.control.state.value == "estop", 3.0)
    # it brakes at the stop motion's deceleration in simulated time: on a slowed franky-sim that takes longer
    assert wait_for(probe.at_rest, 5.0), "the arm did not come to rest within 5 s of the e-stop"
    n_cmd, held = node.control.counters["commands"], probe.position().copy()
    stream_to(probe, goal2 + [0.0, 0.0, 0.03], 0.6)
    assert node.control.counters["commands"] == n_cmd and np.linalg.norm(probe.position() - held) < 0.001
    assert wait_for(lambda: probe.status().startswith("estop"), 3.0), probe.status()
    probe.estop.publish(Bool(data=False))
    assert wait_for(lambda: node.control.state.value == "idle", 3.0)

    # an episode that ends with the hand closed (a grasp on nothing)
    def width() -> float:
        return float(joint_state_to_numpy(probe.joints[-1])[1][7])

    assert stream_to(probe, goal2, 20.0, rate_hz=10.0, until_within=0.01, until=lambda: width() < 0.01,
                     gripper=0.0), width()
    # home: joint motion to the home configuration with the hand opened, then idle
    probe.home.publish(Empty())
    assert wait_for(lambda: node.control.state.value == "homing", 3.0)
    assert wait_for(lambda: node.control.state.value == "idle", 40.0), node.control.message
    # where the arm is once homing has ended: a state published after that (at 25 Hz, the one last received when
    # the executor turned idle can predate the move's last 40 ms; one such was 0.021 rad short on joint 4)
    n = len(probe.joints)
    assert wait_for(lambda: len(probe.joints) >= n + 2, 2.0), "no joint state after homing"
    _, q, _, _ = joint_state_to_numpy(probe.joints[-1])
    np.testing.assert_allclose(q[:7], HOME_JOINTS, atol=0.02)
    assert wait_for(lambda: width() > 0.075, 2.0), width()
    # the sim graph holds after homing (hold_after_home): no chunk moves the arm until an episode start
    assert node.control.message == "homed: waiting for an episode start"
    n_cmd, held = node.control.counters["commands"], probe.position().copy()
    stream_to(probe, held + [0.0, 0.03, 0.0], 0.6)
    assert node.control.counters["commands"] == n_cmd and np.linalg.norm(probe.position() - held) < 0.001
    before_start = probe.get_clock().now().nanoseconds
    probe.episode.publish(String(data="start"))
    assert stream_to(probe, held + [0.0, 0.03, 0.0], 20.0, until_within=0.002), probe.position() - held
    stale = node.control.counters["rejected_stale"]
    probe.send(np.repeat(held[None], 32, 0), stamp_ns=before_start)  # a plan of the scene before the start
    assert wait_for(lambda: node.control.counters["rejected_stale"] == stale + 1, 5.0), node.control.counters
    status = node.control.status()
    print(f"\nexecutor node: {len(probe.commands)} commands; chunk received -> franky command latency median "
          f"{status['latency_median_ms']:.2f} ms, p95 {status['latency_p95_ms']:.2f} ms (25 Hz chunks); {status}")
    assert status.get("robot_errors", 0) == 0


def test_malformed_chunks_are_rejected_without_motion(graph):
    runner, probe = graph
    node = runner.nodes["executor"]
    before = probe.position().copy()
    bad = chunk_to_msg(np.zeros((4, spec.ACTION_DIM)), probe.get_clock().now().nanoseconds)
    bad.joint_names = ["a"] * spec.ACTION_DIM  # wrong names
    probe.chunks.publish(bad)  # one at a time: chunk QoS keeps only the newest message
    assert wait_for(lambda: node.control.counters["chunks_malformed"] == 1, 20.0), node.control.counters
    stale = probe.get_clock().now().nanoseconds - 5 * 10**9  # observation 5 s old: every step is past
    probe.send(np.repeat(before[None] + [0.05, 0, 0], 32, 0), stamp_ns=stale)
    assert wait_for(lambda: node.control.counters["rejected_stale"] == 1, 20.0), node.control.counters
    time.sleep(0.3)
    assert node.control.counters["commands"] == 0
    assert np.linalg.norm(probe.position() - before) < 1e-3


def test_sigint_stops_cleanly(franky_sim: FrankySimProcess, domain_id: int):  # noqa: F811
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    proc = subprocess.Popen([sys.executable, "-m", "flow2one.nodes.executor", "--ros-args", "-p",
                             f"robot_host:={franky_sim.host}", "-p", "realtime:=ignore"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 60.0  # imports + connecting take seconds on a busy machine
        while time.monotonic() < deadline and not any("connected to the robot" in x for x in lines):
            line = proc.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        time.sleep(0.5)
        assert proc.poll() is None, "".join(lines)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
