"""PointCloudNode over rclpy: injected depth images + CameraInfo (+ EE pose) -> 4,096-point clouds in the base frame."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from flow2one import spec
from flow2one.geometry import matrix_to_quat
from flow2one.perception.calibration import save_cameras
from flow2one.perception.camera_model import CameraIntrinsics, CameraModel
from flow2one.perception.cloud import CloudPipeline
from flow2one.perception.synthetic import look_at, render_depth, table_scene, two_camera_rig
from flow2one.ros.convert import (
    depth_to_metres,
    intrinsics_to_camera_info,
    numpy_to_image,
    numpy_to_pose_stamped,
    pointcloud2_to_xyz,
    stamp_to_ns,
)
from flow2one.ros.qos import SENSOR_QOS, STATE_QOS
from flow2one.ros.runner import GraphRunner
from tests.helpers import wait_for

QVGA = CameraIntrinsics(320, 240, 307.5, 307.5, 159.75, 119.75)  # what the "driver" publishes
WORKSPACE = {"workspace_min": [0.2, -0.4, -0.02], "workspace_max": [0.9, 0.4, 0.4]}


class Probe:
    """Publishes camera topics like the sim/RealSense nodes and collects the clouds."""

    def __init__(self, runner: GraphRunner, names: list[str]) -> None:
        self.node = Node("probe", context=runner.context)
        self.clouds: list[PointCloud2] = []
        self.node.create_subscription(PointCloud2, spec.POINTS_TOPIC, self.clouds.append, SENSOR_QOS)
        topics = {n: spec.camera_topics(n) for n in names}
        self.depth = {n: self.node.create_publisher(Image, t["depth"], SENSOR_QOS) for n, t in topics.items()}
        self.info = {n: self.node.create_publisher(CameraInfo, t["depth_info"], SENSOR_QOS) for n, t in topics.items()}
        self.pose = self.node.create_publisher(PoseStamped, spec.EE_POSE_TOPIC, STATE_QOS)
        runner.add_node(self.node)

    def wait_connected(self, topic_count: int = 1) -> None:
        assert wait_for(lambda: all(p.get_subscription_count() >= topic_count for p in
                                    [*self.depth.values(), *self.info.values()]), 10)

    def send(self, name: str, depth_m: np.ndarray, stamp_ns: int, intr: CameraIntrinsics = QVGA) -> np.ndarray:
        """Publish CameraInfo + 16UC1 depth; returns the metres the node will see."""
        mm = np.round(depth_m * 1000).astype(np.uint16)
        msg = numpy_to_image(mm, "16UC1", stamp_ns, f"{name}_color_optical_frame")
        self.info[name].publish(intrinsics_to_camera_info(intr, stamp_ns, msg.header.frame_id))
        self.depth[name].publish(msg)
        return depth_to_metres(msg)


def qvga_rig() -> list[CameraModel]:
    return [dataclasses.replace(c, intrinsics=QVGA) for c in two_camera_rig()]


@pytest.fixture
def calib_file(tmp_path):
    path = tmp_path / "calib.yaml"
    save_cameras(path, two_camera_rig())  # 640x480 in the file; the node must follow CameraInfo (320x240)
    return path


def test_node_publishes_the_pipeline_cloud_from_synchronised_depths(calib_file, domain_id):
    with GraphRunner("sim", nodes=["pointcloud"], domain_id=domain_id,
                     overrides={"pointcloud": {"calibration_file": str(calib_file), **WORKSPACE}}) as runner:
        probe = Probe(runner, ["front", "side"])
        probe.wait_connected()
        expected_pipe = CloudPipeline(qvga_rig(), WORKSPACE["workspace_min"], WORKSPACE["workspace_max"], 0.01)
        t0 = time.time_ns()
        for n in ("front", "side"):  # CameraInfo first, as the drivers send it with every frame
            probe.info[n].publish(intrinsics_to_camera_info(QVGA, t0, n))
        time.sleep(0.3)
        sent = []
        for k in range(4):
            stamp = t0 + k * 100_000_000
            depths = [render_depth(c, table_scene(k)) for c in qvga_rig()]
            seen = [probe.send("front", depths[0], stamp),
                    probe.send("side", depths[1], stamp + 4_000_000)]  # 4 ms apart
            sent.append((stamp, seen))
            assert wait_for(lambda n=k + 1: len(probe.clouds) == n, 10)
        # one camera drops a frame: no cloud for it
        probe.send("front", depths[0], t0 + 10**9)
        time.sleep(0.3)
        assert len(probe.clouds) == 4
        for msg, (stamp, seen) in zip(probe.clouds, sent):
            xyz = pointcloud2_to_xyz(msg)
            assert xyz.shape == (spec.N_POINTS, 3) and msg.header.frame_id == spec.BASE_FRAME
            assert stamp_to_ns(msg.header.stamp) == stamp  # the older image's stamp
            np.testing.assert_array_equal(xyz, expected_pipe.process(seen))
        assert runner.nodes["pointcloud"].published == 4


def test_wrist_camera_cloud_follows_the_ee_pose(tmp_path, domain_id):
    T_ee_cam = look_at((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), up=(0.0, 1.0, 0.0))
    T_ee_cam[:3, 3] = (0.05, 0.0, 0.03)
    wrist = CameraModel("wrist", QVGA, T_ee_cam, mount="ee")
    save_cameras(tmp_path / "c.yaml", [wrist])
    with GraphRunner("sim", nodes=["pointcloud"], domain_id=domain_id,
                     overrides={"pointcloud": {"calibration_file": str(tmp_path / "c.yaml"), **WORKSPACE}}) as runner:
        probe = Probe(runner, ["wrist"])
        probe.wait_connected()
        assert wait_for(lambda: probe.pose.get_subscription_count() >= 1, 10)
        T_base_cam = look_at((0.5, 0.1, 0.5), (0.55, 0.0, 0.0))
        T_base_ee = T_base_cam @ np.linalg.inv(T_ee_cam)
        t0 = time.time_ns()
        for dt in (-40_000_000, -10_000_000, 2_000_000, 30_000_000):  # around the image time; nearest: +2 ms
            T = T_base_ee.copy()
            T[2, 3] += 0.0 if dt == 2_000_000 else 0.05
            probe.pose.publish(numpy_to_pose_stamped(T[:3, 3], matrix_to_quat(T[:3, :3]), t0 + dt))
        time.sleep(0.3)
        depth = render_depth(wrist, table_scene(0), T_base_cam)
        seen = probe.send("wrist", depth, t0)
        assert wait_for(lambda: len(probe.clouds) == 1, 10)
        expected = CloudPipeline([wrist], WORKSPACE["workspace_min"], WORKSPACE["workspace_max"], 0.01)
        want = expected.process([seen], T_base_ee)
        np.testing.assert_allclose(pointcloud2_to_xyz(probe.clouds[0]), want, atol=1e-5)
        assert expected.stats.n_voxels > 1000  # the table and boxes are really in view
        probe.send("wrist", depth, t0 + 5 * 10**9)  # no pose within 50 ms of this image: no cloud
        time.sleep(0.3)
        assert len(probe.clouds) == 1
        # An image that arrives before the poses reach its time waits for them (a loaded robot PC, a bag
        # logged on receive time); the first pose after it releases both held images, the one without a
        # pose near it to be dropped, this one to be placed by that late pose.
        t1, T_late = t0 + 10 * 10**9, T_base_ee.copy()
        T_late[0, 3] += 0.03
        probe.send("wrist", depth, t1)
        time.sleep(0.3)
        assert len(probe.clouds) == 1
        probe.pose.publish(numpy_to_pose_stamped(T_late[:3, 3], matrix_to_quat(T_late[:3, :3]), t1 + 3_000_000))
        assert wait_for(lambda: len(probe.clouds) == 2, 10)
        time.sleep(0.3)
        assert len(probe.clouds) == 2 and stamp_to_ns(probe.clouds[1].header.stamp) == t1
        np.testing.assert_allclose(pointcloud2_to_xyz(probe.clouds[1]), expected.process([seen], T_late), atol=1e-5)


def test_unknown_camera_name_is_refused(calib_file, domain_id):
    with pytest.raises(ValueError, match=r"\['top'\] are not in"):
        GraphRunner("sim", nodes=["pointcloud"], domain_id=domain_id,
                    overrides={"pointcloud": {"calibration_file": str(calib_file), "cameras": "front,top"}}).start()
