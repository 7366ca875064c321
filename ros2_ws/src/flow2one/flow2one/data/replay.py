"""Replay testing core (ROS-free): which recorded messages to play, and open-loop metrics of the chunks
the graph predicts from them against the actions recorded in the same bag.

Metrics (all from chunks received while replaying):
- distance to the recorded actions: chunk step i (target for stamp + i*dt) against the command the
  executor sent at or after that time (the converter's rule), position (m), rotation (rad), gripper (m);
  mean over steps per chunk, then median / p90 over chunks; also for step 0 alone.
- mode switches: consecutive chunks whose time-overlapping steps differ by more than
  `switch_threshold_m` in mean position; a one-step policy that hops between modes shows up here.
- latency: wall time from publishing the robot state a chunk is stamped with (the observation's state) to
  receiving the chunk; it includes the gap between that state and the camera frame as the bag plays them.
- frame -> chunk: wall time from publishing the last message of the camera frame a chunk was computed from
  (the policy's trace names it) to receiving the chunk: the graph's own time, the latency goal's figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flow2one import spec
from flow2one.data.bags import BagMessage
from flow2one.data.cdr import BagInvalid, deserialize
from flow2one.data.profiles import Plan, TopicProfile, canonical_messages, plan
from flow2one.geometry import rot6d_to_matrix, rotation_angle

_NS = 1_000_000_000


def header_stamp(msg: BagMessage) -> int | None:
    """Header stamp of a recorded message (None when its type has no header)."""
    try:
        obj = deserialize(msg.data, msg.msgtype)
    except (BagInvalid, KeyError):
        return None
    header = getattr(obj, "header", None)
    return None if header is None else int(header.stamp.sec) * _NS + int(header.stamp.nanosec)


def replay_plan(path: str | Path, profile: TopicProfile | None = None, republish_points: bool = False,
                calibration_cameras: list[str] | None = None) -> Plan:
    """What to play from this bag, refusing with the cause a bag that cannot give the graph a chunk: a
    missing topic, or calibration cameras (the pointcloud node's) that have no depth in the bag."""
    profile = profile or TopicProfile()
    cams = list(dict.fromkeys([*(calibration_cameras or []), *profile.camera_names()]))
    p = plan(path, profile, [] if republish_points else cams or None, need_points=republish_points)
    if p.missing:
        why = ""
        if calibration_cameras and not republish_points:
            why = (f"; the pointcloud node's calibration has cameras {calibration_cameras}: each needs color and "
                   "depth in the bag (set pointcloud.calibration_file / pointcloud.cameras, or --profile)")
        raise ValueError(f"{path}: cannot replay, missing topics: {', '.join(p.missing)}{why}")
    if not republish_points:  # the pointcloud node recomputes the cloud from the images
        p.passthrough = {s: t for s, t in p.passthrough.items() if t != spec.POINTS_TOPIC}
    return p


def replay_messages(path: str | Path, republish_points: bool = False, profile: TopicProfile | None = None,
                    calibration_cameras: list[str] | None = None) -> list[BagMessage]:
    """The messages the replay graph uses, on our topic names (compressed images decoded), in log-time
    order; the recorded commands and everything the graph does not read are left out."""
    profile = profile or TopicProfile()
    p = replay_plan(path, profile, republish_points, calibration_cameras)
    return [m for m in canonical_messages(path, profile, p) if m.topic != spec.COMMAND_TOPIC]


def recorded_actions(path: str | Path, profile: TopicProfile | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(stamps ns (N,), actions (N, ACTION_DIM)) of the commands: what the robot was told to do."""
    profile = profile or TopicProfile()
    p = plan(path, profile, cameras=[])
    stamps, actions = [], []
    for m in canonical_messages(path, profile, p):
        if m.topic != spec.COMMAND_TOPIC:
            continue
        msg = deserialize(m.data, m.msgtype)
        if msg.points and len(msg.points[0].positions) == spec.ACTION_DIM:
            stamps.append(int(msg.header.stamp.sec) * _NS + int(msg.header.stamp.nanosec))
            actions.append(np.asarray(msg.points[0].positions, dtype=np.float64))
    if len(stamps) < 2:
        raise ValueError(f"{path}: fewer than 2 recorded commands ({profile.command}); nothing to compare to")
    order = np.argsort(stamps, kind="stable")
    return np.asarray(stamps, dtype=np.int64)[order], np.stack(actions)[order]


@dataclass
class _Chunk:
    stamp_ns: int
    dt: float
    actions: np.ndarray  # (H, A)
    latency_s: float | None
    received_ns: int | None = None  # monotonic ns at arrival


def _stats(x: list[float] | np.ndarray) -> dict[str, float]:
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return {"n": 0}
    return {"n": int(x.size), "mean": float(x.mean()), "median": float(np.median(x)),
            "p90": float(np.percentile(x, 90)), "p99": float(np.percentile(x, 99)), "max": float(x.max())}


@dataclass
class OpenLoopMetrics:
    rec_stamps: np.ndarray
    rec_actions: np.ndarray
    switch_threshold_m: float = 0.03
    chunks: list[_Chunk] = field(default_factory=list)
    frames: dict[int, int] = field(default_factory=dict)  # chunk stamp -> stamp of the frame it came from

    def add_chunk(self, stamp_ns: int, dt: float, actions: np.ndarray, latency_s: float | None,
                  received_ns: int | None = None) -> None:
        a = np.asarray(actions, dtype=np.float64)
        if a.ndim != 2 or a.shape[1] != spec.ACTION_DIM:
            raise ValueError(f"chunk actions must be (H, {spec.ACTION_DIM}), got {a.shape}")
        self.chunks.append(_Chunk(int(stamp_ns), float(dt), a, latency_s, received_ns))

    def add_frame(self, chunk_stamp_ns: int, frame_stamp_ns: int) -> None:
        self.frames[int(chunk_stamp_ns)] = int(frame_stamp_ns)

    def _recorded_at(self, times_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Recorded action at or after each time, and a mask of times inside the recording."""
        inside = (times_ns >= self.rec_stamps[0]) & (times_ns <= self.rec_stamps[-1])
        idx = np.minimum(np.searchsorted(self.rec_stamps, times_ns, side="left"), len(self.rec_stamps) - 1)
        return self.rec_actions[idx], inside

    def result(self, published_ns: dict[int, int] | None = None) -> dict:
        """published_ns: header stamp -> monotonic ns its last message went out (for frame -> chunk)."""
        pos, rot, grip, pos0 = [], [], [], []
        for c in self.chunks:
            times = c.stamp_ns + np.round(np.arange(len(c.actions)) * c.dt * _NS).astype(np.int64)
            rec, inside = self._recorded_at(times)
            if not inside.any():
                continue
            p, r = c.actions[inside], rec[inside]
            d = np.linalg.norm(p[:, :3] - r[:, :3], axis=1)
            ang = rotation_angle(rot6d_to_matrix(p[:, 3:9]), rot6d_to_matrix(r[:, 3:9]))
            pos.append(d.mean())
            rot.append(ang.mean())
            grip.append(np.abs(p[:, 9] - r[:, 9]).mean())
            if inside[0]:
                pos0.append(d[0])
        switches, overlaps = 0, 0
        for a, b in zip(self.chunks, self.chunks[1:]):
            ta = a.stamp_ns + np.round(np.arange(len(a.actions)) * a.dt * _NS).astype(np.int64)
            tb = b.stamp_ns + np.round(np.arange(len(b.actions)) * b.dt * _NS).astype(np.int64)
            lo, hi = max(ta[0], tb[0]), min(ta[-1], tb[-1])
            if hi <= lo:
                continue
            grid = np.linspace(lo, hi, 8)
            pa = np.stack([np.interp(grid, ta, a.actions[:, k]) for k in range(3)], axis=1)
            pb = np.stack([np.interp(grid, tb, b.actions[:, k]) for k in range(3)], axis=1)
            overlaps += 1
            switches += int(np.linalg.norm(pa - pb, axis=1).mean() > self.switch_threshold_m)
        lat = [c.latency_s * 1e3 for c in self.chunks if c.latency_s is not None]
        published_ns = published_ns or {}
        # (received, its frame sent, the robot state it is stamped with sent) of each chunk whose frame is known
        timed = [(c.received_ns, published_ns[f], published_ns.get(c.stamp_ns, 0)) for c in self.chunks
                 if c.received_ns is not None and (f := self.frames.get(c.stamp_ns)) in published_ns]
        frame_lat = [(rx - frame) / 1e6 for rx, frame, _ in timed]
        # the observation is complete when its frame and that state are both out: a frame that went out before
        # the state (the first frame of a bag) waited on the state, not the graph
        obs_lat = [(rx - max(frame, state)) / 1e6 for rx, frame, state in timed]
        span = (self.rec_stamps[-1] - self.rec_stamps[0]) / _NS
        return {
            "chunks": len(self.chunks),
            "chunks_compared": len(pos),
            "recorded_actions": int(len(self.rec_stamps)),
            "recorded_duration_s": float(span),
            "position_error_m": _stats(pos),
            "position_error_first_step_m": _stats(pos0),
            "rotation_error_rad": _stats(rot),
            "gripper_error_m": _stats(grip),
            "mode_switches": {"count": switches, "pairs_compared": overlaps,
                              "threshold_m": self.switch_threshold_m,
                              "per_minute": float(switches / span * 60.0) if span > 0 else 0.0},
            "latency_ms": _stats(lat),
            "frame_to_chunk_ms": _stats(frame_lat),
            "observation_to_chunk_ms": _stats(obs_lat),
        }
