"""ROS-free executor core: chunk alignment, receding horizon, blending, safety filter, watchdog.

Executor tests drive the real Executor.tick (scheduler -> safety filter -> joint guard -> robot.send) on a
simulated clock; the robot is a kinematic stand-in that records every target at the boundary where
FrankyRobot would hand it to franky. The long adversarial streams are in test_safety_attacks.py (checked by
an independent checker); `adversarial_chunk` here feeds the franky-sim stretch of test_control_franky.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flow2one.control import kinematics, so3
from flow2one.control.config import HOME_JOINTS, ExecutorConfig
from flow2one.control.executor import RETARGET_MIN_S, RETARGET_SLACK_S, Executor, State
from flow2one.control.franky_robot import RobotStateSample
from flow2one.control.limits import SafetyLimits
from flow2one.control.plan import ChunkRejected, Scheduler, align_chunk, pick_consistent
from flow2one.control.safety import RejectedTarget, SafeCommand, SafetyFilter, audit
from flow2one.geometry import matrix_to_rot6d
from flow2one.spec import GRIPPER_OPEN

DOWN = np.diag([1.0, -1.0, -1.0])  # EE pointing down
HOME = np.array([0.45, 0.0, 0.4])
MS = 1_000_000


def action(p, rot=DOWN, g=0.08) -> np.ndarray:
    return np.concatenate([p, matrix_to_rot6d(rot), [g]])


def line_chunk(start, velocity, n=32, dt=0.05) -> np.ndarray:
    return np.stack([action(np.asarray(start) + np.asarray(velocity) * i * dt) for i in range(n)])


def _home_pose() -> np.ndarray:
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = DOWN, HOME
    return pose


HOME_Q = kinematics.ik(_home_pose(), np.asarray(HOME_JOINTS))


class KinematicRobot:
    """Stand-in for FrankyRobot in clock-driven core tests: the arm is wherever it was last sent; its joint
    angles follow by differential IK (two damped steps per command, as a Cartesian controller would)."""

    def __init__(self, clock):
        self.clock = clock
        self.pose = _home_pose()
        self.q = HOME_Q.copy()
        self.width = 0.08
        self.log: list = []
        self.stops = 0
        self.real_time_factor = 1.0  # the robot's clock over the wall clock (franky-sim < 1 on a busy machine)

    def read_state(self) -> RobotStateSample:
        return RobotStateSample(self.clock(), self.q.copy(), np.zeros(7), np.zeros(7), self.pose.copy(), self.width,
                                "Move", self.clock() / 1e9 * self.real_time_factor)

    def record(self, kind, cmd: SafeCommand) -> None:
        self.log.append((kind, cmd.t, cmd.position.copy(), cmd.rotation.copy(), cmd.gripper))

    def send(self, cmd: SafeCommand) -> None:
        self.record("command", cmd)
        self.pose[:3, :3], self.pose[:3, 3], self.width = cmd.rotation, cmd.position, cmd.gripper
        self.q = kinematics.ik(self.pose, self.q, iters=2)

    def poll(self) -> bool:
        return True

    def stop(self, timeout: float = 1.0) -> None:
        self.stops += 1

    def recover(self) -> bool:
        return True

    def start_home(self, joints, speed_factor) -> None:
        pass

    def set_gripper(self, width: float) -> None:
        self.width = width

    def wait_gripper(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        pass


class SimClock:
    def __init__(self):
        self.t = 1000.0  # s

    def ns(self) -> int:
        return int(self.t * 1e9)


def make_executor(**kw):
    clock = SimClock()
    robot = KinematicRobot(clock.ns)
    cfg = ExecutorConfig(robot_host="sim", **kw)
    return Executor(cfg, robot, clock_ns=clock.ns), robot, clock


# -- alignment / scheduling ----------------------------------------------------------------------
def test_align_drops_past_steps_and_keeps_n_exec():
    acts = line_chunk(HOME, [0.1, 0, 0], n=32)
    stamp = 10 * 10**9
    times, kept, dt_ns = align_chunk(acts, stamp, 0.05, now_ns=stamp + 120 * MS, n_exec=8, default_dt_s=0.05)
    # steps 0, 1 ended before now (0-50, 50-100 ms); step 2 (100-150 ms) is current
    assert dt_ns == 50 * MS and len(times) == 8
    assert times[0] == stamp + 100 * MS
    np.testing.assert_allclose(kept, acts[2:10])


@pytest.mark.parametrize("bad, reason", [
    (np.full((4, 10), np.nan), "NaN"), (np.zeros((4, 9)), "shape"), (np.zeros((0, 10)), "shape")])
def test_align_rejects_malformed(bad, reason):
    with pytest.raises(ChunkRejected, match=reason):
        align_chunk(bad, 0, 0.05, 0, 8, 0.05)


def test_scheduler_rejects_stale_future_and_reversed_stamps():
    s = Scheduler(n_exec=8, blend_s=0.1, max_future_s=0.5, default_dt_s=0.05)
    now = 100 * 10**9
    with pytest.raises(ChunkRejected, match="stale"):
        s.submit(line_chunk(HOME, [0, 0, 0], n=4), now - 10**9, 0.05, now)
    with pytest.raises(ChunkRejected, match="future"):
        s.submit(line_chunk(HOME, [0, 0, 0]), now + 10**9, 0.05, now)
    s.submit(line_chunk(HOME, [0, 0, 0]), now - 30 * MS, 0.05, now)
    with pytest.raises(ChunkRejected, match="older than the last"):
        s.submit(line_chunk(HOME, [0, 0, 0]), now - 40 * MS, 0.05, now)
    # the same observation time again (re-predicted with a fresher robot state) replaces the plan
    again = s.submit(line_chunk(HOME, [0.01, 0, 0]), now - 30 * MS, 0.05, now)
    assert s.plan is again and again.chunk_id == 2


def test_one_point_teleop_chunk_is_executed():
    s = Scheduler(n_exec=8, blend_s=0.0, max_future_s=0.5, default_dt_s=0.05)
    now = 100 * 10**9
    p = HOME + [0.01, 0, 0]
    s.submit(action(p)[None], now - 2 * MS, 0.0, now)  # teleop: one point stamped "now", dt unknown
    np.testing.assert_allclose(s.target(now, 50 * MS)[:3], p)
    assert s.target(now + 60 * MS, 50 * MS) is None  # used up after one step interval: hold


def test_blend_is_continuous_at_switch_and_reaches_new_chunk():
    s = Scheduler(n_exec=16, blend_s=0.1, max_future_s=0.5, default_dt_s=0.05)
    now = 100 * 10**9
    s.submit(line_chunk(HOME, [0.1, 0, 0]), now, 0.05, now)
    before = s.plan.sample(now + 50 * MS)
    s.submit(line_chunk(HOME + [0, 0.02, 0], [0.1, 0, 0]), now + 10 * MS, 0.05, now + 50 * MS)
    after = s.plan.sample(now + 50 * MS)  # the new plan starts where the old one was
    np.testing.assert_allclose(after, before, atol=1e-9)
    late = s.plan.sample(now + 300 * MS)  # past blend_s: the new chunk only
    np.testing.assert_allclose(late[:3], HOME + [0.1 * 0.29, 0.02, 0], atol=1e-6)


def test_pick_consistent_prefers_candidate_near_executing_plan():
    s = Scheduler(n_exec=32, blend_s=0.0, max_future_s=0.5, default_dt_s=0.05)
    now = 100 * 10**9
    s.submit(line_chunk(HOME, [0.1, 0, 0]), now, 0.05, now)
    cands = np.stack([line_chunk(HOME + [0, 0.1, 0], [0.1, 0, 0]), line_chunk(HOME, [0.1, 0, 0])])
    times = now + 20 * MS + 50 * MS * np.arange(32)
    assert pick_consistent(cands, times, s.plan) == 1


# -- safety filter -------------------------------------------------------------------------------
def test_filter_clamps_box_speed_and_rejects_nan():
    lim = SafetyLimits()
    f = SafetyFilter(lim)
    f.anchor(0.0, HOME, DOWN, 0.08)
    cmd = f.filter(0.05, action(HOME + [5.0, 0, 0]))  # 5 m jump
    assert "linear" in cmd.clamped and np.abs(cmd.position - HOME).max() <= lim.lin_speed * 0.05 + 1e-12
    with pytest.raises(RejectedTarget, match="NaN"):
        f.filter(0.1, np.full(10, np.nan))
    with pytest.raises(RejectedTarget, match="degenerate"):
        f.filter(0.1, np.concatenate([HOME, np.zeros(6), [0.04]]))
    with pytest.raises(RejectedTarget, match="outside"):
        f.anchor(0.2, np.array([2.0, 0, 0]), DOWN, 0.08)


def test_filter_stays_in_box_when_driven_into_a_wall():
    lim = SafetyLimits()
    f = SafetyFilter(lim)
    t, log = 0.0, []
    log.append(("anchor", t, *(lambda c: (c.position, c.rotation, c.gripper))(f.anchor(t, HOME, DOWN, 0.08))))
    for _ in range(200):  # full speed toward +x then the wall
        t += 0.05
        c = f.filter(t, action(HOME + [10.0, 0, -10.0]))
        log.append(("command", t, c.position, c.rotation, c.gripper))
    assert audit(log, lim) == []
    assert np.isclose(log[-1][2][0], lim.workspace_max[0], atol=1e-3)  # it did reach the wall
    assert np.isclose(log[-1][2][2], lim.workspace_min[2], atol=1e-3)


finite = st.floats(-3, 3, allow_nan=False)
weird = st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e9, -1e9]))
raw_target = st.lists(weird, min_size=10, max_size=10).map(np.array)
near_target = st.tuples(st.lists(st.floats(-0.06, 0.06), min_size=3, max_size=3),
                        st.lists(st.floats(-1.5, 1.5), min_size=3, max_size=3)).map(
    lambda pr: np.concatenate([HOME + pr[0], matrix_to_rot6d(so3.exp(np.array(pr[1])) @ DOWN), [0.04]]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.one_of(raw_target, near_target), st.floats(-0.05, 0.2)), min_size=1, max_size=60))
def test_filter_property_any_target_sequence_is_within_limits(seq):
    lim = SafetyLimits()
    f = SafetyFilter(lim)
    t = 0.0
    a = f.anchor(t, HOME, DOWN, 0.08)
    log = [("anchor", t, a.position, a.rotation, a.gripper)]
    for values, dt in seq:
        t += dt
        try:
            c = f.filter(t, values)
        except RejectedTarget:
            continue
        log.append(("command", c.t, c.position, c.rotation, c.gripper))
    assert audit(log, lim) == []


# -- executor core on a simulated clock -----------------------------------------------------------
def test_executor_follows_stream_then_holds_then_stops():
    ex, robot, clock = make_executor(stop_after_s=0.5, n_exec=8)
    target = HOME + [0.03, 0.02, -0.02]
    for _k in range(60):  # 3 s of 20 Hz chunks, all pointing at one target
        ex.submit_chunk(np.stack([action(target)] * 32), clock.ns() - 30 * MS, 0.05, received_mono=clock.t)
        ex.tick(clock.t)
        clock.t += 0.05
    assert ex.state == State.RUNNING
    np.testing.assert_allclose(robot.pose[:3, 3], target, atol=1e-4)
    last_chunk = clock.t - 0.05
    states = []
    while clock.t < last_chunk + 1.0:
        ex.tick(clock.t)
        states.append((clock.t - last_chunk, ex.state))
        clock.t += 0.01
    hold_at = next(t for t, s in states if s == State.HOLDING)
    stop_at = next(t for t, s in states if s == State.STOPPED)
    assert hold_at <= 8 * 0.05 + 0.05  # n_exec steps used up
    assert 0.5 <= stop_at <= 0.5 + 0.011 and robot.stops == 1
    assert audit(robot.log, ex.limits) == []


def streaming(real_time_factor: float = 1.0):
    """An executor (20 Hz command tick) that has anchored on a first chunk and sent its first command 10 ms
    later; -> (executor, robot, clock, the CommandEvents so far)."""
    ex, robot, clock = make_executor()
    robot.real_time_factor = real_time_factor
    events = []
    ex.on_command = events.append
    ex.submit_chunk(line_chunk(HOME, [0.0, 0.0, 0.0]), clock.ns(), 0.05, received_mono=clock.t)
    ex.tick(clock.t)  # anchors on the measured pose
    clock.t += 0.01
    ex.tick(clock.t)  # the first command
    return ex, robot, clock, events


def test_a_new_chunk_retargets_franky_before_the_next_control_tick():
    ex, robot, clock, events = streaming()  # 20 Hz command tick: a plain wait would act 50 ms after the last command
    sent = [e for e in robot.log if e[0] == "command"]
    assert len(sent) == 1
    # a chunk 5 ms after that command: not before franky's safe re-target gap (20 ms), then at once
    clock.t += 0.005
    ex.submit_chunk(line_chunk(HOME, [0.05, 0.0, 0.0]), clock.ns(), 0.05, received_mono=clock.t)
    ex.tick(clock.t)
    assert len([e for e in robot.log if e[0] == "command"]) == 1
    clock.t += 0.016
    ex.tick(clock.t)  # 21 ms after the last command, 29 ms before the next control tick
    assert len([e for e in robot.log if e[0] == "command"]) == 2
    # the trace's split of that wait: 14 ms of franky's spacing (19 ms after the last command), 2 ms more for
    # the control thread; a chunk arriving after the spacing has run out waits for nothing but the thread
    first, retarget = events[0], events[1]
    assert retarget.first_of_chunk and retarget.chunk_received_ns == pytest.approx(first.t_ns + 5 * MS, abs=1e3)
    assert retarget.retarget_allowed_ns == pytest.approx(first.t_ns + 19 * MS, abs=1e3)
    assert retarget.t_ns == pytest.approx(first.t_ns + 21 * MS, abs=1e3)
    # then the command tick again: nothing new until 50 ms after the re-target
    clock.t += 0.03
    ex.tick(clock.t)
    assert len([e for e in robot.log if e[0] == "command"]) == 2
    clock.t += 0.02
    ex.tick(clock.t)
    assert len([e for e in robot.log if e[0] == "command"]) == 3
    clock.t += 0.04  # 40 ms after the last command
    ex.submit_chunk(line_chunk(HOME, [0.1, 0.0, 0.0]), clock.ns(), 0.05, received_mono=clock.t)
    ex.tick(clock.t)
    assert events[-1].first_of_chunk and events[-1].retarget_allowed_ns == events[-1].chunk_received_ns
    assert audit(robot.log, ex.limits) == []


def test_a_chunk_held_back_by_a_slow_robot_clock_goes_when_that_gap_closes_not_at_the_next_tick():
    """franky-sim below real time: franky's re-target gap, counted on the robot's own clock, outlasts the wall
    clock's. The control thread looks again when that gap can first have closed (the robot's clock runs no faster
    than the wall clock), not at its next tick (8 ms of the sim graph's 28 ms to a franky command at p50, before):
    the re-target goes out within a few wake-ups of the robot's gap, and the trace counts the wait as franky's
    spacing, not as the thread's."""
    ex, robot, clock, events = streaming(real_time_factor=0.8)
    robot_first = ex.latest.robot_time_s
    clock.t += 0.005
    ex.submit_chunk(line_chunk(HOME, [0.05, 0.0, 0.0]), clock.ns(), 0.05, received_mono=clock.t)
    next_tick, wakes = clock.t + 1.0, 0  # a tick far off: only the wake-up rule can send the re-target
    while len(events) == 1 and wakes < 10:
        ex.tick(clock.t)
        at = ex.next_wake(next_tick, clock.t)
        assert at > clock.t  # never a busy loop
        clock.t, wakes = at, wakes + 1
    assert len(events) == 2 and wakes <= 6, (len(events), wakes)
    retarget = events[1]
    assert ex.latest.robot_time_s - robot_first >= RETARGET_MIN_S - RETARGET_SLACK_S  # the robot's gap held
    # wall: the gap at 0.8 of real time is 25 ms; the wake-ups close in on it from below
    assert retarget.t_ns - events[0].t_ns <= (RETARGET_MIN_S / 0.8 + 0.002) * 1e9
    # franky's spacing ended when the robot's clock passed its gap (19 ms of it at 0.8: 23.75 ms of wall time);
    # the thread's share is what its last wake-up overshot, not a tick
    assert retarget.retarget_allowed_ns == pytest.approx(events[0].t_ns + 23.75 * MS, abs=1e4)
    assert retarget.t_ns - retarget.retarget_allowed_ns <= 0.002 * 1e9
    assert audit(robot.log, ex.limits) == []


@pytest.mark.parametrize("real_time_factor", [1.0, 0.3])
def test_franky_is_retargeted_no_faster_than_its_safe_rate_in_its_own_time(real_time_factor):
    """A robot clock slowed to 0.3 of the wall clock (franky-sim on a busy machine) still gets its targets at
    least RETARGET_MIN_S of its own time apart; a robot on the wall clock gets them at the full rate."""
    ex, robot, clock = make_executor(command_rate_hz=50.0)
    robot.real_time_factor = real_time_factor
    robot_times = []
    ex.on_command = lambda c: robot_times.append(ex.latest.robot_time_s)
    for k in range(400):  # 2 s: a fresh chunk every 10 ms, control ticks every 5 ms
        if k % 2 == 0:
            ex.submit_chunk(line_chunk(HOME, [0.02, 0.0, 0.0]), clock.ns(), 0.05, received_mono=clock.t)
        ex.tick(clock.t)
        clock.t += 0.005
    gaps = np.diff(robot_times)
    assert gaps.min() >= RETARGET_MIN_S - RETARGET_SLACK_S
    assert len(robot_times) >= 0.9 * 2.0 * real_time_factor / RETARGET_MIN_S
    assert audit(robot.log, ex.limits) == []


def test_executor_estop_rejects_chunks_until_released():
    ex, robot, clock = make_executor()
    ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), clock.ns(), 0.05, received_mono=clock.t)
    ex.tick(clock.t)
    ex.set_estop(True)
    clock.t += 0.05
    ex.tick(clock.t)
    assert ex.state == State.ESTOP and robot.stops == 1
    with pytest.raises(ChunkRejected, match="e-stop"):
        ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), clock.ns(), 0.05)
    ex.set_estop(False)
    clock.t += 0.05
    ex.tick(clock.t)
    assert ex.state == State.IDLE
    ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), clock.ns(), 0.05, received_mono=clock.t)
    for _ in range(2):  # anchor, then the first command
        ex.tick(clock.t)
        clock.t += 0.05
    assert ex.state == State.RUNNING


@pytest.mark.parametrize("hold", [False, True])
def test_homing_opens_the_hand_and_refuses_plans_of_the_scene_before(hold):
    ex, robot, clock = make_executor(hold_after_home=hold)
    ex.monotonic = lambda: clock.t  # the homing timeout on the test's clock
    robot.poll = lambda: False  # the home motion ends at once
    grasping = [True]
    robot.wait_gripper = lambda timeout: not grasping[0]
    robot.width = 0.0  # the last episode ended with the hand closed, its grasp still running
    ex.request_home()
    ex.tick(clock.t)
    assert ex.state == State.HOMING
    clock.t += 0.01
    ex.tick(clock.t)
    assert ex.state == State.HOMING and robot.width == 0.0  # the running grasp finishes first
    grasping[0] = False
    clock.t += 0.01
    homed_ns = clock.ns()
    ex.tick(clock.t)
    assert ex.state == State.IDLE and robot.width == GRIPPER_OPEN  # an episode starts with the hand open
    clock.t += 0.05
    if not hold:
        with pytest.raises(ChunkRejected, match="before the arm was homed"):  # it saw the arm before homing
            ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), homed_ns - 5 * MS, 0.05)
    else:  # the scene is being set up: nothing is taken until the episode starts
        with pytest.raises(ChunkRejected, match="waiting for an episode start"):
            ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), clock.ns(), 0.05)
        clock.t += 0.05
        start_ns = clock.ns()
        ex.start_episode()
        with pytest.raises(ChunkRejected, match="episode started"):  # the scene as it was before the start
            ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), start_ns - 5 * MS, 0.05)
    ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), clock.ns(), 0.05, received_mono=clock.t)
    for _ in range(2):  # anchor, then the first command
        ex.tick(clock.t)
        clock.t += 0.05
    assert ex.state == State.RUNNING and ex.counters["commands"] >= 1


def test_an_episode_start_sent_while_homing_counts_once_homing_ends():
    ex, robot, clock = make_executor(hold_after_home=True)
    ex.monotonic = lambda: clock.t
    moving = [True]
    robot.poll = lambda: moving[0]
    ex.request_home()
    ex.tick(clock.t)
    clock.t += 0.05
    ex.start_episode()  # the operator pressed start before the arm got home
    ex.tick(clock.t)
    assert ex.state == State.HOMING
    moving[0] = False
    clock.t += 0.05
    homed_ns = clock.ns()
    ex.tick(clock.t)
    assert ex.state == State.IDLE and ex.message == "homed"  # no hold: the start is in
    with pytest.raises(ChunkRejected, match="before the arm was homed"):
        ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), homed_ns - 5 * MS, 0.05)
    ex.submit_chunk(line_chunk(HOME, [0.05, 0, 0]), homed_ns, 0.05, received_mono=clock.t)
    # a second homing needs a start of its own
    ex.request_home()
    ex.tick(clock.t)
    clock.t += 0.05
    ex.tick(clock.t)
    assert ex.state == State.IDLE and ex.message == "homed: waiting for an episode start"


def adversarial_chunk(rng: np.random.Generator, now_ns: int, pose: np.ndarray, last_stamp: int):
    """A chunk from a broken/hostile policy: NaN, huge jumps, out-of-box, bad rotations, odd stamps."""
    h = int(rng.choice([1, 2, 8, 32, 40]))
    kind = rng.integers(0, 9)  # 0, 7, 8: plausible
    base = pose + rng.normal(0, 0.05, 3)
    rot = so3.exp(rng.normal(0, 0.5, 3)) @ DOWN  # tilted up to ~1.5 rad: often beyond the orientation limit
    acts = np.stack([action(base + rng.normal(0, 0.01, 3) * i, rot) for i in range(h)])
    if kind == 1:
        acts[rng.integers(0, h), rng.integers(0, 10)] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == 2:
        acts[:, :3] += rng.normal(0, 5.0, 3)  # metres away
    elif kind == 3:
        acts[:, :3] = rng.uniform(-2, 2, (h, 3))  # anywhere, mostly out of the box
    elif kind == 4:
        acts[:, 3:9] = rng.normal(0, 1, (h, 6)) * rng.choice([1.0, 0.0, 1e-9])  # random / degenerate rotations
    elif kind == 5:
        acts[:, 9] = rng.uniform(-1, 1, h)  # gripper out of range
    elif kind == 6:
        acts += rng.normal(0, 1e3, acts.shape)  # garbage
    stamp_kind = rng.choice(6, p=[0.55, 0.1, 0.1, 0.1, 0.05, 0.1])
    stamp = {0: now_ns - int(rng.uniform(0, 0.2) * 1e9), 1: last_stamp - int(rng.uniform(0, 1) * 1e9),
             2: now_ns + int(rng.uniform(0, 2) * 1e9), 3: now_ns - int(rng.uniform(1, 5) * 1e9),
             4: last_stamp, 5: now_ns - 20 * MS}[int(stamp_kind)]
    dt = float(rng.choice([0.05] * 6 + [0.0, -0.05, np.nan, 0.01, 0.2]))
    return acts, stamp, dt
