"""Policy node: the freshest observation -> a 32-step action chunk, at most rate_hz times a second (125).

Event-driven: a new cloud (images, for a model without points) wakes an inference thread of the node's own,
which runs the model on it at once, or skips it when the rate cap (counted on frame stamps) says it came too
soon after the last chunk's frame. The ROS callbacks only
store messages, so no callback of this or another node of the process (an in-process graph has one thread
dispatching them all) waits behind an inference, and no poll period is added to a cloud's wait
(docs/decisions.md, "Latency"). schedule "poll" keeps the old timer-driven inference, for comparison.

Subscribes the 4,096-point cloud, the robot state (EE pose + gripper width = proprioception) and, when
the model card asks for them, camera images; publishes the chunk (JointTrajectory, stamped with the
observation time, points i*dt apart), the predicted candidate trajectories as RViz/Foxglove markers
and latency/rate diagnostics. The model card is checked against this node's parameters at start-up;
messages that do not fit the model are refused with an error; stale observations publish nothing.
An episode start ("start" on EPISODE_TOPIC) clears the kept inputs and the hand-off's reference chunk.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
from geometry_msgs.msg import Point, PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.duration import Duration
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState, PointCloud2
from std_msgs.msg import ColorRGBA, String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from flow2one import spec
from flow2one.paths import resolve
from flow2one.perception.crop import LinkedCropParams
from flow2one.ros.convert import (
    chunk_to_msg,
    depth_to_metres,
    image_to_numpy,
    joint_state_to_numpy,
    ns_to_stamp,
    pointcloud2_to_xyz,
    pose_stamped_to_numpy,
    stamp_to_ns,
)
from flow2one.ros.diagnostics import ERROR, OK, WARN, Diagnostics
from flow2one.ros.params import declare_params
from flow2one.ros.qos import CHUNK_QOS, SENSOR_QOS, STATE_QOS
from flow2one.ros.runner import run_node_main
from flow2one.ros.trace import TracePublisher
from flow2one.runtime.backends import BACKENDS, open_backend
from flow2one.runtime.card import load_card
from flow2one.runtime.observation import ObservationAssembler
from flow2one.runtime.policy_step import PolicyStep

POLL_HZ = 30.0  # schedule "poll": how often a node with a lower rate_hz looks for a fresh observation
SCHEDULES = ("event", "poll")
# The event schedule infers on a frame as it arrives, or skips it: a frame stamped less than this share of
# 1/rate_hz after the last chunk's frame is skipped, never waited for. Waiting out the cap on the clock (as
# before) made every inferred cloud older by up to a frame period, and the delay ratcheted: the demo's clouds
# waited 32 ms (p50) for the inference slot, 55 ms old when inference started. The share absorbs frame-stamp
# jitter: at 20 fps and 10/s, a frame 97 ms after the last one is the one to take, not the one after it.
FRAME_GAP_SHARE = 0.9


@dataclass(frozen=True)
class PolicyParams(LinkedCropParams):
    model_dir: str = ""  # checkpoint directory with card.yaml (+ model.onnx); relative: cwd, then flow2one.paths.data_root()
    backend: str = "onnxruntime"  # onnxruntime | torch | tensorrt
    device: str = "cpu"  # cpu | cuda
    threads: int = 1  # CPU threads of the backend
    fp16: bool = True  # GPU backends only
    rate_hz: float = spec.POLICY_RATE_HZ  # inferences started per second at most (a re-plan rate, not a timer); the
    #                                      event schedule counts it on frame stamps: FRAME_GAP_SHARE
    max_obs_age_s: float = 0.25  # publish nothing when any part of the observation is older
    n_candidates: int = 1  # M samples per tick; the one continuing the current chunk is published
    handoff_window_s: float = 0.0  # score continuity on this much of the executing plan (0: all of the overlap)
    keep_plan_within_m: float = 0.0  # a chunk within this mean distance of the executing plan is not sent (0: off)
    state_at_cloud: bool = False  # pair the cloud with the robot state of its instant, not the newest state
    new_observations_only: bool = True  # skip ticks on which no input changed
    seed: int = 0
    base_frame: str = spec.BASE_FRAME
    n_points: int = spec.N_POINTS
    cameras: str = ""  # comma-separated camera names, in the model card's order, when it takes images
    markers_every: int = 5  # publish candidate markers every N chunks (0: never)
    schedule: str = "event"  # event: infer on each new cloud, on the node's thread | poll: a timer callback

    def __post_init__(self) -> None:
        if not self.model_dir:
            raise ValueError("model_dir must name a model directory (with card.yaml and model.onnx)")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not one of {BACKENDS}")
        if not self.rate_hz > 0 or not self.max_obs_age_s > 0:
            raise ValueError(f"rate_hz ({self.rate_hz}) and max_obs_age_s ({self.max_obs_age_s}) must be positive")
        if (self.n_candidates < 1 or self.markers_every < 0 or not self.handoff_window_s >= 0
                or not self.keep_plan_within_m >= 0):
            raise ValueError("n_candidates must be >= 1, markers_every, handoff_window_s and keep_plan_within_m >= 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule {self.schedule!r} is not one of {SCHEDULES}")

    @property
    def camera_list(self) -> tuple[str, ...]:
        return tuple(c.strip() for c in self.cameras.split(",") if c.strip())


class PolicyNode(Node):
    PARAMS = PolicyParams  # checked by the runner before any node starts

    def __init__(self, node_name: str = "policy", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.p = declare_params(self, self.PARAMS)
        self.diag = Diagnostics(self)
        model_dir = resolve(self.p.model_dir)
        self.card = load_card(model_dir)
        crop = self.p.cloud_crop
        self.card.check(base_frame=self.p.base_frame, n_points=self.p.n_points, cameras=self.p.camera_list, crop=crop)
        if crop is None and self.card.crop is not None:
            self.get_logger().warning(f"the clouds' crop is not known here (no pointcloud section in the parameter "
                                      f"files): not checked against the card's ({self.card.crop})")
        backend = open_backend(self.p.backend, model_dir, device=self.p.device, threads=self.p.threads,
                               fp16=self.p.fp16, max_batch=self.p.n_candidates, card=self.card)
        # the same step object the evaluations run (flow2one.runtime.policy_step)
        self.step = PolicyStep(self.card, backend, self.p.n_candidates, self.p.seed, self.p.base_frame,
                               self.p.handoff_window_s, self.p.keep_plan_within_m, self.p.state_at_cloud)
        warm_ms = self.step.warm_up()  # before any subscription: the first chunk costs what the others do
        self._lock = threading.Lock()
        self._last_version = -1
        self._infer_ms: deque[float] = deque(maxlen=500)
        self._publish_times: deque[float] = deque(maxlen=250)
        self.counts = {"chunks": 0, "stale": 0, "rejected": 0, "kept_plan": 0}
        self.last_rejection = ""
        self.trace = TracePublisher(self)
        self._cloud_rx: tuple[int, int] = (0, 0)  # (stamp, received) of the newest cloud, for the trace
        self._frame_inputs = ("points",) if "points" in self.card.inputs else self.card.image_inputs
        self._episode_start_ns = -(1 << 62)  # observations before the last episode start are of another scene

        sub_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(PointCloud2, spec.POINTS_TOPIC, self._on_points, SENSOR_QOS, callback_group=sub_group)
        self.create_subscription(PoseStamped, spec.EE_POSE_TOPIC, self._on_pose, STATE_QOS, callback_group=sub_group)
        self.create_subscription(JointState, spec.JOINT_STATES_TOPIC, self._on_joints, STATE_QOS,
                                 callback_group=sub_group)
        for cam in self.card.cameras:
            topics = spec.camera_topics(cam)
            for kind in self.card.image_inputs:
                topic = topics["color" if kind == "rgb" else "depth"]
                self.create_subscription(Image, topic, lambda m, k=kind, c=cam: self._on_image(m, k, c), SENSOR_QOS,
                                         callback_group=sub_group)
        self.create_subscription(String, spec.EPISODE_TOPIC, self._on_episode, 10, callback_group=sub_group)
        self.chunk_pub = self.create_publisher(JointTrajectory, spec.CHUNK_TOPIC, CHUNK_QOS)
        self.marker_pub = self.create_publisher(MarkerArray, spec.PREDICTION_MARKERS_TOPIC, 1)
        self._started_ns = -(1 << 62)  # clock time at which the last published chunk's inference started
        self._started_frame_ns = -(1 << 62)  # that chunk's observation stamp (its frame's)
        self._on_frames = self.p.schedule == "event" and self.p.new_observations_only  # the cap on frame stamps
        self._wake = threading.Event()
        # A frame the last inference attempt found waiting on another input (a cloud before the first state):
        # that input's arrival wakes the thread, or the frame would wait for the next frame. Guarded by _lock.
        self._held = False
        self._closing = threading.Event()
        self._worker: threading.Thread | None = None
        if self.p.schedule == "event":
            self._min_gap_ns = 1e9 / self.p.rate_hz
            self._worker = threading.Thread(target=self._run, name=f"{node_name}-inference", daemon=True)
            self._worker.start()
        else:
            # The timer polls at least POLL_HZ and an inference starts at most rate_hz times per second: at a low
            # re-plan rate, a tick whose observation is stale is retried on the next poll.
            self._min_gap_ns = 1e9 / self.p.rate_hz if self.p.rate_hz < POLL_HZ else 0.0  # else the timer paces
            self.create_timer(1.0 / max(self.p.rate_hz, POLL_HZ), self._tick,
                              callback_group=MutuallyExclusiveCallbackGroup())
        self.diag.set(OK, f"model '{self.card.name}' ({self.card.kind}) on {self.p.backend}/{self.p.device}; "
                          "waiting for observations")
        self.get_logger().info(f"loaded '{self.card.name}' from {model_dir} on {self.p.backend}/{self.p.device} "
                               f"(warm inference {warm_ms:.1f} ms)")
        for note in getattr(self.step.backend, "notes", ()):  # TensorRT: precision used, engine-vs-ONNX Runtime parity
            self.get_logger().info(note)

    @property
    def obs(self) -> ObservationAssembler:
        """The step's assembler (PolicyStep.reset replaces it on an episode start)."""
        return self.step.assembler

    # --- inputs ------------------------------------------------------------------------------------------

    def _accept(self, what: str, fn, *args, frame: bool = False) -> None:
        """Store one input; a frame input (the cloud, or images without one) wakes the inference thread, and so
        does any input while a frame waits on a missing one."""
        try:
            with self._lock:
                fn(*args)
                wake = frame or self._held
            if wake:
                self._wake.set()
        except ValueError as exc:  # InputRejected, or a malformed message from flow2one.ros.convert
            self.counts["rejected"] += 1
            self.last_rejection = f"{what}: {exc}"
            self.diag.set(ERROR, f"refused {self.last_rejection}", rejected=self.counts["rejected"],
                          last_rejection=self.last_rejection)
            self.get_logger().error(f"refused {self.last_rejection}", throttle_duration_sec=1.0)

    def _on_points(self, msg: PointCloud2) -> None:
        received = self.trace.now_ns()

        def take() -> None:
            stamp = stamp_to_ns(msg.header.stamp)
            self.obs.set_points(pointcloud2_to_xyz(msg), stamp, msg.header.frame_id)
            self._cloud_rx = (stamp, received)
        self._accept(spec.POINTS_TOPIC, take, frame=True)

    def _on_pose(self, msg: PoseStamped) -> None:
        def take() -> None:
            xyz, quat = pose_stamped_to_numpy(msg)
            self.obs.set_pose(xyz, quat, stamp_to_ns(msg.header.stamp), msg.header.frame_id)
        self._accept(spec.EE_POSE_TOPIC, take)

    def _on_joints(self, msg: JointState) -> None:
        def take() -> None:
            names, pos, _, _ = joint_state_to_numpy(msg)
            self.obs.set_gripper(tuple(names), pos, stamp_to_ns(msg.header.stamp))
        self._accept(spec.JOINT_STATES_TOPIC, take)

    def _on_image(self, msg: Image, kind: str, camera: str) -> None:
        def take() -> None:
            img = image_to_numpy(msg, "rgb8") if kind == "rgb" else depth_to_metres(msg)
            self.obs.set_image(kind, camera, img, stamp_to_ns(msg.header.stamp))
        self._accept(f"{kind} image of {camera}", take, frame=kind in self._frame_inputs)

    def _on_episode(self, msg: String) -> None:
        """An episode start: forget the executing chunk (the hand-off's reference) and every kept input, as the
        evaluations do between episodes (PolicyStep.reset); what was observed before it is not used."""
        if msg.data != "start":
            return
        with self._lock:
            self.step.reset()
            self._last_version = -1
            self._started_frame_ns = -(1 << 62)
            self._cloud_rx = (0, 0)
            self._episode_start_ns = self.get_clock().now().nanoseconds

    # --- inference ---------------------------------------------------------------------------------------

    def _stale(self, why: str) -> None:
        self.counts["stale"] += 1
        self.diag.set(WARN, why, stale_skips=self.counts["stale"])

    def _check_quiet(self, now_ns: int) -> None:
        prev = self.step.prev
        quiet = prev is not None and now_ns - prev[1] > self.p.max_obs_age_s * 1e9
        if quiet and self.diag.level != ERROR and not self.diag.message.startswith("no new observation"):
            self._stale(f"no new observation for {(now_ns - prev[1]) * 1e-6:.0f} ms")

    def _run(self) -> None:
        """Inference thread: wait for a new frame and infer on it at once, or skip it if the cap says so
        (FRAME_GAP_SHARE); without new_observations_only, wait for the rate cap and infer on what is newest.
        A stale or incomplete observation waits for the next frame."""
        timeout_s = self.p.max_obs_age_s if self.p.new_observations_only else 1.0 / self.p.rate_hz
        while not self._closing.is_set():
            frame = self._wake.wait(timeout_s)
            wait_ns = 0 if self._on_frames else self._started_ns + self._min_gap_ns - self.get_clock().now().nanoseconds
            while wait_ns > 0 and not self._closing.wait(wait_ns * 1e-9 + 1e-4):  # the rate cap: the
                wait_ns = self._started_ns + self._min_gap_ns - self.get_clock().now().nanoseconds  # freshest after it
            self._wake.clear()  # frames that came during the wait are in this inference
            if self._closing.is_set() or not self.context.ok():
                return
            try:
                if frame or not self.p.new_observations_only:
                    self._tick()
                else:
                    with self._lock:
                        self._check_quiet(self.get_clock().now().nanoseconds)
            except Exception as exc:  # noqa: BLE001 - the node must say so, not lose its thread silently
                self.diag.set(ERROR, f"inference failed: {type(exc).__name__}: {exc}")
                self.get_logger().error(f"inference failed: {exc}", throttle_duration_sec=1.0)

    def _tick(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        if not self._on_frames and now_ns - self._started_ns < self._min_gap_ns:
            return
        max_age_ns = self.p.max_obs_age_s * 1e9
        with self._lock:
            if self.p.new_observations_only and self.obs.version == self._last_version:
                self._check_quiet(now_ns)
                return
            obs, why = self.obs.assemble(now_ns, self.p.max_obs_age_s)
            self._held = obs is None and bool(self.obs.missing())
            frame_ns, cloud_rx_ns = self._cloud_rx
            if obs is not None and obs.origin_ns < self._episode_start_ns:
                return  # a frame in flight at the episode start: of the scene before it
            episode_start = self._episode_start_ns
        if obs is None:
            if why.startswith("stale"):
                self._stale(why)
            else:
                self.diag.set(WARN, why)
            return
        frame_ns = frame_ns or obs.stamp_ns  # the cloud's stamp; a model without points: its oldest image's
        if self._on_frames and 0 <= frame_ns - self._started_frame_ns < FRAME_GAP_SHARE * self._min_gap_ns:
            return  # too soon after the last chunk's frame: skipped (earlier: time went back, a bag restarted)
        self._last_version = obs.version
        infer_start = self.trace.now_ns()
        chunk = self.step.infer(obs)
        infer_end = self.trace.now_ns()
        if episode_start != self._episode_start_ns:  # an episode started during inference
            return
        self._infer_ms.append(chunk.inference_s * 1e3)
        age_ns = self.get_clock().now().nanoseconds - obs.stamp_ns
        if age_ns > max_age_ns:  # inference itself outlasted the observation: the next poll tries again
            self._stale(f"observation {age_ns * 1e-6:.0f} ms old after inference (max {max_age_ns * 1e-6:.0f} ms)")
            return
        # the rate cap spaces published chunks; a discarded inference does not count
        self._started_ns, self._started_frame_ns = now_ns, frame_ns
        if chunk.keeps_plan:  # the executor goes on with the plan this chunk agrees with
            self.counts["kept_plan"] += 1
            self._report(obs.stamp_ns)
            return
        msg = chunk_to_msg(chunk.actions, chunk.stamp_ns, chunk.dt, self.p.base_frame)
        published = self.trace.now_ns()  # before publish(): the executor may take the chunk before it returns
        self.chunk_pub.publish(msg)
        self.trace.emit(frame=frame_ns, chunk=chunk.stamp_ns, cloud_received=cloud_rx_ns or now_ns,
                        inference_start=infer_start, inference_end=infer_end, chunk_published=published)
        self.step.commit(chunk)
        self.counts["chunks"] += 1
        now = time.monotonic()
        self._publish_times.append(now)
        if self.p.markers_every and self.counts["chunks"] % self.p.markers_every == 0:
            self.marker_pub.publish(self._markers(chunk.candidates, chunk.best, chunk.stamp_ns))
        self._report(obs.stamp_ns)

    def _report(self, stamp_ns: int) -> None:
        lat = np.asarray(self._infer_ms)
        times = self._publish_times
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        age_ms = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-6
        self.diag.set(OK, "publishing chunks", chunks=self.counts["chunks"], rate_hz=float(rate),
                      inference_ms_p50=float(np.percentile(lat, 50)), inference_ms_p99=float(np.percentile(lat, 99)),
                      obs_age_ms=float(age_ms), stale_skips=self.counts["stale"], rejected=self.counts["rejected"],
                      kept_plan=self.counts["kept_plan"])

    def _markers(self, candidates: np.ndarray, best: int, stamp_ns: int) -> MarkerArray:
        """One LINE_STRIP of end-effector positions per candidate; the published one green and thicker."""
        out = MarkerArray()
        for i, cand in enumerate(candidates):
            mk = Marker(ns="flow2one/candidates", id=i, type=Marker.LINE_STRIP, action=Marker.ADD)
            mk.header.frame_id = self.p.base_frame
            mk.header.stamp = ns_to_stamp(stamp_ns)
            mk.lifetime = Duration(seconds=0.5).to_msg()
            mk.pose.orientation.w = 1.0
            mk.scale.x = 0.006 if i == best else 0.003
            mk.color = ColorRGBA(r=0.1, g=0.9, b=0.2, a=1.0) if i == best else ColorRGBA(r=0.6, g=0.6, b=0.6, a=0.5)
            mk.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in cand[:, :3]]
            out.markers.append(mk)
        return out

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(10.0)  # an inference in flight finishes before its backend is released
        self.step.close()


def main(args: list[str] | None = None) -> None:
    run_node_main("policy", args)
