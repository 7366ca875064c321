"""The sim tasks: objects, seeded randomisation, success detection and which strategy (mode) was used.

Each task is multimodal on purpose, because that is what the generative policies are for:
- reach_around: reach a goal behind a pillar, passing it left or right; the average of the two modes
  drives straight into the pillar (a collision fails the episode);
- pick_place: pick either of two identical cubes and place it on the target pad;
- track: two pucks slide on the table; bring the gripper down onto either one and stay on it for a
  second; a policy that reacts late trails the puck and never holds on long enough.
- pop_up: two pucks pop up out of the table at a random moment, one on each side a few cm from where
  they usually do, and sink again 1.5 s later; come down onto either while it is up. Nothing in the scene
  tells when, so it tests reaction time (how late a policy sees the pop, plus its inference): what the
  track pucks' predictable motion let a slow policy make up for. Trained on alone (`flow2one reproduce --tasks pop_up`).

`update` runs in franky-sim's stepping thread (every few ms of sim time); `status`/`info` return copies,
so the control thread never reads MuJoCo data while it is being stepped.
"""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET
from abc import ABC, abstractmethod
from dataclasses import dataclass

import mujoco
import numpy as np

from flow2one.sim.scene import ROBOT_PREFIX, TCP_SITE

CUBE_HALF = 0.02  # 4 cm cubes: the FR3 hand opens to 8 cm


@dataclass
class TaskStatus:
    """What the task knows about the running episode (JSON-able; published on /flow2one/sim/task_status)."""

    task: str
    seed: int | None = None
    episode: int = 0
    t: float = 0.0  # sim seconds since reset
    success: bool = False
    failed: bool = False  # a failure that success can no longer undo (e.g. a collision)
    success_time: float | None = None
    mode: int = -1  # index into Task.modes, -1 until the behaviour shows a mode
    mode_name: str = ""
    reason: str = ""


@dataclass
class _Pose:
    pos: np.ndarray
    yaw: float = 0.0


def _yaw_quat(yaw: float) -> np.ndarray:
    """MuJoCo (w, x, y, z) quaternion of a rotation about z."""
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def _fmt(v) -> str:
    return " ".join(f"{float(x):.6g}" for x in v)


class Task(ABC):
    name: str = ""
    modes: tuple[str, ...] = ()
    time_limit: float = 10.0  # sim seconds an episode may take
    dynamic: bool = False  # objects move while the policy acts: where slow inference should cost success

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status = TaskStatus(self.name)
        self._info: dict[str, np.ndarray] = {}
        self.params: dict = {}
        self._t0 = 0.0

    # --- scene -------------------------------------------------------------------------------------
    @abstractmethod
    def add_objects(self, world: ET.Element) -> None:
        """Add this task's bodies to the worldbody (before the server starts)."""

    def bind(self, model: mujoco.MjModel) -> None:
        """Resolve names to ids once the model is compiled."""
        self._tcp = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, TCP_SITE)
        fingers = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, ROBOT_PREFIX + f"finger_joint{i}")
                   for i in (1, 2)]
        self._finger_qpos = [int(model.jnt_qposadr[j]) for j in fingers]

    # --- episode -----------------------------------------------------------------------------------
    @abstractmethod
    def sample(self, rng: np.random.Generator) -> dict:
        """Randomised initial state (JSON-able) for one episode."""

    def reset(self, model: mujoco.MjModel, data: mujoco.MjData, params: dict, seed: int | None,
              episode: int) -> None:
        """Place the objects (sim thread) and clear the episode status."""
        self.params = params
        self._t0 = float(data.time)
        self._place(model, data, params)
        with self._lock:
            self._status = TaskStatus(self.name, seed=seed, episode=episode)
        mujoco.mj_forward(model, data)  # object poses (xpos) must reflect the new placement before judging
        self.update(model, data)

    @abstractmethod
    def _place(self, model: mujoco.MjModel, data: mujoco.MjData, params: dict) -> None: ...

    def event_time(self, params: dict) -> float | None:
        """Episode time of an event nothing before it predicts (recorded with demos), or None."""
        return None

    def heads_for_goal(self, info: dict[str, np.ndarray], target: np.ndarray) -> bool:
        """Whether a commanded target position (base frame) heads for a goal the event revealed: the first
        such command after the event times a policy's reaction. Tasks without an event never say so."""
        return False

    def update(self, model: mujoco.MjModel, data: mujoco.MjData) -> None:
        """Advance moving objects, then judge success/mode (sim thread)."""
        t = float(data.time) - self._t0
        self._animate(data, t)
        tcp = data.site_xpos[self._tcp].copy()
        width = float(sum(data.qpos[a] for a in self._finger_qpos))
        info = self._observe(model, data, t, tcp, width)
        with self._lock:
            st = self._status
            st.t = t
            self._judge(st, model, data, t, tcp, width, info)
            if st.success and st.success_time is None:
                st.success_time = t
            if st.mode >= 0:
                st.mode_name = self.modes[st.mode]
            info.update(tcp=tcp, gripper_width=np.array(width), t=np.array(t))
            self._info = info

    def _animate(self, data: mujoco.MjData, t: float) -> None:
        """Move mocap objects (dynamic tasks)."""

    @abstractmethod
    def _observe(self, model, data, t: float, tcp: np.ndarray, width: float) -> dict[str, np.ndarray]:
        """Privileged object state for the scripted expert."""

    @abstractmethod
    def _judge(self, st: TaskStatus, model, data, t: float, tcp: np.ndarray, width: float,
               info: dict[str, np.ndarray]) -> None:
        """Update success / failure / mode in `st`."""

    def status(self) -> TaskStatus:
        with self._lock:
            return TaskStatus(**vars(self._status))

    def info(self) -> dict[str, np.ndarray]:
        with self._lock:
            return {k: np.array(v) for k, v in self._info.items()}


def _free_body(world: ET.Element, name: str, half: float, rgba: str, mass: float = 0.05) -> None:
    body = ET.SubElement(world, "body", name=name, pos=f"0.5 0 {half}")
    ET.SubElement(body, "freejoint", name=name + "_joint")
    ET.SubElement(body, "geom", name=name, type="box", size=_fmt([half] * 3), rgba=rgba, mass=str(mass),
                  friction="1.5 0.01 0.001", condim="4")


def _pucks(world: ET.Element, names: tuple[str, ...], z: float, rgba: str) -> None:
    """Mocap pucks (6 cm across, 2 cm high), visual only: the tasks judge contact themselves."""
    for name in names:
        body = ET.SubElement(world, "body", name=name, mocap="true", pos=f"0.5 0 {z}")
        ET.SubElement(body, "geom", name=name, type="cylinder", size="0.03 0.01", rgba=rgba, contype="0",
                      conaffinity="0")


def _mocap_ids(model, names: tuple[str, ...]) -> list[int]:
    return [int(model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n)]) for n in names]


def _set_free(model, data, name: str, pos, yaw: float = 0.0) -> None:
    j = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name + "_joint")
    a, v = int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])
    data.qpos[a:a + 3] = pos
    data.qpos[a + 3:a + 7] = _yaw_quat(yaw)
    data.qvel[v:v + 6] = 0.0


class ReachAround(Task):
    """Reach the ball behind the pillar, low over the table: pass the pillar on the left (+y) or right (-y).

    The pillar is lower than the arm's forearm but higher than the hand's path, so the arm may reach over
    it while the hand has to go around it; the mean of the two ways around drives into it.
    """

    name = "reach_around"
    modes = ("left", "right")
    time_limit = 8.0
    PILLAR_HALF = (0.03, 0.06, 0.11)
    GOAL_TOL = 0.03
    COLLISION_BODIES = ("hand", "left_finger", "right_finger", "fr3_link7", "fr3_link6", "fr3_link5")

    def add_objects(self, world: ET.Element) -> None:
        body = ET.SubElement(world, "body", name="pillar", mocap="true", pos="0.47 0 0.11")
        # Visual only (contype 0): the robot is never physically stopped; touching it is judged instead,
        # which keeps franky-sim's controller away from contact-induced instability.
        ET.SubElement(body, "geom", name="pillar", type="box", size=_fmt(self.PILLAR_HALF),
                      rgba="0.8 0.3 0.2 1", contype="0", conaffinity="0")
        goal = ET.SubElement(world, "body", name="goal", mocap="true", pos="0.62 0 0.12")
        ET.SubElement(goal, "geom", name="goal", type="sphere", size="0.02", rgba="0.2 0.8 0.2 1",
                      contype="0", conaffinity="0")

    def bind(self, model) -> None:
        super().bind(model)
        self._pillar_geom = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "pillar")
        self._pillar_mocap = int(model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "pillar")])
        self._goal_mocap = int(model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "goal")])
        bodies = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, ROBOT_PREFIX + b) for b in self.COLLISION_BODIES}
        self._robot_geoms = [g for g in range(model.ngeom)
                             if model.geom_bodyid[g] in bodies and model.geom_contype[g] != 0]

    def sample(self, rng: np.random.Generator) -> dict:
        return {
            "pillar": [0.47 + rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02), self.PILLAR_HALF[2]],
            "goal": [0.62 + rng.uniform(-0.02, 0.03), rng.uniform(-0.04, 0.04), 0.12 + rng.uniform(-0.02, 0.02)],
        }

    def _place(self, model, data, params) -> None:
        data.mocap_pos[self._pillar_mocap] = params["pillar"]
        data.mocap_pos[self._goal_mocap] = params["goal"]

    def _observe(self, model, data, t, tcp, width):
        return {"pillar": data.mocap_pos[self._pillar_mocap].copy(), "goal": data.mocap_pos[self._goal_mocap].copy()}

    def collides(self, model, data) -> bool:
        return any(mujoco.mj_geomDistance(model, data, self._pillar_geom, g, 0.02, None) < 0.0
                   for g in self._robot_geoms)

    def _judge(self, st, model, data, t, tcp, width, info) -> None:
        pillar = info["pillar"]
        if st.mode < 0 and abs(tcp[0] - pillar[0]) < self.PILLAR_HALF[0] + 0.05:
            st.mode = 0 if tcp[1] > pillar[1] else 1
        if not st.failed and self.collides(model, data):
            st.failed, st.reason = True, "collision with the pillar"
        if not st.failed and not st.success and np.linalg.norm(tcp - info["goal"]) < self.GOAL_TOL:
            st.success = True


class PickPlace(Task):
    """Pick either of two identical cubes and put it on the target pad."""

    name = "pick_place"
    modes = ("left_cube", "right_cube")
    time_limit = 14.0
    PAD_HALF = 0.05
    PAD_TOP = 0.01  # a 1 cm slab, so point clouds (cropped above the table) show where it is
    CUBES = ("cube_left", "cube_right")

    def add_objects(self, world: ET.Element) -> None:
        for name in self.CUBES:
            _free_body(world, name, CUBE_HALF, "0.2 0.4 0.9 1")
        pad = ET.SubElement(world, "body", name="pad", mocap="true", pos=f"0.38 0 {self.PAD_TOP / 2}")
        ET.SubElement(pad, "geom", name="pad", type="box", rgba="0.9 0.8 0.1 1",
                      size=f"{self.PAD_HALF} {self.PAD_HALF} {self.PAD_TOP / 2}")

    def bind(self, model) -> None:
        super().bind(model)
        self._cube_bodies = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, c) for c in self.CUBES]
        self._pad_mocap = int(model.body_mocapid[mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "pad")])

    def sample(self, rng: np.random.Generator) -> dict:
        x = 0.52 + rng.uniform(-0.03, 0.03, 2)
        y = np.array([1.0, -1.0]) * (0.14 + rng.uniform(-0.03, 0.03, 2))
        return {
            "cubes": [[float(x[i]), float(y[i]), CUBE_HALF] for i in range(2)],
            "yaw": [float(v) for v in rng.uniform(-0.15, 0.15, 2)],
            "pad": [0.36 + rng.uniform(-0.02, 0.02), rng.uniform(-0.03, 0.03), self.PAD_TOP / 2],
        }

    def _place(self, model, data, params) -> None:
        for name, pos, yaw in zip(self.CUBES, params["cubes"], params["yaw"]):
            _set_free(model, data, name, pos, yaw)
        data.mocap_pos[self._pad_mocap] = params["pad"]

    def _observe(self, model, data, t, tcp, width):
        return {"cubes": np.stack([data.xpos[b].copy() for b in self._cube_bodies]),
                "pad": data.mocap_pos[self._pad_mocap].copy()}

    def _judge(self, st, model, data, t, tcp, width, info) -> None:
        cubes, pad = info["cubes"], info["pad"]
        for i, c in enumerate(cubes):
            if st.mode < 0 and c[2] > CUBE_HALF + 0.02:  # the first cube lifted names the mode
                st.mode = i
        on_pad = [i for i, c in enumerate(cubes) if np.all(np.abs(c[:2] - pad[:2]) < self.PAD_HALF)
                  and c[2] < self.PAD_TOP + CUBE_HALF + 0.01]
        # Placed = resting on the pad and let go (fingers open, TCP lifted away from it).
        released = width > 2 * CUBE_HALF + 0.01 and all(np.linalg.norm(tcp - cubes[i]) > 0.05 for i in on_pad)
        if on_pad and released and not st.success:
            st.success = True
            if st.mode < 0:
                st.mode = on_pad[0]


class Track(Task):
    """Two pucks slide back and forth (up to ~0.11 m/s); stay over either one for HOLD seconds."""

    name = "track"
    modes = ("left_puck", "right_puck")
    dynamic = True
    time_limit = 10.0
    HOLD = 1.5
    XY_TOL = 0.03  # the puck's radius: the TCP is over the puck
    Z_MAX = 0.09  # TCP height above the table while "on" a puck
    PUCKS = ("puck_left", "puck_right")

    def __init__(self) -> None:
        super().__init__()
        self._on_since: float | None = None

    def add_objects(self, world: ET.Element) -> None:
        _pucks(world, self.PUCKS, 0.01, "0.7 0.2 0.8 1")

    def bind(self, model) -> None:
        super().bind(model)
        self._mocap = _mocap_ids(model, self.PUCKS)

    def sample(self, rng: np.random.Generator) -> dict:
        pucks = []
        for side in (1.0, -1.0):
            ang = rng.uniform(0, np.pi)
            pucks.append({
                "center": [0.5 + rng.uniform(-0.03, 0.03), side * (0.16 + rng.uniform(-0.02, 0.02)), 0.01],
                "dir": [float(np.cos(ang)), float(np.sin(ang)), 0.0],
                "amp": float(rng.uniform(0.035, 0.05)),
                "omega": float(2 * np.pi / rng.uniform(2.8, 3.6)),
                "phase": float(rng.uniform(0, 2 * np.pi)),
            })
        return {"pucks": pucks}

    @staticmethod
    def puck_state(p: dict, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Position and velocity of a puck at episode time t (the motion law the expert may extrapolate)."""
        c, d = np.asarray(p["center"]), np.asarray(p["dir"])
        s = p["omega"] * t + p["phase"]
        return c + d * p["amp"] * np.sin(s), d * p["amp"] * p["omega"] * np.cos(s)

    def _place(self, model, data, params) -> None:
        self._on_since = None
        self._animate(data, 0.0)

    def _animate(self, data, t) -> None:
        for m, p in zip(self._mocap, self.params.get("pucks", ())):
            data.mocap_pos[m] = self.puck_state(p, t)[0]

    def _observe(self, model, data, t, tcp, width):
        pv = [self.puck_state(p, t) for p in self.params.get("pucks", ())]
        if not pv:
            return {"pucks": np.zeros((2, 3)), "puck_vel": np.zeros((2, 3))}
        return {"pucks": np.stack([x for x, _ in pv]), "puck_vel": np.stack([v for _, v in pv])}

    def _judge(self, st, model, data, t, tcp, width, info) -> None:
        d = np.linalg.norm(info["pucks"][:, :2] - tcp[:2], axis=1)
        near = int(np.argmin(d))
        if st.mode < 0 and tcp[2] < 0.15:  # committed to the puck it descends onto
            st.mode = near
        on = d[near] < self.XY_TOL and tcp[2] < self.Z_MAX
        if not on:
            self._on_since = None
        elif self._on_since is None:
            self._on_since = t
        elif t - self._on_since >= self.HOLD and not st.success:
            st.success = True
            st.mode = near


class PopUp(Task):
    """Two pucks rise out of the table at a random time, one on each side, and sink UP_S seconds later.

    Success: the gripper comes down onto either puck after it popped and stays on it (TCP within XY_TOL,
    below Z_MAX) for HOLD seconds while it is up. Until the pop the pucks are under the table top, hidden
    from the cameras; when and exactly where (within a few cm) is drawn per episode. A gripper already
    waiting low where a puck pops must still come down onto it: a guess is not a reaction.
    """

    name = "pop_up"
    modes = ("left_puck", "right_puck")
    dynamic = True
    POP_S = (1.6, 2.6)  # the pop time is uniform in this range (sim s after reset)
    UP_S = 1.5
    HOLD = 0.3
    XY_TOL = 0.035
    Z_MAX = 0.09
    # A command heads for a puck when its target is this much nearer one than the TCP: beyond the few mm a
    # waiting arm's targets wander, well short of the expert's lead (its carrot is 5-10 cm ahead in a dive).
    REACT_M = 0.02
    READY = (0.45, 0.0, 0.2)  # where the scripted expert waits for the pop
    UP_Z, HIDDEN_Z = 0.01, -0.03  # puck centre (1 cm half height) up on the table / under its top at z = 0
    time_limit = POP_S[1] + UP_S + 0.2
    PUCKS = ("popup_left", "popup_right")

    def __init__(self) -> None:
        super().__init__()
        self._on_since: float | None = None
        self._came_down = False  # the TCP was above Z_MAX since the pop: it came down onto the puck

    def add_objects(self, world: ET.Element) -> None:
        _pucks(world, self.PUCKS, self.HIDDEN_Z, "0.9 0.5 0.1 1")

    def bind(self, model) -> None:
        super().bind(model)
        self._mocap = _mocap_ids(model, self.PUCKS)

    def sample(self, rng: np.random.Generator) -> dict:
        xy = [[0.5 + rng.uniform(-0.04, 0.04), side * (0.15 + rng.uniform(-0.03, 0.03))] for side in (1.0, -1.0)]
        return {"pucks": xy, "t_pop": float(rng.uniform(*self.POP_S))}

    def event_time(self, params: dict) -> float | None:
        return params["t_pop"]

    def heads_for_goal(self, info: dict[str, np.ndarray], target: np.ndarray) -> bool:
        """The target is REACT_M nearer a risen puck (x-y) than the TCP is: the arm is sent toward it."""
        if not info["up"]:
            return False
        pucks = info["pucks"][:, :2]
        gain = np.linalg.norm(pucks - info["tcp"][:2], axis=1) - np.linalg.norm(pucks - target[:2], axis=1)
        return bool(gain.max() >= self.REACT_M)

    def up(self, t: float) -> bool:
        t_pop = self.params.get("t_pop", np.inf)
        return t_pop <= t < t_pop + self.UP_S

    def _place(self, model, data, params) -> None:
        self._on_since, self._came_down = None, False
        self._animate(data, 0.0)

    def _animate(self, data, t) -> None:
        z = self.UP_Z if self.up(t) else self.HIDDEN_Z
        for m, xy in zip(self._mocap, self.params.get("pucks", ())):
            data.mocap_pos[m] = (xy[0], xy[1], z)

    def _observe(self, model, data, t, tcp, width):
        return {"pucks": np.stack([data.mocap_pos[m].copy() for m in self._mocap]), "up": np.array(self.up(t))}

    def _judge(self, st, model, data, t, tcp, width, info) -> None:
        if st.success or st.failed:
            return
        if t >= self.params.get("t_pop", np.inf) + self.UP_S:
            st.failed, st.reason = True, "the pucks sank before the gripper was on one"
            return
        if not info["up"]:
            return
        self._came_down = self._came_down or tcp[2] >= self.Z_MAX
        d = np.linalg.norm(info["pucks"][:, :2] - tcp[:2], axis=1)
        near = int(np.argmin(d))
        if st.mode < 0 and tcp[2] < 0.15 and d[near] < 0.08:  # committed to the puck it descends onto
            st.mode = near
        on = self._came_down and d[near] < self.XY_TOL and tcp[2] < self.Z_MAX
        if not on:
            self._on_since = None
        elif self._on_since is None:
            self._on_since = t
        elif t - self._on_since >= self.HOLD:
            st.success, st.mode = True, near


TASKS: dict[str, type[Task]] = {t.name: t for t in (ReachAround, PickPlace, Track, PopUp)}
# The tasks of the multi-task models in models/sim_*; pop_up's are trained on it alone (none shipped).
MULTI_TASK: tuple[str, ...] = ("reach_around", "pick_place", "track")


def make_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown sim task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]()
