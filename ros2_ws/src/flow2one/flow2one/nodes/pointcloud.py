"""Point-cloud node: every camera's aligned depth (time-synchronised) -> one N_POINTS cloud in the base frame.

Extrinsics come from the calibration file, intrinsics from each camera's CameraInfo (the driver's live
values; the file's until the first one arrives), the wrist camera's pose from the robot's EE pose nearest
in time to the images (images that arrive before the pose stream reaches their time wait for it: PoseGate).
The work is flow2one.perception.cloud.CloudPipeline. Works on the RealSense node and on the sim cameras alike
(same topics, same calibration format).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from flow2one import spec
from flow2one.geometry import quat_to_matrix
from flow2one.paths import resolve
from flow2one.perception.calibration import load_cameras, select_cameras
from flow2one.perception.cloud import CloudPipeline
from flow2one.perception.sync import ApproxTimeSync, PoseGate
from flow2one.ros.convert import (
    camera_info_to_intrinsics,
    depth_to_metres,
    pose_stamped_to_numpy,
    stamp_to_ns,
    xyz_to_pointcloud2,
)
from flow2one.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.qos import SENSOR_QOS, STATE_QOS
from flow2one.ros.runner import run_node_main
from flow2one.ros.trace import TracePublisher

try:  # the robot's apt ROS 2 has it; PyPI does not (flow2one.perception.sync is the fallback)
    import message_filters
except ImportError:
    message_filters = None


@dataclass(frozen=True)
class PointCloudParams:
    calibration_file: str = "calibration/sim.yaml"
    cameras: str = ""  # comma-separated subset of the file's cameras; "" = all (ROS has no empty-list type)
    workspace_min: tuple[float, ...] = (0.1, -0.6, -0.02)  # base frame, metres
    workspace_max: tuple[float, ...] = (1.0, 0.6, 0.7)
    voxel_size: float = 0.01
    n_points: int = spec.N_POINTS
    seed: int = 0
    pixel_stride: int = 0  # 0 = automatic (>= 2 depth samples per voxel width)
    slop_s: float = 0.02  # max spread of the stamps of one synchronised set
    queue_size: int = 5  # per camera, frames kept waiting for their set (the wrist camera's: for its EE pose)
    ee_pose_max_dt_s: float = 0.05  # wrist camera: max |stamp(pose) - stamp(images)|

    def __post_init__(self) -> None:
        if len(self.workspace_min) != 3 or len(self.workspace_max) != 3:
            raise ValueError("workspace_min and workspace_max need 3 values (x, y, z)")
        if self.slop_s < 0 or self.queue_size < 1 or self.ee_pose_max_dt_s < 0:
            raise ValueError("slop_s and ee_pose_max_dt_s must be >= 0 and queue_size >= 1")


def pose_to_matrix(xyz: np.ndarray, quat_xyzw: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix(quat_xyzw)
    T[:3, 3] = xyz
    return T


class PointCloudNode(Node):
    PARAMS = PointCloudParams  # checked by the runner before any node starts

    def __init__(self, node_name: str = "pointcloud", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self.diag = Diagnostics(self)
        cams = select_cameras(load_cameras(self.p.calibration_file), self.p.cameras, self.p.calibration_file)
        self.pipeline = CloudPipeline(cams, self.p.workspace_min, self.p.workspace_max, self.p.voxel_size,
                                      self.p.n_points, self.p.seed, self.p.pixel_stride)
        self.published = 0
        self.trace = TracePublisher(self)
        self._pub = self.create_publisher(PointCloud2, spec.POINTS_TOPIC, SENSOR_QOS)
        self._gate: PoseGate | None = None
        if any(c.mount == "ee" for c in cams):
            self._gate = PoseGate(int(self.p.ee_pose_max_dt_s * 1e9), self.p.queue_size)
            self.create_subscription(PoseStamped, spec.EE_POSE_TOPIC, self._on_pose, STATE_QOS)
        for i, cam in enumerate(cams):
            self.create_subscription(CameraInfo, spec.camera_topics(cam.name)["depth_info"],
                                     lambda m, i=i: self._on_info(i, m), SENSOR_QOS)
        depth_topics = [spec.camera_topics(c.name)["depth"] for c in cams]
        if message_filters is not None:
            subs = [message_filters.Subscriber(self, Image, t, qos_profile=SENSOR_QOS) for t in depth_topics]
            self._sync = message_filters.ApproximateTimeSynchronizer(subs, self.p.queue_size, self.p.slop_s)
            self._sync.registerCallback(self._on_depths)
        else:
            self._sync = ApproxTimeSync(len(cams), int(self.p.slop_s * 1e9), self._on_depths, self.p.queue_size)
            for i, t in enumerate(depth_topics):
                self.create_subscription(Image, t, lambda m, i=i: self._sync.add(i, stamp_to_ns(m.header.stamp), m),
                                         SENSOR_QOS)
        self.diag.set(WARN, "waiting for depth images", cameras=",".join(c.name for c in cams))
        self.get_logger().info(f"cameras {', '.join(c.name for c in cams)} from {resolve(self.p.calibration_file)}")

    def _on_pose(self, msg: PoseStamped) -> None:
        try:
            xyz, quat = pose_stamped_to_numpy(msg)
        except ValueError as exc:
            self.diag.set(WARN, f"bad EE pose: {exc}")
            return
        self._release(self._gate.pose(stamp_to_ns(msg.header.stamp), pose_to_matrix(xyz, quat)))

    def _on_info(self, i: int, msg: CameraInfo) -> None:
        try:
            intr = camera_info_to_intrinsics(msg)
        except ValueError as exc:
            self.diag.set(WARN, f"bad CameraInfo of {self.pipeline.cameras[i].name}: {exc}")
            return
        self.pipeline.set_camera(i, dataclasses.replace(self.pipeline.cameras[i], intrinsics=intr))

    def _on_depths(self, *msgs: Image) -> None:
        stamp = min(stamp_to_ns(m.header.stamp) for m in msgs)  # the cloud is as old as its oldest image
        if self._gate is None:
            self._publish(msgs, stamp, None)
        else:
            self._release(self._gate.frame(stamp, msgs))

    def _release(self, ready: list[tuple[int, tuple[Image, ...], np.ndarray | None]]) -> None:
        for stamp, msgs, T_base_ee in ready:
            if T_base_ee is None:
                self.diag.set(WARN, "no EE pose near the image time for the wrist camera")
            else:
                self._publish(msgs, stamp, T_base_ee)

    def _publish(self, msgs: tuple[Image, ...], stamp: int, T_base_ee: np.ndarray | None) -> None:
        try:
            points = self.pipeline.process([depth_to_metres(m) for m in msgs], T_base_ee)
        except ValueError as exc:
            self.diag.set(ERROR, f"cannot build the cloud: {exc}")
            return
        msg = xyz_to_pointcloud2(points, stamp, spec.BASE_FRAME)
        published = self.trace.now_ns()  # before publish(): a subscriber may run before publish() returns
        self._pub.publish(msg)
        self.trace.emit(frame=stamp, cloud_published=published)
        self.published += 1
        s = self.pipeline.stats
        level, text = (OK, "publishing") if s.n_cropped else (WARN, "no depth inside the workspace box")
        self.diag.set(level, text, published=self.published, cropped=s.n_cropped, voxels=s.n_voxels, padded=s.padded)


def main(args=None) -> None:
    run_node_main("pointcloud", args)
