"""Chunk alignment, receding-horizon scheduling and chunk-to-chunk blending (ROS-free).

A chunk is a (H, 10) array of absolute EE targets; step i is meant for `stamp + i*dt` (stamp = the
observation time). On arrival the executor:
  1. aligns it to now: steps whose interval [t_i, t_i + dt) has already ended are dropped (that time was
     consumed by perception + inference + transport latency);
  2. keeps only the first n_exec remaining steps (receding horizon: the tail is a guess that a newer
     chunk will replace);
  3. blends it with the plan being executed by a short cross-fade: the command at time t is
     (1 - w) * old(t) + w * new(t), w = clip((t - now) / blend_s, 0, 1).

Why a cross-fade and not temporal ensembling or real-time chunking: temporal ensembling averages every
overlapping chunk for the same time step; for a multimodal policy that averages modes (left-of-obstacle
and right-of-obstacle average into the obstacle) and adds lag. Real-time chunking makes the *sampler*
respect the executing prefix by guided denoising, which needs a multi-step sampler and lives in the
policy; a one-step student has no denoising loop to guide. Our policy instead draws M candidates in one
batched pass and keeps the one closest to the executing tail (`pick_consistent`), so consecutive chunks
are already in the same mode; the executor's remaining job is to remove the small residual jump, which
a blend_s-long cross-fade does while fully switching to the newest chunk within blend_s (bounded lag, no
cross-mode averaging). Old plans are sampled into the new one on arrival, so blending never nests.
One-point chunks (teleop) replace the plan without blending: a cross-fade there would only add lag, and
the safety filter already bounds the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flow2one.spec import ACTION_DIM

MAX_DT_S = 1.0  # s per chunk step; a larger dt is a malformed message, not a slow plan


class ChunkRejected(ValueError):
    """A chunk the executor will not execute; the message says why, `reason` is a short category
    (malformed, nonfinite, dt, stale, future, order, state) counted in diagnostics."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Plan:
    """The steps the executor follows: absolute times (ns, chunk clock) and actions (K, 10), K >= 1."""

    times_ns: np.ndarray
    actions: np.ndarray
    stamp_ns: int  # observation stamp of the chunk it came from
    dt_ns: int
    chunk_id: int
    received_ns: int  # when the chunk arrived (chunk clock)

    @property
    def end_ns(self) -> int:
        """Plan is live until its last step's interval ends."""
        return int(self.times_ns[-1]) + self.dt_ns

    def live(self, now_ns: int) -> bool:
        return now_ns <= self.end_ns

    def sample(self, t_ns: int | np.ndarray) -> np.ndarray:
        """Piecewise-linear interpolation between steps, held constant outside [first, last]."""
        t = np.atleast_1d(np.asarray(t_ns, dtype=np.float64))
        times = self.times_ns.astype(np.float64)
        out = np.stack([np.interp(t, times, self.actions[:, j]) for j in range(self.actions.shape[1])], -1)
        return out[0] if np.ndim(t_ns) == 0 else out


def align_chunk(actions: np.ndarray, stamp_ns: int, dt_s: float, now_ns: int, n_exec: int,
                default_dt_s: float) -> tuple[np.ndarray, np.ndarray, int]:
    """-> (step times ns, actions) of the executable window, and the dt used. Raises ChunkRejected."""
    a = np.asarray(actions, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] != ACTION_DIM:
        raise ChunkRejected(f"chunk must have shape (H >= 1, {ACTION_DIM}), got {a.shape}", "malformed")
    if not np.all(np.isfinite(a)):
        raise ChunkRejected("chunk has NaN/inf actions", "nonfinite")
    if not np.isfinite(dt_s) or dt_s < 0 or dt_s > MAX_DT_S or (dt_s == 0 and a.shape[0] > 1):
        raise ChunkRejected(f"chunk step dt must be in (0, {MAX_DT_S}] s, got {dt_s}", "dt")
    dt_ns = int(round((dt_s if dt_s > 0 else default_dt_s) * 1e9))
    times = int(stamp_ns) + dt_ns * np.arange(a.shape[0], dtype=np.int64)
    keep = times + dt_ns > now_ns  # interval [t_i, t_i + dt) not over yet
    if not np.any(keep):
        late = (now_ns - int(times[-1]) - dt_ns) / 1e6
        raise ChunkRejected(f"chunk is stale: all {a.shape[0]} steps are in the past (last ended {late:.1f} ms ago)", "stale")
    first = int(np.argmax(keep))
    sl = slice(first, first + n_exec)
    return times[sl], a[sl], dt_ns


class Scheduler:
    """Holds the plan being executed; thread-compatible (the caller serialises calls)."""

    def __init__(self, n_exec: int, blend_s: float, max_future_s: float, default_dt_s: float) -> None:
        if n_exec < 1:
            raise ValueError(f"n_exec must be >= 1, got {n_exec}")
        if blend_s < 0 or max_future_s < 0 or default_dt_s <= 0:
            raise ValueError("blend_s and max_future_s must be >= 0 and default_dt_s > 0")
        self.n_exec = n_exec
        self.blend_ns = int(blend_s * 1e9)
        self.max_future_ns = int(max_future_s * 1e9)
        self.default_dt_s = default_dt_s
        self.plan: Plan | None = None
        self._last_stamp: int | None = None
        self._ids = 0

    def submit(self, actions: np.ndarray, stamp_ns: int, dt_s: float, now_ns: int) -> Plan:
        """Align, window and blend a chunk into the new plan. Raises ChunkRejected (plan unchanged)."""
        stamp_ns = int(stamp_ns)
        if stamp_ns > now_ns + self.max_future_ns:
            raise ChunkRejected(f"chunk stamp is {(stamp_ns - now_ns) / 1e6:.1f} ms in the future "
                                f"(> max_future_s); clocks out of sync?", "future")
        # An equal stamp is a new prediction for the same observation time (fresher robot state, the
        # same cloud): it replaces the plan. An older one would take the plan back in time. A stamp from the
        # future (clock skew) sets no bar, so one skewed chunk cannot block the fresh ones after it.
        if self._last_stamp is not None and stamp_ns < self._last_stamp:
            raise ChunkRejected(f"chunk stamp is older than the last accepted one "
                                f"({(self._last_stamp - stamp_ns) / 1e6:.1f} ms)", "order")
        times, acts, dt_ns = align_chunk(actions, stamp_ns, dt_s, now_ns, self.n_exec, self.default_dt_s)
        old = self.plan
        if old is not None and self.blend_ns > 0 and len(times) > 1:
            # Knots at now (pure old plan: no jump), at every future step, and where the fade ends.
            new = Plan(times, acts, stamp_ns, dt_ns, 0, now_ns)
            knots = np.unique(np.concatenate([[now_ns], times[times > now_ns], [now_ns + self.blend_ns]]))
            knots = knots[knots <= times[-1]]
            w = np.clip((knots - now_ns) / self.blend_ns, 0.0, 1.0)[:, None]
            times, acts = knots, (1.0 - w) * old.sample(knots) + w * new.sample(knots)
        self._ids += 1
        if stamp_ns <= now_ns:
            self._last_stamp = stamp_ns
        self.plan = Plan(times, acts, stamp_ns, dt_ns, self._ids, now_ns)
        return self.plan

    def target(self, now_ns: int, lookahead_ns: int) -> np.ndarray | None:
        """The desired action for a command sent now (aimed lookahead ahead); None = hold."""
        if self.plan is None or not self.plan.live(now_ns):
            return None
        return self.plan.sample(now_ns + lookahead_ns)

    def clear(self) -> None:
        """Forget the plan (after a stop/e-stop/fault) but keep the stamp order: old chunks stay old."""
        self.plan = None


def pick_consistent(candidates: np.ndarray, times_ns: np.ndarray, executing: Plan | None) -> int:
    """Index of the candidate chunk (M, H, 10) closest (mean xyz distance) to the plan being executed
    over their common time span; 0 when nothing overlaps. For the policy node's M-candidate selection."""
    c = np.asarray(candidates, dtype=np.float64)
    if executing is None or c.shape[0] == 1:
        return 0
    overlap = (times_ns >= executing.times_ns[0]) & (times_ns <= executing.times_ns[-1])
    if not np.any(overlap):
        return 0
    ref = executing.sample(times_ns[overlap])[:, :3]
    d = np.linalg.norm(c[:, overlap, :3] - ref[None], axis=-1).mean(-1)
    return int(np.argmin(d))
