"""Receding-horizon executor: chunks in, safe franky targets out, on one control thread (ROS-free).

Thread model: submit_chunk / set_estop / request_home may be called from any thread (ROS callbacks);
they only touch the scheduler and request flags under a lock and wake the control thread. Only the
control thread talks to the robot, so franky never sees concurrent calls from us.

States: IDLE (no motion) -> RUNNING (streaming targets) -> HOLDING (plan used up: nothing new is sent,
franky holds the last target) -> STOPPED (no valid chunk, or no command sent, for stop_after_s: stop
motion, plan dropped). A new valid chunk restarts from IDLE/HOLDING/STOPPED (re-anchoring the safety
filter on the measured pose after a stop). ESTOP, HOMING and FAULT reject chunks. Homing also opens the hand
(home_opens_gripper) and ends when arm and hand are done; a chunk observed before it ended is refused (it saw
an arm elsewhere), and with hold_after_home none is taken until `start_episode()` (the scene may be reset;
a start that comes while homing counts once homing ends).
E-stop latches on any True (chunks are refused at once, the next tick stops the arm) and is released only
by `reset_estop()` or a False that arrives after the stop was carried out (a True -> False cycle).
FAULT (an implausible measured state, a measured pose the command cannot follow, a robot error without
recovery) stops the arm and is left only by homing; an e-stop release returns to FAULT, never clears it.
Every target passes the safety filter and the joint-space guard before franky sees it.
"""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from flow2one.control import kinematics
from flow2one.control.config import ExecutorConfig
from flow2one.control.franky_robot import RobotError, RobotStateSample
from flow2one.control.plan import ChunkRejected, Plan, Scheduler
from flow2one.control.safety import MeasuredPoseFault, RejectedTarget, SafeCommand, SafetyFilter
from flow2one.spec import GRIPPER_OPEN

ANCHOR_PATIENCE_S = 0.25  # a measured pose outside the limits for this long -> FAULT
HOME_TIMEOUT_S = 60.0  # a slowed franky-sim needs far longer than the robot's ~3 s
RETARGET_MIN_S = 1.0 / 50.0  # a new chunk re-targets franky this soon after the last command (its safe maximum rate)
RETARGET_SLACK_S = 1e-3  # a command may go this much before its period is up (the thread's wake-up jitter)


class State(str, enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    HOLDING = "holding"
    STOPPED = "stopped"
    ESTOP = "estop"
    HOMING = "homing"
    FAULT = "fault"


class RobotLike(Protocol):
    """What the executor needs from a robot (FrankyRobot implements it)."""

    def read_state(self) -> RobotStateSample: ...
    def send(self, cmd: SafeCommand) -> None: ...
    def record(self, kind: str, cmd: SafeCommand) -> None: ...
    def poll(self) -> bool: ...
    def stop(self, timeout: float = 1.0) -> None: ...
    def recover(self) -> bool: ...
    def start_home(self, joints: tuple[float, ...], speed_factor: float) -> None: ...
    def set_gripper(self, width: float) -> None: ...
    def wait_gripper(self, timeout: float) -> bool: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class CommandEvent:
    """A command handed to franky, for COMMAND_TOPIC and latency figures."""

    command: SafeCommand
    t_ns: int  # chunk clock when sent
    chunk_id: int
    first_of_chunk: bool
    latency_s: float  # chunk received -> franky move() returned (first command of a chunk), else nan
    process_s: float  # plan sampling + safety filter + franky move() call
    chunk_stamp_ns: int = 0  # the chunk's stamp and arrival (chunk clock), for the latency trace
    chunk_received_ns: int = 0
    franky_call_ns: int = 0  # chunk clock when franky's move() was called (t_ns: when the plan was sampled)
    # first command of a chunk (else 0): chunk clock from which franky's re-target spacing let it go, the
    # chunk's arrival or RETARGET_MIN_S after the previous command if that was later (so a trace can tell the
    # safety rate's wait from the control thread's)
    retarget_allowed_ns: int = 0


class Executor:
    def __init__(self, cfg: ExecutorConfig, robot: RobotLike, clock_ns: Callable[[], int] = time.time_ns,
                 on_state: Callable[[RobotStateSample], None] | None = None,
                 on_command: Callable[[CommandEvent], None] | None = None,
                 on_event: Callable[[str], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """clock_ns: the chunk clock (stamps); monotonic: seconds for periods, watchdog and latencies. An
        evaluation passes the sim clock for both and calls step() itself instead of start()."""
        self.cfg = cfg
        self.robot = robot
        self.limits = cfg.limits()
        self.clock_ns = clock_ns
        self.monotonic = monotonic
        self.on_state, self.on_command, self.on_event = on_state, on_command, on_event
        self.scheduler = Scheduler(cfg.n_exec, cfg.blend_s, cfg.max_future_s, self.limits.command_period)
        self.filter = SafetyFilter(self.limits)
        self.guard = cfg.joint_guard()
        self.state = State.IDLE
        self.message = "waiting for chunks"
        self.latest: RobotStateSample | None = None
        self.counters = collections.Counter()
        self.latencies: collections.deque[float] = collections.deque(maxlen=2000)
        self.last_error = ""
        self.hold_since: float | None = None  # monotonic s
        self.stopped_at: float | None = None
        self._period_cmd = 1.0 / cfg.command_rate_hz
        self._lookahead_ns = int(cfg.lookahead_s * 1e9)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._estop_latched = False
        self._estop_release = False
        self._fault_reason: str | None = None  # kept through an e-stop; cleared by homing
        self._home_req = False
        self._anchored = False
        self._anchor_fail_since: float | None = None
        self._home_started = 0.0
        self._home_gripper = False  # homing still has to open the hand
        self._held = False  # homed with hold_after_home: no chunk until start_episode()
        self._start_early = False  # start_episode() came while homing: the hold it ends has not begun yet
        self._accept_after_ns = -(1 << 62)  # chunks observed before this (homed, episode start) are refused
        self._last_cmd_mono = -np.inf
        self._last_cmd_robot_s = -np.inf  # the robot's clock at the last command
        # the last tick that found the robot's own re-target gap still open: its time and the gap then
        self._robot_gap_open: tuple[float, float] = (-np.inf, 0.0)
        self._last_chunk_mono: float | None = None
        self._fresh_chunk = False  # a chunk accepted since the last command: re-target without waiting a period
        self._received_mono: dict[int, float] = {}
        self._commanded_ids: set[int] = set()
        self._recoveries: collections.deque[float] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="executor-control", daemon=True)

    # -- API for any thread ------------------------------------------------------------------------
    def start(self) -> Executor:
        self._thread.start()
        return self

    def submit_chunk(self, actions: np.ndarray, stamp_ns: int, dt_s: float,
                     received_mono: float | None = None) -> Plan:
        """Queue a chunk; raises ChunkRejected (counted) when it cannot be executed."""
        received_mono = self.monotonic() if received_mono is None else received_mono
        with self._lock:
            try:
                if self._estop_latched:
                    raise ChunkRejected("e-stop is latched", "state")
                if self.state in (State.ESTOP, State.HOMING, State.FAULT) or self._held:
                    raise ChunkRejected(f"executor is in state {self.state.value}: {self.message}", "state")
                if stamp_ns < self._accept_after_ns:
                    raise ChunkRejected("observed before the arm was homed or the episode started", "stale")
                plan = self.scheduler.submit(actions, stamp_ns, dt_s, self.clock_ns())
            except ChunkRejected as exc:
                self.counters["chunks_rejected"] += 1
                self.counters[f"rejected_{exc.reason}"] += 1
                raise
            self.counters["chunks_accepted"] += 1
            self._last_chunk_mono = received_mono
            self._fresh_chunk = self.cfg.retarget_on_chunk
            self._received_mono[plan.chunk_id] = received_mono
            if len(self._received_mono) > 256:
                for k in sorted(self._received_mono)[:-128]:
                    del self._received_mono[k]
        self._wake.set()
        return plan

    def set_estop(self, active: bool) -> None:
        """True latches at once; False releases only after the stop was carried out (see module doc)."""
        with self._lock:
            if active:
                self._estop_latched, self._estop_release = True, False
            elif self._estop_latched:
                self._estop_release = True
        self._wake.set()

    def reset_estop(self) -> None:
        """Explicit release of a latched e-stop (takes effect once the arm was stopped)."""
        self.set_estop(False)

    @property
    def estop_latched(self) -> bool:
        return self._estop_latched

    def start_episode(self) -> None:
        """An episode starts now (the scene is set): a hold after homing ends, and chunks observed before now
        (of the scene as it was) are refused."""
        with self._lock:
            self._held = False
            self._start_early = self.state == State.HOMING
            self._accept_after_ns = self.clock_ns()
        self._notify(self.on_event, "episode start")
        self._wake.set()

    def request_home(self) -> None:
        with self._lock:
            self._home_req = True
        self._wake.set()

    def status(self) -> dict[str, object]:
        lat = np.array(self.latencies) if self.latencies else np.array([np.nan])
        return {"state": self.state.value, "message": self.message, "last_error": self.last_error,
                "latency_median_ms": float(np.median(lat) * 1e3), "latency_p95_ms": float(np.percentile(lat, 95) * 1e3),
                **{k: int(v) for k, v in self.counters.items()}}

    @property
    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    def close(self) -> None:
        """Stop the control thread and bring the arm to rest (the robot's connection is the owner's)."""
        self._closing = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(15.0)
        if self._thread.is_alive():  # stuck inside a franky call: releasing the robot now could crash
            self.last_error = "control thread did not stop within 15 s; robot left as it is"
            return
        self.robot.close()

    # -- control thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        period = 1.0 / self.cfg.state_rate_hz
        next_tick = self.monotonic()
        while not self._closing:
            self._wake.wait(max(0.0, self.next_wake(next_tick, self.monotonic()) - self.monotonic()))
            self._wake.clear()
            now = self.monotonic()
            if now >= next_tick:
                next_tick = max(next_tick + period, now - period)
            self.step(now)

    def next_wake(self, next_tick: float, now: float) -> float:
        """When the control thread looks again: its next tick, or sooner the moment franky may first take a
        waiting chunk (its re-target gap on the wall clock, and on the robot's own clock when that runs slow), so
        that a new chunk waits for franky's gap only, never for a tick."""
        if not self._fresh_chunk:
            return next_tick
        # the robot's clock runs no faster than the wall clock (slower in franky-sim on a busy machine): its gap
        # can close no sooner than the rest of it in wall seconds after the tick that found it open
        t_open, gap = self._robot_gap_open
        retarget_at = max(self._last_cmd_mono + RETARGET_MIN_S, t_open + RETARGET_MIN_S - gap)
        return min(next_tick, retarget_at) if retarget_at > now else next_tick

    def step(self, now: float) -> None:
        """tick(now) with the control thread's error handling (what the thread runs each period)."""
        try:
            self.tick(now)
        except RobotError as exc:
            self._on_error(exc, now)
        except Exception as exc:  # noqa: BLE001 - a bug must stop the arm, not kill this thread silently
            self.last_error = f"internal error: {type(exc).__name__}: {exc}"
            self._set(State.FAULT, self.last_error)
            try:
                self.robot.stop()
            except Exception:  # noqa: BLE001
                pass

    def _notify(self, callback: Callable | None, arg: object) -> None:
        """Report to the owner (publishers); a failing callback must not stop the control thread."""
        if callback is None:
            return
        try:
            callback(arg)
        except Exception as exc:  # noqa: BLE001 - e.g. publishing after the ROS context shut down
            self.counters["callback_errors"] += 1
            self.last_error = f"callback failed: {type(exc).__name__}: {exc}"

    def _set(self, state: State, message: str) -> None:
        if state == State.FAULT:
            self._fault_reason = message
        if state != self.state:
            self._notify(self.on_event, f"{self.state.value} -> {state.value}: {message}")
        self.state, self.message = state, message

    def tick(self, now: float) -> None:
        """One control-thread step (public so tests can drive it with their own clock)."""
        st = self.robot.read_state()
        self.latest = st
        self.counters["states"] += 1
        self._notify(self.on_state, st)
        with self._lock:
            latched, release = self._estop_latched, self._estop_release
            home, self._home_req = self._home_req, False
        if latched:
            if self.state != State.ESTOP:
                self._stop("e-stop", State.ESTOP)
                with self._lock:  # a release that came before the stop was carried out does not count
                    self._estop_release = False
            elif release:
                with self._lock:
                    self._estop_latched = self._estop_release = False
                if self._fault_reason is not None:
                    self._notify(self.on_event, "e-stop released; still in FAULT (home to clear it)")
                    self._set(State.FAULT, self._fault_reason)
                else:
                    self._set(State.IDLE, "e-stop released")
            return
        if home:
            self._start_home()
            return
        if self.state == State.HOMING:
            if self._home_gripper and self.robot.wait_gripper(0.0):  # a grasp still closing finishes first
                self.robot.set_gripper(GRIPPER_OPEN)
                self._home_gripper = False
            if not self.robot.poll() and not self._home_gripper and self.robot.wait_gripper(0.0):
                self._anchored = False
                self._fault_reason = None
                with self._lock:
                    self._accept_after_ns = self.clock_ns()
                    self._held, self._start_early = self.cfg.hold_after_home and not self._start_early, False
                self._set(State.IDLE, "homed: waiting for an episode start" if self._held else "homed")
            elif now - self._home_started > HOME_TIMEOUT_S:
                self._fault(f"homing did not finish within {HOME_TIMEOUT_S} s")
            return
        if self.state in (State.ESTOP, State.FAULT):
            return
        self.robot.poll()
        self._step_stream(now, st)

    def _step_stream(self, now: float, st: RobotStateSample) -> None:
        if self.state in (State.RUNNING, State.HOLDING):
            why = self._implausible(st)
            if why is not None:
                self._fault(f"implausible measured state: {why}")
                return
            no_chunk = self._last_chunk_mono is None or now - self._last_chunk_mono > self.cfg.stop_after_s
            if no_chunk or now - self._last_cmd_mono > self.cfg.stop_after_s:
                self.stopped_at = now
                what = "valid chunk" if no_chunk else "command sent (every target refused)"
                self._stop(f"no {what} for {self.cfg.stop_after_s} s", State.STOPPED)
                return
        if now - self._last_cmd_mono < (RETARGET_MIN_S if self._fresh_chunk else self._period_cmd) - RETARGET_SLACK_S:
            return
        # franky's safe re-target rate is a rate in the robot's time. A franky-sim slowed to 0.2-0.4 of real time
        # would get wall-clock-paced targets at 2-5 times it, and its planner then swings the arm centimetres off
        # the command (docs/ENVIRONMENT_FACTS.md). On a robot its clock is the wall clock and this never waits.
        robot_gap = st.robot_time_s - self._last_cmd_robot_s
        if 0.0 <= robot_gap < RETARGET_MIN_S - RETARGET_SLACK_S:
            self._robot_gap_open = (now, robot_gap)
            return
        t0 = self.monotonic()
        with self._lock:
            now_ns = self.clock_ns()
            target = self.scheduler.target(now_ns, self._lookahead_ns)
            plan = self.scheduler.plan
            self._fresh_chunk = False
        if target is None:
            if self.state == State.RUNNING:
                self.hold_since = now
                self._set(State.HOLDING, "plan used up: holding the last target")
            return
        if not self._anchored:
            try:
                anchor = self.filter.anchor(now, st.position, st.ee[:3, :3], st.gripper_width)
            except RejectedTarget as exc:
                # One implausible reading (seen right after libfranka errors) must not fault; a pose
                # that stays outside the limits must.
                self._anchor_fail_since = self._anchor_fail_since or now
                if now - self._anchor_fail_since > ANCHOR_PATIENCE_S:
                    self._fault(f"{exc}; send home")
                return
            self._anchor_fail_since = None
            self.robot.record("anchor", anchor)
            self._anchored = True
        # every command is derived from a reading that passed this (checked above already when streaming)
        why = None if self.state in (State.RUNNING, State.HOLDING) else self._implausible(st)
        if why is not None:
            self._fault(f"implausible measured state: {why}")
            return
        try:
            cmd = self.filter.propose(now, target, st.position)
        except MeasuredPoseFault as exc:
            self._fault(str(exc))
            return
        except RejectedTarget as exc:
            self.counters["targets_rejected"] += 1
            self.last_error = str(exc)
            return
        prev = self.filter.last
        if cmd is prev:  # no time since the anchor or the last command: nothing new to send
            return
        why = self.guard.check(st.q, st.ee, cmd, prev, min(now - prev.t, self.limits.command_period))
        if why is not None:
            self.counters["targets_refused_joint"] += 1
            self.last_error = f"target refused by the joint-space guard: {why}"
            return
        self.filter.commit(cmd)
        self.counters["commands"] += 1
        if cmd.clamped:
            self.counters["commands_clamped"] += 1
        franky_call_ns = self.clock_ns()
        self.robot.send(cmd)
        sent = self.monotonic()
        previous_cmd, self._last_cmd_mono = self._last_cmd_mono, now
        self._last_cmd_robot_s = st.robot_time_s
        first = plan.chunk_id not in self._commanded_ids
        latency = float("nan")
        allowed_ns = 0
        if first:
            self._commanded_ids.add(plan.chunk_id)
            if len(self._commanded_ids) > 256:
                self._commanded_ids = {i for i in self._commanded_ids if i > plan.chunk_id - 128}
            received = self._received_mono.get(plan.chunk_id)
            if received is not None:
                latency = sent - received
                self.latencies.append(latency)
            # measured on the monotonic clock that gates the command, placed on the chunk clock back from now_ns
            # (clamped: the two clocks are read microseconds apart, and the trace's stages must stay ordered)
            allowed = max(now if received is None else received, previous_cmd + RETARGET_MIN_S - RETARGET_SLACK_S,
                          self._robot_gap_closed(now, robot_gap, previous_cmd))
            allowed_ns = min(now_ns, max(plan.received_ns, now_ns - round((now - allowed) * 1e9)))
        if self.state != State.RUNNING:
            self._set(State.RUNNING, "streaming")
        self._notify(self.on_command, CommandEvent(cmd, now_ns, plan.chunk_id, first, latency, sent - t0,
                                                   plan.stamp_ns, plan.received_ns, franky_call_ns, allowed_ns))

    def _robot_gap_closed(self, now: float, gap_now: float, previous_cmd: float) -> float:
        """When the robot's own re-target gap closed, on the monotonic clock: between the last tick that found it
        open and now, where the robot's clock crossed it (linear between the two readings); -inf if no tick
        found it open since the previous command."""
        t0, g0 = self._robot_gap_open
        if t0 <= previous_cmd or gap_now <= g0:
            return -np.inf
        return t0 + (now - t0) * (RETARGET_MIN_S - RETARGET_SLACK_S - g0) / (gap_now - g0)

    def _implausible(self, st: RobotStateSample) -> str | None:
        """Why a measured state must not be used (None when it may): a robot command is only ever derived
        from readings that are finite, a rotation, where the arm can physically be, inside the workspace box and
        the orientation cone (each with a tolerance for tracking), and with every joint within its hardware speed
        and able to stop clear of its hardware limit."""
        if not (np.all(np.isfinite(st.q)) and np.all(np.isfinite(st.dq)) and np.all(np.isfinite(st.ee))
                and np.isfinite(st.gripper_width)):
            return "NaN/inf in the robot state"
        r = st.ee[:3, :3]
        if np.abs(r.T @ r - np.eye(3)).max() > 1e-4 or abs(np.linalg.det(r) - 1.0) > 1e-4:
            return "EE rotation is not a rotation matrix"
        joint = self.guard.check_measured(st.q, st.dq)
        if joint is not None:
            return joint
        tol = self.cfg.measured_box_tolerance
        lo, hi = np.asarray(self.limits.workspace_min), np.asarray(self.limits.workspace_max)
        if np.maximum(lo - st.position, st.position - hi).max() > tol:
            return (f"EE position {np.round(st.position, 4).tolist()} is more than {tol} m outside the workspace "
                    f"box {self.limits.workspace_min}..{self.limits.workspace_max}")
        tilt, cone = self.filter.deviation(r), self.limits.max_rot_from_ref
        if tilt > cone + self.cfg.measured_cone_tolerance:
            return (f"EE orientation is {tilt:.3f} rad from the reference, more than {self.cfg.measured_cone_tolerance} "
                    f"rad past max_rot_from_ref {cone}")
        return None

    def _fault(self, reason: str) -> None:
        """Stop the arm and stay in FAULT until homing; no command follows."""
        with self._lock:
            self.scheduler.clear()
        self._anchored = False
        self.last_error = reason
        self.counters["faults"] += 1
        self._set(State.FAULT, reason)
        self.robot.stop()

    def _stop(self, reason: str, state: State) -> None:
        with self._lock:
            self.scheduler.clear()
        self._anchored = False
        self._set(state, reason)
        self.robot.stop()
        self.counters["stops"] += 1

    def _start_home(self) -> None:
        with self._lock:
            self.scheduler.clear()
        self._anchored = False
        self.robot.stop()
        if self.state == State.FAULT and not self.robot.recover():
            self._set(State.FAULT, f"recovery failed before homing: {self.last_error}")
            return
        why = self._home_path_problem(self.robot.read_state().q)
        if why is not None:
            self.counters["homing_refused"] += 1
            self._set(State.FAULT, f"homing refused: {why}; move the arm toward the home pose by hand "
                                   f"(guiding mode), then home again")
            return
        self.robot.start_home(tuple(self.cfg.home_joints), self.cfg.home_speed_factor)
        self._home_gripper = self.cfg.home_opens_gripper
        with self._lock:
            self._start_early = False  # a start counts for the homing it came during
        self._home_started = self.monotonic()
        self._set(State.HOMING, "moving to the home joint configuration")

    def _home_path_problem(self, q0: np.ndarray, samples: int = 40) -> str | None:
        """Why the joint motion home (a straight line in joint space, as franky's joint waypoint motion
        moves) would take the EE out of the box or the cone, or None. Joints stay inside their limits on it:
        both ends do and the limits are a box in joint space."""
        q0, home = np.asarray(q0, dtype=np.float64), np.asarray(self.cfg.home_joints, dtype=np.float64)
        if not np.all(np.isfinite(q0)):
            return "the measured joints are not finite"
        lo, hi = np.asarray(self.limits.workspace_min), np.asarray(self.limits.workspace_max)
        start = kinematics.fk(q0)
        # from a pose already outside (the usual reason to home), the path may not go farther out
        out0 = max(float(np.maximum(lo - start[:3, 3], start[:3, 3] - hi).max()), self.cfg.measured_box_tolerance)
        tilt0 = max(self.filter.deviation(start[:3, :3]), self.limits.max_rot_from_ref)
        for s in np.linspace(0.0, 1.0, samples)[1:]:
            pose = kinematics.fk(q0 + s * (home - q0))
            if np.maximum(lo - pose[:3, 3], pose[:3, 3] - hi).max() > out0:
                return f"its path leaves the workspace box at {s:.0%} of the way"
            tilt = self.filter.deviation(pose[:3, :3])
            if tilt > tilt0:
                return f"its path tilts the EE {tilt:.2f} rad from the reference orientation (max {tilt0:.2f})"
        return None

    def _on_error(self, exc: RobotError, now: float) -> None:
        """Recover automatically where libfranka allows it (a limited number of times), else FAULT."""
        self.counters["robot_errors"] += 1
        self.last_error = str(exc)
        with self._lock:
            self.scheduler.clear()
        self._anchored = False
        while self._recoveries and now - self._recoveries[0] > self.cfg.recovery_window_s:
            self._recoveries.popleft()
        if not exc.recoverable:
            # libfranka needs a new connection, and dropping franky's Robot while its motion thread may
            # still run crashes the process: stay in FAULT; restarting the node reconnects.
            self._set(State.FAULT, f"robot communication lost (restart the executor): {exc}")
        elif len(self._recoveries) >= self.cfg.max_recoveries:
            self._set(State.FAULT, f"{len(self._recoveries)} recoveries in {self.cfg.recovery_window_s} s; "
                                   f"last error: {exc}")
        elif self.robot.recover():
            self._recoveries.append(now)
            self.counters["recoveries"] += 1
            self._set(State.IDLE, f"recovered from: {exc}")
        else:
            self._set(State.FAULT, f"automatic recovery failed after: {exc}")
