"""The one timing helper of the benchmarks (and of Table I's inference rate): medians and tail percentiles of
repeated calls after a warm-up, wall clock and the CPU time of the work, so figures from a loaded machine
still say what an idle core would do."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Timing:
    """Durations in seconds: `wall` always, `cpu` when the CPU time was measured too."""

    wall: np.ndarray
    cpu: np.ndarray | None = None

    @classmethod
    def of(cls, wall_s: Sequence[float], cpu_s: Sequence[float] | None = None) -> Timing:
        """Durations measured elsewhere (inside a node, a loop, a message's stamps)."""
        return cls(np.asarray(wall_s, dtype=float), None if cpu_s is None else np.asarray(cpu_s, dtype=float))

    @property
    def n(self) -> int:
        return int(self.wall.size)

    def ms(self, percentile: float = 50.0) -> float:
        return float(np.percentile(self.wall, percentile)) * 1e3

    @property
    def ms_median(self) -> float:
        return float(np.median(self.wall)) * 1e3

    @property
    def cpu_ms_median(self) -> float:
        if self.cpu is None:
            raise ValueError("no CPU time was measured")
        return float(np.median(self.cpu)) * 1e3

    @property
    def hz(self) -> float:
        return 1e3 / self.ms_median


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1,
               cpu_clock: Callable[[], float] | None = time.thread_time) -> Timing:
    """`fn()` called `warmup` times untimed (first-call allocation, caches, lazy initialisation), then `repeats`
    times timed. `cpu_clock`: time.thread_time for work on this thread, time.process_time when the work
    runs on threads of its own (a library's thread pool), None for wall time only."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0 = cpu_clock() if cpu_clock else 0.0
        t0 = time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(cpu_clock() - c0 if cpu_clock else 0.0)
    return Timing.of(wall, cpu if cpu_clock else None)
