"""Lab bags in: rosbag2 bags written by the third-party `rosbags` library the way `ros2 bag record` writes them
(format 9, MCAP and sqlite3), with our topic names and with realsense-ros + franka_ros2 names, raw and
compressed images, /tf and /rosout; each one is converted AND replayed into the real replay graph."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from flow2one import spec
from flow2one.cli import main as cli_main
from flow2one.data.episodes import list_episodes, read_episode
from flow2one.geometry import matrix_to_quat, matrix_to_rot6d
from flow2one.perception.calibration import save_cameras
from flow2one.perception.camera_model import CameraIntrinsics, CameraModel

STORE = get_typestore(Stores.ROS2_JAZZY)
T = STORE.types
NS = 1_000_000_000
T0 = 1_700_000_000 * NS
W, H = 64, 48
INTR = CameraIntrinsics(W, H, 50.0, 50.0, 31.5, 23.5)
R_DOWN = np.diag([1.0, -1.0, -1.0])  # camera and gripper looking down
CAM_POSE = np.eye(4)
CAM_POSE[:3, :3], CAM_POSE[:3, 3] = R_DOWN, (0.5, 0.0, 0.6)
DEPTH_MM = 500  # the camera 0.6 m above the table sees a 0.1 m high box top everywhere: inside the workspace
RS = "/camera/camera"  # realsense-ros 4.x: namespace "camera", camera_name "camera"


@dataclass(frozen=True)
class Case:
    name: str
    storage: StoragePlugin
    realsense: bool  # realsense-ros + franka_ros2 names (profile realsense_franka) or ours (profile flow2one)
    compressed: bool  # color (and, for realsense, depth) as image_transport's compressed topics
    pose_from_tf: bool = False  # realsense only: the EE pose in /tf instead of a PoseStamped
    with_cloud: bool = False  # ours only: the recorded /flow2one/points (else built from depth + calibration)

    @property
    def profile(self) -> str:
        return "realsense_franka" if self.realsense else "flow2one"


CASES = [
    Case("ours_mcap_raw_cloud", StoragePlugin.MCAP, realsense=False, compressed=False, with_cloud=True),
    Case("ours_sqlite3_compressed", StoragePlugin.SQLITE3, realsense=False, compressed=True),
    Case("realsense_mcap_compressed_tf", StoragePlugin.MCAP, realsense=True, compressed=True, pose_from_tf=True),
    Case("realsense_sqlite3_raw_pose", StoragePlugin.SQLITE3, realsense=True, compressed=False),
]


def ee_x(t: float) -> float:
    return 0.45 + 0.05 * t


def _header(ns: int, frame: str):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // NS, nanosec=ns % NS),
                                    frame_id=frame)


def _pose(ns: int, x: float, frame: str = "panda_link0"):
    q = matrix_to_quat(R_DOWN)
    return T["geometry_msgs/msg/PoseStamped"](header=_header(ns, frame), pose=T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=x, y=0.0, z=0.3),
        orientation=T["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3])))


def _transform(ns: int, parent: str, child: str, xyz, quat):
    return T["geometry_msgs/msg/TransformStamped"](
        header=_header(ns, parent), child_frame_id=child, transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=xyz[0], y=xyz[1], z=xyz[2]),
            rotation=T["geometry_msgs/msg/Quaternion"](x=quat[0], y=quat[1], z=quat[2], w=quat[3])))


def _image(ns: int, pixels: np.ndarray, enc: str, compressed: bool, depth: bool):
    if not compressed:
        return "sensor_msgs/msg/Image", T["sensor_msgs/msg/Image"](
            header=_header(ns, "camera_color_optical_frame"), height=H, width=W, encoding=enc, is_bigendian=0,
            step=pixels.strides[0], data=pixels.reshape(-1).view(np.uint8))
    if depth:  # image_transport's compressedDepth: a 12-byte config header, then a 16-bit PNG
        data = np.r_[np.zeros(12, np.uint8), cv2.imencode(".png", pixels)[1].ravel()]
        fmt = "16UC1; compressedDepth png"
    else:
        data, fmt = cv2.imencode(".jpg", pixels[..., ::-1])[1].ravel(), "rgb8; jpeg compressed bgr8"
    return "sensor_msgs/msg/CompressedImage", T["sensor_msgs/msg/CompressedImage"](
        header=_header(ns, "camera_color_optical_frame"), format=fmt, data=data.astype(np.uint8))


def _info(ns: int):
    return T["sensor_msgs/msg/CameraInfo"](
        header=_header(ns, "camera_color_optical_frame"), height=H, width=W, distortion_model="plumb_bob",
        d=np.zeros(5), k=INTR.K.reshape(9), r=np.eye(3).reshape(9),
        p=np.c_[INTR.K, np.zeros(3)].reshape(12), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))


def _cloud(ns: int, t: float):
    xyz = np.random.default_rng(0).random((spec.N_POINTS, 3), dtype=np.float32) * 0.2 + np.float32(t)
    fields = [T["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")]
    return T["sensor_msgs/msg/PointCloud2"](header=_header(ns, "panda_link0"), height=1, width=spec.N_POINTS,
                                            fields=fields, is_bigendian=False, point_step=12,
                                            row_step=12 * spec.N_POINTS, data=xyz.reshape(-1).view(np.uint8),
                                            is_dense=True)


def _log(ns: int):
    return T["rcl_interfaces/msg/Log"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // NS, nanosec=ns % NS),
                                       level=20, name="franka", msg="ready", file="x.cpp", function="f", line=1)


def write_bag(case: Case, path: Path, seconds: float = 1.5) -> Path:
    """A bag of `seconds`: camera 10 Hz, robot state 50 Hz, commands 20 Hz, /tf 50 Hz, /rosout 1 Hz; data
    stamped 20 ms before it was received, as a driver does."""
    cam = spec.camera_topics("front") if not case.realsense else {
        "color": f"{RS}/color/image_raw", "color_info": f"{RS}/color/camera_info",
        "depth": f"{RS}/aligned_depth_to_color/image_raw", "depth_info": f"{RS}/aligned_depth_to_color/camera_info"}
    color_topic = cam["color"] + ("/compressed" if case.compressed else "")
    depth_topic = cam["depth"] + ("/compressedDepth" if case.compressed and case.realsense else "")
    streams = [(color_topic, 10), (depth_topic, 10), (cam["depth_info"], 10), ("/tf", 50), ("/rosout", 1)]
    if case.realsense:
        streams += [("/joint_states", 50), ("/franka_gripper/joint_states", 20)]
        streams += [] if case.pose_from_tf else [("/franka_robot_state_broadcaster/current_pose", 50),
                                                 ("/flow2one/teleop/target", 20)]
    else:
        streams += [(spec.EE_POSE_TOPIC, 50), (spec.JOINT_STATES_TOPIC, 50), (spec.COMMAND_TOPIC, 20)]
        streams += [(spec.POINTS_TOPIC, 15)] if case.with_cloud else []
    events = sorted((k / rate, k, topic) for topic, rate in streams for k in range(int(seconds * rate) + 1))
    conns: dict[str, object] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with Writer(path, version=9, storage_plugin=case.storage) as w:
        def put(topic: str, msgtype: str, msg, ns: int) -> None:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=STORE)
            w.write(conns[topic], ns, STORE.serialize_cdr(msg, msgtype))

        static = T["tf2_msgs/msg/TFMessage"](transforms=[
            _transform(T0, "world", "panda_link0", (0, 0, 0), (0, 0, 0, 1))])
        put("/tf_static", "tf2_msgs/msg/TFMessage", static, T0)
        for t, k, topic in events:
            ns = T0 + int(t * NS)
            stamp = ns - 20_000_000
            x = ee_x(t - 0.02)
            if topic == color_topic:
                mt, msg = _image(stamp, np.full((H, W, 3), 40 + k, np.uint8), "rgb8", case.compressed, False)
            elif topic == depth_topic:
                mt, msg = _image(stamp, np.full((H, W), DEPTH_MM, np.uint16), "16UC1",
                                 case.compressed and case.realsense, True)
            elif topic == cam["depth_info"]:
                mt, msg = "sensor_msgs/msg/CameraInfo", _info(stamp)
            elif topic == "/tf":  # robot_state_publisher: the arm's chain, the hand's TCP last
                q = matrix_to_quat(R_DOWN)
                msg = T["tf2_msgs/msg/TFMessage"](transforms=[
                    _transform(stamp, "panda_link0", "panda_link8", (x, 0.0, 0.4), q),
                    _transform(stamp, "panda_link8", "panda_hand_tcp", (0.0, 0.0, 0.1), (0, 0, 0, 1))])
                mt = "tf2_msgs/msg/TFMessage"
            elif topic == "/rosout":
                mt, msg = "rcl_interfaces/msg/Log", _log(ns)
            elif topic in ("/franka_robot_state_broadcaster/current_pose", spec.EE_POSE_TOPIC):
                mt, msg = "geometry_msgs/msg/PoseStamped", _pose(stamp, x)
            elif topic == "/flow2one/teleop/target":
                mt, msg = "geometry_msgs/msg/PoseStamped", _pose(stamp, ee_x(t) + 0.01)
            elif topic == "/joint_states":
                mt = "sensor_msgs/msg/JointState"
                msg = T[mt](header=_header(stamp, ""), name=[f"panda_joint{i}" for i in range(1, 8)],
                            position=np.linspace(0, 1, 7), velocity=np.zeros(7), effort=np.zeros(7))
            elif topic == "/franka_gripper/joint_states":
                mt = "sensor_msgs/msg/JointState"
                msg = T[mt](header=_header(stamp, ""), name=["panda_finger_joint1", "panda_finger_joint2"],
                            position=np.array([0.035, 0.035]), velocity=np.zeros(2), effort=np.zeros(2))
            elif topic == spec.JOINT_STATES_TOPIC:
                mt = "sensor_msgs/msg/JointState"
                msg = T[mt](header=_header(stamp, ""), name=[f"j{i}" for i in range(7)] + ["gripper_width"],
                            position=np.r_[np.zeros(7), 0.07], velocity=np.zeros(0), effort=np.zeros(0))
            elif topic == spec.COMMAND_TOPIC:
                mt = "trajectory_msgs/msg/JointTrajectory"
                a = np.r_[ee_x(t) + 0.01, 0.0, 0.3, matrix_to_rot6d(R_DOWN), 0.07]
                point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                    positions=a, velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
                    time_from_start=T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
                msg = T[mt](header=_header(ns, "panda_link0"), joint_names=list(spec.ACTION_NAMES), points=[point])
            else:
                mt, msg = "sensor_msgs/msg/PointCloud2", _cloud(stamp, t)
            put(topic, mt, msg, ns)
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Every case's bag in one folder tree (bag directories nested a level down, as a lab keeps them), and
    a calibration file with the one camera the bags carry."""
    root = tmp_path_factory.mktemp("lab")
    for case in CASES:
        write_bag(case, root / "bags" / case.name.split("_")[0] / case.name)
    calib = root / "front.yaml"
    save_cameras(calib, [CameraModel("front", INTR, CAM_POSE, "base", "1")])
    return root / "bags", calib


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_lab_bag_converts(case: Case, lab: tuple[Path, Path], tmp_path: Path) -> None:
    bags, calib = lab
    bag = bags / case.name.split("_")[0] / case.name
    rc = cli_main(["convert", str(bag), str(tmp_path / "data"), "--profile", case.profile, "--calibration",
                   str(calib), "--cameras", "front", "--task", "push", "--success", "true"])
    assert rc == 0
    (path,) = list_episodes(tmp_path / "data")
    ep = read_episode(path)
    n = len(ep)
    assert 25 <= n <= 30 and np.allclose(np.diff(ep.t), spec.STEP_DT)
    assert ep.points.shape == (n, spec.N_POINTS, 3) and ep.proprio.shape == (n, 10) and ep.action.shape == (n, 10)
    assert ep.rgb.shape == (n, 1, H, W, 3) and ep.depth.shape == (n, 1, H, W)
    assert ep.meta.task == "push" and ep.meta.success is True
    np.testing.assert_allclose(ep.depth, DEPTH_MM / 1000.0)
    np.testing.assert_allclose(ep.proprio[:, 9], 0.07, atol=1e-6)  # gripper_width, or the fingers' 2 x 0.035 m
    # proprio: the newest pose at or before each grid time, 5 cm/s along x
    np.testing.assert_allclose(np.diff(ep.proprio[:, 0]), 0.05 * spec.STEP_DT, atol=0.05 * 0.021)
    np.testing.assert_allclose(ep.proprio[:, 3:9], np.tile(matrix_to_rot6d(R_DOWN), (n, 1)), atol=1e-6)
    assert np.all(ep.action[:, 0] > ep.proprio[:, 0])  # the command leads the pose: where the arm goes next
    if not case.with_cloud:  # built from depth: the box top 0.6 - 0.5 = 0.1 m high, under the camera
        np.testing.assert_allclose(ep.points[..., 2], 0.1, atol=0.006)
        assert np.all(np.abs(ep.points[..., 0] - 0.5) < 0.33)  # the view: +-32 px / 50 px * 0.5 m


def test_folder_of_bags_is_searched_recursively(lab: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    bags, calib = lab
    assert cli_main(["convert", str(bags / "ours"), str(tmp_path / "data"), "--calibration", str(calib)]) == 0
    out = capsys.readouterr().out
    assert "2 converted, 0 failed" in out and "ours_sqlite3_compressed" in out
    # our profile on a realsense bag: every missing topic is named, nothing is silently "0 converted"
    assert cli_main(["convert", str(bags / "realsense"), str(tmp_path / "other")]) == 1
    assert f"missing topics: {spec.camera_topics('front')['color']}" not in out
    assert "missing topics" in capsys.readouterr().out
    empty = tmp_path / "empty" / "nested"
    empty.mkdir(parents=True)
    assert cli_main(["convert", str(empty.parent), str(tmp_path / "none")]) == 1
    assert "no bags found" in capsys.readouterr().err


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_runtime import (
        exported_student,  # one random tiny student per session, shared
    )

    return exported_student(tmp_path_factory)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_lab_bag_replays(case: Case, lab: tuple[Path, Path], student_dir: Path, domain_id: int,
                         tmp_path: Path) -> None:
    import json

    bags, calib = lab
    bag = bags / case.name.split("_")[0] / case.name
    out = tmp_path / "metrics.json"
    rc = cli_main(["replay", str(bag), "--profile", case.profile, "--rate", "0", "--model-dir", str(student_dir),
                   "--set", f"pointcloud.calibration_file={calib}", "--out", str(out),
                   "--domain-id", str(domain_id)])
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["chunks"] >= 3 and m["chunks_compared"] >= 1 and m["recorded_actions"] >= 10
    assert m["recorded_duration_s"] > 1.0
