"""Episode bags: third-party readers, crash recovery (a real recorder process killed with SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.serialization import serialize_message
from sensor_msgs.msg import Image, JointState, PointCloud2

from flow2one import spec
from flow2one.data.bags import BagError, EpisodeBagWriter, EpisodeInfo, read_messages, read_summary, recover
from flow2one.data.recording import EpisodeRecorder, RecorderConfig
from flow2one.ros.convert import xyz_to_pointcloud2
from flow2one.subprocesses import die_with_parent
from tests.helpers import wait_for

IMG = "/camera/front/color/image_raw"


def _image(i: int) -> Image:
    m = Image(height=8, width=6, encoding="rgb8", step=18, data=bytes((np.arange(144) + i) % 256))
    m.header.stamp.sec, m.header.frame_id = 1000 + i, "front"
    return m


def _write_bag(path: Path, n: int = 30, flush: float = 1.0) -> EpisodeBagWriter:
    w = EpisodeBagWriter(path, EpisodeInfo(task="push_t", note="first try"), flush_period_s=flush)
    for i in range(n):
        t = (1000 + i) * 10**9
        w.write(IMG, "sensor_msgs/msg/Image", serialize_message(_image(i)), t)
        w.write(spec.JOINT_STATES_TOPIC, "sensor_msgs/msg/JointState",
                serialize_message(JointState(name=["j1", "gripper_width"], position=[0.1 * i, 0.04])), t + 1)
    return w


def test_bag_opens_in_rosbags_mcap_and_mcap_ros2(tmp_path: Path) -> None:
    from mcap.reader import NonSeekingReader, make_reader
    from mcap_ros2.reader import read_ros2_messages
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    path = _write_bag(tmp_path / "episode_00000.mcap").close(success=True)
    assert not (tmp_path / "episode_00000.mcap.part").exists()

    store = get_typestore(Stores.ROS2_JAZZY)
    with Reader(path) as r:  # rosbags: the reader `ros2 bag`-free tools use
        assert r.message_count == 60
        conns = {c.topic: c for c in r.connections}
        assert conns[IMG].msgtype == "sensor_msgs/msg/Image"
        imgs = [store.deserialize_cdr(d, c.msgtype) for c, _, d in r.messages([conns[IMG]])]
    assert [m.header.stamp.sec for m in imgs] == list(range(1000, 1030))
    assert bytes(imgs[5].data) == bytes(_image(5).data)

    with open(path, "rb") as f:  # the reference MCAP library, validating every CRC
        schemas = {s.name: s.encoding for s, _, _ in NonSeekingReader(f, validate_crcs=True).iter_messages()}
    assert schemas == {"sensor_msgs/msg/Image": "ros2msg", "sensor_msgs/msg/JointState": "ros2msg"}

    decoded = [m.ros_msg for m in read_ros2_messages(str(path), topics=[spec.JOINT_STATES_TOPIC])]
    assert [round(m.position[0], 6) for m in decoded][:3] == [0.0, 0.1, 0.2]

    s = read_summary(path)
    assert s.topics[IMG] == ("sensor_msgs/msg/Image", 30)
    assert (s.episode.task, s.episode.note, s.episode.success, s.episode.recovered) == \
        ("push_t", "first try", True, False)
    with open(path, "rb") as f:
        assert NonSeekingReader(f).get_header().profile == "ros2"
    with open(path, "rb") as f:  # rosbag2's own metadata record (what `ros2 bag info` shows)
        meta = {m.name: m.metadata for m in NonSeekingReader(f).iter_metadata()}
    body = yaml.safe_load(meta["rosbag2"]["serialized_metadata"])
    assert body["message_count"] == 60 and body["storage_identifier"] == "mcap"
    assert body["custom_data"]["flow2one.task"] == '"push_t"'
    # type hashes (RIHS01, what rosbag2 since Iron stores) per topic, in the metadata and on each channel
    hashes = {t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
              for t in body["topics_with_message_count"]}
    assert hashes[IMG] == "RIHS01_d31d41a9a4c4bc8eae9be757b0beed306564f7526c88ea6a4588fb9582527d47"
    with open(path, "rb") as f:
        channels = make_reader(f).get_summary().channels.values()
        assert {c.topic: c.metadata["topic_type_hash"] for c in channels} == hashes
    # the same body as a rosbag2 bag directory's metadata.yaml: rosbags' strict v9 parser accepts it
    bagdir = tmp_path / "as_directory"
    bagdir.mkdir()
    (bagdir / path.name).write_bytes(path.read_bytes())
    (bagdir / "metadata.yaml").write_text(yaml.safe_dump({"rosbag2_bagfile_information": body}))
    with Reader(bagdir) as r:
        assert r.message_count == 60 and r.ros_distro == "jazzy"
        assert {c.topic: c.ext.offered_qos_profiles[0].reliability.name for c in r.connections} == \
            {IMG: "RELIABLE", spec.JOINT_STATES_TOPIC: "RELIABLE"}
        assert r.storage.metadata.custom["flow2one.success"] == "true"


def test_recover_salvages_every_complete_chunk_of_a_cut_file(tmp_path: Path) -> None:
    w = _write_bag(tmp_path / "full.mcap", n=40, flush=0.0)  # a chunk per message pair
    full = w.close(success=True)
    data = full.read_bytes()
    counts = []
    for cut in (len(data) // 5, len(data) // 2, len(data) - 200):
        part = tmp_path / f"cut{cut}.mcap.part"
        part.write_bytes(data[:cut])
        with pytest.raises(BagError, match="recover-bag"):
            read_summary(part)
        before = part.read_bytes()
        res = recover(part)
        assert res.path == tmp_path / f"cut{cut}.recovered.mcap" and part.read_bytes() == before  # input kept
        msgs = list(read_messages(res.path))
        assert len(msgs) == res.messages > 0
        info = read_summary(res.path).episode
        assert info.recovered and info.success is None and info.task == "push_t"
        counts.append(res.messages)
    assert counts == sorted(counts) and counts[-1] >= 78  # more file, more messages; only the tail lost


def test_bad_input_is_refused_clearly(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"not an mcap file at all")
    with pytest.raises(BagError, match="junk.mcap"):
        read_summary(junk)
    path = _write_bag(tmp_path / "episode_00000.mcap", n=2).close()
    with pytest.raises(FileExistsError):
        EpisodeBagWriter(path, EpisodeInfo())
    w = EpisodeBagWriter(tmp_path / "x.mcap", EpisodeInfo())
    with pytest.raises(ValueError, match="unknown message type"):
        w.write("/t", "sensor_msgs/msg/NoSuchThing", b"", 1)
    with pytest.raises(ValueError, match="already recorded"):
        w.write(IMG, "sensor_msgs/msg/Image", serialize_message(_image(0)), 1)
        w.write(IMG, "sensor_msgs/msg/JointState", b"", 2)


def test_episode_events(tmp_path: Path) -> None:
    rec = EpisodeRecorder(RecorderConfig(str(tmp_path), task="stack"))
    info = serialize_message(JointState(name=["a"], position=[1.0]))
    rec.on_message("/camera/front/color/camera_info", "sensor_msgs/msg/JointState", info, 5)  # latched
    assert "ignored" in rec.handle_event("stop", 10)
    rec.handle_event("start", 10)
    rec.on_message(IMG, "sensor_msgs/msg/Image", serialize_message(_image(0)), 11)
    rec.handle_event("discard", 12)
    assert list(tmp_path.iterdir()) == []
    rec.handle_event("start", 20)
    rec.on_message(IMG, "sensor_msgs/msg/Image", serialize_message(_image(1)), 21)
    rec.task_success = True
    rec.handle_event("stop", 22)
    s = read_summary(tmp_path / "episode_00000.mcap")
    assert s.episode.success is True and s.episode.task == "stack"
    assert s.topics["/camera/front/color/camera_info"][1] == 1  # cached before the episode, written at start
    rec.handle_event("start", 30)
    rec.handle_event("failure", 31)
    assert read_summary(tmp_path / "episode_00001.mcap").episode.success is False
    with pytest.raises(ValueError, match="unknown episode event"):
        rec.handle_event("pause", 40)
    # no task configured: the world's task status names it, even when it arrives after the start
    sim = EpisodeRecorder(RecorderConfig(str(tmp_path / "sim")))
    sim.handle_event("start", 50)
    sim.task_hint = "reach_around"
    assert read_summary(sim.stop(True)).episode.task == "reach_around"


def test_recorder_process_killed_mid_episode_loses_only_that_tail(tmp_path: Path, ros_context, domain_id) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    out = tmp_path / "demos"
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from flow2one.nodes.recorder import main; main()", "--ros-args",
         "-p", f"output_dir:={out}", "-p", "flush_period_s:=0.1", "-p", "task:=push_t",
         "-p", "cameras:=['front']", "-p", "discovery_period_s:=0.2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=die_with_parent)
    node = rclpy.create_node("bag_test_pub", context=ros_context)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    try:
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)  # no drops: this tests crashes
        pts = node.create_publisher(PointCloud2, spec.POINTS_TOPIC, qos)
        img = node.create_publisher(Image, IMG, qos)
        ev = node.create_publisher(String, spec.EPISODE_TOPIC, 10)
        cloud = xyz_to_pointcloud2(np.random.default_rng(0).random((spec.N_POINTS, 3), dtype=np.float32), 1)

        def spin_publish(seconds: float) -> int:
            n, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                pts.publish(cloud)
                img.publish(_image(n))
                n += 1
                ex.spin_once(timeout_sec=0.02)
            return n

        assert wait_for(lambda: (ex.spin_once(timeout_sec=0.05) or True) and pts.get_subscription_count() > 0
                        and img.get_subscription_count() > 0 and ev.get_subscription_count() > 0, 30), \
            proc.stderr.read1(4000) if proc.poll() is not None else "recorder did not subscribe"
        ev.publish(String(data="start"))
        assert wait_for((out / "episode_00000.mcap.part").exists, 10)
        spin_publish(1.0)
        time.sleep(1.0)  # let a slow (loaded) recorder drain its queue before the episode ends
        ev.publish(String(data="success"))
        assert wait_for(lambda: (out / "episode_00000.mcap").exists(), 10)
        ev.publish(String(data="start"))
        part = out / "episode_00001.mcap.part"
        assert wait_for(part.exists, 10)
        spin_publish(1.5)
        time.sleep(0.3)  # > flush_period: what was received 0.2 s ago is on disk
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        node.destroy_node()
        ex.shutdown()

    first = read_summary(out / "episode_00000.mcap")  # the finished episode is untouched
    assert first.episode.success is True and first.topics[spec.POINTS_TOPIC][1] >= 10
    assert part.exists() and not (out / "episode_00001.mcap").exists()
    res = recover(part)
    s = read_summary(res.path)
    assert s.episode.recovered and s.episode.success is None and s.episode.task == "push_t"
    assert s.topics[spec.POINTS_TOPIC][1] >= 10 and s.topics[IMG][1] >= 10
    last = max(m.log_time_ns for m in read_messages(res.path, [IMG]))
    first_msg = min(m.log_time_ns for m in read_messages(res.path, [IMG]))
    assert (last - first_msg) / 1e9 > 0.5  # of 1.5 s published: only the tail after the last flush is lost
