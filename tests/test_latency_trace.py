"""The per-stage latency trace (/flow2one/trace) and the event-driven policy, over real rclpy + ONNX Runtime,
with the executor driving franky-sim over the libfranka protocol for the last stages."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState, PointCloud2
from trajectory_msgs.msg import JointTrajectory

from flow2one import spec
from flow2one.bench.policy_graph_latency import JOINTS
from flow2one.control.franky_sim import FrankySimProcess
from flow2one.ros.convert import (
    numpy_to_joint_state,
    numpy_to_pose_stamped,
    stamp_to_ns,
    xyz_to_pointcloud2,
)
from flow2one.ros.qos import CHUNK_QOS, SENSOR_QOS, STATE_QOS
from flow2one.ros.runner import GraphRunner
from flow2one.ros.trace import (
    STAGES,
    TraceCollector,
    TracePublisher,
    breakdown,
    join,
    plot,
)
from tests.helpers import wait_for
from tests.test_control_franky import franky_sim  # noqa: F401  (module-scoped sim fixture)
from tests.test_runtime import exported_student


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return exported_student(tmp_path_factory)


class CloudProbe(Node):
    """Stands in for camera + pointcloud node: a cloud stamped 'now' per call, traced as the node traces it."""

    def __init__(self, context: object) -> None:
        super().__init__("cloud_probe", context=context)
        self.pub = self.create_publisher(PointCloud2, spec.POINTS_TOPIC, SENSOR_QOS)
        self.trace = TracePublisher(self)
        self.points = np.random.default_rng(0).uniform([0.3, -0.3, 0.0], [0.7, 0.3, 0.3], (spec.N_POINTS, 3))
        self.chunk_stamps: list[int] = []
        self.lock = threading.Lock()
        self.create_subscription(JointTrajectory, spec.CHUNK_TOPIC, self._on_chunk, CHUNK_QOS)

    def _on_chunk(self, msg: JointTrajectory) -> None:
        with self.lock:
            self.chunk_stamps.append(stamp_to_ns(msg.header.stamp))

    def publish(self) -> int:
        now = self.trace.now_ns()
        self.pub.publish(xyz_to_pointcloud2(self.points, now))
        self.trace.emit(frame=now, cloud_published=self.trace.now_ns())
        return now


def test_join_and_breakdown_put_each_nodes_stages_on_one_row(tmp_path: Path) -> None:
    ms = 1_000_000
    records = [{"frame": 10 * ms, "cloud_published": 13 * ms},
               {"frame": 10 * ms, "chunk": 9 * ms, "cloud_received": 14 * ms, "inference_start": 15 * ms,
                "inference_end": 20 * ms, "chunk_published": 21 * ms},
               {"chunk": 9 * ms, "chunk_received": 22 * ms, "retarget_allowed": 22 * ms, "control_turn": 23 * ms,
                "franky_call": 24 * ms, "target_sent": 30 * ms},
               # a chunk the executor superseded before commanding it: policy stages only
               {"frame": 40 * ms, "chunk": 39 * ms, "cloud_received": 44 * ms, "inference_start": 45 * ms,
                "inference_end": 50 * ms, "chunk_published": 51 * ms}]
    rows = join(records)
    assert len(rows) == 2 and set(rows[0]) == {*STAGES, "chunk"} and "chunk_received" not in rows[1]
    b = breakdown(rows)
    assert (b["chunks"], b["complete"], b["ordered"]) == (2, 1, 1)
    assert b["interval_ms"]["inference_end"]["p50"] == pytest.approx(5.0)
    assert b["interval_ms"]["target_sent"]["n"] == 1 and b["interval_ms"]["target_sent"]["p50"] == pytest.approx(6.0)
    assert b["interval_ms"]["control_turn"]["p50"] == pytest.approx(1.0)
    assert b["interval_ms"]["retarget_allowed"]["p50"] == pytest.approx(0.0)
    assert b["since_frame_ms"]["target_sent"]["p50"] == pytest.approx(20.0)
    assert b["chunk_stamp_to_target_sent_ms"]["p50"] == pytest.approx(21.0)
    plot(rows, str(tmp_path / "latency.png"))
    assert (tmp_path / "latency.png").stat().st_size > 10_000


def test_every_stage_from_frame_to_franky_target_is_traced_in_order(
        student_dir: Path, franky_sim: FrankySimProcess, domain_id: int) -> None:  # noqa: F811
    overrides = {"policy": {"model_dir": str(student_dir), "n_candidates": 2, "max_obs_age_s": 2.0, "rate_hz": 10.0},
                 "executor": {"robot_host": franky_sim.host, "state_rate_hz": 25.0}}
    with GraphRunner("sim", nodes=["policy", "executor"], overrides=overrides, domain_id=domain_id) as runner:
        probe, collector = CloudProbe(runner.context), TraceCollector(runner.context)
        runner.add_node(probe)
        runner.add_node(collector)

        def complete() -> bool:
            probe.publish()
            return any(all(s in r for s in STAGES) for r in collector.rows())

        assert wait_for(complete, timeout=40.0, period=0.1), f"no chunk traced end to end: {collector.rows()[-3:]}"
        rows = collector.rows()
        runner.nodes["cloud_probe"], runner.nodes["latency_trace"] = probe, collector
    full = [r for r in rows if all(s in r for s in STAGES)]
    for r in full:
        times = [r[s] for s in STAGES]
        assert times == sorted(times), {s: r[s] - r["frame"] for s in STAGES}
    with probe.lock:
        assert {r["chunk"] for r in rows} <= set(probe.chunk_stamps)  # the trace keys are the chunks' stamps
    assert breakdown(rows)["ordered"] == len(full) >= 1


def test_the_policy_infers_once_per_new_cloud(student_dir: Path, domain_id: int) -> None:
    """Event-driven: each cloud starts one inference (a 125 Hz cap is no timer), and robot-state messages
    alone start none."""
    overrides = {"policy": {"model_dir": str(student_dir), "n_candidates": 1, "max_obs_age_s": 2.0, "rate_hz": 125.0}}
    with GraphRunner("sim", nodes=["policy"], overrides=overrides, domain_id=domain_id) as runner:
        probe, collector = CloudProbe(runner.context), TraceCollector(runner.context)
        runner.add_node(probe)
        runner.add_node(collector)
        pose_pub = probe.create_publisher(PoseStamped, spec.EE_POSE_TOPIC, STATE_QOS)
        joint_pub = probe.create_publisher(JointState, spec.JOINT_STATES_TOPIC, STATE_QOS)

        def state() -> None:
            now = probe.trace.now_ns()
            pose_pub.publish(numpy_to_pose_stamped([0.45, 0.0, 0.35], [1.0, 0.0, 0.0, 0.0], now))
            joint_pub.publish(numpy_to_joint_state(JOINTS, np.r_[np.zeros(7), 0.04], stamp_ns=now))

        assert wait_for(lambda: (state(), probe.publish(), bool(collector.rows()))[2], timeout=20.0, period=0.1)
        time.sleep(0.5)
        collector.clear()
        frames = []
        for _ in range(10):  # a cloud every 100 ms with robot state at 100 Hz in between
            frames.append(probe.publish())
            for _ in range(10):
                state()
                time.sleep(0.01)
        time.sleep(0.5)
        rows = collector.rows()
        runner.nodes["cloud_probe"], runner.nodes["latency_trace"] = probe, collector
    used = [r["frame"] for r in rows]
    assert len(used) == len(set(used)), "a cloud was inferred on twice"  # state updates start no inference
    assert len(set(used) & set(frames)) >= 8, f"{len(rows)} inferences for {len(frames)} clouds"
    assert all(r["inference_start"] >= r["cloud_received"] for r in rows)
