"""Topic profiles: how a bag recorded by someone else's drivers maps onto flow2one's topics.

A lab records with `ros2 bag record` and realsense-ros + franka_ros2, not with our recorder, so its bags
name things differently and carry different messages: finger joints instead of a gripper width, the EE
pose in /tf instead of a PoseStamped, no command topic of ours, compressed images, no cloud. A profile
(config/topics/*.yaml, chosen with --profile) names where each of our streams comes from, and
`canonical_messages` translates the bag into the messages our own recorder would have written, on our
topic names (spec.py). Convert and replay read only that translation, so both treat a lab bag like ours.
Messages the graph does not use (/rosout, /parameter_events, /diagnostics, ...) are dropped here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow2one import spec
from flow2one.data.bags import BagMessage, read_messages, read_summary
from flow2one.data.cdr import deserialize, typestore
from flow2one.geometry import matrix_to_quat, matrix_to_rot6d, quat_to_matrix
from flow2one.yamlio import load_yaml

_NS = 1_000_000_000
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
POSE = "geometry_msgs/msg/PoseStamped"
JOINTS = "sensor_msgs/msg/JointState"
TRAJECTORY = "trajectory_msgs/msg/JointTrajectory"
TF = "tf2_msgs/msg/TFMessage"
# image_transport publishes compressed images under these suffixes of the raw topic.
COMPRESSED_SUFFIXES = ("/compressed", "/compressedDepth")


def profiles_dir() -> Path:
    from flow2one.paths import config_dir

    return config_dir() / "topics"


def shipped_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


@dataclass(frozen=True)
class TopicProfile:
    """Where each of flow2one's streams is found in a bag (see config/topics/*.yaml for the fields)."""

    name: str = "flow2one"
    cameras: dict[str, dict[str, str]] = field(default_factory=dict)  # camera -> {color, depth, color_info, depth_info}
    points: str = spec.POINTS_TOPIC  # PointCloud2 topic; absent from a bag -> cloud from depth + calibration
    ee_pose: str = spec.EE_POSE_TOPIC  # PoseStamped topic
    tf_parent: str = ""  # if ee_pose is not in the bag: the EE pose as the /tf chain parent -> child
    tf_child: str = ""
    joint_states: tuple[str, ...] = (spec.JOINT_STATES_TOPIC,)  # the first is the arm's; all feed the fingers
    gripper_joint: str = "gripper_width"  # a joint whose position IS the width, or
    finger_joints: tuple[str, ...] = ()  # joints whose positions add up to the width (franka_ros2)
    command: str = spec.COMMAND_TOPIC  # JointTrajectory with ACTION_DIM positions (our executor's)
    target: str = ""  # PoseStamped teleop target used as the command when `command` is not in the bag
    command_from_next_pose: bool = False  # neither in the bag: the command is the next recorded EE pose
    calibration: str = ""  # calibration file for clouds built from depth ("" = the caller's default)

    def camera_topics(self, cam: str) -> dict[str, str]:
        """Source topics of one camera (a camera the profile does not list is taken with our names)."""
        return {**spec.camera_topics(cam), **self.cameras.get(cam, {})}

    def camera_names(self) -> list[str]:
        return list(self.cameras)


def load_profile(name_or_path: str = "flow2one") -> TopicProfile:
    """A shipped profile by name (config/topics/NAME.yaml) or a YAML file of the same fields."""
    path = Path(name_or_path)
    if not path.suffix:
        path = profiles_dir() / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ValueError(f"unknown topic profile {name_or_path!r}; shipped: {', '.join(shipped_profiles())} "
                             "(or give a YAML file)")
    data = load_yaml(path, "topic profile")
    known = set(TopicProfile.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{path}: unknown fields {unknown}; known: {', '.join(sorted(known))}")
    for key in ("joint_states", "finger_joints"):
        if key in data:
            v = data[key]
            data[key] = tuple([v] if isinstance(v, str) else v or ())
    cams = data.get("cameras") or {}
    if not isinstance(cams, dict) or not all(isinstance(v, dict) for v in cams.values()):
        raise ValueError(f"{path}: cameras must map camera names to {{color, depth, color_info, depth_info}}")
    data["cameras"] = {str(k): {s: str(t) for s, t in v.items()} for k, v in cams.items()}
    return TopicProfile(**{"name": path.stem, **data})


def _store():
    return typestore()


def _deserialize(m: BagMessage):
    return deserialize(m.data, m.msgtype)


def _serialize(msg, msgtype: str) -> bytes:
    return bytes(_store().serialize_cdr(msg, msgtype))


def _header(stamp_ns: int, frame: str):
    t = _store().types
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=int(stamp_ns // _NS),
                                                                             nanosec=int(stamp_ns % _NS)),
                                    frame_id=frame)


def stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * _NS + int(msg.header.stamp.nanosec)


def decode_compressed(msg, depth: bool) -> tuple[np.ndarray, str]:
    """CompressedImage -> (pixels, encoding): color as rgb8, depth as 16UC1 (compressedDepth: a 12-byte
    header, then a PNG) or 32FC1."""
    import cv2

    data = np.asarray(msg.data, dtype=np.uint8)
    fmt = str(msg.format)
    if "compressedDepth" in fmt:
        if "32FC1" in fmt:
            raise ValueError("compressedDepth 32FC1 (inverse-depth quantised) is not supported; record 16UC1")
        data = data[12:]  # compressedDepth's ConfigHeader (format + depth quantisation), unused for 16UC1
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"cannot decode a CompressedImage of format {fmt!r}")
    if depth:
        if img.dtype != np.uint16:
            raise ValueError(f"compressed depth decodes to {img.dtype}, not 16-bit millimetres ({fmt!r})")
        return img, "16UC1"
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., 2::-1]), "rgb8"  # OpenCV decodes to BGR(A)


def raw_image(msg, pixels: np.ndarray, encoding: str):
    h, w = pixels.shape[:2]
    return _store().types[IMAGE](header=msg.header, height=h, width=w, encoding=encoding, is_bigendian=0,
                                 step=int(pixels.strides[0]), data=np.ascontiguousarray(pixels).reshape(-1).view(np.uint8))


class _TfChain:
    """The EE pose from /tf and /tf_static: the chain from `parent` to `child`, each edge held at its last
    value (robot_state_publisher sends every joint's edge in one message, so a pose per message)."""

    def __init__(self, parent: str, child: str) -> None:
        self.parent, self.child = parent, child
        self.edges: dict[str, tuple[str, np.ndarray]] = {}  # child frame -> (parent frame, T_parent_child)

    def add(self, msg) -> int | None:
        """Take a TFMessage; returns its newest stamp if the chain is complete now."""
        newest = None
        for tr in msg.transforms:
            q, p = tr.transform.rotation, tr.transform.translation
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = quat_to_matrix(np.array([q.x, q.y, q.z, q.w])), (p.x, p.y, p.z)
            self.edges[tr.child_frame_id.lstrip("/")] = (tr.header.frame_id.lstrip("/"), T)
            s = stamp_ns(tr)
            newest = s if newest is None else max(newest, s)
        return newest if newest is not None and self.pose() is not None else None

    def pose(self) -> np.ndarray | None:
        T, frame = np.eye(4), self.child
        for _ in range(64):
            if frame == self.parent:
                return T
            if frame not in self.edges:
                return None
            frame, T_edge = self.edges[frame][0], self.edges[frame][1]
            T = T_edge @ T
        return None


def _pose_msg(T: np.ndarray, stamp: int):
    t = _store().types
    q = matrix_to_quat(T[:3, :3])
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=T[0, 3], y=T[1, 3], z=T[2, 3]),
                                       orientation=t["geometry_msgs/msg/Quaternion"](x=q[0], y=q[1], z=q[2], w=q[3]))
    return t[POSE](header=_header(stamp, spec.BASE_FRAME), pose=pose)


def _command_msg(xyz, quat, width: float, stamp: int):
    t = _store().types
    action = np.r_[np.asarray(xyz, float), matrix_to_rot6d(quat_to_matrix(np.asarray(quat, float))), width]
    dur = t["builtin_interfaces/msg/Duration"](sec=0, nanosec=0)
    point = t["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=action.astype(np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
        effort=np.zeros(0), time_from_start=dur)
    return t[TRAJECTORY](header=_header(stamp, spec.BASE_FRAME), joint_names=list(spec.ACTION_NAMES), points=[point])


@dataclass
class Plan:
    """Which source topics of one bag feed which of our topics (what `canonical_messages` will do)."""

    images: dict[str, tuple[str, bool]]  # source -> (our topic, is depth)
    passthrough: dict[str, str]  # source -> our topic, bytes unchanged
    joints: tuple[str, ...]
    tf: bool
    target: str
    next_pose: bool
    missing: list[str]  # what the bag lacks, in words

    @property
    def sources(self) -> list[str]:
        out = [*self.images, *self.passthrough, *self.joints, *(["/tf", "/tf_static"] if self.tf else [])]
        return list(dict.fromkeys(out + ([self.target] if self.target else [])))


def _our_cameras(topics: set[str]) -> list[str]:
    """Camera names of topics named as ours (spec.DEPTH_TOPIC)."""
    import re

    pattern = re.compile("^" + re.escape(spec.DEPTH_TOPIC).replace(re.escape("{name}"), "([^/]+)") + "$")
    return sorted(m.group(1) for t in topics if (m := pattern.match(t)))


def plan(path: str | Path, profile: TopicProfile, cameras: list[str] | None = None, need_points: bool = False,
         need_command: bool = True) -> Plan:
    """Match the profile against the bag's topics; `missing` names every stream it cannot supply."""
    topics = read_summary(path).topics
    have = {t for t, (_, n) in topics.items() if n > 0}
    images: dict[str, tuple[str, bool]] = {}
    passthrough: dict[str, str] = {}
    missing: list[str] = []
    if cameras is None:
        cameras = profile.camera_names() or _our_cameras(have)
    for cam in cameras:
        src, ours = profile.camera_topics(cam), spec.camera_topics(cam)
        for stream in ("color", "depth"):
            found = next((t for t in (src[stream], *(src[stream] + s for s in COMPRESSED_SUFFIXES)) if t in have), None)
            if found is None:
                missing.append(f"{src[stream]} (camera {cam} {stream})")
            else:
                images[found] = (ours[stream], stream == "depth")
        for stream in ("color_info", "depth_info"):
            if src[stream] in have:
                passthrough[src[stream]] = ours[stream]
    if profile.points in have:
        passthrough[profile.points] = spec.POINTS_TOPIC
    elif need_points:
        missing.append(f"{profile.points} (point cloud)")
    tf = False
    if profile.ee_pose in have:
        passthrough[profile.ee_pose] = spec.EE_POSE_TOPIC
    elif profile.tf_parent and profile.tf_child and "/tf" in have:
        tf = True
    else:
        missing.append(f"{profile.ee_pose} (EE pose"
                       + (f"; or /tf {profile.tf_parent} -> {profile.tf_child})" if profile.tf_parent else ")"))
    joints = tuple(t for t in profile.joint_states if t in have)
    if not joints or joints[0] != profile.joint_states[0]:
        missing.append(f"{profile.joint_states[0]} (joint states)")
        joints = ()
    target, next_pose = "", False
    if profile.command in have:
        passthrough[profile.command] = spec.COMMAND_TOPIC
    elif profile.target and profile.target in have:
        target = profile.target
    elif profile.command_from_next_pose:
        next_pose = True
    elif need_command:
        missing.append(f"{profile.command} (command" + (f"; or {profile.target})" if profile.target else ")"))
    return Plan(images, passthrough, joints, tf, target, next_pose, missing)


def canonical_messages(path: str | Path, profile: TopicProfile, the_plan: Plan,
                       decode_images: bool = True) -> Iterator[BagMessage]:
    """The bag's messages as our recorder would have written them, in log-time order.

    decode_images=False leaves compressed images compressed (CompressedImage on our topic), for a caller
    that reads only their stamps first."""
    width: float | None = None
    finger = {j: None for j in profile.finger_joints}
    chain = _TfChain(profile.tf_parent, profile.tf_child) if the_plan.tf else None
    last_pose: tuple[int, np.ndarray, np.ndarray] | None = None  # for command_from_next_pose
    for m in read_messages(path, the_plan.sources):
        t = m.log_time_ns
        if m.topic in the_plan.images:
            ours, depth = the_plan.images[m.topic]
            if m.msgtype == COMPRESSED and decode_images:
                msg = _deserialize(m)
                pixels, enc = decode_compressed(msg, depth)
                yield BagMessage(ours, IMAGE, t, m.publish_time_ns, _serialize(raw_image(msg, pixels, enc), IMAGE))
            else:
                yield BagMessage(ours, m.msgtype, t, m.publish_time_ns, m.data)
            continue
        pose = None
        if m.topic in the_plan.passthrough:
            ours = the_plan.passthrough[m.topic]
            yield BagMessage(ours, m.msgtype, t, m.publish_time_ns, m.data)
            if ours == spec.EE_POSE_TOPIC and the_plan.next_pose:
                msg = _deserialize(m)
                p, q = msg.pose.position, msg.pose.orientation
                pose = (stamp_ns(msg), np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]))
        elif m.topic in ("/tf", "/tf_static") and chain is not None:
            s = chain.add(_deserialize(m))
            if s is not None:
                T = chain.pose()
                yield BagMessage(spec.EE_POSE_TOPIC, POSE, t, t, _serialize(_pose_msg(T, s), POSE))
                if the_plan.next_pose:
                    pose = (s, T[:3, 3].copy(), matrix_to_quat(T[:3, :3]))
        elif m.topic in the_plan.joints:
            msg = _deserialize(m)
            names, pos = list(msg.name), np.asarray(msg.position, dtype=np.float64)
            if profile.gripper_joint in names:
                width = float(pos[names.index(profile.gripper_joint)])
            for j in finger:
                if j in names:
                    finger[j] = float(pos[names.index(j)])
            if finger and all(v is not None for v in finger.values()):
                width = float(sum(finger.values()))
            if m.topic == the_plan.joints[0] and width is not None:
                arm = [(n, p) for n, p in zip(names, pos) if n not in finger and n != profile.gripper_joint]
                out = _store().types[JOINTS](
                    header=msg.header, name=[n for n, _ in arm] + ["gripper_width"],
                    position=np.array([p for _, p in arm] + [width], dtype=np.float64),
                    velocity=np.zeros(0), effort=np.zeros(0))
                yield BagMessage(spec.JOINT_STATES_TOPIC, JOINTS, t, m.publish_time_ns, _serialize(out, JOINTS))
        elif m.topic == the_plan.target and width is not None:
            msg = _deserialize(m)
            p, q = msg.pose.position, msg.pose.orientation
            cmd = _command_msg([p.x, p.y, p.z], [q.x, q.y, q.z, q.w], width, stamp_ns(msg))
            yield BagMessage(spec.COMMAND_TOPIC, TRAJECTORY, t, t, _serialize(cmd, TRAJECTORY))
        if pose is not None and width is not None:
            # The command at the previous pose's time is where the arm went next: this pose.
            if last_pose is not None:
                cmd = _command_msg(pose[1], pose[2], width, last_pose[0])
                yield BagMessage(spec.COMMAND_TOPIC, TRAJECTORY, t, t, _serialize(cmd, TRAJECTORY))
            last_pose = pose
