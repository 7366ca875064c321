"""SimWorldNode in the sim graph's runner: camera topics like the RealSense node, reset/status, and the
franky-sim robot it serves (reached with franky on the configured host)."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Int64, String

from flow2one import spec
from flow2one.control.franky_sim import free_loopback_host
from flow2one.perception.calibration import load_cameras
from flow2one.ros.convert import camera_info_to_intrinsics, depth_to_metres, image_to_numpy, stamp_to_ns
from flow2one.ros.qos import LATCHED_QOS, SENSOR_QOS
from flow2one.ros.runner import GraphRunner
from flow2one.sim.cameras import SIM_CALIBRATION
from tests.helpers import wait_for


def test_sim_world_node_cameras_reset_status_and_robot(domain_id):
    host = free_loopback_host()
    overrides = {"sim_world": {"task": "track", "seed": 3, "host": host, "camera_rate_hz": 10.0}}
    with GraphRunner("sim", nodes=["sim_world"], overrides=overrides, domain_id=domain_id) as runner:
        probe = Node("probe", context=runner.context)
        got: dict[str, list] = defaultdict(list)
        for cam in ("front", "wrist"):
            for key, topic in spec.camera_topics(cam).items():
                kind = CameraInfo if key.endswith("info") else Image
                probe.create_subscription(kind, topic, lambda m, k=(cam, key): got[k].append((time.time_ns(), m)),
                                          SENSOR_QOS)
        status: list[dict] = []
        probe.create_subscription(String, spec.SIM_STATUS_TOPIC, lambda m: status.append(json.loads(m.data)),
                                  LATCHED_QOS)
        reset = probe.create_publisher(Int64, spec.SIM_RESET_TOPIC, 10)
        runner.add_node(probe)
        keys = [(c, k) for c in ("front", "wrist") for k in ("color", "color_info", "depth", "depth_info")]
        assert wait_for(lambda: all(len(got[k]) >= 4 for k in keys), timeout=30), {k: len(got[k]) for k in keys}

        calib = {c.name: c for c in load_cameras(SIM_CALIBRATION)}
        for cam in ("front", "wrist"):
            colors, depths = got[(cam, "color")], got[(cam, "depth")]
            stamps = [stamp_to_ns(m.header.stamp) for _, m in colors]
            assert all(b > a for a, b in zip(stamps, stamps[1:])), "stamps must increase"
            recv, msg = colors[-1]
            assert 0 <= recv - stamp_to_ns(msg.header.stamp) < 1e9  # wall-clock stamps, sub-second latency
            assert msg.encoding == "rgb8" and image_to_numpy(msg).shape == (120, 160, 3)
            assert msg.header.frame_id == f"{cam}_color_optical_frame"
            d = depths[-1][1]
            assert d.encoding == "16UC1" and stamp_to_ns(d.header.stamp) in stamps
            metres = depth_to_metres(d)
            assert metres.shape == (120, 160) and 0.05 < np.median(metres[metres > 0]) < 3.0
            info = camera_info_to_intrinsics(got[(cam, "depth_info")][-1][1])
            assert info == calib[cam].intrinsics

        assert wait_for(lambda: status and status[-1]["seed"] == 3, timeout=5)
        assert status[-1]["task"] == "track" and status[-1]["success"] is False
        episode = status[-1]["episode"]
        reset.publish(Int64(data=9))
        assert wait_for(lambda: status[-1]["seed"] == 9 and status[-1]["episode"] == episode + 1, timeout=5)

        from flow2one.control.franky_robot import FrankyRobot
        from flow2one.control.limits import SafetyLimits

        robot = FrankyRobot(host, SafetyLimits(), realtime="ignore")  # the node serves the robot the executor connects to
        try:
            np.testing.assert_allclose(robot.read_state().proprio()[:3], [0.307, 0.0, 0.487], atol=0.01)
        finally:
            robot.disconnect()
        probe.destroy_node()
