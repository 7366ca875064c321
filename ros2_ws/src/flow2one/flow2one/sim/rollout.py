"""One closed-loop episode in the sim: home, randomise, then observe -> act -> command every STEP_DT.

The loop is paced by SIM time (SimWorld.wait_until), so a demonstration has exactly STEP_DT between
steps however loaded the machine is (franky-sim's real-time factor varies, 0.4-0.9 on 2 cores), and the
physics the policy faces is the one the expert faced. Controllers are scripted experts (privileged
object state) or policies (obs -> (H, 10) chunk) executed with the executor's receding-horizon
Scheduler (flow2one.control.plan) on the sim clock.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from flow2one.runtime.handoff import select_candidate
from flow2one.sim.arm import FrankyArm
from flow2one.sim.cameras import SimCameras
from flow2one.sim.experts import Expert
from flow2one.sim.rig import SimRig
from flow2one.sim.world import SimWorld
from flow2one.spec import ACTION_DIM, STEP_DT

POST_SUCCESS_S = 0.3  # keep recording briefly after success so demos end at rest


class Observer:
    """The observation of one control step, rendered lazily (only what the controller asks for)."""

    def __init__(self, world: SimWorld, arm: FrankyArm, cams: SimCameras | None,
                 cloud: Callable[[list[np.ndarray], np.ndarray], np.ndarray] | None) -> None:
        self.world, self.arm, self.cams, self.cloud = world, arm, cams, cloud
        self.t = 0.0

    def step(self, t: float) -> None:
        self.t = t
        self.sim_t = self.world.sim_time  # absolute sim clock: the Scheduler's clock (t restarts per episode)
        self.proprio = self.arm.proprio()
        self.T_base_ee = self.arm.ee_pose()
        self.info = self.world.info()
        self._images: tuple[list, list] | None = None
        self._points: np.ndarray | None = None

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
    """Interface: `reset(world, rng) -> mode (-1 unknown)`; `act(obs, now) -> action (10,)`."""

    def reset(self, world: SimWorld, rng: np.random.Generator) -> int:
        return -1

    def act(self, obs: Observer) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the controller holds (a policy thread)."""


class ExpertController(Controller):
    def __init__(self, expert: Expert) -> None:
        self.expert = expert

    def reset(self, world: SimWorld, rng: np.random.Generator) -> int:
        return self.expert.reset(world.task, world.info(), rng)

    def act(self, obs: Observer) -> np.ndarray:
        return self.expert.act(obs.proprio, obs.info)


Policy = Callable[[dict[str, np.ndarray]], np.ndarray]  # unbatched obs -> (H, 10) chunk


class ChunkController(Controller):
    """A chunking policy run the way the deploy graph runs it: inference in its own thread, started again
    as soon as the previous chunk is out (at most once per control step), while the control loop keeps
    executing the newest chunk with the executor's Scheduler. A chunk is stamped with its observation's sim
    time, so the steps its inference latency consumed are skipped, and it runs out (hold) after `n_exec`
    steps if no newer one arrives. A slow policy therefore acts on old observations, as on the robot.
    Latency is kept in real-time terms: a chunk is handed over no earlier than its inference's wall time
    after its observation, in sim time. franky-sim runs slower than real time on a busy machine (RTF
    0.3-0.9 here), and the sim would otherwise see a 0.3 s inference as a 0.1 s one.
    A policy returning (M, H, 10) candidates is run like the policy node: the candidate continuing the
    executing chunk is kept, so frequent re-planning does not switch modes. Chunks the Scheduler refuses
    (e.g. stale on arrival) are counted in `rejected` and dropped, as the executor does.
    `encoder` (the policy's EncoderConfig; None = points + proprio) says which inputs to build; with a cloud
    history the cloud is computed every step, as the camera graph publishes it, for `points_prev`.
    `rate_hz` caps how often an inference starts (sim time), like the policy node's timer; None = as
    soon as the previous chunk is out."""

    def __init__(self, policy: Policy, n_exec: int = 8, blend_s: float = 0.1, encoder: Any = None,
                 rate_hz: float | None = None) -> None:
        from flow2one.control.plan import Scheduler

        if rate_hz is not None and not rate_hz > 0:
            raise ValueError(f"rate_hz must be positive (or None = unlimited), got {rate_hz}")
        self.policy = policy
        self.period_s = 0.0 if rate_hz is None else 1.0 / rate_hz
        self.use_rgb, self.use_depth = bool(encoder and encoder.use_rgb), bool(encoder and encoder.use_depth)
        self.history_steps = encoder.history_steps if encoder else 0
        self._make = lambda: Scheduler(n_exec, blend_s, max_future_s=0.5, default_dt_s=STEP_DT)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="policy")
        self._job: Future | None = None
        self.inference_s: list[float] = []
        self.rejected = 0
        self.taken: tuple[np.ndarray, np.ndarray] | None = None  # (candidates (M, H, 10), chosen) of the last chunk

    def reset(self, world: SimWorld, rng: np.random.Generator) -> int:
        if self._job is not None:  # the previous episode's last inference
            self._job.exception()
            self._job = None
        self.sched = self._make()
        self._prev: tuple[np.ndarray, int] | None = None
        self._clouds: deque[np.ndarray] = deque(maxlen=self.history_steps + 1)  # one per step, newest last
        self._started = -np.inf  # sim time of the last inference's observation
        return -1

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def observation(self, obs: Observer) -> dict[str, np.ndarray]:
        out = {"points": obs.points(), "proprio": obs.proprio}
        if self.history_steps:  # the first cloud until there is history, as in the training windows
            out["points_prev"] = self._clouds[0]
        if self.use_rgb or self.use_depth:
            rgbs, depths = obs.images(rgb=self.use_rgb)
            if self.use_rgb:
                out["rgb"] = np.stack(rgbs)
            if self.use_depth:
                out["depth"] = np.stack(depths)
        return out

    def _infer(self, observation: dict[str, np.ndarray], stamp: int) -> tuple[np.ndarray, int, int]:
        """-> (chunk, stamp, sim time ns at which a real-time robot would have it)."""
        w0 = time.perf_counter()
        chunk = np.asarray(self.policy(observation), dtype=np.float64)
        wall = time.perf_counter() - w0
        self.inference_s.append(wall)
        return chunk, stamp, stamp + int(wall * 1e9)

    def _ready(self, now_ns: int) -> bool:
        return self._job is not None and self._job.done() and (self._job.exception() is not None
                                                                or now_ns >= self._job.result()[2])

    def _take(self, now_ns: int) -> None:
        """Hand the finished chunk to the Scheduler (the executor's command tick picking up the newest)."""
        from flow2one.control.plan import ChunkRejected

        chunk, stamp, _ = self._job.result()  # re-raises what the policy raised
        self._job = None
        candidates = chunk
        if chunk.ndim == 3:  # select_candidate checks M >= 1
            prev, prev_stamp = self._prev if self._prev else (None, 0)
            chunk = chunk[select_candidate(chunk, stamp, STEP_DT, prev, prev_stamp, STEP_DT)[0]]
        self.taken = (candidates if candidates.ndim == 3 else chunk[None], chunk)
        if chunk.ndim != 2 or chunk.shape[1] != ACTION_DIM:
            raise ValueError(f"policy returned shape {chunk.shape}, expected (H, {ACTION_DIM}) or (M, H, "
                             f"{ACTION_DIM})")
        try:
            self.sched.submit(chunk, stamp, STEP_DT, now_ns)
            self._prev = (chunk, stamp)
        except ChunkRejected:
            self.rejected += 1

    def act(self, obs: Observer) -> np.ndarray:
        now = lambda: int(round(obs.world.sim_time * 1e9))  # noqa: E731
        if self.history_steps:
            self._clouds.append(obs.points())
        if self._ready(now()):
            self._take(now())
        if self._job is None and (self.sched.plan is None or obs.sim_t - self._started >= self.period_s - 1e-9):
            self._started = obs.sim_t
            self._job = self._pool.submit(self._infer, self.observation(obs), int(round(obs.sim_t * 1e9)))
        if self.sched.plan is None:  # nothing to execute yet: the robot waits for the first chunk
            if self._job.exception() is None:
                obs.world.wait_until(self._job.result()[2] / 1e9)
            self._take(now())
            if self.sched.plan is None:  # refused (e.g. stale on arrival): hold still, try again
                return obs.proprio
        target = self.sched.target(now(), int(STEP_DT * 1e9))
        if target is None:  # the chunk ran out before the next one: hold the last step
            target = self.sched.plan.actions[-1]
        return target


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def aborted(cls, world: SimWorld, seed: int, reason: str, wall_s: float) -> "EpisodeResult":
        """An episode the robot connection could not finish (counted as a failure, never dropped)."""
        st = world.status()
        return cls(task=world.task.name, seed=seed, success=False, failed=True, time_to_success=None,
                   mode=st.mode, mode_name=st.mode_name, chosen_mode=-1, steps=0, duration=st.t, wall_s=wall_s,
                   rtf=st.t / max(wall_s, 1e-9), planner_errors=0, reason=reason)


def run_episode_safe(rig: SimRig, controller: Controller, seed: int, attempts: int = 3, **kw) -> EpisodeResult:
    """run_episode on a SimRig for long unattended runs: a libfranka failure or a timeout (a lost link on
    a starved machine) gets a new sim world and the episode again, up to `attempts` times; after that it
    counts as a failure (reason "error: ..."), never ending the whole run. An episode after one with
    planner errors starts on a new world too (SimRig.renew)."""
    if rig.arm.planner_errors:
        rig.renew()
    for attempt in range(1, attempts + 1):
        w0 = time.perf_counter()
        try:
            return run_episode(rig.world, rig.arm, controller, seed, cams=rig.cams, cloud=rig.cloud, **kw)
        except (TimeoutError, *rig.arm.errors) as exc:
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

    def clear(self) -> None:
        for f in fields(self):
            getattr(self, f.name).clear()


def run_episode(world: SimWorld, arm: FrankyArm, controller: Controller, seed: int, *,
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
    arm.home()
    world.reset(seed)
    rng = np.random.default_rng([seed, 7])  # the mode draw, independent of the object randomisation
    chosen = controller.reset(world, rng)
    obs = Observer(world, arm, cams, cloud)
    limit = world.task.time_limit if max_time is None else max_time
    errors0, wall0 = arm.planner_errors, time.perf_counter()
    t0 = world.sim_time
    n_steps, post = int(np.ceil(limit / STEP_DT)), int(round(POST_SUCCESS_S / STEP_DT))
    done_at: int | None = None
    k = 0
    for k in range(n_steps):
        if world.sim_time - t0 >= limit + STEP_DT and done_at is None:  # a slow policy gets no extra sim time
            break
        world.wait_until(t0 + k * STEP_DT)
        obs.step(k * STEP_DT)
        action = controller.act(obs)
        arm.command(action)
        if record is not None:
            rgbs, depths = obs.images(rgb=record_rgb)
            record.t.append(obs.t)
            record.proprio.append(obs.proprio)
            record.action.append(np.asarray(action, dtype=np.float32))
            record.T_base_ee.append(obs.T_base_ee)
            record.depth.append(depths)
            if record_rgb:
                record.rgb.append(rgbs)
        if frames is not None and frame_every and k % frame_every == 0:
            frames.append(obs.images(rgb=True)[0][0])
        if view is not None:
            view(obs, controller, action)
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
                         rtf=(world.sim_time - t0) / max(wall, 1e-9), planner_errors=arm.planner_errors - errors0,
                         reason=st.reason or ("" if st.success else "time limit"))
