"""numpy <-> ROS 2 message conversions for every message flow2one exchanges (all times int nanoseconds).

These replace cv_bridge and sensor_msgs_py (neither is installable from PyPI, and both exist only in a
full ROS install), so the same code runs here and on the robot. Decoding is zero-copy where the layout
allows: rclpy hands uint8[]/float64[] fields over as `array.array`, which `np.frombuffer` views without
copying; the returned arrays therefore share memory with the message (copy before modifying a message
you still publish). Encoding copies each buffer once (`array.frombytes`), never per element in Python.
Malformed messages raise ValueError naming the field, so a bad publisher is found at the boundary.
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2, PointField
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from flow2one.perception.camera_model import CameraIntrinsics
from flow2one.spec import ACTION_DIM, ACTION_NAMES, BASE_FRAME, STEP_DT

_NS = 1_000_000_000
_BIG = sys.byteorder == "big"

# encoding -> (element dtype, channels). The ROS names of sensor_msgs/image_encodings.hpp.
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
# Channel order of each colour encoding as indices into "rgba", for converting between them.
_COLOR_ORDER = {"rgb8": (0, 1, 2), "bgr8": (2, 1, 0), "rgba8": (0, 1, 2, 3), "bgra8": (2, 1, 0, 3)}

_POINTFIELD_DTYPES = {
    PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
    PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64,
}


# --- time and header ---------------------------------------------------------------------------------

def stamp_to_ns(stamp: Time | Duration) -> int:
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    ns = int(ns)
    if ns < 0:
        raise ValueError(f"timestamp must be >= 0 ns, got {ns}")
    return Time(sec=ns // _NS, nanosec=ns % _NS)


def ns_to_duration(ns: int) -> Duration:
    ns = int(ns)
    return Duration(sec=ns // _NS, nanosec=ns % _NS)


def _header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_stamp(stamp_ns), frame_id=frame_id)


def _bytes_array(arr: np.ndarray) -> array.array:
    """One memcpy of a C-contiguous array into the array.array('B') that rclpy stores uint8[] as."""
    out = array.array("B")
    out.frombytes(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))
    return out


def _float64_array(values: object) -> array.array:
    """float64[] fields (positions, distortion) as the array.array('d') rclpy stores them as."""
    arr = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    out = array.array("d")
    out.frombytes(arr.view(np.uint8))
    return out


def _is_big(dtype: np.dtype) -> bool:
    return dtype.byteorder == ">" or (dtype.byteorder in "=|" and _BIG)


# --- Image -------------------------------------------------------------------------------------------

def image_to_numpy(msg: Image, encoding: str | None = None) -> np.ndarray:
    """(h, w, C) for colour, (h, w) for one channel, in the message's dtype; a view of msg.data when
    the byte order is native (padded rows are skipped by strides, not copied).

    `encoding` converts between the colour encodings (rgb8/bgr8/rgba8/bgra8; alpha is dropped or set to
    255) at the cost of a copy; None returns the message's own channel order.
    """
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {msg.encoding!r}; supported: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[msg.encoding]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(f"image step {step} is smaller than width*channels*itemsize = {row_bytes} "
                         f"({w}x{h} {msg.encoding})")
    if len(msg.data) != h * step:
        raise ValueError(f"image data has {len(msg.data)} bytes, expected height*step = {h}*{step} = "
                         f"{h * step} ({'truncated' if len(msg.data) < h * step else 'trailing bytes'})")
    if msg.is_bigendian not in (0, 1, True, False):
        raise ValueError(f"image is_bigendian must be 0 or 1, got {msg.is_bigendian}")
    wire = dtype.newbyteorder(">" if msg.is_bigendian else "<")
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    if h == 0 or w == 0:
        img = np.zeros((h, w, channels), dtype)
    else:
        img = raw.reshape(h, step)[:, :row_bytes].view(wire).reshape(h, w, channels)
        if wire != dtype:  # not the machine's byte order: one swapping copy
            img = img.astype(dtype)
    if channels == 1:
        img = img[..., 0]
    if encoding is None or encoding == msg.encoding:
        return img
    if encoding not in _COLOR_ORDER or msg.encoding not in _COLOR_ORDER:
        raise ValueError(f"cannot convert image encoding {msg.encoding!r} to {encoding!r}; "
                         f"conversions exist between {', '.join(_COLOR_ORDER)}")
    src, dst = _COLOR_ORDER[msg.encoding], _COLOR_ORDER[encoding]
    out = np.full((h, w, len(dst)), 255, np.uint8)
    for i, c in enumerate(dst):
        if c in src:
            out[..., i] = img[..., src.index(c)]
    return out


def numpy_to_image(arr: np.ndarray, encoding: str, stamp_ns: int = 0, frame_id: str = "") -> Image:
    """Image from an (h, w[, C]) array whose dtype matches `encoding` exactly (no silent lossy casts);
    rows are packed (step = width*C*itemsize) and the array's byte order is kept (is_bigendian)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding {encoding!r}; supported: {', '.join(ENCODINGS)}")
    dtype, channels = ENCODINGS[encoding]
    arr = np.asarray(arr)
    if arr.ndim == 3 and channels == 1 and arr.shape[2] == 1:
        arr = arr[..., 0]
    want = (channels,) if channels > 1 else ()
    if arr.ndim != 2 + len(want) or arr.shape[2:] != want:
        raise ValueError(f"{encoding} needs an array of shape (h, w{', %d' % channels if want else ''}), "
                         f"got {arr.shape}")
    if arr.dtype.newbyteorder("=") != dtype:
        raise ValueError(f"{encoding} needs dtype {dtype}, got {arr.dtype} (convert explicitly)")
    h, w = arr.shape[:2]
    return Image(header=_header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                 is_bigendian=int(_is_big(arr.dtype)), step=w * channels * dtype.itemsize,
                 data=_bytes_array(arr))


def depth_to_metres(msg: Image) -> np.ndarray:
    """(h, w) float32 metres from 16UC1/mono16 millimetres (0 = no return stays 0) or 32FC1 metres."""
    if msg.encoding not in ("16UC1", "mono16", "32FC1"):
        raise ValueError(f"depth image must be 16UC1, mono16 or 32FC1, got {msg.encoding!r}")
    depth = image_to_numpy(msg)
    if depth.dtype == np.float32:
        return depth
    return depth.astype(np.float32) * np.float32(0.001)


# --- PointCloud2 -------------------------------------------------------------------------------------

_XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, n in enumerate("xyz")]


def pointcloud2_to_xyz(msg: PointCloud2) -> np.ndarray:
    """(height*width, 3) float32 x, y, z of any PointCloud2 that has them (extra fields, padding, row
    padding, either byte order, any numeric type); a zero-copy view for packed native xyz float32."""
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in "xyz" if n not in fields]
    if missing:
        raise ValueError(f"PointCloud2 lacks field(s) {missing}; has {sorted(fields)}")
    h, w, point_step, row_step = int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step)
    order = ">" if msg.is_bigendian else "<"
    names, formats, offsets = [], [], []
    for n in "xyz":
        f = fields[n]
        if f.datatype not in _POINTFIELD_DTYPES:
            raise ValueError(f"PointCloud2 field {n!r} has unknown datatype {f.datatype}")
        if f.count != 1:
            raise ValueError(f"PointCloud2 field {n!r} must have count 1, got {f.count}")
        dt = np.dtype(_POINTFIELD_DTYPES[f.datatype]).newbyteorder(order)
        if f.offset + dt.itemsize > point_step:
            raise ValueError(f"PointCloud2 field {n!r} (offset {f.offset}, {dt.itemsize} bytes) does not fit "
                             f"in point_step {point_step}")
        names.append(n)
        formats.append(dt)
        offsets.append(f.offset)
    if row_step < w * point_step:
        raise ValueError(f"PointCloud2 row_step {row_step} is smaller than width*point_step = {w * point_step}")
    if len(msg.data) != h * row_step:
        raise ValueError(f"PointCloud2 data has {len(msg.data)} bytes, expected height*row_step = "
                         f"{h}*{row_step} = {h * row_step}")
    if h * w == 0:
        return np.zeros((0, 3), np.float32)
    raw = np.frombuffer(msg.data, dtype=np.uint8)
    packed_xyz = (offsets == [0, 4, 8] and all(f == np.dtype(np.float32) for f in formats)
                  and point_step == 12 and row_step == 12 * w)
    if packed_xyz:  # the layout we publish: the message bytes are the (N, 3) float32 array
        return raw.view(np.float32).reshape(h * w, 3)
    rec = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    points = raw.reshape(h, row_step)[:, : w * point_step].view(rec).reshape(h * w)
    out = np.empty((h * w, 3), np.float32)
    for i, n in enumerate("xyz"):
        out[:, i] = points[n]
    return out


def xyz_to_pointcloud2(xyz: np.ndarray, stamp_ns: int = 0, frame_id: str = BASE_FRAME) -> PointCloud2:
    """Unorganised (height 1) cloud of packed xyz float32 in native byte order (float64 input is
    rounded to float32, the cloud format of spec.POINTS_TOPIC)."""
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {xyz.shape}")
    if not (np.issubdtype(xyz.dtype, np.floating) or np.issubdtype(xyz.dtype, np.integer)):
        raise ValueError(f"xyz must be numeric, got dtype {xyz.dtype}")
    pts = np.ascontiguousarray(xyz, dtype=np.float32)
    n = pts.shape[0]
    return PointCloud2(header=_header(stamp_ns, frame_id), height=1, width=n, fields=list(_XYZ_FIELDS),
                       is_bigendian=_BIG, point_step=12, row_step=12 * n, data=_bytes_array(pts),
                       is_dense=bool(np.isfinite(pts).all()))


# --- CameraInfo --------------------------------------------------------------------------------------

def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not K.any():
        raise ValueError("CameraInfo is uncalibrated (K is all zeros)")
    if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
        raise ValueError(f"CameraInfo K is not a pinhole matrix [[fx,s,cx],[0,fy,cy],[0,0,1]]: {K.tolist()}")
    return CameraIntrinsics.from_K(int(msg.width), int(msg.height), K, distortion_model=msg.distortion_model,
                                   distortion=tuple(float(v) for v in msg.d))


def intrinsics_to_camera_info(intr: CameraIntrinsics, stamp_ns: int = 0, frame_id: str = "") -> CameraInfo:
    """CameraInfo of a rectification-free pinhole camera (R = I, P = [K | 0]), as realsense-ros sends."""
    K = intr.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    return CameraInfo(header=_header(stamp_ns, frame_id), height=intr.height, width=intr.width,
                      distortion_model=intr.distortion_model, d=_float64_array(intr.distortion),
                      k=K.reshape(9), r=np.eye(3).reshape(9), p=P.reshape(12))


# --- JointState --------------------------------------------------------------------------------------

def joint_state_to_numpy(msg: JointState) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray]:
    """(names, position, velocity, effort) float64 views; an absent velocity/effort is a length-0 array
    (JointState allows leaving them empty)."""
    names = tuple(msg.name)
    n = len(names)
    if len(set(names)) != n:
        raise ValueError(f"JointState has duplicate joint names: {list(names)}")
    out = [np.frombuffer(msg.position, dtype=np.float64)]
    if len(out[0]) != n:
        raise ValueError(f"JointState has {n} names but {len(out[0])} positions")
    for field in ("velocity", "effort"):
        values = np.frombuffer(getattr(msg, field), dtype=np.float64)
        if len(values) not in (0, n):
            raise ValueError(f"JointState has {n} names but {len(values)} {field} values (must be 0 or {n})")
        out.append(values)
    return names, out[0], out[1], out[2]


def numpy_to_joint_state(names: tuple[str, ...] | list[str], position: np.ndarray,
                         velocity: np.ndarray | None = None, effort: np.ndarray | None = None,
                         stamp_ns: int = 0, frame_id: str = "") -> JointState:
    names = [str(n) for n in names]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate joint names: {names}")
    msg = JointState(header=_header(stamp_ns, frame_id), name=names)
    for field, values in (("position", position), ("velocity", velocity), ("effort", effort)):
        if values is None:
            continue
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(arr) != len(names):
            raise ValueError(f"{len(names)} joint names but {len(arr)} {field} values")
        setattr(msg, field, _float64_array(arr))
    return msg


# --- PoseStamped -------------------------------------------------------------------------------------

def _check_quat(quat: np.ndarray) -> None:
    if not np.isfinite(quat).all() or abs(np.linalg.norm(quat) - 1.0) > 1e-3:
        raise ValueError(f"orientation must be a finite unit quaternion (x, y, z, w), got {quat.tolist()} "
                         f"with norm {np.linalg.norm(quat):.6g}")


def pose_stamped_to_numpy(msg: PoseStamped) -> tuple[np.ndarray, np.ndarray]:
    """(xyz (3,), quaternion xyzw (4,)) float64; a non-unit quaternion is rejected, not renormalised."""
    p, q = msg.pose.position, msg.pose.orientation
    xyz = np.array([p.x, p.y, p.z])
    quat = np.array([q.x, q.y, q.z, q.w])
    if not np.isfinite(xyz).all():
        raise ValueError(f"pose position is not finite: {xyz.tolist()}")
    _check_quat(quat)
    return xyz, quat


def numpy_to_pose_stamped(xyz: np.ndarray, quat: np.ndarray, stamp_ns: int = 0,
                          frame_id: str = BASE_FRAME) -> PoseStamped:
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1)
    quat = np.asarray(quat, dtype=np.float64).reshape(-1)
    if xyz.shape != (3,) or quat.shape != (4,):
        raise ValueError(f"need xyz (3,) and quaternion xyzw (4,), got {xyz.shape} and {quat.shape}")
    if not np.isfinite(xyz).all():
        raise ValueError(f"pose position is not finite: {xyz.tolist()}")
    _check_quat(quat)
    msg = PoseStamped(header=_header(stamp_ns, frame_id))
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = map(float, xyz)
    o = msg.pose.orientation
    o.x, o.y, o.z, o.w = map(float, quat)
    return msg


# --- action chunk (trajectory_msgs/JointTrajectory) --------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    """Actions to command at stamp_ns + i * dt (robot units, spec.ACTION_NAMES layout)."""

    actions: np.ndarray  # (H, ACTION_DIM) float32
    stamp_ns: int  # observation time the chunk was predicted from
    dt: float  # seconds between actions; spec.STEP_DT for a one-point chunk, which has no spacing


def chunk_to_msg(actions: np.ndarray, stamp_ns: int, dt: float = STEP_DT,
                 frame_id: str = BASE_FRAME) -> JointTrajectory:
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[0] < 1 or actions.shape[1] != ACTION_DIM:
        raise ValueError(f"actions must have shape (H>=1, {ACTION_DIM}), got {actions.shape}")
    if not np.isfinite(actions).all():
        raise ValueError("actions contain NaN or inf")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt}")
    dt_ns = dt * _NS
    # Ten values per point: a float list is the cheapest form for the field setter at this size.
    points = [JointTrajectoryPoint(positions=row, time_from_start=ns_to_duration(round(i * dt_ns)))
              for i, row in enumerate(actions.astype(np.float64).tolist())]
    return JointTrajectory(header=_header(stamp_ns, frame_id), joint_names=list(ACTION_NAMES), points=points)


def msg_to_chunk(msg: JointTrajectory, frame_id: str | None = BASE_FRAME) -> Chunk:
    """Validate a chunk message (joint names, point sizes, times 0, dt, 2dt, ...) and return its arrays.

    `frame_id` is the frame the header must name (None accepts any).
    """
    if tuple(msg.joint_names) != ACTION_NAMES:
        raise ValueError(f"chunk joint_names must be {list(ACTION_NAMES)}, got {list(msg.joint_names)}")
    if frame_id is not None and msg.header.frame_id != frame_id:
        raise ValueError(f"chunk frame_id must be {frame_id!r}, got {msg.header.frame_id!r}")
    if not msg.points:
        raise ValueError("chunk has no points")
    for i, pt in enumerate(msg.points):
        if len(pt.positions) != ACTION_DIM:
            raise ValueError(f"chunk point {i} has {len(pt.positions)} positions, expected {ACTION_DIM}")
    raw = b"".join(pt.positions.tobytes() for pt in msg.points)  # one buffer: far cheaper than per-row
    actions = np.frombuffer(raw, dtype=np.float64).reshape(-1, ACTION_DIM).astype(np.float32)
    times = np.array([stamp_to_ns(pt.time_from_start) for pt in msg.points], dtype=np.int64)
    if not np.isfinite(actions).all():
        raise ValueError("chunk contains NaN or inf actions")
    if times[0] != 0:
        raise ValueError(f"chunk point 0 must have time_from_start 0, got {times[0]} ns")
    if len(times) == 1:
        return Chunk(actions, stamp_to_ns(msg.header.stamp), STEP_DT)
    steps = np.diff(times)
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0))
        raise ValueError(f"chunk time_from_start must increase: point {i + 1} at {times[i + 1]} ns "
                         f"after point {i} at {times[i]} ns")
    dt_ns = times[-1] / (len(times) - 1)
    if np.abs(times - np.arange(len(times)) * dt_ns).max() > 1000:  # 1 us: rounding of i * dt to ns
        raise ValueError(f"chunk time_from_start must be evenly spaced (i * dt), got {times.tolist()} ns")
    return Chunk(actions, stamp_to_ns(msg.header.stamp), float(dt_ns) / _NS)
