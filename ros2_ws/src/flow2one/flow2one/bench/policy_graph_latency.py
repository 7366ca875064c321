"""Graph benchmark: observation stamp -> chunk received by a subscriber, through the policy node.

A probe node publishes a 4,096-point cloud + EE pose + joint state stamped "now" at the camera rate
(30 Hz) and subscribes to the chunks; latency = receipt time - chunk stamp (= observation stamp), so
it contains DDS delivery both ways, the wait for the policy, assembly, inference and publishing. The
node's own inference time from the same run is the baseline it is compared with, and the per-stage trace
(flow2one/ros/trace.py) says where the rest goes. Everything runs in one process (GraphRunner, loopback
DDS) with a small randomly initialised student; "before" runs the scheduling of flow2one.ros.trace.BEFORE.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import JointState, PointCloud2
from trajectory_msgs.msg import JointTrajectory

from flow2one import spec
from flow2one.bench.timing import Timing
from flow2one.ros.convert import numpy_to_joint_state, numpy_to_pose_stamped, stamp_to_ns, xyz_to_pointcloud2
from flow2one.ros.qos import CHUNK_QOS, SENSOR_QOS, STATE_QOS
from flow2one.ros.runner import GraphRunner
from flow2one.ros.trace import TraceCollector, TracePublisher, breakdown

JOINTS = tuple(f"panda_joint{i}" for i in range(1, 8)) + ("gripper_width",)


class ObservationProbe(Node):
    def __init__(self, context: object, rate_hz: float = 30.0) -> None:
        super().__init__("latency_probe", context=context)
        self.cloud = self.create_publisher(PointCloud2, spec.POINTS_TOPIC, SENSOR_QOS)
        self.pose = self.create_publisher(PoseStamped, spec.EE_POSE_TOPIC, STATE_QOS)
        self.joints = self.create_publisher(JointState, spec.JOINT_STATES_TOPIC, STATE_QOS)
        self.create_subscription(JointTrajectory, spec.CHUNK_TOPIC, self._on_chunk, CHUNK_QOS)
        self.points = np.random.default_rng(0).uniform([0.3, -0.3, 0.0], [0.7, 0.3, 0.3], (spec.N_POINTS, 3))
        self.latencies_ms: list[float] = []
        self.sent = 0
        self.trace = TracePublisher(self)  # the probe stands in for the camera + pointcloud node
        self.create_timer(1.0 / rate_hz, self._publish)

    def _publish(self) -> None:
        now = self.get_clock().now().nanoseconds
        self.cloud.publish(xyz_to_pointcloud2(self.points, now))
        self.trace.emit(frame=now, cloud_published=self.trace.now_ns())
        self.pose.publish(numpy_to_pose_stamped([0.45, 0.0, 0.35], [1.0, 0.0, 0.0, 0.0], now))
        self.joints.publish(numpy_to_joint_state(JOINTS, np.r_[np.zeros(7), 0.04], stamp_ns=now))
        self.sent += 1

    def _on_chunk(self, msg: JointTrajectory) -> None:
        self.latencies_ms.append((self.get_clock().now().nanoseconds - stamp_to_ns(msg.header.stamp)) * 1e-6)


def small_student(directory: Path) -> Path:
    from flow2one.policy.checkpoint import save_policy
    from flow2one.policy.config import preset
    from flow2one.policy.factory import build_policy
    from flow2one.runtime.export import export_model_dir

    torch.manual_seed(0)
    save_policy(directory, build_policy(preset("small", kind="student")),
                card={"name": "small_student_bench", "trained_on": "random weights (benchmark)"})
    export_model_dir(directory)
    return directory


def measure(model_dir: Path, candidates: int, seconds: float, domain_id: int, before: bool = False,
            rate_hz: float = 125.0) -> tuple[dict, list[dict[str, int]]]:
    """One run: (figures, the trace rows)."""
    from flow2one.ros.trace import AFTER, BEFORE

    sched = BEFORE if before else AFTER
    params = {"model_dir": str(model_dir), "n_candidates": candidates, "max_obs_age_s": 0.5, "markers_every": 5,
              "rate_hz": rate_hz, **sched["policy"]}
    with GraphRunner("sim", nodes=["policy"], overrides={"policy": params}, domain_id=domain_id,
                     num_threads=2, executor=sched["ros_executor"]) as runner:
        probe = ObservationProbe(runner.context)
        collector = TraceCollector(runner.context)
        runner.add_node(probe)
        runner.add_node(collector)
        runner.nodes["latency_probe"], runner.nodes["latency_trace"] = probe, collector  # destroyed with the graph
        time.sleep(1.0)  # discovery + warm-up
        probe.latencies_ms.clear()
        collector.clear()
        sent0 = probe.sent
        time.sleep(seconds)
        lat = np.asarray(probe.latencies_ms)
        infer = np.asarray(runner.nodes["policy"]._infer_ms)
        sent = probe.sent - sent0
        rows = collector.rows()
    head = {"scheduling": "before" if before else "after", "candidates": candidates, "rate_hz": rate_hz}
    if not len(lat):
        return {**head, "error": "no chunk received", "trace": breakdown(rows)}, rows
    lat_t, infer_t = Timing.of(lat / 1e3), Timing.of(infer / 1e3)
    p50, p99, infer50 = lat_t.ms(50), lat_t.ms(99), infer_t.ms_median
    return {**head, "observations_sent": sent, "observations_expected": round(seconds * 30.0),
            "chunks_received": int(len(lat)), "chunks_per_observation": round(len(lat) / max(sent, 1), 3),
            "latency_ms_p50": round(float(p50), 2), "latency_ms_p99": round(float(p99), 2),
            "inference_ms_p50": round(infer50, 2),
            "latency_over_inference_p50": round(p50 / infer50, 2), "trace": breakdown(rows)}, rows


def run(quick: bool = False) -> dict:
    seconds = 3.0 if quick else 10.0
    domain = 100 + os.getpid() % 100
    with tempfile.TemporaryDirectory() as d:
        model = small_student(Path(d))
        runs = [measure(model, m, seconds, domain, before)[0] for m in (1, 4) for before in (True, False)]
    return {"model": "small student (random weights), onnxruntime CPU, 1 thread", "observation_rate_hz": 30.0,
            "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
            "transport": "one process, loopback DDS (rmw_fastrtps_cpp), SENSOR/STATE/CHUNK QoS of flow2one/ros/qos.py",
            "runs": runs}
