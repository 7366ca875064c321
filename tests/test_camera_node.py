"""CameraNode over rclpy on two librealsense software devices: topics, values, stamps, diagnostics on loss."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyrealsense2 as rs
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from flow2one import spec
from flow2one.perception.calibration import save_cameras
from flow2one.perception.camera_model import CameraIntrinsics, CameraModel
from flow2one.perception.realsense import SOFTWARE_DEVICES, CameraNotFoundError
from flow2one.perception.rs_software import SoftwareRealSense
from flow2one.ros.convert import camera_info_to_intrinsics, image_to_numpy, stamp_to_ns
from flow2one.ros.qos import SENSOR_QOS
from flow2one.ros.runner import GraphRunner
from tests.helpers import wait_for

INTR = CameraIntrinsics(320, 240, 307.5, 307.5, 160.0, 120.0)
SERIALS = {"front": "901", "side": "902"}


def frames(k: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    depth = np.full((240, 320), 800 + offset, np.uint16)
    depth[100:140, 140:180] = 500
    color = np.zeros((240, 320, 3), np.uint8)
    color[..., 0], color[..., 1], color[..., 2] = offset, k % 256, 7
    return depth, color


class Feeder:
    """Pushes frames into software RealSense devices at ~15 Hz; a camera can be paused (unplugged)."""

    def __init__(self) -> None:
        self.devices = {n: SoftwareRealSense(s, INTR, domain=rs.timestamp_domain.global_time)
                        for n, s in SERIALS.items()}
        self.paused: set[str] = set()
        self.sent: dict[str, dict[int, int]] = {n: {} for n in SERIALS}  # stamp_ns -> k
        self._stop = threading.Event()
        for n, s in SERIALS.items():
            SOFTWARE_DEVICES[s] = self.devices[n].device
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        k = 0
        while not self._stop.is_set():
            t_ms = time.time() * 1000
            for i, (n, dev) in enumerate(self.devices.items()):
                if n not in self.paused:
                    dev.push(*frames(k, 10 * i), t_ms)
                    self.sent[n][int(round(t_ms * 1e6))] = k
            k += 1
            time.sleep(0.066)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for s in SERIALS.values():
            SOFTWARE_DEVICES.pop(s, None)


@pytest.fixture
def calib(tmp_path):
    path = tmp_path / "lab.yaml"
    save_cameras(path, [CameraModel(n, INTR, np.eye(4), "base", s) for n, s in SERIALS.items()])
    return path


def test_camera_node_publishes_and_reports_a_lost_camera(calib, domain_id):
    feeder = Feeder()
    overrides = {"camera": {"calibration_file": str(calib), "width": 320, "height": 240, "fps": 30,
                            "filters": "", "timeout_ms": 400, "retry_s": 0.1}}
    try:
        with GraphRunner("deploy", nodes=["camera"], domain_id=domain_id, overrides=overrides) as runner:
            probe = Node("probe", context=runner.context)
            got: dict[str, list] = {}
            diags: list[DiagnosticStatus] = []
            for n in SERIALS:
                for key, typ in (("color", Image), ("depth", Image), ("depth_info", CameraInfo),
                                 ("color_info", CameraInfo)):
                    got[f"{n}/{key}"] = []
                    probe.create_subscription(typ, spec.camera_topics(n)[key], got[f"{n}/{key}"].append, SENSOR_QOS)
            probe.create_subscription(DiagnosticArray, spec.DIAGNOSTICS_TOPIC,
                                      lambda m: diags.extend(s for s in m.status if s.name == "flow2one/camera"), 10)
            runner.add_node(probe)
            assert wait_for(lambda: all(len(v) >= 3 for v in got.values()), 15)
            for i, n in enumerate(SERIALS):
                color, depth = got[f"{n}/color"][-1], got[f"{n}/depth"][-1]
                stamp = stamp_to_ns(depth.header.stamp)
                k = feeder.sent[n][stamp]  # device (global) time mapped exactly to the ROS stamp
                want_depth, want_color = frames(k, 10 * i)
                assert color.encoding == "rgb8" and depth.encoding == "16UC1"
                np.testing.assert_array_equal(image_to_numpy(color), want_color)
                d = image_to_numpy(depth)
                np.testing.assert_array_equal(d[d > 0], want_depth[d > 0])
                assert camera_info_to_intrinsics(got[f"{n}/depth_info"][-1]) == INTR
                assert depth.header.frame_id == f"{n}_color_optical_frame"
            assert wait_for(lambda: diags and diags[-1].level == DiagnosticStatus.OK, 5)

            feeder.paused.add("side")  # the side camera stops delivering
            assert wait_for(lambda: diags and diags[-1].level == DiagnosticStatus.ERROR, 10)
            assert "side" in diags[-1].message and "902" in diags[-1].message
            n_front = len(got["front/color"])
            assert wait_for(lambda: len(got["front/color"]) >= n_front + 5, 10)  # the other keeps streaming

            feeder.paused.clear()
            assert wait_for(lambda: diags[-1].level == DiagnosticStatus.OK, 10)
            n_side = len(got["side/color"])
            assert wait_for(lambda: len(got["side/color"]) >= n_side + 3, 10)
    finally:
        feeder.close()


def test_camera_node_refuses_a_missing_serial(tmp_path, domain_id):
    path = tmp_path / "lab.yaml"
    save_cameras(path, [CameraModel("front", INTR, np.eye(4), "base", "404404")])
    with pytest.raises(CameraNotFoundError, match="'404404' is not connected"):
        GraphRunner("deploy", nodes=["camera"], domain_id=domain_id,
                    overrides={"camera": {"calibration_file": str(path)}}).start()
