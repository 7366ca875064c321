"""Camera node: RealSense cameras (by serial, from the calibration file) -> color, aligned depth, CameraInfo.

Topics follow realsense-ros naming (spec.camera_topics), so this node and the official driver are
interchangeable. Capture, pairing, filters, alignment and clock mapping live in
flow2one.perception.realsense; this node only publishes and reports. A camera that stops delivering
turns diagnostics to ERROR and is re-opened every `retry_s` until it comes back; a serial that is not
connected at start-up is refused with an error listing the connected ones.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from flow2one import spec
from flow2one.perception.calibration import load_cameras, select_cameras
from flow2one.perception.realsense import CaptureConfig, CaptureThread, RealSenseCamera, RGBDFrame
from flow2one.ros.convert import intrinsics_to_camera_info, numpy_to_image
from flow2one.ros.diagnostics import ERROR, OK, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.qos import SENSOR_QOS
from flow2one.ros.runner import run_node_main


@dataclass(frozen=True)
class CameraParams:
    calibration_file: str = "calibration/lab_d435.yaml"  # names + serials of the cameras to open
    cameras: str = ""  # comma-separated subset of the file's cameras; "" = all (ROS has no empty-list type)
    width: int = 640
    height: int = 480
    fps: int = 30
    align_depth_to_color: bool = True
    filters: str = "spatial"  # comma-separated, of spatial, temporal, hole_filling (librealsense); "" = none
    hardware_sync: bool = False  # inter_cam_sync_mode: first camera master (1), the others slave (2)
    timeout_ms: int = 1000  # no frame pair for this long = camera gone
    retry_s: float = 1.0

    def capture_config(self, index: int) -> CaptureConfig:
        mode = (1 if index == 0 else 2) if self.hardware_sync else 0
        filters = tuple(f.strip() for f in self.filters.split(",") if f.strip())
        return CaptureConfig(self.width, self.height, self.fps, self.align_depth_to_color, filters, mode,
                             self.timeout_ms)

    def __post_init__(self) -> None:
        self.capture_config(0)  # validates sizes and filter names
        if self.retry_s <= 0:
            raise ValueError(f"retry_s must be > 0, got {self.retry_s}")


class CameraNode(Node):
    PARAMS = CameraParams  # checked by the runner before any node starts

    def __init__(self, node_name: str = "camera", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self.diag = Diagnostics(self)
        cams = select_cameras(load_cameras(self.p.calibration_file), self.p.cameras, self.p.calibration_file)
        self._pubs: dict[str, tuple] = {}
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads: list[CaptureThread] = []
        try:
            for i, cam in enumerate(cams):
                topics = spec.camera_topics(cam.name)
                self._pubs[cam.name] = tuple(self.create_publisher(t, topics[k], SENSOR_QOS) for t, k in (
                    (Image, "color"), (CameraInfo, "color_info"), (Image, "depth"), (CameraInfo, "depth_info")))
                rs_cam = RealSenseCamera(cam.name, cam.serial, self.p.capture_config(i))
                self._threads.append(CaptureThread(
                    rs_cam, lambda f, n=cam.name: self._publish(n, f),
                    lambda ok, msg, n=cam.name: self._status(n, ok, msg), self.p.retry_s))
        except BaseException:
            self.close()
            raise
        self.diag.set(OK, f"streaming {len(cams)} camera(s)", cameras=",".join(c.name for c in cams))

    def _publish(self, name: str, f: RGBDFrame) -> None:
        color_pub, color_info_pub, depth_pub, depth_info_pub = self._pubs[name]
        frame_id = f"{name}_color_optical_frame"
        if abs(f.depth_scale - 0.001) < 1e-6:  # the D400 default: publish 16UC1 millimetres as-is
            depth = numpy_to_image(f.depth, "16UC1", f.stamp_ns, frame_id)
        else:
            metres = f.depth.astype(np.float32) * np.float32(f.depth_scale)
            depth = numpy_to_image(metres, "32FC1", f.stamp_ns, frame_id)
        depth_frame = frame_id if self.p.align_depth_to_color else f"{name}_depth_optical_frame"
        depth.header.frame_id = depth_frame
        color_pub.publish(numpy_to_image(f.color, "rgb8", f.stamp_ns, frame_id))
        color_info_pub.publish(intrinsics_to_camera_info(f.color_intrinsics, f.stamp_ns, frame_id))
        depth_pub.publish(depth)
        depth_info_pub.publish(intrinsics_to_camera_info(f.intrinsics, f.stamp_ns, depth_frame))

    def _status(self, name: str, ok: bool, message: str) -> None:
        with self._lock:
            if ok:
                self._errors.pop(name, None)
            else:
                self._errors[name] = message
                self.get_logger().error(message)
            if self._errors:
                self.diag.set(ERROR, "; ".join(self._errors.values()), failing=",".join(sorted(self._errors)))
            else:
                self.diag.set(OK, message, failing="")

    def close(self) -> None:
        for t in self._threads:
            t.stop()
        self._threads.clear()


def main(args=None) -> None:
    run_node_main("camera", args)
