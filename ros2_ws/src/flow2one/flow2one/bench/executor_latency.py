"""Executor latency benchmark against franky-sim: chunk received -> franky command.

Latency of a chunk = from its arrival (submit_chunk) to the return of the franky move() call of the
first command that uses it. Commands go out at command_rate_hz, so it is bounded by the command period
and, when chunks arrive faster than commands, by the chunk period. Baseline, measured in the same run:
a bare asynchronous franky re-target (move() of a CartesianMotion), the floor of any executor.
"""

from __future__ import annotations

import time

import franky
import numpy as np

from flow2one.bench.timing import Timing
from flow2one.control.config import ExecutorConfig
from flow2one.control.executor import CommandEvent, Executor
from flow2one.control.franky_robot import FrankyRobot
from flow2one.control.franky_sim import FrankySimProcess
from flow2one.control.plan import Scheduler
from flow2one.control.safety import SafetyFilter
from flow2one.geometry import matrix_to_quat, matrix_to_rot6d


def _ms(values: list[float]) -> dict[str, float]:
    t = Timing.of(values)
    return {"median_ms": t.ms_median, "p95_ms": t.ms(95), "n": t.n}


def _core_us(n: int) -> dict[str, float]:
    """Scheduler.submit (32 steps, blending) + SafetyFilter.filter, no robot: the executor's own CPU cost."""
    cfg = ExecutorConfig(robot_host="none")
    sched = Scheduler(cfg.n_exec, cfg.blend_s, cfg.max_future_s, 0.05)
    filt = SafetyFilter(cfg.limits())
    down = np.diag([1.0, -1.0, -1.0])
    filt.anchor(0.0, np.array([0.45, 0.0, 0.4]), down, 0.08)
    r6 = matrix_to_rot6d(down)
    submit, step = [], []
    for i in range(n):
        now_ns = (i + 1) * 50_000_000
        acts = np.stack([np.concatenate([[0.45 + 0.001 * (i + k), 0.0, 0.4], r6, [0.08]]) for k in range(32)])
        t0 = time.perf_counter()
        sched.submit(acts, now_ns - 20_000_000, 0.05, now_ns)
        t1 = time.perf_counter()
        filt.filter(now_ns / 1e9, sched.target(now_ns, 50_000_000))
        t2 = time.perf_counter()
        submit.append(t1 - t0)
        step.append(t2 - t1)
    return {"submit_median_us": Timing.of(submit).ms_median * 1e3, "command_median_us": Timing.of(step).ms_median * 1e3}


def _bare_move(robot: FrankyRobot, n: int) -> list[float]:
    s = robot.read_state()
    out = []
    for _ in range(n):
        m = franky.CartesianMotion(franky.RobotPose(franky.Affine(s.position, matrix_to_quat(s.ee[:3, :3]))),
                                   franky.ReferenceType.Absolute, return_when_finished=False)
        t0 = time.perf_counter()
        robot.robot.move(m, asynchronous=True)
        out.append(time.perf_counter() - t0)
        time.sleep(0.05)
    robot.stop()
    return out


def _stream(host: str, chunk_hz: float, seconds: float) -> dict[str, object]:
    cfg = ExecutorConfig(robot_host=host)
    robot = FrankyRobot(host, cfg.limits(), realtime="ignore")  # franky-sim
    events: list[CommandEvent] = []
    times: list[tuple[float, float]] = []
    ex = Executor(cfg, robot, on_command=events.append,
                  on_state=lambda s: times.append((time.monotonic(), s.robot_time_s))).start()
    try:
        start = robot.read_state().position.copy()
        r6 = matrix_to_rot6d(np.diag([1.0, -1.0, -1.0]))
        t_start = time.time()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stamp = time.time_ns() - 20_000_000
            t = stamp / 1e9 - t_start + 0.05 * np.arange(32)
            xyz = start + 0.03 * np.stack([np.zeros_like(t), np.sin(t), 1 - np.cos(t)], -1)
            ex.submit_chunk(np.concatenate([xyz, np.repeat(r6[None], 32, 0), np.full((32, 1), 0.08)], 1), stamp, 0.05)
            time.sleep(1.0 / chunk_hz)
    finally:
        ex.close()
        robot.disconnect()
    first = [e.latency_s for e in events if e.first_of_chunk and np.isfinite(e.latency_s)]
    (w0, r0), (w1, r1) = times[0], times[-1]
    return {"chunk_hz": chunk_hz, "commands": len(events), "latency": _ms(first),
            "process": _ms([e.process_s for e in events]), "sim_real_time_factor": (r1 - r0) / (w1 - w0),
            "status": {k: v for k, v in ex.status().items() if isinstance(v, int)}}


def run(quick: bool = False) -> dict[str, object]:
    seconds = 2.0 if quick else 6.0
    out: dict[str, object] = {"core": _core_us(200 if quick else 1000)}
    with FrankySimProcess() as sim:
        robot = FrankyRobot(sim.host, ExecutorConfig(robot_host=sim.host).limits(), realtime="ignore")
        out["baseline_bare_move"] = _ms(_bare_move(robot, 20 if quick else 60))
        robot.disconnect()
        out["streams"] = [_stream(sim.host, hz, seconds) for hz in (125.0, 25.0)]
    base = out["baseline_bare_move"]["median_ms"]
    for s in out["streams"]:
        s["process_over_bare_move"] = s["process"]["median_ms"] / base
    return out
