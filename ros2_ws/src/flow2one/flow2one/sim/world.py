"""SimWorld: franky-sim's MuJoCo FR3 served over the libfranka protocol, plus a task and its cameras.

franky-sim steps MuJoCo at 1 kHz in its own thread, paced by the wall clock. Everything this module adds
to that thread is cheap (a counter per step; task logic every `task_period` of sim time; snapshot copies
on request), because the server's real-time factor is the budget the whole sim graph lives on
(docs/ENVIRONMENT_FACTS.md, franky-sim). Resets and snapshots are handed to the sim thread through requests
and served between two physics steps, so no other thread ever writes or half-reads MjData.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mujoco
import numpy as np

from flow2one.sim.cameras import Snapshot, camera_models
from flow2one.sim.scene import HOME_Q, CameraSpec, build_scene, default_cameras
from flow2one.sim.tasks import Task, TaskStatus, make_task

MAX_BEHIND_S = 0.05  # wall-clock pacing: debt beyond this is dropped (a starved machine runs slower than real time)


class WorldStopped(RuntimeError):
    """The world's server is not running (closed, or never started): its robot link is gone too."""


@dataclass
class WorldConfig:
    task: str = "reach_around"
    cameras: tuple[CameraSpec, ...] = field(default_factory=default_cameras)
    task_period: float = 0.005  # sim seconds between task updates (moving objects, success checks)
    realtime: float = 1.0  # franky-sim pacing: 1.0 = wall-clock 1 kHz
    # Hold sim time to the wall clock at `realtime` sim seconds per second (deadlines, see _serve_on_wall_clock)
    # instead of franky-sim's own pacing. For graphs whose nodes keep wall time (the sim graph); the
    # evaluations run on the sim clock and keep franky-sim's pacing, the setting of every result so far.
    wall_clock: bool = False
    host: str = ""  # loopback address to serve on (robot :1337, gripper :1338); "" = first free 127.x.y.z


class _Request:
    def __init__(self, kind: str, payload: object = None) -> None:
        self.kind, self.payload = kind, payload
        self.result: object = None
        self.done = threading.Event()


class SimWorld:
    """Context manager: build the scene, start the libfranka server, run task logic in the sim thread.

    `hostname` is what franky.Robot / franky.Gripper connect to. All public methods are thread-safe.
    """

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self.task: Task = make_task(self.config.task)
        self._requests: list[_Request] = []
        self._req_lock = threading.Lock()
        self._steps = 0
        self._time = 0.0
        self._task_every = max(1, round(self.config.task_period / 0.001))
        self._episode = 0
        self._sim = None
        self._server = None
        self._waiters: list[tuple[float, threading.Event]] = []
        self.hostname: str = ""

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self, before_serving: Callable[[], object] | None = None) -> SimWorld:
        """Build and serve the world; `before_serving` runs once the model is compiled and before franky-sim
        serves (warming the cameras up there keeps their first render from stalling a running motion)."""
        from franky_sim import SimulationServer
        from franky_sim.mujoco_simulator import MujocoSimulator

        if self._sim is not None:  # a second server would leave the first one's thread stepping until exit
            raise RuntimeError("SimWorld is started already (`with SimWorld(...)` starts it)")
        self._sim = MujocoSimulator(enable_visualization=False)
        self._sim.init()
        try:
            robot = self._sim.add_robot(initial_q=HOME_Q, initial_hand_width=0.08)
            build_scene(self._sim, self.config.cameras)
            self.task.add_objects(self._sim.worldbody)
            self._sim.register_post_step_callback(self._on_step)
            if self.config.host:
                self._server = SimulationServer(self._sim, hostname_candidates=[self.config.host])
            else:
                self._server = SimulationServer(self._sim)
            self._server.init()  # compiles the model and binds 127.x:1337/1338
            self.task.bind(self.model)
            self.hostname = robot.hostname
            if before_serving is not None:
                before_serving()
            if self.config.wall_clock:
                self._server.running = True
                self._server.async_thread = threading.Thread(target=self._serve_on_wall_clock, daemon=True,
                                                             name="franky-sim")  # cleanup() stops and joins it
                self._server.async_thread.start()
            else:
                self._server.run_async(realtime=self.config.realtime)
        except BaseException:
            self.close()
            raise
        return self

    def _serve_on_wall_clock(self) -> None:
        """franky-sim's loop sleeps 1 ms minus each step's time after it, and the sleep's overshoot adds up:
        the sim ran at 0.78 of real time in the sim graph (results/replan/README.md, eleventh stop), while
        the executor and policy nodes keep wall time, so every plan ran 1.3 times faster than the arm could
        follow. Stepping to deadlines on the wall clock holds the average rate;
        a sim that falls more than MAX_BEHIND_S behind (a starved machine) drops the debt rather than
        racing to repay it."""
        server, period = self._server, 0.001 / self.config.realtime
        deadline = time.perf_counter()
        while server.running:
            server.run_once(realtime=False)
            deadline += period
            wait = deadline - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            elif wait < -MAX_BEHIND_S:
                deadline = time.perf_counter()

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._sim is not None and self._sim.is_initialized and not self._sim.is_cleaned_up:
            self._sim.cleanup()
        self._sim = None
        with self._req_lock:
            for r in self._requests:
                r.done.set()
            self._requests.clear()

    def __enter__(self) -> SimWorld:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def model(self) -> mujoco.MjModel:
        return self._sim.model

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    # --- sim thread --------------------------------------------------------------------------------
    def _on_step(self, sim) -> None:
        self._steps += 1
        data = sim.data
        self._time = float(data.time)
        if self._requests:
            with self._req_lock:
                reqs, self._requests = self._requests, []
            for r in reqs:
                self._serve(r, data)
        if self._steps % self._task_every == 0 and self.task.params:
            self.task.update(sim.model, data)
        if self._waiters:
            now = self._time
            with self._req_lock:
                due = [w for w in self._waiters if w[0] <= now]
                self._waiters = [w for w in self._waiters if w[0] > now]
            for _, ev in due:
                ev.set()

    def _serve(self, r: _Request, data: mujoco.MjData) -> None:
        if r.kind == "snapshot":
            r.result = Snapshot.take(data, time.time_ns())
        elif r.kind == "reset":
            params, seed = r.payload
            self._episode += 1
            self.task.reset(self._sim.model, data, params, seed, self._episode)
        elif r.kind == "cameras":
            r.result = camera_models(self._sim.model, data, self.config.cameras)
        r.done.set()

    def _call(self, kind: str, payload: object = None, timeout: float = 30.0) -> object:
        if not self.running:
            raise WorldStopped("SimWorld is not running (use it as a context manager)")
        req = _Request(kind, payload)
        with self._req_lock:
            self._requests.append(req)
        if not req.done.wait(timeout):
            raise TimeoutError(f"sim thread did not serve '{kind}' within {timeout} s (is it stepping?)")
        return req.result

    # --- API ---------------------------------------------------------------------------------------
    def reset(self, seed: int) -> dict:
        """Randomise the task's objects from `seed` (robot homing is the arm's job); returns the params."""
        params = self.task.sample(np.random.default_rng(seed))
        self._call("reset", (params, int(seed)))
        return params

    def snapshot(self) -> Snapshot:
        return self._call("snapshot")

    def cameras(self) -> list:
        """CameraModels (calibration) of the sim cameras, from the live scene."""
        return self._call("cameras")

    def status(self) -> TaskStatus:
        return self.task.status()

    def info(self) -> dict[str, np.ndarray]:
        """Privileged task state (object poses, TCP) for scripted experts."""
        return self.task.info()

    @property
    def sim_time(self) -> float:
        return self._time

    def wait_until(self, sim_t: float, timeout: float = 60.0) -> None:
        """Block until the sim clock reaches `sim_t` (control loops pace on sim time, not wall time).

        The wall-clock timeout is generous: with both cores saturated franky-sim can fall to 0.17 of real
        time; a stopped server is detected separately."""
        if self._time >= sim_t:
            return
        ev = threading.Event()
        with self._req_lock:
            self._waiters.append((sim_t, ev))
        end = time.monotonic() + timeout
        while not ev.wait(0.5):
            if not self.running or not self._server.async_thread.is_alive():
                raise RuntimeError("franky-sim stopped stepping (its server thread ended)")
            if time.monotonic() > end:
                raise TimeoutError(f"sim time did not reach {sim_t:.3f} s within {timeout} s "
                                   f"(it is at {self._time:.3f} s)")


def write_calibration(path: str | Path | None = None) -> Path:
    """Write the sim cameras' calibration (from a freshly started scene) to calibration/sim.yaml."""
    from flow2one.perception.calibration import save_cameras
    from flow2one.sim.cameras import SIM_CALIBRATION

    path = Path(path) if path is not None else SIM_CALIBRATION
    with SimWorld() as world:
        save_cameras(path, world.cameras())
    return path


if __name__ == "__main__":  # python -m flow2one.sim.world [PATH]: regenerate calibration/sim.yaml
    import sys

    print(write_calibration(sys.argv[1] if len(sys.argv) > 1 else None))
