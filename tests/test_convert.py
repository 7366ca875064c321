"""numpy <-> ROS message conversions: round trips through real rclpy serialisation (the layout a
subscriber actually receives), byte order, padded rows, zero-copy decoding and malformed messages."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2, PointField
from trajectory_msgs.msg import JointTrajectory

from flow2one import spec
from flow2one.perception.camera_model import CameraIntrinsics
from flow2one.ros import convert as cv
from tests.helpers import wait_for

RNG = np.random.default_rng(0)


def wire(msg):
    """The message as a subscriber gets it: serialised and deserialised by rclpy."""
    return deserialize_message(serialize_message(msg), type(msg))


def random_image(encoding: str, h: int = 6, w: int = 5, dtype=None) -> np.ndarray:
    dt, ch = cv.ENCODINGS[encoding]
    shape = (h, w, ch) if ch > 1 else (h, w)
    if dt == np.float32:
        arr = RNG.normal(size=shape).astype(np.float32)
    else:
        arr = RNG.integers(0, np.iinfo(dt).max, size=shape, endpoint=True).astype(dt)
    return arr.astype(dtype) if dtype else arr


# --- stamps --------------------------------------------------------------------------------------------

def test_stamp_round_trip_and_negative() -> None:
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_732_000_000_123_456_789):
        stamp = cv.ns_to_stamp(ns)
        assert 0 <= stamp.nanosec < 1_000_000_000
        assert cv.stamp_to_ns(stamp) == ns
    with pytest.raises(ValueError, match=">= 0"):
        cv.ns_to_stamp(-1)


# --- Image ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", list(cv.ENCODINGS))
def test_image_round_trip_every_encoding(encoding: str) -> None:
    arr = random_image(encoding)
    msg = wire(cv.numpy_to_image(arr, encoding, stamp_ns=1_500_000_001, frame_id="cam_optical"))
    assert (msg.height, msg.width, msg.encoding) == (6, 5, encoding)
    assert msg.step == arr.shape[1] * arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    assert cv.stamp_to_ns(msg.header.stamp) == 1_500_000_001 and msg.header.frame_id == "cam_optical"
    out = cv.image_to_numpy(msg)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


def test_image_decoding_is_zero_copy_view_of_message() -> None:
    arr = random_image("rgb8", 480, 640)
    msg = wire(cv.numpy_to_image(arr, "rgb8"))
    out = cv.image_to_numpy(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize("encoding", ["16UC1", "mono16", "32FC1"])
def test_image_big_endian_both_directions(encoding: str) -> None:
    native = random_image(encoding)
    big = native.astype(native.dtype.newbyteorder(">"))
    msg = wire(cv.numpy_to_image(big, encoding))
    assert msg.is_bigendian == 1
    # the bytes on the wire really are big-endian
    assert bytes(msg.data) == big.tobytes() != native.tobytes()
    out = cv.image_to_numpy(msg)
    assert out.dtype.isnative and out.dtype == native.dtype
    np.testing.assert_array_equal(out, native)
    little = wire(cv.numpy_to_image(native, encoding))
    assert little.is_bigendian == 0
    np.testing.assert_array_equal(cv.image_to_numpy(little), native)


@pytest.mark.parametrize("encoding,pad", [("rgb8", 7), ("16UC1", 3), ("32FC1", 12), ("bgra8", 64)])
def test_image_padded_row_step(encoding: str, pad: int) -> None:
    """Drivers pad rows to alignment; the padding (garbage here) must not leak into pixels."""
    arr = random_image(encoding, 7, 9)
    row = arr[0].nbytes
    rows = np.full((7, row + pad), 0xAB, np.uint8)
    rows[:, :row] = arr.reshape(7, -1).view(np.uint8)
    msg = Image(height=7, width=9, encoding=encoding, step=row + pad, is_bigendian=0, data=rows.tobytes())
    out = cv.image_to_numpy(wire(msg))
    np.testing.assert_array_equal(out, arr)


def test_image_color_conversions() -> None:
    rgb = random_image("rgb8")
    bgr_msg = cv.numpy_to_image(np.ascontiguousarray(rgb[..., ::-1]), "bgr8")
    np.testing.assert_array_equal(cv.image_to_numpy(bgr_msg, "rgb8"), rgb)
    rgba = cv.image_to_numpy(cv.numpy_to_image(rgb, "rgb8"), "rgba8")
    np.testing.assert_array_equal(rgba[..., :3], rgb)
    assert (rgba[..., 3] == 255).all()
    bgra = random_image("bgra8")
    np.testing.assert_array_equal(cv.image_to_numpy(cv.numpy_to_image(bgra, "bgra8"), "rgb8"),
                                  bgra[..., 2::-1])
    with pytest.raises(ValueError, match="cannot convert"):
        cv.image_to_numpy(cv.numpy_to_image(random_image("16UC1"), "16UC1"), "rgb8")


def test_depth_to_metres() -> None:
    mm = np.array([[0, 1, 1000], [65535, 250, 2]], np.uint16)
    for enc in ("16UC1", "mono16"):
        m = cv.depth_to_metres(cv.numpy_to_image(mm, enc))
        assert m.dtype == np.float32
        np.testing.assert_allclose(m, mm / 1000.0, rtol=1e-6)
    metres = np.array([[0.5, np.nan], [1.25, 0.0]], np.float32)
    np.testing.assert_array_equal(cv.depth_to_metres(cv.numpy_to_image(metres, "32FC1")), metres)
    with pytest.raises(ValueError, match="depth image must be"):
        cv.depth_to_metres(cv.numpy_to_image(random_image("rgb8"), "rgb8"))


def test_image_malformed_messages() -> None:
    good = cv.numpy_to_image(random_image("rgb8", 4, 5), "rgb8")
    bad = Image(height=4, width=5, encoding="yuv422", step=10, data=bytes(40))
    with pytest.raises(ValueError, match="unsupported image encoding 'yuv422'"):
        cv.image_to_numpy(bad)
    small_step = Image(height=4, width=5, encoding="rgb8", step=14, data=bytes(56))
    with pytest.raises(ValueError, match="step 14 is smaller than .* 15"):
        cv.image_to_numpy(small_step)
    truncated = Image(height=4, width=5, encoding="rgb8", step=15, data=bytes(good.data)[:-1])
    with pytest.raises(ValueError, match="59 bytes, expected .* 60 .*truncated"):
        cv.image_to_numpy(truncated)
    trailing = Image(height=4, width=5, encoding="rgb8", step=15, data=bytes(61))
    with pytest.raises(ValueError, match="trailing"):
        cv.image_to_numpy(trailing)


def test_numpy_to_image_rejects_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="needs dtype float32"):
        cv.numpy_to_image(np.zeros((4, 4)), "32FC1")  # float64 would be silently truncated
    with pytest.raises(ValueError, match=r"shape \(h, w, 3\)"):
        cv.numpy_to_image(np.zeros((4, 4), np.uint8), "rgb8")
    with pytest.raises(ValueError, match=r"shape \(h, w\)"):
        cv.numpy_to_image(np.zeros((4, 4, 3), np.uint16), "16UC1")
    with pytest.raises(ValueError, match="unsupported"):
        cv.numpy_to_image(np.zeros((4, 4), np.uint8), "jpeg")
    # (h, w, 1) is accepted for single-channel encodings
    assert cv.numpy_to_image(np.zeros((4, 3, 1), np.uint8), "mono8").step == 3


@settings(max_examples=40, deadline=None)
@given(enc=st.sampled_from(list(cv.ENCODINGS)), h=st.integers(0, 9), w=st.integers(0, 9),
       pad=st.integers(0, 9), big=st.booleans())
def test_image_property_round_trip(enc: str, h: int, w: int, pad: int, big: bool) -> None:
    """Any size, padding and byte order decodes to the same pixels."""
    arr = random_image(enc, h, w)
    wire_arr = arr.astype(arr.dtype.newbyteorder(">" if big else "<"))
    row = wire_arr[0].nbytes if h else w * wire_arr.itemsize * (arr.shape[2] if arr.ndim == 3 else 1)
    rows = np.zeros((h, row + pad), np.uint8)
    if h and w:
        rows[:, :row] = np.ascontiguousarray(wire_arr).reshape(h, -1).view(np.uint8)
    msg = Image(height=h, width=w, encoding=enc, step=row + pad, is_bigendian=int(big), data=rows.tobytes())
    out = cv.image_to_numpy(wire(msg))
    assert out.shape == arr.shape and out.dtype == arr.dtype
    np.testing.assert_array_equal(out, arr)


# --- PointCloud2 ---------------------------------------------------------------------------------------

def test_pointcloud_round_trip_is_exact_and_zero_copy() -> None:
    xyz = RNG.normal(size=(spec.N_POINTS, 3)).astype(np.float32)
    msg = wire(cv.xyz_to_pointcloud2(xyz, stamp_ns=42, frame_id=spec.BASE_FRAME))
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, spec.N_POINTS, 12, 12 * spec.N_POINTS)
    assert [f.name for f in msg.fields] == ["x", "y", "z"] and msg.is_dense
    assert cv.stamp_to_ns(msg.header.stamp) == 42 and msg.header.frame_id == spec.BASE_FRAME
    out = cv.pointcloud2_to_xyz(msg)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, xyz)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


def test_pointcloud_float64_input_and_nan() -> None:
    xyz = RNG.normal(size=(10, 3))
    xyz[3] = np.nan
    msg = cv.xyz_to_pointcloud2(xyz)
    assert not msg.is_dense
    np.testing.assert_array_equal(cv.pointcloud2_to_xyz(msg), xyz.astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, 3\)"):
        cv.xyz_to_pointcloud2(np.zeros((10, 4)))
    with pytest.raises(ValueError, match="numeric"):
        cv.xyz_to_pointcloud2(np.zeros((2, 3), dtype=object))


def _cloud(points: np.ndarray, fields: list[PointField], point_step: int, h: int, w: int, row_pad: int,
           big: bool) -> PointCloud2:
    rec = points.tobytes()
    row = w * point_step
    data = b"".join(rec[r * row:(r + 1) * row] + b"\xee" * row_pad for r in range(h))
    return PointCloud2(height=h, width=w, fields=fields, is_bigendian=big, point_step=point_step,
                       row_step=row + row_pad, data=data)


@pytest.mark.parametrize("big", [False, True])
def test_pointcloud_foreign_layouts(big: bool) -> None:
    """realsense-style organised clouds with extra fields, padding, float64 and either byte order."""
    o = ">" if big else "<"
    h, w = 3, 4
    dt = np.dtype({"names": ["rgb", "x", "y", "z", "intensity"],
                   "formats": [o + "u4", o + "f8", o + "f8", o + "f8", o + "f4"],
                   "offsets": [0, 8, 16, 24, 32], "itemsize": 48})
    pts = np.zeros(h * w, dt)
    xyz = RNG.normal(size=(h * w, 3)).astype(np.float32)
    pts["x"], pts["y"], pts["z"] = xyz.T
    pts["rgb"], pts["intensity"] = 0xFFFFFFFF, 7.0
    fields = [PointField(name="rgb", offset=0, datatype=PointField.UINT32, count=1)] + [
        PointField(name=n, offset=8 + 8 * i, datatype=PointField.FLOAT64, count=1) for i, n in enumerate("xyz")
    ] + [PointField(name="intensity", offset=32, datatype=PointField.FLOAT32, count=1)]
    msg = wire(_cloud(pts, fields, 48, h, w, row_pad=5, big=big))
    out = cv.pointcloud2_to_xyz(msg)
    assert out.shape == (h * w, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out, xyz)


def test_pointcloud_malformed_messages() -> None:
    good = cv.xyz_to_pointcloud2(RNG.normal(size=(5, 3)).astype(np.float32))

    def variant(**kw) -> PointCloud2:
        base = dict(height=1, width=5, fields=list(good.fields), is_bigendian=False, point_step=12,
                    row_step=60, data=bytes(good.data))
        base.update(kw)
        return PointCloud2(**base)

    with pytest.raises(ValueError, match=r"lacks field\(s\) \['z'\]"):
        cv.pointcloud2_to_xyz(variant(fields=list(good.fields[:2])))
    with pytest.raises(ValueError, match="59 bytes, expected"):
        cv.pointcloud2_to_xyz(variant(data=bytes(good.data)[:-1]))
    with pytest.raises(ValueError, match="row_step 50 is smaller"):
        cv.pointcloud2_to_xyz(variant(row_step=50, data=bytes(50)))
    with pytest.raises(ValueError, match="does not fit in point_step 8"):
        cv.pointcloud2_to_xyz(variant(point_step=8, row_step=40, data=bytes(40)))
    wide = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=2) for f in good.fields]
    with pytest.raises(ValueError, match="count 1"):
        cv.pointcloud2_to_xyz(variant(fields=wide))
    odd = [PointField(name=f.name, offset=f.offset, datatype=42, count=1) for f in good.fields]
    with pytest.raises(ValueError, match="unknown datatype 42"):
        cv.pointcloud2_to_xyz(variant(fields=odd))


# --- CameraInfo ----------------------------------------------------------------------------------------

def test_camera_info_round_trip() -> None:
    intr = CameraIntrinsics(640, 480, 615.5, 614.25, 321.0, 239.5, "plumb_bob", (0.1, -0.2, 0.001, 0.002, 0.03))
    msg = wire(cv.intrinsics_to_camera_info(intr, stamp_ns=7, frame_id="front_color_optical_frame"))
    assert msg.header.frame_id == "front_color_optical_frame" and cv.stamp_to_ns(msg.header.stamp) == 7
    np.testing.assert_array_equal(np.asarray(msg.p).reshape(3, 4)[:, :3], intr.K)
    np.testing.assert_array_equal(np.asarray(msg.r), np.eye(3).ravel())
    assert cv.camera_info_to_intrinsics(msg) == intr


def test_camera_info_malformed() -> None:
    with pytest.raises(ValueError, match="uncalibrated"):
        cv.camera_info_to_intrinsics(CameraInfo(width=640, height=480))
    msg = cv.intrinsics_to_camera_info(CameraIntrinsics(640, 480, 600.0, 600.0, 320.0, 240.0))
    k = np.asarray(msg.k).copy()
    k[8] = 0.0
    msg.k = k
    with pytest.raises(ValueError, match="not a pinhole matrix"):
        cv.camera_info_to_intrinsics(msg)
    msg = cv.intrinsics_to_camera_info(CameraIntrinsics(640, 480, 600.0, 600.0, 320.0, 240.0))
    msg.width = 0
    with pytest.raises(ValueError, match="image size"):
        cv.camera_info_to_intrinsics(msg)


# --- JointState ----------------------------------------------------------------------------------------

def test_joint_state_round_trip() -> None:
    names = [f"panda_joint{i}" for i in range(1, 8)] + ["gripper_width"]
    pos, vel, eff = RNG.normal(size=(3, 8))
    msg = wire(cv.numpy_to_joint_state(names, pos, vel, eff, stamp_ns=99, frame_id=""))
    n, p, v, e = cv.joint_state_to_numpy(msg)
    assert n == tuple(names) and cv.stamp_to_ns(msg.header.stamp) == 99
    for got, want in ((p, pos), (v, vel), (e, eff)):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    _, p, v, e = cv.joint_state_to_numpy(wire(cv.numpy_to_joint_state(names, pos)))
    np.testing.assert_array_equal(p, pos)
    assert v.shape == (0,) and e.shape == (0,)


def test_joint_state_malformed() -> None:
    with pytest.raises(ValueError, match="2 names but 1 positions"):
        cv.joint_state_to_numpy(JointState(name=["a", "b"], position=[1.0]))
    with pytest.raises(ValueError, match="1 velocity values"):
        cv.joint_state_to_numpy(JointState(name=["a", "b"], position=[1.0, 2.0], velocity=[0.0]))
    with pytest.raises(ValueError, match="duplicate"):
        cv.joint_state_to_numpy(JointState(name=["a", "a"], position=[1.0, 2.0]))
    with pytest.raises(ValueError, match="2 joint names but 3 effort"):
        cv.numpy_to_joint_state(["a", "b"], [1, 2], effort=[1, 2, 3])
    with pytest.raises(ValueError, match="duplicate"):
        cv.numpy_to_joint_state(["a", "a"], [1, 2])


# --- PoseStamped ---------------------------------------------------------------------------------------

def test_pose_stamped_round_trip_and_errors() -> None:
    quat = RNG.normal(size=4)
    quat /= np.linalg.norm(quat)
    xyz = np.array([0.4, -0.1, 0.3])
    msg = wire(cv.numpy_to_pose_stamped(xyz, quat, stamp_ns=5, frame_id=spec.BASE_FRAME))
    assert msg.header.frame_id == spec.BASE_FRAME
    p, q = cv.pose_stamped_to_numpy(msg)
    np.testing.assert_array_equal(p, xyz)
    np.testing.assert_array_equal(q, quat)
    with pytest.raises(ValueError, match="unit quaternion"):
        msg.pose.orientation.w = msg.pose.orientation.x = msg.pose.orientation.y = msg.pose.orientation.z = 0.0
        cv.pose_stamped_to_numpy(msg)  # an unset (all-zero) quaternion
    with pytest.raises(ValueError, match="unit quaternion"):
        cv.numpy_to_pose_stamped(xyz, [0, 0, 0, 2])
    with pytest.raises(ValueError, match="not finite"):
        cv.numpy_to_pose_stamped([0, np.nan, 0], [0, 0, 0, 1])
    with pytest.raises(ValueError, match=r"xyz \(3,\)"):
        cv.numpy_to_pose_stamped([0, 0], [0, 0, 0, 1])


# --- action chunk --------------------------------------------------------------------------------------

@pytest.mark.parametrize("horizon,dt", [(spec.HORIZON, spec.STEP_DT), (3, 0.1), (1, spec.STEP_DT)])
def test_chunk_round_trip(horizon: int, dt: float) -> None:
    actions = RNG.normal(size=(horizon, spec.ACTION_DIM)).astype(np.float32)
    msg = wire(cv.chunk_to_msg(actions, stamp_ns=1_700_000_000_000_000_123, dt=dt))
    assert tuple(msg.joint_names) == spec.ACTION_NAMES and msg.header.frame_id == spec.BASE_FRAME
    assert [cv.stamp_to_ns(p.time_from_start) for p in msg.points] == [round(i * dt * 1e9) for i in range(horizon)]
    chunk = cv.msg_to_chunk(msg)
    assert chunk.actions.dtype == np.float32
    np.testing.assert_array_equal(chunk.actions, actions)
    assert chunk.stamp_ns == 1_700_000_000_000_000_123
    assert chunk.dt == pytest.approx(dt, abs=1e-9)


def test_chunk_malformed_messages() -> None:
    def good() -> JointTrajectory:
        return cv.chunk_to_msg(np.zeros((4, spec.ACTION_DIM)), stamp_ns=0, dt=0.05)

    msg = good()
    msg.joint_names = list(spec.ACTION_NAMES[::-1])
    with pytest.raises(ValueError, match="joint_names must be"):
        cv.msg_to_chunk(msg)
    msg = good()
    msg.points[2].positions = [0.0] * 9
    with pytest.raises(ValueError, match="point 2 has 9 positions, expected 10"):
        cv.msg_to_chunk(msg)
    msg = good()
    msg.points[3].time_from_start = msg.points[2].time_from_start
    with pytest.raises(ValueError, match="must increase: point 3"):
        cv.msg_to_chunk(msg)
    msg = good()
    msg.points[2].time_from_start = cv.ns_to_duration(120_000_000)
    with pytest.raises(ValueError, match="evenly spaced"):
        cv.msg_to_chunk(msg)
    msg = good()
    for i, p in enumerate(msg.points):
        p.time_from_start = cv.ns_to_duration((i + 1) * 50_000_000)
    with pytest.raises(ValueError, match="point 0 must have time_from_start 0"):
        cv.msg_to_chunk(msg)
    msg = good()
    msg.points = []
    with pytest.raises(ValueError, match="no points"):
        cv.msg_to_chunk(msg)
    msg = good()
    msg.header.frame_id = "world"
    with pytest.raises(ValueError, match="frame_id must be 'panda_link0'"):
        cv.msg_to_chunk(msg)
    assert cv.msg_to_chunk(msg, frame_id=None).actions.shape == (4, spec.ACTION_DIM)
    msg = good()
    msg.points[1].positions[4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cv.msg_to_chunk(msg)


def test_chunk_to_msg_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"shape \(H>=1, 10\)"):
        cv.chunk_to_msg(np.zeros((4, 9)), 0)
    with pytest.raises(ValueError, match=r"shape \(H>=1, 10\)"):
        cv.chunk_to_msg(np.zeros((0, 10)), 0)
    with pytest.raises(ValueError, match="NaN"):
        cv.chunk_to_msg(np.full((2, 10), np.inf), 0)
    with pytest.raises(ValueError, match="dt must be"):
        cv.chunk_to_msg(np.zeros((2, 10)), 0, dt=0.0)


# --- over real DDS -------------------------------------------------------------------------------------

def test_image_and_cloud_survive_dds_transport(ros_context) -> None:
    """Publish converted messages between two nodes over Fast DDS on loopback and decode them."""
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from flow2one.ros.qos import SENSOR_QOS

    img = random_image("rgb8", 480, 640)
    xyz = RNG.normal(size=(spec.N_POINTS, 3)).astype(np.float32)
    pub_node, sub_node = Node("conv_pub", context=ros_context), Node("conv_sub", context=ros_context)
    got: dict[str, object] = {}
    sub_node.create_subscription(Image, "/t/image", lambda m: got.setdefault("img", cv.image_to_numpy(m).copy()),
                                 SENSOR_QOS)
    sub_node.create_subscription(PointCloud2, "/t/points",
                                 lambda m: got.setdefault("xyz", cv.pointcloud2_to_xyz(m).copy()), SENSOR_QOS)
    pi = pub_node.create_publisher(Image, "/t/image", SENSOR_QOS)
    pc = pub_node.create_publisher(PointCloud2, "/t/points", SENSOR_QOS)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(pub_node)
    ex.add_node(sub_node)

    def spin_and_check() -> bool:
        pi.publish(cv.numpy_to_image(img, "rgb8", 1, "cam"))
        pc.publish(cv.xyz_to_pointcloud2(xyz, 1))
        ex.spin_once(timeout_sec=0.05)
        return len(got) == 2

    try:
        assert wait_for(spin_and_check, timeout=15.0)
        np.testing.assert_array_equal(got["img"], img)
        np.testing.assert_array_equal(got["xyz"], xyz)
    finally:
        ex.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
