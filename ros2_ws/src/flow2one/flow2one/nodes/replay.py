"""Replay node: plays a recorded episode bag into the graph and scores the chunks the graph predicts.

Messages go out as recorded (raw CDR, original header stamps) and /clock follows the bag's timeline,
so nodes started with use_sim_time=true (the replay graph) judge freshness in bag time, as on the
robot. The timeline is the recorder's receive times (as `ros2 bag play`), or the header stamps (data
time: an overloaded recording PC delivered robot state in bursts seconds late, which receive order
would replay as missing poses). rate > 0 keeps the original timing scaled by `rate`; rate = 0 is lock-step, as fast as the
graph answers: the timeline runs at `lockstep_rate` and pauses after each camera frame (or cloud)
until the chunk predicted from it arrives. The metrics
(flow2one.data.replay) are written to `metrics_file` and logged when the bag is done.

Playing starts once the graph can hear it: not before the node spins (in one process, the runner builds
every node before it spins any, so a node built after this one, the view, is subscribed by then), and
not before the policy and the nodes named in `wait_for_nodes` have subscribed. What goes out earlier
sits in reader queues no one serves (keep-last: lost), and a short bag can be over before the view is
there at all.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.clock import Clock as RosClock
from rclpy.clock import ClockType
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from trajectory_msgs.msg import JointTrajectory

from flow2one import spec
from flow2one.bench.timing import MachineShare
from flow2one.data.bags import read_summary
from flow2one.data.profiles import load_profile
from flow2one.data.replay import OpenLoopMetrics, header_stamp, recorded_actions, replay_messages
from flow2one.nodes.recorder import message_class
from flow2one.ros.convert import msg_to_chunk, ns_to_stamp
from flow2one.ros.diagnostics import ERROR, OK, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.qos import CHUNK_QOS
from flow2one.ros.runner import run_node_main
from flow2one.ros.trace import parse as parse_trace

CLOCK_PERIOD_S = 0.005  # /clock is published at least this often while waiting (ros2 bag play: 100 Hz)
LOCKSTEP_CLOCK_LEAD_S = 0.1  # how far the clock may run past a frame while the graph works on it


@dataclass(frozen=True)
class ReplayParams:
    bag: str = ""
    rate: float = 1.0  # 1.0 = original timing, 2.0 = twice as fast, 0 = lock-step (as fast as possible)
    timeline: str = "auto"  # receive: the recorder's receive times (like ros2 bag play); stamp: header
    #                         stamps, i.e. data time with no transport delay; auto: receive if rate > 0
    lockstep_rate: float = 5.0  # lock-step: timeline speed between frames (bursts overrun shallow
    #                             subscriber queues: the robot state is keep-last 5)
    republish_points: bool = False  # False: the graph's pointcloud node recomputes clouds from the images
    metrics_file: str = ""  # where to write the metrics JSON ("" = only log it)
    switch_threshold_m: float = 0.03
    step_timeout_s: float = 2.0  # lock-step: longest wait for the chunk of one observation
    wait_for_graph_s: float = 10.0  # wait this long for subscribers before playing
    wait_for_nodes: str = ""  # comma-separated nodes that must subscribe to a replayed topic (or /clock)
    #                           before playing: the graph's other nodes (run_replay names them, view included)
    publish_clock: bool = True
    profile: str = "flow2one"  # topic profile of the bag (config/topics/NAME.yaml or a YAML file)
    cameras: str = ""  # cameras the graph reads (the pointcloud node's calibration); "" = every camera of the bag

    def __post_init__(self) -> None:
        if not self.bag:
            raise ValueError("bag must name an episode .mcap file")
        if self.rate < 0 or self.lockstep_rate <= 0:
            raise ValueError(f"rate must be >= 0 (0 = lock-step) and lockstep_rate > 0, got {self.rate}, "
                             f"{self.lockstep_rate}")
        if self.timeline not in ("auto", "receive", "stamp"):
            raise ValueError(f"timeline must be auto, receive or stamp, got {self.timeline!r}")
        if self.step_timeout_s <= 0 or self.switch_threshold_m <= 0:
            raise ValueError("step_timeout_s and switch_threshold_m must be > 0")


class ReplayNode(Node):
    PARAMS = ReplayParams  # checked by the runner before any node starts

    def __init__(self, node_name: str = "replay", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self.diag = Diagnostics(self)
        path = Path(self.p.bag).expanduser()
        self.summary = read_summary(path)  # raises BagError with the reason for a bad bag
        profile = load_profile(self.p.profile)
        cams = [c for c in self.p.cameras.split(",") if c] or None
        messages = replay_messages(path, self.p.republish_points, profile, cams)
        stamps = [header_stamp(m) for m in messages]
        self.timeline = self.p.timeline if self.p.timeline != "auto" else "receive" if self.p.rate > 0 else "stamp"
        times = [m.log_time_ns if self.timeline == "receive" or not s else s for m, s in zip(messages, stamps)]
        order = sorted(range(len(messages)), key=times.__getitem__)  # stable: ties keep receive order
        self.messages = [(times[i], stamps[i], messages[i]) for i in order]
        stamps, actions = recorded_actions(path, profile)
        self.metrics = OpenLoopMetrics(stamps, actions, self.p.switch_threshold_m)
        self.result: dict | None = None
        self.done = threading.Event()
        self._pubs = {}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        types = {m.topic: m.msgtype for _, _, m in self.messages}
        skipped = []
        for topic, msgtype in types.items():
            try:
                self._pubs[topic] = self.create_publisher(message_class(msgtype), topic, qos)
            except (ImportError, AttributeError, ValueError):  # a message package this install lacks
                skipped.append(f"{topic} ({msgtype})")
        if skipped:
            self.get_logger().warning(f"not replaying topics of unknown message types: {', '.join(skipped)}")
            self.messages = [x for x in self.messages if x[2].topic in self._pubs]
        self._clock_pub = self.create_publisher(Clock, "/clock", 10) if self.p.publish_clock else None
        trigger = spec.POINTS_TOPIC if self.p.republish_points else "/aligned_depth_to_color/image_raw"
        self._is_trigger = lambda topic: topic.endswith(trigger)
        self._published_at: dict[int, int] = {}  # header stamp -> wall ns it went out
        self._chunk_cv = threading.Condition()
        self._chunks_seen = 0
        self._clock_ns = -1
        self.timeouts = 0
        self.create_subscription(JointTrajectory, spec.CHUNK_TOPIC, self._on_chunk, CHUNK_QOS)
        # the policy's trace names the camera frame each chunk came from: the frame -> chunk latency
        self.create_subscription(DiagnosticArray, spec.TRACE_TOPIC, self._on_trace, 200)
        # the graph's nodes run in other processes: their last status says why no chunk came (no_chunk_cause)
        self.diagnostics: dict[str, str] = {}
        self.create_subscription(DiagnosticArray, spec.DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="replay", daemon=True)
        # started by the executor's first turn (steady clock: this node's own clock may be the /clock it sends)
        self._starter = self.create_timer(0.0, self._start_playing, clock=RosClock(clock_type=ClockType.STEADY_TIME))
        self.diag.set(OK, f"replaying {path.name}", messages=len(self.messages))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for st in msg.status:
            self.diagnostics[st.name.removeprefix("flow2one/")] = st.message

    def _start_playing(self) -> None:
        self._starter.cancel()
        if self._thread.ident is None and not self._stop.is_set():
            self._thread.start()

    def _on_chunk(self, msg: JointTrajectory) -> None:
        now = time.monotonic_ns()
        try:
            chunk = msg_to_chunk(msg)
        except ValueError as exc:
            self.get_logger().error(f"bad chunk: {exc}", throttle_duration_sec=1.0)
            return
        sent = self._published_at.get(chunk.stamp_ns)
        self.metrics.add_chunk(chunk.stamp_ns, chunk.dt, chunk.actions, None if sent is None else (now - sent) / 1e9,
                               received_ns=now)
        with self._chunk_cv:
            self._chunks_seen += 1
            self._chunk_cv.notify_all()

    def _on_trace(self, msg: DiagnosticArray) -> None:
        for r in parse_trace(msg):
            if "inference_start" in r and "frame" in r and "chunk" in r:
                self.metrics.add_frame(r["chunk"], r["frame"])

    def _wait_for_graph(self) -> None:
        """Until the policy publishes chunks, the observation triggers and robot state have matched readers
        and every node of `wait_for_nodes` reads something this node sends (or a timeout, then the missing
        ones are logged): on a busy machine discovery lags, and a frame sent before it is lost."""
        state = (spec.EE_POSE_TOPIC, spec.JOINT_STATES_TOPIC)
        needed = [p for t, p in self._pubs.items() if self._is_trigger(t) or t in state]
        end = time.monotonic() + self.p.wait_for_graph_s
        while not self._stop.is_set():
            missing = self._missing_readers()
            if self.count_publishers(spec.CHUNK_TOPIC) > 0 and all(p.get_subscription_count() > 0
                                                                    for p in needed) and not missing:
                return
            if time.monotonic() >= end:
                self.get_logger().warning(f"playing after {self.p.wait_for_graph_s:.0f} s without "
                                          f"{', '.join(missing) or 'a chunk publisher or matched readers'}")
                return
            time.sleep(0.05)

    def _missing_readers(self) -> list[str]:
        """The nodes of `wait_for_nodes` that subscribe to none of the topics this node publishes."""
        wanted = [n for n in self.p.wait_for_nodes.split(",") if n]
        if not wanted:
            return []
        pubs = [*self._pubs.values(), *([self._clock_pub] if self._clock_pub is not None else [])]
        readers = {i.node_name for p in pubs for i in self.get_subscriptions_info_by_topic(p.topic_name)}
        return [n for n in wanted if n not in readers]

    def _play(self) -> None:
        try:
            self._wait_for_graph()
            share = MachineShare()
            t0_log, t0_wall = self.messages[0][0], time.monotonic_ns()
            n_triggers = len({m.topic for _, _, m in self.messages if self._is_trigger(m.topic)})
            state_topics = {spec.EE_POSE_TOPIC, spec.JOINT_STATES_TOPIC} & set(self._pubs)
            state_out: set[str] = set()  # lock-step waits only for frames sent after the first robot state
            frames: dict[int, set[str]] = {}  # trigger stamp -> topics of that frame already out
            rate = self.p.rate or self.p.lockstep_rate
            for t_ns, stamp, m in self.messages:
                if self._stop.is_set():
                    return
                due = t0_wall + (t_ns - t0_log) / rate  # the timeline; the clock ticks in between
                while (delay := due - time.monotonic_ns()) > 0:
                    self._publish_clock(t0_log + int((time.monotonic_ns() - t0_wall) * rate))
                    time.sleep(min(delay / 1e9, CLOCK_PERIOD_S))
                self._publish_clock(t_ns)
                lockstep = self.p.rate == 0 and stamp is not None and self._is_trigger(m.topic)
                if lockstep:
                    topics = frames.setdefault(stamp, set())
                    topics.add(m.topic)
                seen = self._chunks_seen
                self._pubs[m.topic].publish(m.data)
                if m.topic in state_topics:
                    state_out.add(m.topic)
                if stamp is not None:
                    self._published_at[stamp] = time.monotonic_ns()
                if lockstep and len(topics) == n_triggers:  # every camera's image of this frame is out
                    if state_out == state_topics:
                        waited = time.monotonic_ns()
                        self._wait_chunk(seen, t_ns)
                        t0_wall += time.monotonic_ns() - waited  # the timeline pauses while the graph works
                    del frames[stamp]
            time.sleep(0.2 if self.p.rate == 0 else 0.5)  # the last chunks still in flight
            self._finish(share.read())
        except Exception as exc:  # report instead of dying silently in a thread
            self.diag.set(ERROR, f"replay failed: {exc}")
            self.get_logger().error(f"replay failed: {exc}")
            self.result = {"error": str(exc)}
            self.done.set()

    def _publish_clock(self, t_ns: int) -> None:
        if self._clock_pub is not None and t_ns > self._clock_ns:
            self._clock_ns = t_ns
            self._clock_pub.publish(Clock(clock=ns_to_stamp(t_ns)))

    def _wait_chunk(self, seen_before: int, now_ns: int) -> None:
        """Lock-step: block until a chunk arrives after the frame's last image went out (or step_timeout_s).

        The policy predicts on every new observation, so that chunk comes from the frame (or, at most one,
        from an inference already running when it came). Meanwhile the clock runs on at wall speed for up
        to LOCKSTEP_CLOCK_LEAD_S (ahead of the next messages if need be: the clock then holds until they
        catch up), so timers on sim time, the policy's, still fire.
        """
        start = time.monotonic()
        done = lambda: self._chunks_seen > seen_before or self._stop.is_set()  # noqa: E731
        while not done() and time.monotonic() - start < self.p.step_timeout_s:
            with self._chunk_cv:
                if self._chunk_cv.wait_for(done, CLOCK_PERIOD_S):
                    break
            lead = min(time.monotonic() - start, LOCKSTEP_CLOCK_LEAD_S)
            self._publish_clock(now_ns + int(lead * 1e9))
        self.timeouts += int(not done())

    def _finish(self, machine: dict[str, float]) -> None:
        result = self.metrics.result(self._published_at)
        result.update({"bag": str(self.p.bag), "rate": self.p.rate, "timeline": self.timeline,
                       "lockstep_timeouts": self.timeouts,
                       "task": self.summary.episode.task if self.summary.episode else "",
                       "messages_replayed": len(self.messages), "machine": machine})
        self.result = result
        if self.p.metrics_file:
            out = Path(self.p.metrics_file)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2))
        self.get_logger().info(f"replay done: {json.dumps(result)}")
        self.diag.set(OK, "done", chunks=result["chunks"])
        self.done.set()

    def close(self) -> None:
        self._stop.set()
        with self._chunk_cv:
            self._chunk_cv.notify_all()
        if self._thread.ident is not None:
            self._thread.join(2.0)


def main(args: list[str] | None = None) -> None:
    run_node_main("replay", args)
