"""Bag -> dataset conversion on good and broken episode bags made of real ROS 2 messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import serialize_message

from flow2one import spec
from flow2one.cli import main as cli_main
from flow2one.data.bags import EpisodeBagWriter, EpisodeInfo
from flow2one.data.convert_bags import ConvertConfig, convert_directory
from flow2one.data.episodes import list_episodes, read_episode
from flow2one.geometry import matrix_to_quat, matrix_to_rot6d
from flow2one.ros.convert import (
    chunk_to_msg,
    numpy_to_image,
    numpy_to_joint_state,
    numpy_to_pose_stamped,
    xyz_to_pointcloud2,
)

T0 = 1_700_000_000 * 10**9  # wall-clock-like stamps
R_DOWN = np.diag([1.0, -1.0, -1.0])
CLOUD = np.random.default_rng(0).random((spec.N_POINTS, 3), dtype=np.float32)


def ee_x(t: float) -> float:
    return 0.4 + 0.05 * t  # the demo moves 5 cm/s along x


def make_bag(path: Path, seconds: float = 3.0, drop: set[str] = frozenset(), gap: tuple[float, float] | None = None,
             zero_pose_stamps_every: int = 0, success: bool = True, cloud_crop: dict | None = None) -> Path:
    """A teleop episode as the recorder writes it: cloud 15 Hz, state 50 Hz, commands 20 Hz, camera 10 Hz."""
    w = EpisodeBagWriter(path, EpisodeInfo(task="push", note="test", success=None, cloud_crop=cloud_crop))
    events = []
    for topic, rate in ((spec.POINTS_TOPIC, 15), (spec.EE_POSE_TOPIC, 50), (spec.JOINT_STATES_TOPIC, 50),
                        (spec.COMMAND_TOPIC, 20), (spec.camera_topics("front")["color"], 10),
                        (spec.camera_topics("front")["depth"], 10)):
        if topic in drop:
            continue
        for k in range(int(seconds * rate) + 1):
            t = k / rate
            if gap and topic == spec.POINTS_TOPIC and gap[0] <= t < gap[1]:
                continue
            events.append((t, k, topic))
    for t, k, topic in sorted(events):
        ns = T0 + int(t * 1e9)
        stamp = ns - 20_000_000  # data 20 ms older than its arrival
        if topic == spec.POINTS_TOPIC:
            msg, mt = xyz_to_pointcloud2(CLOUD + np.float32(t), stamp), "sensor_msgs/msg/PointCloud2"
        elif topic == spec.EE_POSE_TOPIC:
            s = 0 if zero_pose_stamps_every and k % zero_pose_stamps_every == 0 else stamp
            msg = numpy_to_pose_stamped([ee_x(t - 0.02), 0.0, 0.3], matrix_to_quat(R_DOWN), s)
            mt = "geometry_msgs/msg/PoseStamped"
        elif topic == spec.JOINT_STATES_TOPIC:
            msg = numpy_to_joint_state([f"j{i}" for i in range(7)] + ["gripper_width"], np.r_[np.zeros(7), 0.08],
                                       stamp_ns=stamp)
            mt = "sensor_msgs/msg/JointState"
        elif topic == spec.COMMAND_TOPIC:
            a = np.r_[ee_x(t) + 0.01, 0.0, 0.3, matrix_to_rot6d(R_DOWN), 0.08][None]
            msg, mt = chunk_to_msg(a, ns), "trajectory_msgs/msg/JointTrajectory"
        elif topic.endswith("image_raw") and "depth" in topic:
            msg = numpy_to_image(np.full((48, 64), 500 + k, np.uint16), "16UC1", stamp, "front")
            mt = "sensor_msgs/msg/Image"
        else:
            msg = numpy_to_image(np.full((48, 64, 3), k, np.uint8), "rgb8", stamp, "front")
            mt = "sensor_msgs/msg/Image"
        w.write(topic, mt, serialize_message(msg), ns)
    return w.close(success=success)


def test_good_bag_becomes_synchronised_episode(tmp_path: Path) -> None:
    make_bag(tmp_path / "bags" / "episode_00000.mcap")
    (report,) = convert_directory(tmp_path / "bags", tmp_path / "data", progress=False)
    assert report.status == "converted" and report.errors == [] and report.warnings == []
    ep = read_episode(tmp_path / "data" / report.episode)
    assert ep.meta.task == "push" and ep.meta.success and ep.meta.source == "teleop"
    assert 55 <= len(ep) <= 60 and np.allclose(np.diff(ep.t), spec.STEP_DT)
    # proprio is the newest pose at or before each grid time; the action the next command at or after it
    assert np.all(ep.action[:, 0] - ep.proprio[:, 0] > 0.0099 - 1e-6)
    assert np.all(ep.action[:, 0] - ep.proprio[:, 0] < 0.0101 + 0.05 * (1 / 50) + 0.05 * (1 / 20) + 1e-5)
    np.testing.assert_allclose(ep.proprio[:, 3:9], np.tile(matrix_to_rot6d(R_DOWN), (len(ep), 1)), atol=1e-6)
    assert ep.proprio[0, 9] == pytest.approx(0.08) and ep.action[0, 9] == pytest.approx(0.08)
    offsets = ep.points[:, 0, 0] - CLOUD[0, 0]  # the cloud's time offset: held, never from the future
    assert np.all(np.diff(offsets) >= 0) and ep.points.shape == (len(ep), spec.N_POINTS, 3)
    assert ep.rgb is None


def test_cameras_are_included_and_resized(tmp_path: Path) -> None:
    make_bag(tmp_path / "bags" / "episode_00000.mcap", seconds=1.0)
    cfg = ConvertConfig(cameras=("front",), image_size=(32, 24))
    (report,) = convert_directory(tmp_path / "bags", tmp_path / "data", cfg, progress=False)
    ep = read_episode(tmp_path / "data" / report.episode)
    assert ep.rgb.shape == (len(ep), 1, 24, 32, 3) and ep.rgb.dtype == np.uint8
    assert ep.depth.shape == (len(ep), 1, 24, 32) and 0.5 <= ep.depth.min() <= ep.depth.max() <= 0.52
    assert ep.meta.camera_names == ["front"]


def test_broken_bags_are_reported_and_the_rest_converted(tmp_path: Path, capsys) -> None:
    bags = tmp_path / "bags"
    make_bag(bags / "episode_00000.mcap")
    make_bag(bags / "episode_00001.mcap", drop={spec.COMMAND_TOPIC})
    make_bag(bags / "episode_00002.mcap", gap=(1.0, 2.0))
    make_bag(bags / "episode_00003.mcap", zero_pose_stamps_every=5)  # 20% bad stamps
    make_bag(bags / "episode_00004.mcap", zero_pose_stamps_every=40)  # 2.6% bad: dropped with a warning
    make_bag(bags / "episode_00005.mcap", seconds=0.2)
    make_bag(bags / "episode_00006.mcap", success=False)
    (bags / "episode_00007.mcap.part").write_bytes((bags / "episode_00000.mcap").read_bytes()[:3000])
    (bags / "episode_00008.mcap").write_bytes(b"\x89MCAP0\r\n garbage")

    rc = cli_main(["convert", str(bags), str(tmp_path / "data"), "--skip-failed"])
    assert rc == 1  # some bags failed; the good ones are still in the dataset
    report = {r["bag"]: r for r in json.loads((tmp_path / "data" / "convert_report.json").read_text())}
    status = {k: v["status"] for k, v in report.items()}
    assert status == {"episode_00000.mcap": "converted", "episode_00001.mcap": "failed",
                      "episode_00002.mcap": "failed", "episode_00003.mcap": "failed",
                      "episode_00004.mcap": "converted", "episode_00005.mcap": "failed",
                      "episode_00006.mcap": "skipped", "episode_00007.mcap.part": "failed",
                      "episode_00008.mcap": "failed"}
    err = {k: " ".join(v["errors"]) for k, v in report.items()}
    assert f"missing topics: {spec.COMMAND_TOPIC}" in err["episode_00001.mcap"]
    assert f"{spec.POINTS_TOPIC}: gap of 1.0" in err["episode_00002.mcap"]
    assert "bad stamps" in err["episode_00003.mcap"] and "zero stamp" in err["episode_00003.mcap"]
    assert "bad stamps dropped" in report["episode_00004.mcap"]["warnings"][0]
    assert "steps" in err["episode_00005.mcap"]
    assert "recover-bag" in err["episode_00007.mcap.part"] and "recover-bag" in err["episode_00008.mcap"]
    assert [p.name for p in list_episodes(tmp_path / "data")] == ["episode_00000.npz", "episode_00001.npz"]

    assert cli_main(["convert", str(bags), str(tmp_path / "data")]) == 1
    assert "--append" in capsys.readouterr().err
