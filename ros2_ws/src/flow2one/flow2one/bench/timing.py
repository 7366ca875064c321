"""The one timing helper of the benchmarks (and of Table I's inference rate): medians and tail percentiles of
repeated calls after a warm-up, wall clock and the CPU time of the work, so figures from a loaded machine
still say what an idle core would do."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import psutil


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


class MachineShare:
    """What the machine took from a measurement: CPU steal (a virtual machine's vCPUs waiting for the host) and
    the load. On a shared VM latency tails follow steal more than our code, so latency figures carry the steal
    share of their interval. CPU times at construction; `read()` reports the interval since."""

    def __init__(self) -> None:
        self._before = psutil.cpu_times()

    def read(self) -> dict[str, float]:
        """cpu_steal_pct: of all CPU time in the interval (0 on bare metal, or where the kernel counts no steal);
        load_avg_1min: now."""
        after = psutil.cpu_times()
        # guest time is already inside user time on Linux: counted once
        total = sum(a - b for f, a, b in zip(after._fields, after, self._before) if not f.startswith("guest"))
        steal = getattr(after, "steal", 0.0) - getattr(self._before, "steal", 0.0)
        return {"cpu_steal_pct": round(100.0 * steal / total, 1) if total > 0 else 0.0,
                "load_avg_1min": round(os.getloadavg()[0], 2)}
