"""Episodes of the sim graph driven over ROS as an operator drives it: home the arm, reset the scene, read the
task status, and measure from the chunk, command and trace topics what a user cares about (success, policy
rate, observation -> command latency per stage). flow2one demo and the latency and view benchmarks run on it."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flow2one.paths import data_root
from flow2one.view.switch import announced

REPO_ROOT = data_root()
DEFAULT_MODEL = "models/sim_student"
STRIP_EVERY_S = 1.0  # sim seconds between strip frames
STRIP_FRAMES = 8
DEMO_IMAGE_HZ = 5.0  # camera frames per second in demo.rrd: enough to follow an episode, a quarter of the sim's 20
MAKE_HINT = ("make one with `make models` (the shipped pipeline, see README) or, for a quick untrained-quality "
             "model that only proves the graph runs, `flow2one reproduce --scale quick --ship models`")


def model_problem(model_dir: Path, backend: str) -> str | None:
    """Why this directory cannot drive the demo (None when it can)."""
    if not model_dir.is_dir():
        return f"no shipped model at {model_dir}"
    need = ["card.yaml"] + (["model.onnx"] if backend == "onnxruntime" else ["model.safetensors", "config.yaml"])
    missing = [f for f in need if not (model_dir / f).is_file()]
    if missing:
        return f"{model_dir} lacks {', '.join(missing)}" + (
            f" (export it: `flow2one export {model_dir}`)" if missing == ["model.onnx"] else "")
    return None


@dataclass
class EpisodeLog:
    task: str
    seed: int
    chunks: list[tuple[int, int, np.ndarray]] = field(default_factory=list)  # (received ns, stamp ns, xyz (H, 3))
    commands: list[tuple[int, int]] = field(default_factory=list)  # (received ns, stamp ns = when sent)
    ee: list[np.ndarray] = field(default_factory=list)  # executed end-effector positions
    frames: list[np.ndarray] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> its last /diagnostics status
    trace: list[dict[str, int]] = field(default_factory=list)  # per-chunk stage times (flow2one/ros/trace.py)
    wall_s: float = 0.0

    def latencies_ms(self) -> tuple[np.ndarray, np.ndarray]:
        """(observation -> chunk received, observation -> first command after the chunk arrived), ms."""
        if not self.chunks:
            return np.array([]), np.array([])
        recv = np.array([c[0] for c in self.chunks])
        stamp = np.array([c[1] for c in self.chunks])
        cmd = np.array(sorted(c[1] for c in self.commands)) if self.commands else np.array([], dtype=np.int64)
        idx = np.searchsorted(cmd, recv)
        used = idx < len(cmd)
        to_cmd = (cmd[idx[used]] - stamp[used]) * 1e-6 if len(cmd) else np.array([])
        return (recv - stamp) * 1e-6, to_cmd

    def summary(self) -> dict[str, Any]:
        to_chunk, to_cmd = self.latencies_ms()
        sim_t = float(self.status.get("t", 0.0))
        pct = lambda a, q: float(np.percentile(a, q)) if len(a) else None  # noqa: E731
        return {"task": self.task, "seed": self.seed, "success": bool(self.status.get("success")),
                "failed": bool(self.status.get("failed")), "mode": self.status.get("mode_name") or "none",
                "reason": self.status.get("reason", ""), "time_to_success_s": self.status.get("time_to_success"),
                "executor_state": self.status.get("executor_state"),
                "sim_s": sim_t, "wall_s": self.wall_s, "sim_rtf": sim_t / max(self.wall_s, 1e-9),
                "chunks": len(self.chunks), "commands": len(self.commands),
                "policy_rate_hz": len(self.chunks) / max(self.wall_s, 1e-9),
                "obs_to_chunk_ms": {"p50": pct(to_chunk, 50), "p99": pct(to_chunk, 99)},
                "obs_to_command_ms": {"p50": pct(to_cmd, 50), "p99": pct(to_cmd, 99)},
                "diagnostics": self.diagnostics}


def make_probe(context, camera: str):
    """The demo's operator node: sends home/reset, records status, chunks, commands, EE pose, images."""
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseStamped
    from rclpy.node import Node
    from sensor_msgs.msg import Image
    from std_msgs.msg import Empty, Int64, String
    from trajectory_msgs.msg import JointTrajectory

    from flow2one import spec
    from flow2one.nodes.executor import HOME_TOPIC
    from flow2one.ros.convert import image_to_numpy, msg_to_chunk, pose_stamped_to_numpy, stamp_to_ns
    from flow2one.ros.qos import CHUNK_QOS, LATCHED_QOS, SENSOR_QOS, STATE_QOS

    class DemoProbe(Node):
        def __init__(self) -> None:
            super().__init__("demo_probe", context=context)
            self.lock = threading.Lock()
            self.status: dict[str, Any] = {}
            self.log: EpisodeLog | None = None
            self._image = None
            self._next_frame_t = 0.0
            self.chunks_seen = 0  # in or out of an episode: tells that the chunk subscription has matched
            self.since_ns = 0  # the episode's start: chunks observed before it are refused, not counted
            self.diagnostics: dict[str, dict[str, Any]] = {}
            self.create_subscription(DiagnosticArray, spec.DIAGNOSTICS_TOPIC, self._on_diagnostics, 10)
            self.create_subscription(String, spec.SIM_STATUS_TOPIC, self._on_status, LATCHED_QOS)
            self.create_subscription(JointTrajectory, spec.CHUNK_TOPIC, self._on_chunk, CHUNK_QOS)
            self.create_subscription(JointTrajectory, spec.COMMAND_TOPIC, self._on_command, CHUNK_QOS)
            self.create_subscription(PoseStamped, spec.EE_POSE_TOPIC, self._on_pose, STATE_QOS)
            self.create_subscription(Image, spec.camera_topics(camera)["color"], self._on_image, SENSOR_QOS)
            self.reset_pub = self.create_publisher(Int64, spec.SIM_RESET_TOPIC, 10)
            self.home_pub = self.create_publisher(Empty, HOME_TOPIC, 10)
            self.episode_pub = self.create_publisher(String, spec.EPISODE_TOPIC, 10)

        def now_ns(self) -> int:
            return self.get_clock().now().nanoseconds

        def _on_status(self, msg: String) -> None:
            st = json.loads(msg.data)
            with self.lock:
                self.status = st
                log = self.log
                if log is not None and st.get("seed") == log.seed and st.get("t", 0) >= self._next_frame_t \
                        and self._image is not None and len(log.frames) < STRIP_FRAMES:
                    log.frames.append(image_to_numpy(self._image))
                    self._next_frame_t += STRIP_EVERY_S

        def _on_chunk(self, msg: JointTrajectory) -> None:
            recv = self.now_ns()
            chunk = msg_to_chunk(msg)
            with self.lock:
                self.chunks_seen += 1
                if self.log is not None and chunk.stamp_ns >= self.since_ns:
                    self.log.chunks.append((recv, chunk.stamp_ns, chunk.actions[:, :3].copy()))

        def _on_command(self, msg: JointTrajectory) -> None:
            recv = self.now_ns()
            with self.lock:
                if self.log is not None:
                    self.log.commands.append((recv, stamp_to_ns(msg.header.stamp)))

        def _on_pose(self, msg: PoseStamped) -> None:
            with self.lock:
                if self.log is not None:
                    self.log.ee.append(pose_stamped_to_numpy(msg)[0])

        def _on_diagnostics(self, msg: DiagnosticArray) -> None:
            with self.lock:
                for st in msg.status:
                    self.diagnostics[st.name] = {"level": ord(st.level), "message": st.message,  # level: a byte
                                                 **{kv.key: kv.value for kv in st.values}}

        def _on_image(self, msg: Image) -> None:
            self._image = msg  # converted only when a strip frame is due

        def start(self, log: EpisodeLog) -> None:
            with self.lock:
                self.log, self._next_frame_t = log, 0.0

        def stop(self) -> EpisodeLog | None:
            with self.lock:
                log, self.log = self.log, None
                if log is not None:
                    log.diagnostics = {k: dict(v) for k, v in self.diagnostics.items()}
            return log

    return DemoProbe()


class ExecutorFault(RuntimeError):
    """The executor is in FAULT and homing did not recover it: the task's remaining episodes are skipped."""


def wait(cond, timeout: float, what: str, period: float = 0.02) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise TimeoutError(f"demo: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(period)


def run_episode(runner, probe, task: str, seed: int, time_limit: float, wall_limit: float,
                collector=None) -> EpisodeLog:
    from std_msgs.msg import Empty, Int64, String

    from flow2one.control.executor import State

    ex = runner.nodes["executor"].control
    probe.home_pub.publish(Empty())
    try:  # homing may finish before we look: accept either having seen HOMING or a fast return to rest
        wait(lambda: ex.state == State.HOMING, 2.0, "the executor to start homing")
    except TimeoutError:
        pass
    wait(lambda: ex.state != State.HOMING, 120.0, "homing to finish")
    if ex.state == State.FAULT:
        raise ExecutorFault(f"executor fault, homing could not clear it: {ex.message}")
    with probe.lock:
        episode0 = int(probe.status.get("episode", 0))
    log = EpisodeLog(task, seed)
    probe.since_ns = 1 << 62  # until the start: the arm is held, and what the policy sends is refused
    probe.start(log)
    if collector is not None:
        collector.clear()
    t0 = time.monotonic()
    probe.reset_pub.publish(Int64(data=seed))
    wait(lambda: int(probe.status.get("episode", 0)) > episode0 and probe.status.get("seed") == seed, 10.0,
         f"the sim to reset to seed {seed}")
    # as an operator does once the scene is set: the executor holds after homing until this (hold_after_home),
    # and the policy forgets the last episode's inputs and chunk
    probe.since_ns = probe.now_ns()
    probe.episode_pub.publish(String(data="start"))
    done_at = None
    while True:
        time.sleep(0.05)
        with probe.lock:
            st = dict(probe.status)
        t = float(st.get("t", 0.0))
        if done_at is None and (st.get("success") or st.get("failed")):
            done_at = t
        if (done_at is not None and t - done_at >= 0.3) or t >= time_limit or time.monotonic() - t0 > wall_limit:
            break
    log.wall_s = time.monotonic() - t0
    log.status = {**st, "executor_state": ex.state.value, "executor_message": ex.message}
    if collector is not None:
        log.trace = collector.rows()
    probe.stop()
    return log


def run_task(task: str, model_dir: Path, episodes: int, seed: int, backend: str, domain_id: int,
             wall_budget: float, episode_s: float | None = None, max_restarts: int = 1,
             overrides: dict[str, dict[str, Any]] | None = None,
             view: bool = False) -> tuple[list[EpisodeLog], dict[str, Any]]:
    """The task's episodes in one graph; after a fault homing cannot clear (libfranka's link to a starved
    franky-sim can time out on an overloaded machine) the graph is restarted, at most `max_restarts` times.
    `view`: a view process (`view_process`) records the graph, and the first episode waits for it."""
    logs: list[EpisodeLog] = []
    info: dict[str, Any] = {"graph_starts": 0, "faults": []}
    t_start = time.monotonic()
    while len(logs) < episodes and info["graph_starts"] <= max_restarts:
        left = wall_budget - (time.monotonic() - t_start)
        if left < 30.0:
            break
        info["graph_starts"] += 1
        fault = run_graph(task, model_dir, episodes, seed, backend, domain_id, left, episode_s, logs, info, overrides,
                          view)
        if fault is None:
            break
        info["faults"].append(fault)
        print(f"  {task}: {fault}; restarting the graph" if info["graph_starts"] <= max_restarts
              else f"  {task}: {fault}", flush=True)
    if len(logs) < episodes:
        info["skipped_episodes"] = episodes - len(logs)
        print(f"  {task}: {episodes - len(logs)} episode(s) skipped (wall budget or faults)", flush=True)
    return logs, info


def run_graph(task: str, model_dir: Path, episodes: int, seed: int, backend: str, domain_id: int,
              wall_budget: float, episode_s: float | None, logs: list[EpisodeLog], info: dict[str, Any],
              extra: dict[str, dict[str, Any]] | None = None, view: bool = False) -> str | None:
    """Start the sim graph and run episodes len(logs).. into `logs`; -> the fault that stopped it, or None.
    `extra` parameter overrides win over the demo's (`flow2one latency` sets the re-plan rate with them, the
    view its policy markers)."""
    from flow2one.control.franky_sim import free_loopback_host
    from flow2one.graph import graph
    from flow2one.ros.runner import split_graph
    from flow2one.ros.trace import TraceCollector
    from flow2one.sim.scene import default_cameras
    from flow2one.sim.tasks import TASKS

    host = free_loopback_host()
    overrides = {"policy": {"model_dir": str(model_dir), "backend": backend},
                 "executor": {"robot_host": host}}
    time_limit = TASKS[task].time_limit if episode_s is None else episode_s
    t_start = time.monotonic()
    fault = None
    # Processes as `ros2 launch` has them, one per node, except policy + executor (the demo reads their
    # state). The sim world's 1 kHz franky-sim loop must not share a GIL with inference (real-time factor
    # 0.02-0.08 when it does); the pointcloud node sharing one with policy + executor made clouds 100 ms old
    # at p50 (3 ms of work) and 1 in ~15 short test episodes saw every cloud older than max_obs_age_s
    overrides["sim_world"] = {"task": task, "seed": seed, "host": host}
    for node, values in (extra or {}).items():
        overrides[node] = {**overrides.get(node, {}), **values}
    with split_graph("sim", graph("sim").nodes, ("sim_world", "pointcloud"), overrides,
                     domain_id=domain_id) as (runner, _):
        probe = make_probe(runner.context, default_cameras()[0].name)
        runner.add_node(probe)
        runner.nodes["demo_probe"] = probe  # so the runner destroys it with the graph
        collector = TraceCollector(runner.context)
        runner.add_node(collector)
        runner.nodes["latency_trace"] = collector
        pol, control = runner.nodes["policy"], runner.nodes["executor"].control
        try:  # other processes: discovery and the first frames take a moment. The probe's own first chunk
            # says its subscription has matched too (a chunk published before that would be missing from its count)
            wait(lambda: probe.chunks_seen > 0, 60.0,
                 "the first chunk at the demo's probe (sim cameras -> pointcloud -> policy -> probe)")
            # a message sent before its subscriber matched is lost, and the first episode then read the sim's own
            # start-up status as its reset (its clock 2 s ahead, the arm held all that time)
            wait(lambda: probe.reset_pub.get_subscription_count() > 0 and probe.episode_pub.get_subscription_count() >= 2
                 and bool(probe.status), 30.0, "the sim world's reset and the nodes' episode subscriptions")
            if view:  # a process of its own discovers the new graph later: it lost the first episode's chunks
                wait(lambda: pol.chunk_pub.get_subscription_count() >= 3 and pol.marker_pub.get_subscription_count() > 0,
                     30.0, "the view process to match the policy's chunks and markers (executor, probe and view)")
        except TimeoutError as exc:
            return str(exc)
        info.setdefault("startup_s", []).append(time.monotonic() - t_start)  # until chunks flow
        while len(logs) < episodes:
            i = len(logs)
            left = wall_budget - (time.monotonic() - t_start)
            if left < 20.0:
                break
            try:
                log = run_episode(runner, probe, task, seed + i, time_limit, wall_limit=min(left, 4 * time_limit + 30),
                                  collector=collector)
            except (ExecutorFault, TimeoutError) as exc:  # a starved sim can stall homing or the reset
                fault = str(exc)
                break
            logs.append(log)
            s = log.summary()
            print(f"  {task} episode {i + 1}/{episodes} (seed {log.seed}): "
                  f"{'SUCCESS' if s['success'] else 'failure'} mode={s['mode']} {s['reason']} | "
                  f"{s['chunks']} chunks, {s['policy_rate_hz']:.1f} chunks/s, obs->command p50 "
                  f"{fmt_ms(s['obs_to_command_ms']['p50'])} ms | sim {s['sim_s']:.1f} s in {s['wall_s']:.1f} s wall",
                  flush=True)
    # after the graph stopped: a chunk published while it shut down is counted too (the view records it)
    info["policy_counts"] = dict(pol.counts)
    info["policy_inference_ms_p50"] = float(np.median(pol._infer_ms)) if pol._infer_ms else None
    info["executor"] = control.status()
    return fault


def fmt_ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def save_plots(out: Path, logs: dict[str, list[EpisodeLog]]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flow2one.sim.evaluate import save_strip

    save_strip(out / "strip.png", [eps[0].frames for eps in logs.values() if eps and eps[0].frames])
    tasks = [t for t, eps in logs.items() if eps]
    if not tasks:
        return
    fig, axes = plt.subplots(2, len(tasks), figsize=(max(4.5 * len(tasks), 7), 8), squeeze=False)
    for j, task in enumerate(tasks):
        log = logs[task][0]
        t_chunks = np.array([c[0] for c in log.chunks], dtype=float)
        cmap = plt.get_cmap("viridis")
        for _k, (recv, _, xyz) in enumerate(log.chunks[::3]):
            c = cmap((recv - t_chunks[0]) / max(t_chunks[-1] - t_chunks[0], 1.0))
            axes[0, j].plot(xyz[:, 0], xyz[:, 1], color=c, lw=0.7, alpha=0.7)
            axes[1, j].plot(xyz[:, 0], xyz[:, 2], color=c, lw=0.7, alpha=0.7)
        if log.ee:
            ee = np.array(log.ee)
            axes[0, j].plot(ee[:, 0], ee[:, 1], "k-", lw=2, label="executed EE path")
            axes[1, j].plot(ee[:, 0], ee[:, 2], "k-", lw=2)
        s = log.summary()
        axes[0, j].set_title(f"{task} seed {log.seed}: {'success' if s['success'] else 'failure'} ({s['mode']})")
        axes[0, j].set_xlabel("x (m)"), axes[0, j].set_ylabel("y (m)"), axes[0, j].axis("equal")
        axes[1, j].set_xlabel("x (m)"), axes[1, j].set_ylabel("z (m)")
        axes[0, j].legend(fontsize=7)
    fig.suptitle("predicted 32-step chunks (colour = time) and the executed path")
    fig.tight_layout()
    fig.savefig(out / "trajectories.png", dpi=90)
    plt.close(fig)


def aggregate(logs: list[EpisodeLog]) -> dict[str, Any]:
    from flow2one.ros.trace import breakdown

    if not logs:
        return {"episodes": 0}
    to_chunk = np.concatenate([l.latencies_ms()[0] for l in logs])
    to_cmd = np.concatenate([l.latencies_ms()[1] for l in logs])
    pct = lambda a, q: float(np.percentile(a, q)) if len(a) else None  # noqa: E731
    wall = sum(l.wall_s for l in logs)
    return {"episodes": len(logs), "successes": sum(bool(l.status.get("success")) for l in logs),
            "success_rate": float(np.mean([bool(l.status.get("success")) for l in logs])),
            "policy_rate_hz": sum(len(l.chunks) for l in logs) / max(wall, 1e-9),
            "obs_to_chunk_ms": {"p50": pct(to_chunk, 50), "p99": pct(to_chunk, 99)},
            "obs_to_command_ms": {"p50": pct(to_cmd, 50), "p99": pct(to_cmd, 99)},
            "latency_breakdown": breakdown([r for l in logs for r in l.trace]),
            "sim_rtf": sum(float(l.status.get("t", 0)) for l in logs) / max(wall, 1e-9)}


def view_process(params: dict[str, Any] | None, domain_id: int):
    """The view node in a process of its own (it shares no GIL with policy + executor), for the whole demo;
    a no-op context when the view is off."""
    import contextlib

    from flow2one.ros.node_process import NodeProcess

    if params is None:
        return contextlib.nullcontext()
    return announced(NodeProcess("sim", ["view"], {"view": {**params, "max_image_hz": DEMO_IMAGE_HZ}}, domain_id))
