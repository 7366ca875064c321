"""One closed-loop episode in the sim: home, randomise, then observe -> act every STEP_DT.

The loop is paced by SIM time (SimWorld.wait_until), so a demonstration has exactly STEP_DT between
steps however loaded the machine is (franky-sim's real-time factor varies, 0.4-0.9 on 2 cores), and the
physics the policy faces is the one the expert faced. The robot is control.FrankyRobot, the adapter the
executor node drives. Scripted experts (privileged object state) re-target it directly, as a teleoperator
does; a policy runs the deployed path: runtime.PolicyStep -> control.Executor (scheduler, blending,
safety filter, watchdog) -> FrankyRobot, with the sim clock in place of the wall clock.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields

import cv2
import numpy as np

from flow2one.control.config import ExecutorConfig
from flow2one.control.executor import Executor, State
from flow2one.control.franky_robot import FrankyRobot, RobotError, RobotStateSample
from flow2one.control.plan import ChunkRejected
from flow2one.control.safety import SafeCommand
from flow2one.geometry import matrix_to_quat, rot6d_to_matrix
from flow2one.runtime.policy_step import Chunk, PolicyStep
from flow2one.sim.cameras import SimCameras
from flow2one.sim.experts import Expert
from flow2one.sim.rig import SimRig
from flow2one.sim.scene import HOME_Q
from flow2one.sim.world import SimWorld, WorldStopped
from flow2one.spec import ACTION_DIM, GRIPPER_OPEN, STEP_DT

POST_SUCCESS_S = 0.3  # keep recording briefly after success so demos end at rest
HOME_SPEED = 0.3  # of the joint limits: the start of every episode, not part of what is measured
HOME_TOL_RAD = 2e-3  # per joint: home reached


def home(robot: FrankyRobot, q: tuple[float, ...] = HOME_Q, timeout: float = 60.0, attempts: int = 3) -> None:
    """Joint move to `q` with the gripper open: the start of every episode. Bounded waits throughout,
    because on an overloaded machine franky-sim can run at a fraction of real time; a libfranka error on
    the way (a UDP read timing out on a starved machine) is recovered from and the move started again, and so
    is a move that stalls (franky-sim has left a home motion "in control" without moving after a planner error)."""
    for attempt in range(attempts):
        try:
            robot.stop(timeout)
            if not robot.wait_gripper(timeout):
                raise TimeoutError(f"gripper command did not finish within {timeout} s")
            robot.set_gripper(GRIPPER_OPEN)
            robot.start_home(tuple(q), HOME_SPEED)
            end = time.monotonic() + timeout
            # an asynchronous motion is not "in control" at once: wait for the joints, not only the motion
            while robot.poll() or np.abs(robot.read_state().q - np.asarray(q)).max() > HOME_TOL_RAD:
                if time.monotonic() > end:
                    raise TimeoutError(f"arm did not reach home within {timeout} s (is franky-sim stepping?)")
                time.sleep(0.01)
            break
        except (RobotError, TimeoutError):
            if attempt == attempts - 1:
                raise
            robot.recover()  # the next attempt stops whatever motion is left first
            time.sleep(0.1)
    if not robot.wait_gripper(timeout):
        raise TimeoutError(f"gripper did not open within {timeout} s")


class Observer:
    """The observation of one control step, rendered lazily (only what the controller asks for)."""

    def __init__(self, world: SimWorld, robot: FrankyRobot, cams: SimCameras | None, cloud) -> None:
        self.world, self.robot, self.cams, self.cloud = world, robot, cams, cloud
        self.t = 0.0

    def step(self, t: float, sim_t: float) -> None:
        """t: episode time; sim_t: the step's time on the sim clock (the executor's clock)."""
        self.t, self.sim_t = t, sim_t
        self.state: RobotStateSample = self._read()
        self.proprio = self.state.proprio()
        self.T_base_ee = self.state.ee
        self.info = self.world.info()
        self._images: tuple[list, list] | None = None
        self._points: np.ndarray | None = None

    def _read(self, attempts: int = 5) -> RobotStateSample:
        """A state read, retried after error recovery: on a starved machine a UDP read of libfranka times
        out now and then, or returns garbage (an overflowing gripper width) right after a lost link; a link
        that stays broken raises (run_episode_safe then starts a new world)."""
        for i in range(attempts + 1):
            try:
                state = self.robot.read_state()
                if not np.isfinite(state.proprio()).all():  # garbage from a link that just broke
                    raise RobotError(f"non-finite robot state {state.proprio()}", "communication")
                return state
            except RobotError:
                if i == attempts:
                    raise
                self.robot.recover()
                time.sleep(0.05)
        raise AssertionError("unreachable")

    @property
    def stamp_ns(self) -> int:
        return round(self.sim_t * 1e9)

    def images(self, rgb: bool = True) -> tuple[list, list]:
        """(rgbs, depths) per camera, from a snapshot taken now."""
        if self.cams is None:
            raise RuntimeError("this rollout has no cameras")
        if self._images is None or (rgb and self._images[0][0] is None):
            self._images = self.cams.render(self.world.snapshot(), rgb=rgb, depth=True)
        return self._images

    @property
    def points_made(self) -> np.ndarray | None:
        """This step's cloud if someone asked for it (a view logs it without computing one)."""
        return self._points

    def points(self) -> np.ndarray:
        if self.cloud is None:
            raise RuntimeError("this rollout has no point-cloud pipeline")
        if self._points is None:
            self._points = self.cloud(self.images(rgb=False)[1], self.T_base_ee)
        return self._points


class Controller:
    """Interface: `reset(world, robot, rng) -> mode (-1 unknown)`; `act(obs)` commands the robot and
    returns the action it commanded (None when it sent nothing)."""

    robot_errors = 0  # franky errors seen (planner errors of asynchronous motions), recovered from

    def reset(self, world: SimWorld, robot: FrankyRobot, rng: np.random.Generator) -> int:
        return -1

    def act(self, obs: Observer) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the controller holds (a policy thread)."""


def send_target(robot: FrankyRobot, action: np.ndarray, t: float) -> int:
    """Re-target the arm to `action` (10-D) without the executor (an expert is the operator here); a
    planner error of the previous motion is recovered from and the target sent again. -> errors seen."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (ACTION_DIM,) or not np.isfinite(a).all():
        raise ValueError(f"action must be {ACTION_DIM} finite numbers, got {a}")
    cmd = SafeCommand(t, a[:3].copy(), rot6d_to_matrix(a[3:9]), float(a[9]))
    try:
        robot.send(cmd)
        return 0
    except RobotError as exc:
        if not exc.recoverable:
            raise
        robot.recover()
        robot.send(cmd)
        return 1


class ExpertController(Controller):
    """The scripted expert drives the arm. With `dart_noise_m` > 0 (DART, Laskey et al. 2017) the position it
    sends is pushed off by a smooth random offset (an Ornstein-Uhlenbeck process of that stationary std per
    axis and `dart_tau_s` correlation time) while the clean expert target is returned as the label: the demos
    then hold states off the expert's path, each labelled with the way back. White noise per step would be
    smoothed away by franky's planner before the arm ever left the path.

    With `dart_clean_grasp` the offset gets no new noise while the expert is at its grasp (`Expert.at_grasp`)
    and fades with its correlation time, so the fingers close about where the label says they do: pushed off
    as it closes, the expert grasps from places its label does not show (results/replan/, twenty-fourth stop)."""

    def __init__(self, expert: Expert, dart_noise_m: float = 0.0, dart_tau_s: float = 0.5,
                 dart_clean_grasp: bool = False) -> None:
        if not (dart_noise_m >= 0.0 and dart_tau_s > 0.0):
            raise ValueError(f"dart_noise_m must be >= 0 and dart_tau_s > 0, got {dart_noise_m}, {dart_tau_s}")
        self.expert = expert
        self.robot_errors = 0
        self.dart_noise_m, self.dart_clean_grasp = dart_noise_m, dart_clean_grasp
        self._decay = float(np.exp(-STEP_DT / dart_tau_s))
        self._kick = dart_noise_m * float(np.sqrt(1.0 - self._decay ** 2))  # keeps the offset's std at dart_noise_m
        self._offset = np.zeros(3)

    def reset(self, world: SimWorld, robot: FrankyRobot, rng: np.random.Generator) -> int:
        self.robot, self._rng, self._offset = robot, rng, np.zeros(3)
        return self.expert.reset(world.task, world.info(), rng)

    def act(self, obs: Observer) -> np.ndarray:
        action = np.asarray(self.expert.act(obs.proprio, obs.info), dtype=np.float64)
        sent = action
        if self.dart_noise_m > 0.0:
            self._offset = self._decay * self._offset
            if not (self.dart_clean_grasp and self.expert.at_grasp()):
                self._offset += self._rng.normal(0.0, self._kick, 3)
            sent = action.copy()
            sent[:3] += self._offset
        self.robot_errors += send_target(self.robot, sent, obs.sim_t)
        return action


class PolicyController(Controller):
    """A policy run the way the deploy graph runs it, on the sim clock: the policy node's step
    (runtime.PolicyStep: observation assembly, M candidates, candidate choice) in its own thread, started
    at most `rate_hz` times per sim second, and the executor node's core (control.Executor) ticked every
    control step. Only the clock (sim time) and the threading differ from the nodes.

    Latency is kept in real-time terms: a chunk reaches the executor no earlier than its inference's wall
    time after its observation, in sim time (franky-sim runs slower than real time on a busy machine, RTF
    0.3-0.9 here, and the sim would otherwise see a 0.3 s inference as a 0.1 s one); a chunk whose
    inference outlasted `max_obs_age_s` is discarded as the node discards it. The executor ticks at its
    command rate (one tick per control step): the node's ticks in between only read and publish state.

    `camera_lag_steps` hands the step each control step's camera data (cloud, images) that many steps after
    its robot state, as a slow camera path does: a cloud 50 ms older than the robot state cost the shipped
    student 7 of 24 pick_place episodes (results/replan/, twelfth stop).
    """

    def __init__(self, step: PolicyStep, executor: ExecutorConfig, rate_hz: float | None = None,
                 max_obs_age_s: float = 0.25, camera_lag_steps: int = 0) -> None:
        if rate_hz is not None and not rate_hz > 0:
            raise ValueError(f"rate_hz must be positive (or None = unlimited), got {rate_hz}")
        if camera_lag_steps < 0:
            raise ValueError(f"camera_lag_steps must be >= 0, got {camera_lag_steps}")
        if abs(executor.command_rate_hz * STEP_DT - 1.0) > 1e-6:
            raise ValueError(f"the sim loop steps every {STEP_DT} s; executor command_rate_hz must be "
                             f"{1 / STEP_DT:g}, got {executor.command_rate_hz}")
        self.step, self.cfg = step, executor
        self.period_s = 0.0 if rate_hz is None else 1.0 / rate_hz
        self.max_obs_age_s, self.camera_lag_steps = max_obs_age_s, camera_lag_steps
        # (stamp, cloud, images) of the last camera_lag_steps + 1 control steps: the oldest is handed on
        self._camera: deque[tuple[int, np.ndarray | None, dict]] = deque(maxlen=camera_lag_steps + 1)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="policy")
        self._job: Future | None = None
        self.inference_s: list[float] = []
        self.rejected = self.stale = self.robot_errors = self.kept_plan = 0
        self.executor: Executor | None = None
        self.taken: tuple[np.ndarray, np.ndarray] | None = None  # (candidates (M, H, 10), chosen) for a view

    def reset(self, world: SimWorld, robot: FrankyRobot, rng: np.random.Generator) -> int:
        if self._job is not None:  # the previous episode's last inference
            self._job.exception()
            self._job = None
        if self.executor is not None:
            self.robot_errors += self.executor.counters["robot_errors"]
        self.step.reset()
        self._camera.clear()
        self._now = world.sim_time
        self.executor = Executor(self.cfg, robot, clock_ns=lambda: round(self._now * 1e9),
                                 monotonic=lambda: self._now)
        self._started = -np.inf  # sim time of the last published chunk's observation
        self._job_started = 0.0
        return -1

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    @property
    def errors_now(self) -> int:
        return self.robot_errors + (self.executor.counters["robot_errors"] if self.executor else 0)

    def feed(self, obs: Observer, with_points: bool) -> None:
        """Hand this step's inputs to the step's assembler, stamped with the step's sim time (the sim's
        topics carry the same data: executor state, the cloud of the cameras, the images); camera data
        camera_lag_steps steps late."""
        a, stamp, frame = self.step.assembler, obs.stamp_ns, self.step.assembler.base_frame
        a.set_pose(obs.T_base_ee[:3, 3], matrix_to_quat(obs.T_base_ee[:3, :3]), stamp, frame)
        a.set_gripper(("gripper_width",), np.array([obs.state.gripper_width]), stamp)
        if (with_points or self.camera_lag_steps) and not (self._camera and self._camera[-1][0] == stamp):
            self._camera.append((stamp, *self._camera_data(obs)))  # every step when lagged: a late one is exact
        if not with_points:
            return
        stamp, points, images = self._camera[0]
        if points is not None:
            a.set_points(points, stamp, frame)
        for (kind, cam), img in images.items():
            a.set_image(kind, cam, img, stamp)

    def _camera_data(self, obs: Observer) -> tuple[np.ndarray | None, dict[tuple[str, str], np.ndarray]]:
        """(cloud, {(kind, camera): image at the model's size}) of this step, for the model's inputs."""
        card = self.step.card
        points = obs.points() if "points" in card.inputs else None
        images = {}
        if card.image_inputs:
            rgbs, depths = obs.images(rgb="rgb" in card.image_inputs)
            names = [c.name for c in obs.cams.specs]
            for kind, views in (("rgb", rgbs), ("depth", depths)):
                if kind not in card.image_inputs:
                    continue
                h, w = card.inputs[kind][1:3]
                for cam in card.cameras:
                    img = views[names.index(cam)]
                    if img.shape[:2] != (h, w):  # the model's image size (nearest: depth stays metric)
                        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
                    images[(kind, cam)] = img
        return points, images

    def _take(self) -> None:
        """Publish the finished chunk (the node's rules) and hand it to the executor."""
        chunk, started = self._job.result()  # re-raises what the policy raised
        self._job = None
        self.inference_s.append(chunk.inference_s)
        if chunk.inference_s > self.max_obs_age_s:  # the node's check after inference, in real-time terms
            self.stale += 1
            return
        self._started = started
        if chunk.keeps_plan:  # as the node: not sent, the executor goes on with the plan
            self.kept_plan += 1
            return
        self.step.commit(chunk)
        self.taken = (chunk.candidates, chunk.actions)
        try:
            self.executor.submit_chunk(chunk.actions, chunk.stamp_ns, chunk.dt, received_mono=self._now)
        except ChunkRejected:
            self.rejected += 1

    def _infer(self, observation, started: float) -> tuple[Chunk, float]:
        return self.step.infer(observation), started

    def act(self, obs: Observer) -> np.ndarray | None:
        self._now = obs.sim_t
        sent = self.executor.counters["commands"]
        start = self._job is None and obs.sim_t - self._started >= self.period_s - 1e-9
        self.feed(obs, with_points=start or self.step.card.history_steps > 0)
        if self._job is not None and self._job.done() and (
                self._job.exception() is not None
                or obs.sim_t >= self._job_started + self._job.result()[0].inference_s - 1e-9):
            self._take()
            start = obs.sim_t - self._started >= self.period_s - 1e-9
            if start and self.step.card.history_steps == 0:
                self.feed(obs, with_points=True)
        if self._job is None and start:
            observation, why = self.step.assembler.assemble(obs.stamp_ns, self.max_obs_age_s)
            if observation is None:
                raise RuntimeError(f"the sim observation is incomplete: {why}")
            self._job_started = obs.sim_t
            self._job = self._pool.submit(self._infer, observation, obs.sim_t)
        self.executor.step(self._now)
        if self.executor.state is State.FAULT and self.executor.counters["robot_errors"]:
            # the robot link broke (a starved machine, not the policy): the episode again on a new world
            raise RobotError(f"executor fault: {self.executor.message}", "communication")
        last = self.executor.filter.last
        return last.action() if last is not None and self.executor.counters["commands"] > sent else None


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    failed: bool
    time_to_success: float | None
    mode: int  # what the task saw (e.g. which side of the pillar)
    mode_name: str
    chosen_mode: int  # what the controller intended (-1 for policies)
    steps: int
    duration: float  # sim seconds
    wall_s: float
    rtf: float  # sim time / wall time over the episode
    planner_errors: int
    reason: str = ""
    # Tasks with an event (pop_up): sim s from the event to the first command that heads for the goal it
    # revealed (Task.heads_for_goal); None: no such command, or no event.
    reaction_s: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def aborted(cls, world: SimWorld, seed: int, reason: str, wall_s: float) -> EpisodeResult:
        """An episode the robot connection could not finish (counted as a failure, never dropped)."""
        st = world.status()
        return cls(task=world.task.name, seed=seed, success=False, failed=True, time_to_success=None,
                   mode=st.mode, mode_name=st.mode_name, chosen_mode=-1, steps=0, duration=st.t, wall_s=wall_s,
                   rtf=st.t / max(wall_s, 1e-9), planner_errors=0, reason=reason)


def reaction_median(results: list[EpisodeResult]) -> tuple[int, float | None]:
    """How many episodes reacted to their event, and the median reaction over them (None: none did): the one
    reading of `reaction_s` that sim-eval's summary and Table I's cells share."""
    reactions = [r.reaction_s for r in results if r.reaction_s is not None]
    return len(reactions), float(np.median(reactions)) if reactions else None


def mode_rng(seed: int) -> np.random.Generator:
    """The generator an episode's controller draws its mode from: seeded by the episode, apart from the object
    randomisation (which `world.reset(seed)` draws), so a mode can be known without running the episode."""
    return np.random.default_rng([seed, 7])


def run_episode_safe(rig: SimRig, controller: Controller, seed: int, attempts: int = 3, **kw) -> EpisodeResult:
    """run_episode on a SimRig for long unattended runs: a libfranka failure or a timeout (a lost link on
    a starved machine) gets a new sim world and the episode again, up to `attempts` times; after that it
    counts as a failure (reason "error: ..."), never ending the whole run. An episode after one with
    planner errors starts on a new world too (SimRig.renew)."""
    if rig.troubled:
        rig.renew()
    for attempt in range(1, attempts + 1):
        w0 = time.perf_counter()
        try:
            result = run_episode(rig.world, rig.robot, controller, seed, cams=rig.cams, cloud=rig.cloud, **kw)
            rig.troubled = result.planner_errors > 0
            return result
        except (TimeoutError, RobotError, WorldStopped) as exc:
            reason = f"error: {type(exc).__name__}: {exc}"
            print(f"{rig.task} seed {seed}: robot link lost ({reason}); new sim world, attempt {attempt}/{attempts}",
                  file=sys.stderr)
            result = EpisodeResult.aborted(rig.world, seed, reason, time.perf_counter() - w0)
            rig.restart()
    return result


@dataclass
class Recording:
    """Per-step arrays of one episode (what sim-demos turns into an Episode)."""

    t: list[float] = field(default_factory=list)
    proprio: list[np.ndarray] = field(default_factory=list)
    action: list[np.ndarray] = field(default_factory=list)
    T_base_ee: list[np.ndarray] = field(default_factory=list)
    depth: list[list[np.ndarray]] = field(default_factory=list)
    rgb: list[list[np.ndarray]] = field(default_factory=list)
    info: list[dict] = field(default_factory=list)  # privileged object state: what an expert relabels from

    def clear(self) -> None:
        for f in fields(self):
            getattr(self, f.name).clear()


def run_episode(world: SimWorld, robot: FrankyRobot, controller: Controller, seed: int, *,
                cams: SimCameras | None = None, cloud=None, record: Recording | None = None,
                record_rgb: bool = False, max_time: float | None = None,
                frame_every: int = 0, frames: list[np.ndarray] | None = None,
                view: Callable[[Observer, Controller, np.ndarray], None] | None = None) -> EpisodeResult:
    """Run one episode; `record` collects demo arrays, `frames` every `frame_every`-th front-camera image
    (both emptied first: what they hold is this episode's, also when it is run again after an error);
    `view(obs, controller, action)` is called after each command (flow2one.view.sim_loop)."""
    if record is not None:
        record.clear()
    if frames is not None:
        frames.clear()
    home(robot)
    event = world.task.event_time(world.reset(seed))
    chosen = controller.reset(world, robot, mode_rng(seed))
    obs = Observer(world, robot, cams, cloud)
    limit = world.task.time_limit if max_time is None else max_time
    errors0, wall0 = _errors(controller), time.perf_counter()
    t0 = world.sim_time
    n_steps, post = int(np.ceil(limit / STEP_DT)), round(POST_SUCCESS_S / STEP_DT)
    done_at: int | None = None
    reaction: float | None = None
    k = 0
    for k in range(n_steps):
        if world.sim_time - t0 >= limit + STEP_DT and done_at is None:  # a slow policy gets no extra sim time
            break
        world.wait_until(t0 + k * STEP_DT)
        obs.step(k * STEP_DT, t0 + k * STEP_DT)
        action = controller.act(obs)
        if record is not None:
            rgbs, depths = obs.images(rgb=record_rgb)
            record.t.append(obs.t)
            record.proprio.append(obs.proprio)
            record.action.append(np.asarray(action, dtype=np.float32))
            record.T_base_ee.append(obs.T_base_ee)
            record.info.append(obs.info)  # a copy per step (Task.info)
            record.depth.append(depths)
            if record_rgb:
                record.rgb.append(rgbs)
        if frames is not None and frame_every and k % frame_every == 0:
            frames.append(obs.images(rgb=True)[0][0])
        if view is not None:
            view(obs, controller, action)
        if reaction is None and event is not None and action is not None and world.task.heads_for_goal(
                obs.info, action[:3]):
            reaction = obs.t - event
        st = world.status()
        if done_at is None and (st.success or st.failed):
            done_at = k
        if done_at is not None and k - done_at >= post:
            break
    st = world.status()
    wall = time.perf_counter() - wall0
    return EpisodeResult(task=world.task.name, seed=seed, success=st.success and not st.failed,
                         failed=st.failed, time_to_success=st.success_time, mode=st.mode, mode_name=st.mode_name,
                         chosen_mode=chosen, steps=k + 1, duration=world.sim_time - t0, wall_s=wall,
                         rtf=(world.sim_time - t0) / max(wall, 1e-9), planner_errors=_errors(controller) - errors0,
                         reason=st.reason or ("" if st.success else "time limit"), reaction_s=reaction)


def _errors(controller: Controller) -> int:
    return controller.errors_now if isinstance(controller, PolicyController) else controller.robot_errors
