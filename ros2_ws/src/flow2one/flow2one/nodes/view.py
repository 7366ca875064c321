"""View node: the graph's topics -> a Rerun recording (live viewer and/or an .rrd file).

A plain subscriber, so the same view runs on the robot (`ros2 launch flow2one deploy.launch.py view:=true`),
in the sim (`flow2one run sim --view`) and on a replayed bag (`flow2one replay BAG --view`). It logs the
cameras, the 4,096-point cloud, the policy's candidate chunks (its MarkerArray: every candidate, the chosen
one green and thicker) and the chosen chunk, the executed end-effector path and gripper width, the
executor's clamps / rejections / faults (counter changes in its /diagnostics), the sim task status, and
latency and rate, through flow2one.view.log. `TopicView` translates messages without a node, which is how
`flow2one view BAG` logs a recorded bag.

It subscribes only; heavy streams are logged at most max_image_hz / max_cloud_hz / max_pose_hz, and the
node belongs in a process of its own next to a policy sharing its GIL (`--own-process view`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState, PointCloud2
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from flow2one import spec
from flow2one.ros.convert import (
    image_to_numpy,
    joint_state_to_numpy,
    msg_to_chunk,
    pointcloud2_to_xyz,
    pose_stamped_to_numpy,
    stamp_to_ns,
)
from flow2one.ros.diagnostics import OK, WARN, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.qos import LATCHED_QOS, RECORD_QOS, SENSOR_QOS, STATE_QOS
from flow2one.ros.runner import run_node_main
from flow2one.view.log import LEVELS, ViewLog

CAMERA_RE = re.compile(r"^/camera/([^/]+)/(color/image_raw|aligned_depth_to_color/image_raw)$")
# executor counters whose increase is a safety event (control/executor.py)
SAFETY_COUNTERS = ("commands_clamped", "targets_rejected", "chunks_rejected", "chunks_malformed", "stops",
                   "robot_errors", "recoveries")


@dataclass(frozen=True)
class ViewParams:
    live: bool = True  # a viewer: native with a display, else the web viewer (its URL is printed)
    save: str = ""  # also record to this .rrd file ("" = no file)
    recording_id: str = ""  # recordings with one id merge in the viewer ("" = a new one)
    grpc_port: int = 9876
    web_port: int = 9090
    max_image_hz: float = 15.0  # per camera stream
    max_cloud_hz: float = 10.0
    max_pose_hz: float = 30.0  # EE pose / gripper width samples (the executor publishes 100 Hz)
    path_every: int = 5  # re-log the whole executed path every N logged poses
    discovery_period_s: float = 1.0  # how often new camera topics are looked for
    nice: int = 10  # added to the process's niceness: the control path gets the CPU first. Only when the view
    #               has its process to itself (launch, --own-process view); in-process runs set 0

    def __post_init__(self) -> None:
        if min(self.max_image_hz, self.max_cloud_hz, self.max_pose_hz) <= 0:
            raise ValueError("max_image_hz, max_cloud_hz and max_pose_hz must be positive")
        if not 0 <= self.nice <= 19:
            raise ValueError(f"nice must be in [0, 19], got {self.nice}")
        if self.path_every < 1 or self.discovery_period_s <= 0:
            raise ValueError("path_every must be >= 1 and discovery_period_s positive")


class _Gate:
    """Passes at most `hz` per key, by message time."""

    def __init__(self, hz: float) -> None:
        self.period_ns, self.last = int(1e9 / hz), {}

    def __call__(self, key: str, t_ns: int) -> bool:
        if t_ns - self.last.get(key, -(1 << 62)) < self.period_ns and t_ns >= self.last.get(key, 0):
            return False
        self.last[key] = t_ns
        return True


class TopicView:
    """Messages -> ViewLog calls. `handle(topic, msg, now_ns)`: `now_ns` is the receive (or bag log) time,
    the wall_time of messages without a header and the reference of latencies; None when the receiver's
    clock has not started (sim time before the first /clock): such messages keep the last time, and no
    latency is computed from them, instead of landing at time 0 (1970 on the wall_time timeline)."""

    def __init__(self, log: ViewLog, p: ViewParams = ViewParams()) -> None:
        self.log, self.p = log, p
        self._image_gate, self._cloud_gate = _Gate(p.max_image_hz), _Gate(p.max_cloud_hz)
        self._pose_gate = _Gate(p.max_pose_hz)
        self._poses = 0
        self._sim: tuple[float, int, float] | None = None  # (sim t, wall ns at it, sim s per wall s)
        self._episode: tuple | None = None
        self._outcome: tuple | None = None
        self._counters: dict[str, dict[str, int]] = {}
        self._states: dict[str, tuple[int, str]] = {}  # node -> (level, state) last seen
        self._chunk_times: list[int] = []
        self.counts = {"images": 0, "clouds": 0, "candidates": 0, "chunks": 0, "poses": 0, "events": 0}

    # --- time ------------------------------------------------------------------------------------------
    def sim_time(self, wall_ns: int) -> float | None:
        """The sim clock at a wall time, extrapolated from the last task status (5 Hz) at the sim's rate."""
        if self._sim is None:
            return None
        t, at_ns, rate = self._sim
        return t + max(wall_ns - at_ns, 0) * 1e-9 * rate

    def _at(self, wall_ns: int | None) -> None:
        if wall_ns is not None:
            self.log.at(wall_ns=wall_ns, sim_s=self.sim_time(wall_ns))

    # --- dispatch --------------------------------------------------------------------------------------
    def handle(self, topic: str, msg, now_ns: int | None) -> None:
        cam = CAMERA_RE.match(topic)
        if cam:
            self.image(cam.group(1), cam.group(2).startswith("color"), msg)
            return
        handler = {spec.POINTS_TOPIC: self.points, spec.PREDICTION_MARKERS_TOPIC: self.markers,
                   spec.CHUNK_TOPIC: self.chunk, spec.COMMAND_TOPIC: self.command, spec.EE_POSE_TOPIC: self.pose,
                   spec.JOINT_STATES_TOPIC: self.joints, spec.DIAGNOSTICS_TOPIC: self.diagnostics,
                   spec.SIM_STATUS_TOPIC: self.status, spec.EPISODE_TOPIC: self.episode}.get(topic)
        if handler is not None:
            handler(msg, now_ns)

    def image(self, camera: str, color: bool, msg: Image, now_ns: int | None = None) -> None:
        t = stamp_to_ns(msg.header.stamp)
        if not self._image_gate(f"{camera}/{color}", t):
            return
        self._at(t)
        if color:
            self.log.camera(camera, rgb=image_to_numpy(msg, "rgb8"))
        else:
            img = image_to_numpy(msg)
            self.log.camera(camera, depth=img, depth_meter=1000.0 if img.dtype == np.uint16 else 1.0)
        self.counts["images"] += 1

    def points(self, msg: PointCloud2, now_ns: int | None) -> None:
        t = stamp_to_ns(msg.header.stamp)
        if self._cloud_gate("cloud", t):
            self._at(t)
            self.log.cloud(pointcloud2_to_xyz(msg))
            self.counts["clouds"] += 1

    def markers(self, msg: MarkerArray, now_ns: int | None) -> None:
        ms = [m for m in msg.markers if m.points]
        if not ms:
            return
        self._at(stamp_to_ns(ms[0].header.stamp))
        rgba = [[int(255 * min(max(v, 0.0), 1.0)) for v in (m.color.r, m.color.g, m.color.b, m.color.a)] for m in ms]
        self.log.candidates([np.array([(p.x, p.y, p.z) for p in m.points]) for m in ms],  # the policy draws
                            best=int(np.argmax([m.scale.x for m in ms])), colors=rgba)  # its choice thicker
        self.counts["candidates"] += 1

    def chunk(self, msg: JointTrajectory, now_ns: int | None) -> None:
        c = msg_to_chunk(msg)
        self._at(c.stamp_ns)
        self.log.chosen(c.actions)
        self.counts["chunks"] += 1
        if now_ns is None:
            return
        self._at(now_ns)
        self.log.scalar("timing/obs_to_view_ms", (now_ns - c.stamp_ns) * 1e-6)  # includes the view's own lag
        self._chunk_times = [*self._chunk_times[-9:], now_ns]
        if len(self._chunk_times) > 1:
            span = (self._chunk_times[-1] - self._chunk_times[0]) * 1e-9
            self.log.scalar("timing/policy_rate_hz", (len(self._chunk_times) - 1) / max(span, 1e-9))

    def command(self, msg: JointTrajectory, now_ns: int | None) -> None:
        self._at(stamp_to_ns(msg.header.stamp))
        if msg.points:
            self.log.commanded(np.asarray(msg.points[0].positions))

    def pose(self, msg: PoseStamped, now_ns: int | None) -> None:
        t = stamp_to_ns(msg.header.stamp)
        if self._pose_gate("pose", t):
            self._at(t)
            self._poses += 1
            self.log.ee(pose_stamped_to_numpy(msg)[0], path=self._poses % self.p.path_every == 0)
            self.counts["poses"] += 1

    def joints(self, msg: JointState, now_ns: int | None) -> None:
        t = stamp_to_ns(msg.header.stamp)
        names, pos, _, _ = joint_state_to_numpy(msg)
        if "gripper_width" in names and self._pose_gate("gripper", t):
            self._at(t)
            self.log.scalar("robot/gripper_width", float(pos[names.index("gripper_width")]))

    def diagnostics(self, msg: DiagnosticArray, now_ns: int | None) -> None:
        """Executor counters that rose become safety events; level/message changes of any node events."""
        self._at(now_ns)
        for st in msg.status:
            node = st.name.rsplit("/", 1)[-1]
            values = {kv.key: kv.value for kv in st.values}
            level = st.level if isinstance(st.level, int) else ord(st.level)
            # an event when a node's level changes, or the executor's state ("running: ...", "fault: ...")
            key = (level, st.message.split(":", 1)[0] if node == "executor" else "")
            if self._states.get(node) != key:
                if level != OK or node in self._states:
                    self._event("safety" if node == "executor" else "nodes", f"{node}: {st.message}",
                                LEVELS.get(level, "INFO"))
                self._states[node] = key
            if node == "executor":
                seen = self._counters.setdefault(node, {})
                for key in (k for k in values if k in SAFETY_COUNTERS or k.startswith("rejected_")):
                    n = int(values[key])
                    if n > seen.get(key, n):
                        self._event("safety", f"executor {key} +{n - seen[key]} (total {n}); last error: "
                                    f"{values.get('last_error', '') or '-'}", "WARN")
                    seen[key] = n
                # chunk receipt -> first command, measured by the executor: a view that lags (it yields the
                # CPU to the control path) cannot time the control path from its own receive times
                self.log.scalar("timing/chunk_to_command_ms", float(values.get("latency_median_ms", "nan")))
            elif node == "policy":
                for key in ("inference_ms_p50", "obs_age_ms"):  # age of an observation when its chunk went out
                    if key in values:
                        self.log.scalar(f"timing/{key}", float(values[key]))

    def status(self, msg: String, now_ns: int | None) -> None:
        st = json.loads(msg.data)
        t = float(st.get("t", 0.0))
        if now_ns is not None:
            if self._sim is not None and st.get("episode") == self._episode and now_ns > self._sim[1] and t >= self._sim[0]:
                rate = (t - self._sim[0]) / ((now_ns - self._sim[1]) * 1e-9)
            else:
                rate = self._sim[2] if self._sim else 1.0
            self._sim = (t, now_ns, float(np.clip(rate, 0.0, 2.0)))
            self._at(now_ns)
        if st.get("episode") != self._episode:
            self._episode, self._outcome = st.get("episode"), None
            self.log.new_episode(f"episode {st.get('episode')}: {st.get('task')} seed {st.get('seed')}")
            self.counts["events"] += 1
        outcome = (bool(st.get("success")), bool(st.get("failed")))
        if outcome != self._outcome:
            if any(outcome):
                self._event("task", f"{st.get('task')} seed {st.get('seed')}: "
                            f"{'success' if outcome[0] else 'failure'} ({st.get('mode_name') or st.get('reason')})",
                            "INFO" if outcome[0] and not outcome[1] else "WARN")
            self._outcome = outcome
        self.log.scalar("robot/task_success", float(outcome[0] and not outcome[1]))

    def episode(self, msg: String, now_ns: int | None) -> None:
        self._at(now_ns)
        if msg.data == "start":
            self.log.new_episode("recording started")
            self.counts["events"] += 1
        else:
            self._event("task", f"recording: {msg.data}")

    def _event(self, source: str, text: str, level: str = "INFO") -> None:
        self.log.event(source, text, level)
        self.counts["events"] += 1


class ViewNode(Node):
    PARAMS = ViewParams  # checked by the runner before any node starts

    def __init__(self, node_name: str = "view", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        if not self.p.live and not self.p.save:
            raise ValueError(f"node '{node_name}': the view needs live:=true or a save path")
        if self.p.nice:
            os.nice(self.p.nice)
        self.diag = Diagnostics(self)
        self.log = ViewLog(live=self.p.live, save=self.p.save, recording_id=self.p.recording_id,
                           grpc_port=self.p.grpc_port, web_port=self.p.web_port)
        self.view = TopicView(self.log, self.p)
        self.errors = 0
        # every chunk and its candidates are kept while the view catches up (it yields the CPU to the control
        # path and lags under load); sensor streams keep only their newest, as everywhere
        keep = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
        sub = [(PointCloud2, spec.POINTS_TOPIC, SENSOR_QOS), (MarkerArray, spec.PREDICTION_MARKERS_TOPIC, keep),
               (JointTrajectory, spec.CHUNK_TOPIC, keep), (JointTrajectory, spec.COMMAND_TOPIC, RECORD_QOS),
               (PoseStamped, spec.EE_POSE_TOPIC, STATE_QOS), (JointState, spec.JOINT_STATES_TOPIC, STATE_QOS),
               (DiagnosticArray, spec.DIAGNOSTICS_TOPIC, 10), (String, spec.SIM_STATUS_TOPIC, LATCHED_QOS),
               (String, spec.EPISODE_TOPIC, 10)]
        for cls, topic, qos in sub:
            self._subscribe(cls, topic, qos)
        self._cameras: set[str] = set()
        self.create_timer(self.p.discovery_period_s, self._discover)
        self.create_timer(1.0, lambda: self.diag.set(OK if not self.errors else WARN, f"logging to {self._sinks()}",
                                                     errors=self.errors, **self.view.counts))
        self._discover()
        self.get_logger().info(f"view: logging to {self._sinks()}")

    def _sinks(self) -> str:
        return " and ".join(s for s in (self.log.url, self.p.save) if s) or "memory"

    def _subscribe(self, cls, topic: str, qos) -> None:
        self.create_subscription(cls, topic, lambda m, t=topic: self._handle(t, m), qos)

    def _handle(self, topic: str, msg) -> None:
        # a message the view cannot draw is its own problem: raised, it would end the executor's spin and,
        # in one process, every other node's callbacks with it
        try:
            self.view.handle(topic, msg, self.get_clock().now().nanoseconds or None)  # 0: sim time not started
        except Exception as exc:  # noqa: BLE001 - logged and counted, the graph goes on
            self.errors += 1
            self.get_logger().error(f"view: cannot log a message of {topic}: {type(exc).__name__}: {exc}",
                                    throttle_duration_sec=5.0)

    def _discover(self) -> None:
        """Subscribe to every camera stream that has appeared (any number of cameras, any names)."""
        for topic, _ in self.get_topic_names_and_types():
            if CAMERA_RE.match(topic) and topic not in self._cameras:
                self._cameras.add(topic)
                self._subscribe(Image, topic, SENSOR_QOS)

    def close(self) -> None:
        self.log.close()


def main(args: list[str] | None = None) -> None:
    run_node_main("view", args)
