"""Per-stage latency trace of the deploy chain, on a standard topic (diagnostic_msgs/DiagnosticArray).

Each node that moves an observation along stamps the stages it sees, in ROS clock nanoseconds, into one
DiagnosticStatus (name flow2one/trace/<node>, one KeyValue per stage) and publishes it on TRACE_TOPIC:

  pointcloud  frame (the camera frame stamp = the cloud's header.stamp), cloud_published
  policy      frame, chunk (the chunk's header.stamp), cloud_received, inference_start, inference_end,
              chunk_published
  executor    chunk, chunk_received, retarget_allowed (franky's re-target spacing after the previous
              command lets the next one go), control_turn (the control thread samples the new plan),
              franky_call (safety filter and joint guard passed), target_sent (franky's move() returned), for
              the first franky target from that chunk

A collector joins the three on `frame` and `chunk`, so nothing but standard messages crosses the graph and
`ros2 topic echo /flow2one/trace` reads it on the robot. Stages are ROS-clock times of one machine.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from flow2one.spec import TRACE_TOPIC

# The scheduling before the latency work (rclpy's multi-threaded executor, a polling policy, commands only on
# the executor's tick) and after it; `flow2one latency --compare` and the policy_graph_latency bench run both.
BEFORE: dict[str, Any] = {"ros_executor": "multi", "policy": {"schedule": "poll"},
                          "executor": {"retarget_on_chunk": False}}
AFTER: dict[str, Any] = {"ros_executor": "single", "policy": {"schedule": "event"},
                         "executor": {"retarget_on_chunk": True}}

KEYS = ("frame", "chunk")  # join keys: the frame stamp (cloud header) and the chunk stamp (chunk header)
STAGES = ("frame", "cloud_published", "cloud_received", "inference_start", "inference_end", "chunk_published",
          "chunk_received", "retarget_allowed", "control_turn", "franky_call",
          "target_sent")  # in the order an observation passes them
# what each interval between consecutive stages is, for the breakdown
INTERVALS = {
    "cloud_published": "perception (frame -> cloud published)",
    "cloud_received": "cloud transport",
    "inference_start": "wait for inference",
    "inference_end": "inference",
    "chunk_published": "candidate choice + publish",
    "chunk_received": "chunk transport",
    "retarget_allowed": "franky's re-target spacing (safety rate)",
    "control_turn": "wait for the control thread",
    "franky_call": "safety filter + joint guard",
    "target_sent": "franky move() call",
}


class TracePublisher:
    """Publishes one node's stage times; a few hundred bytes per observation, keep-last 50."""

    def __init__(self, node: Node) -> None:
        self._pub = node.create_publisher(DiagnosticArray, TRACE_TOPIC, 50)
        self._name = f"flow2one/trace/{node.get_name()}"
        self._clock = node.get_clock()

    def now_ns(self) -> int:
        return self._clock.now().nanoseconds

    def emit(self, **stages_ns: int) -> None:
        status = DiagnosticStatus(name=self._name, values=[KeyValue(key=k, value=str(int(v)))
                                                           for k, v in stages_ns.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self._clock.now().to_msg()
        self._pub.publish(msg)


def parse(msg: DiagnosticArray) -> list[dict[str, int]]:
    """The trace records of one message (statuses not named flow2one/trace/* are ignored)."""
    out = []
    for st in msg.status:
        if st.name.startswith("flow2one/trace/"):
            try:
                out.append({kv.key: int(kv.value) for kv in st.values})
            except ValueError:
                continue  # not ours: a trace value is always an integer
    return out


def join(records: list[Mapping[str, int]]) -> list[dict[str, int]]:
    """One row per chunk the policy published: its stages plus those of the cloud's and executor's records."""
    by_frame: dict[int, dict[str, int]] = {}
    by_chunk: dict[int, dict[str, int]] = {}
    policy: list[Mapping[str, int]] = []
    for r in records:
        if "inference_start" in r:
            policy.append(r)
        elif "cloud_published" in r:
            by_frame.setdefault(r["frame"], dict(r))  # a republished frame keeps its first publication
        elif "chunk_received" in r:
            by_chunk.setdefault(r["chunk"], dict(r))
    return [{**by_frame.get(r.get("frame", -1), {}), **by_chunk.get(r.get("chunk", -1), {}), **r} for r in policy]


def breakdown(rows: list[Mapping[str, int]]) -> dict[str, object]:
    """Median/p99 ms of each stage interval and of frame -> each stage, over the rows that have both ends."""
    def stats(a: list[float]) -> dict[str, float | int]:
        if not a:
            return {"n": 0}
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        return {"n": len(a), "p50": round(float(p50), 2), "p90": round(float(p90), 2), "p99": round(float(p99), 2),
                "max": round(float(max(a)), 2)}

    intervals, from_frame = {}, {}
    for i, stage in enumerate(STAGES[1:], start=1):
        prev = STAGES[i - 1]
        intervals[stage] = {"what": INTERVALS[stage],
                            **stats([(r[stage] - r[prev]) * 1e-6 for r in rows if stage in r and prev in r])}
        from_frame[stage] = stats([(r[stage] - r["frame"]) * 1e-6 for r in rows if stage in r and "frame" in r])
    complete = [r for r in rows if all(s in r for s in STAGES)]
    ordered = sum(all(r[a] <= r[b] for a, b in itertools.pairwise(STAGES[1:])) for r in complete)
    return {"chunks": len(rows), "complete": len(complete), "ordered": ordered,
            "interval_ms": intervals, "since_frame_ms": from_frame,
            # the chunk stamp is the observation's robot-state time: the "observation ->" figures
            "chunk_stamp_to_chunk_received_ms": stats([(r["chunk_received"] - r["chunk"]) * 1e-6 for r in rows
                                                       if "chunk_received" in r]),
            "chunk_stamp_to_target_sent_ms": stats([(r["target_sent"] - r["chunk"]) * 1e-6 for r in rows
                                                    if "target_sent" in r])}


def format_breakdown(b: Mapping[str, object]) -> str:
    """The breakdown as the text table the demo and `flow2one latency` print."""
    if not b or not b.get("chunks"):
        return "latency breakdown: no traced chunk"
    lines = [f"latency breakdown ({b['chunks']} chunks, {b['complete']} traced end to end), ms:",
             f"  {'stage':44s} {'p50':>7s} {'p99':>7s}   since frame p50 / p99"]
    for stage in STAGES[1:]:
        st, cum = b["interval_ms"][stage], b["since_frame_ms"][stage]
        if st["n"]:
            lines.append(f"  {st['what']:44s} {st['p50']:7.1f} {st['p99']:7.1f}   {cum['p50']:7.1f} / {cum['p99']:.1f}")
    for key, what in (("chunk_stamp_to_chunk_received_ms", "observation -> chunk at the executor"),
                      ("chunk_stamp_to_target_sent_ms", "observation -> franky target")):
        if b[key]["n"]:
            lines.append(f"  {what:44s} {b[key]['p50']:7.1f} {b[key]['p99']:7.1f}")
    return "\n".join(lines)


class TraceCollector(Node):
    """Subscribes to TRACE_TOPIC and keeps every record (a run's worth: ~100 bytes per stage)."""

    def __init__(self, context: object, node_name: str = "latency_trace") -> None:
        super().__init__(node_name, context=context)
        self._lock = threading.Lock()
        self.records: list[dict[str, int]] = []
        self.create_subscription(DiagnosticArray, TRACE_TOPIC, self._on_trace, 200)

    def _on_trace(self, msg: DiagnosticArray) -> None:
        with self._lock:
            self.records.extend(parse(msg))

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def rows(self) -> list[dict[str, int]]:
        with self._lock:
            return join(self.records)


def plot(rows: list[Mapping[str, int]], path: str, title: str = "") -> None:
    """Waterfall (median and p99 of each interval, stacked) and CDF of frame -> each stage, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = breakdown(rows)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4.8))
    left50 = 0.0
    names = [s for s in STAGES[1:] if b["interval_ms"][s]["n"]]
    for i, s in enumerate(names):
        st = b["interval_ms"][s]
        ax1.barh(i, st["p50"], left=left50, color="C0")
        ax1.plot([left50 + st["p50"], left50 + st["p99"]], [i, i], color="C3", lw=1.5)
        ax1.text(left50 + st["p99"] + 0.5, i, f"{st['p50']:.1f} / {st['p99']:.1f}", va="center", fontsize=7)
        left50 += st["p50"]
    ax1.set_yticks(range(len(names)), [INTERVALS[s] for s in names], fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("ms since the camera frame (bars: median of each stage, stacked; red: to its p99)")
    ax1.set_title("waterfall: median / p99 ms per stage")
    for s in names:
        a = np.sort([(r[s] - r["frame"]) * 1e-6 for r in rows if s in r and "frame" in r])
        if len(a):
            ax2.plot(a, np.arange(1, len(a) + 1) / len(a), label=s)
    ax2.set_xscale("symlog", linthresh=1.0)
    ax2.set_xlabel("ms since the camera frame")
    ax2.set_ylabel("fraction of chunks")
    ax2.set_title("CDF per stage")
    ax2.legend(fontsize=7)
    ax2.grid(alpha=0.3)
    fig.suptitle(title or f"latency trace: {b['chunks']} chunks")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
