"""Recorder node: raw CDR of the policy's topics -> one rosbag2-compatible MCAP file per episode.

Subscribes with `raw=True` (no deserialise/serialise round trip), learns each topic's type and offered
QoS from the graph like `ros2 bag record` does, and hands everything to flow2one.data.recording.
Episodes start/stop on EPISODE_TOPIC ("start", "stop", "success", "failure", "discard").
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import String

from flow2one import spec
from flow2one.data.bags import message_definition, qos_metadata, type_hash
from flow2one.data.recording import EpisodeRecorder, RecorderConfig
from flow2one.perception.crop import LinkedCropParams
from flow2one.ros.diagnostics import ERROR, OK, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.runner import run_node_main

DEFAULT_TOPICS = (spec.POINTS_TOPIC, spec.JOINT_STATES_TOPIC, spec.EE_POSE_TOPIC, spec.COMMAND_TOPIC,
                  spec.CHUNK_TOPIC, spec.EPISODE_TOPIC)


@dataclass(frozen=True)
class RecorderParams(LinkedCropParams):
    output_dir: str = "demos"
    task: str = ""
    operator: str = ""
    cameras: tuple[str, ...] = ("front",)  # each adds color, depth and their camera_info topics
    topics: tuple[str, ...] = DEFAULT_TOPICS
    record_prefixes: tuple[str, ...] = ("/camera/",)  # also record any topic under these ("-" = none)
    compression: str = "lz4"  # lz4 | zstd | none (`flow2one bench bag_recording`: zstd costs 3x lz4)
    flush_period_s: float = 0.5  # a kill -9 loses at most about this much of the running episode
    default_success: str = "unknown"  # outcome of a plain "stop": true | false | unknown
    task_status_topic: str = spec.SIM_STATUS_TOPIC  # JSON {"success": ..., "task": ...}; "" = none
    recover_on_start: bool = True  # turn .part files of a crashed run into readable episodes
    discovery_period_s: float = 0.5

    def __post_init__(self) -> None:
        if self.compression not in ("zstd", "lz4", "none"):
            raise ValueError(f"compression must be zstd, lz4 or none, got {self.compression!r}")
        if self.default_success not in ("true", "false", "unknown"):
            raise ValueError(f"default_success must be true, false or unknown, got {self.default_success!r}")
        if self.flush_period_s < 0:
            raise ValueError("flush_period_s must be >= 0")
        if not self.output_dir:
            raise ValueError("output_dir must not be empty")

    def all_topics(self) -> list[str]:
        cams = [t for name in self.cameras for t in spec.camera_topics(name).values()]
        return list(dict.fromkeys([*cams, *self.topics]))


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class RecorderNode(Node):
    PARAMS = RecorderParams  # checked by the runner before any node starts

    def __init__(self, node_name: str = "recorder", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self.diag = Diagnostics(self)
        default = {"true": True, "false": False, "unknown": None}[self.p.default_success]
        crop = self.p.cloud_crop
        self.core = EpisodeRecorder(RecorderConfig(self.p.output_dir, self.p.task, self.p.operator,
                                                   self.p.compression, self.p.flush_period_s, default,
                                                   crop.to_dict() if crop else None))
        if self.p.recover_on_start:
            for r in self.core.recover_unfinished():
                self.get_logger().warning(f"recovered {r.path}: {r.messages} messages ({r.reason})")
        self._wanted = self.p.all_topics()
        self._subs: dict[str, object] = {}
        self.create_subscription(String, spec.EPISODE_TOPIC, self._on_event, 10)
        if self.p.task_status_topic:
            self.create_subscription(String, self.p.task_status_topic, self._on_task_status, 10)
        self.create_timer(self.p.discovery_period_s, self._discover)
        self._discover()
        self.diag.set(OK, "idle", output_dir=self.p.output_dir)

    @property
    def waiting_for(self) -> list[str]:
        """Wanted topics not subscribed yet (their publishers not discovered): an episode started now
        would begin without them."""
        return [t for t in self._wanted if self._subs.get(t) is None]

    def _discover(self) -> None:
        types = dict(self.get_topic_names_and_types())
        prefixes = tuple(p for p in self.p.record_prefixes if p and p != "-")
        wanted = self._wanted + [t for t in types if prefixes and t.startswith(prefixes) and t not in self._wanted]
        for topic in wanted:
            if topic in self._subs or topic not in types:
                continue
            msgtype = types[topic][0]
            try:
                cls = message_class(msgtype)
                # the schema now (cached), not in the first message's callback of an episode: loading the type
                # store there (0.13 s, more under load) held back every queued message, and the episode's
                # first second of robot state was logged up to 0.8 s after its stamps
                message_definition(msgtype)
                type_hash(msgtype)
            except (ImportError, AttributeError, ValueError) as exc:
                self.get_logger().error(f"cannot record {topic}: type {msgtype} not importable ({exc})")
                self._subs[topic] = None
                continue
            pubs = self.get_publishers_info_by_topic(topic)
            reliable = bool(pubs) and all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in pubs)
            latched = bool(pubs) and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                         for p in pubs)
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE if reliable
                             else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self.core.set_qos(topic, qos_metadata(reliable, latched))
            self._subs[topic] = self.create_subscription(
                cls, topic, lambda data, t=topic, m=msgtype: self._on_raw(t, m, data), qos, raw=True)
            self.get_logger().info(f"recording {topic} [{msgtype}] ({'reliable' if reliable else 'best effort'})")

    def _on_raw(self, topic: str, msgtype: str, data: bytes) -> None:
        try:
            self.core.on_message(topic, msgtype, data, self.get_clock().now().nanoseconds)
        except Exception as exc:  # a full disk must show up in diagnostics, not kill the graph
            self.diag.set(ERROR, f"write failed: {exc}")
            self.get_logger().error(f"writing {topic}: {exc}")

    def _on_event(self, msg: String) -> None:
        try:
            text = self.core.handle_event(msg.data, self.get_clock().now().nanoseconds)
        except ValueError as exc:
            self.get_logger().warning(str(exc))
            return
        self.get_logger().info(text)
        self.diag.set(OK, f"recording {self.core.current}" if self.core.recording else "idle",
                      episodes_saved=len(self.core.finished))

    def _on_task_status(self, msg: String) -> None:
        try:
            status = json.loads(msg.data)
        except json.JSONDecodeError:
            return
        if not isinstance(status, dict):
            return
        if isinstance(status.get("success"), bool):
            self.core.task_success = status["success"]
        if isinstance(status.get("task"), str):
            self.core.task_hint = status["task"]

    def close(self) -> None:
        self.core.close()


def main(args: list[str] | None = None) -> None:
    run_node_main("recorder", args)
