"""Approximate-time matching of several streams, a stamped buffer for nearest-in-time lookups, and a gate that
holds frames until the pose stream has reached their time.

message_filters is not installable here (not on PyPI): the point-cloud node uses
message_filters.ApproximateTimeSynchronizer where it is importable (the robot's apt ROS 2) and this
small core otherwise. It follows the same policy as message_filters' Python implementation: when a
message arrives, pick for every other stream the message nearest in time; emit the set if its spread
is within `slop`. It then also drops everything older than the emitted set, so sets come out in time
order and a stream that stalls (dropped frames) cannot pin stale frames in the queues.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from collections.abc import Callable
from typing import Any


class ApproxTimeSync:
    """`add(i, stamp_ns, msg)` per stream; `callback(*msgs)` receives each matched set (one msg per stream)."""

    def __init__(self, n_streams: int, slop_ns: int, callback: Callable[..., None], queue_size: int = 10) -> None:
        if n_streams < 1 or slop_ns < 0 or queue_size < 1:
            raise ValueError(f"need n_streams >= 1, slop_ns >= 0, queue_size >= 1; got "
                             f"{n_streams}, {slop_ns}, {queue_size}")
        self.slop_ns, self.queue_size, self.callback = int(slop_ns), queue_size, callback
        self._queues: list[list[tuple[int, Any]]] = [[] for _ in range(n_streams)]  # sorted by stamp
        self._lock = threading.Lock()

    def add(self, stream: int, stamp_ns: int, msg: Any) -> None:
        with self._lock:
            q = self._queues[stream]
            bisect.insort(q, (int(stamp_ns), msg), key=lambda e: e[0])
            del q[:max(0, len(q) - self.queue_size)]
            match = self._match(stream, int(stamp_ns))
        if match is not None:
            self.callback(*match)

    def _match(self, stream: int, stamp: int) -> list[Any] | None:
        chosen: list[tuple[int, Any]] = []
        for i, q in enumerate(self._queues):
            if i == stream:
                mine = next((e for e in q if e[0] == stamp), None)
                if mine is None:  # older than a full queue: already dropped
                    return None
                chosen.append(mine)
                continue
            if not q:
                return None
            chosen.append(min(q, key=lambda e: abs(e[0] - stamp)))
        stamps = [e[0] for e in chosen]
        if max(stamps) - min(stamps) > self.slop_ns:
            return None
        for q, (s, _) in zip(self._queues, chosen):
            del q[:bisect.bisect_right(q, s, key=lambda e: e[0])]
        return [m for _, m in chosen]


class StampedBuffer:
    """The last `horizon_ns` of a fast stream (robot poses), looked up by the nearest stamp."""

    def __init__(self, horizon_ns: int = 2_000_000_000) -> None:
        self.horizon_ns = horizon_ns
        self._stamps: list[int] = []
        self._items: list[Any] = []
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, item: Any) -> None:
        with self._lock:
            i = bisect.bisect_right(self._stamps, stamp_ns)
            self._stamps.insert(i, int(stamp_ns))
            self._items.insert(i, item)
            cut = bisect.bisect_left(self._stamps, self._stamps[-1] - self.horizon_ns)
            del self._stamps[:cut], self._items[:cut]

    def nearest(self, stamp_ns: int, max_dt_ns: int) -> Any | None:
        """Item nearest to `stamp_ns`, or None when none lies within `max_dt_ns`."""
        with self._lock:
            i = bisect.bisect_left(self._stamps, stamp_ns)
            best = min((j for j in (i - 1, i) if 0 <= j < len(self._stamps)),
                       key=lambda j: abs(self._stamps[j] - stamp_ns), default=None)
            if best is None or abs(self._stamps[best] - stamp_ns) > max_dt_ns:
                return None
            return self._items[best]

    def newest_ns(self) -> int | None:
        with self._lock:
            return self._stamps[-1] if self._stamps else None


class PoseGate:
    """Frames that need the pose nearest their stamp (the wrist camera's), released with it.

    A frame with a pose within `max_dt_ns` goes at once. One whose time the pose stream has not reached yet is
    held (the newest `queue_size`) until a pose stamped at or after it arrives, which is tf2_ros.MessageFilter's
    rule for transforms: a pose that reaches the node after its image (a loaded robot PC, a bag logged on
    receive time) still places it, where dropping the frame would lose it. A frame with no pose near it once
    the stream has passed its time is released with None (the caller drops it).
    """

    def __init__(self, max_dt_ns: int, queue_size: int, horizon_ns: int = 2_000_000_000) -> None:
        self.max_dt_ns = int(max_dt_ns)
        self.poses = StampedBuffer(horizon_ns)
        self._held: deque[tuple[int, Any]] = deque(maxlen=queue_size)
        self._lock = threading.Lock()

    def frame(self, stamp_ns: int, frame: Any) -> list[tuple[int, Any, Any | None]]:
        """(stamp, frame, pose or None) of the frames ready now: this one, or none while it is held."""
        with self._lock:  # with pose()'s: a pose cannot slip in between the look-up and the hold
            pose = self.poses.nearest(stamp_ns, self.max_dt_ns)
            newest = self.poses.newest_ns()
            if pose is None and (newest is None or newest < stamp_ns):
                self._held.append((stamp_ns, frame))
                return []
        return [(stamp_ns, frame, pose)]

    def pose(self, stamp_ns: int, pose: Any) -> list[tuple[int, Any, Any | None]]:
        """Add a pose; (stamp, frame, pose or None) of the held frames whose time it has reached."""
        with self._lock:
            self.poses.add(stamp_ns, pose)
            ready = []
            while self._held and self._held[0][0] <= stamp_ns:
                ready.append(self._held.popleft())
            return [(s, f, self.poses.nearest(s, self.max_dt_ns)) for s, f in ready]
