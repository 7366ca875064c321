"""Scripted multimodal experts: privileged object state in, one absolute EE target per step out.

Each expert picks its strategy (mode) at random per episode and then behaves like a teleoperator who
knows where things are: it moves a "carrot" target toward the next waypoint at a bounded speed (that
carrot is the recorded action) and waits for the measured TCP / gripper before going on, so lag in the
sim never desynchronises the demonstration. `delay` makes an expert act on stale object state: the
deliberately late behaviour the dynamic task must punish.

`lead_s` changes what is recorded: the measured TCP plus at most speed * lead_s toward the expert's goal,
instead of the carrot. A carrot keeps its own position, so its lead on the arm lives in the expert's history;
a policy that re-plans every 0.1 s sees only its observation and learns the lead of an arm at rest. With
`lead_s` the label is a function of what the observation shows (results/replan/README.md).
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass

import numpy as np

from flow2one.control.config import ExecutorConfig
from flow2one.geometry import matrix_to_rot6d
from flow2one.sim.tasks import CUBE_HALF, PickPlace, PopUp, ReachAround, Task, Track
from flow2one.spec import ACTION_DIM, GRIPPER_CLOSED, GRIPPER_OPEN, STEP_DT

# Gripper pointing straight down, hand x along base x: franky's orientation at HOME_Q.
DOWN_ROT6D = matrix_to_rot6d(np.diag([1.0, -1.0, -1.0]))


def make_action(xyz, gripper: float) -> np.ndarray:
    a = np.empty(ACTION_DIM, dtype=np.float32)
    a[:3], a[3:9], a[9] = xyz, DOWN_ROT6D, gripper
    return a


def toward(start: np.ndarray, goal: np.ndarray, max_dist: float) -> np.ndarray:
    """`goal`, or the point max_dist from `start` on the way to it."""
    d = goal - start
    dist = float(np.linalg.norm(d))
    return goal.copy() if dist <= max_dist else start + d * (max_dist / dist)


@dataclass
class Move:
    xyz: np.ndarray
    speed: float = 0.3  # m/s of the carrot
    tol: float = 0.015  # measured TCP distance that counts as arrived


@dataclass
class Grip:
    closed: bool


class Expert(ABC):
    """`reset(task, rng) -> mode`, then `act(proprio, info) -> action` once per STEP_DT."""

    def __init__(self, mode: int | None = None, delay: float = 0.0, lead_s: float | None = None) -> None:
        if lead_s is not None and not lead_s > 0:
            raise ValueError(f"lead_s must be > 0 s, got {lead_s}")
        self.forced_mode, self.delay, self.lead_s = mode, delay, lead_s
        self.mode = -1
        self._history: deque[dict] = deque()

    def reset(self, task: Task, info: dict, rng: np.random.Generator) -> int:
        n = len(task.modes)
        self.mode = int(rng.integers(n)) if self.forced_mode is None else int(self.forced_mode)
        self._history.clear()
        self._start(task, info)
        return self.mode

    def act(self, proprio: np.ndarray, info: dict) -> np.ndarray:
        self._history.append(info)
        lag = int(round(self.delay / STEP_DT))
        while len(self._history) > lag + 1:
            self._history.popleft()
        return self._act(np.asarray(proprio), self._history[0])

    def imagine(self, proprio: np.ndarray, infos: list[dict]) -> np.ndarray:
        """(len(infos), ACTION_DIM): the labels this expert would give from here on if the arm followed them,
        acting on infos[k] at step k; the expert itself is left as it is. DAgger's chunk label for a state the
        policy visited: the policy's own next states would only restate where it went. The arm moves toward each
        label as a lead label implies (the label lies speed x lead_s ahead of an arm moving at speed), the
        fingers at the gripper's speed toward open, or closed on what `held_width` says is between them."""
        if self.lead_s is None:
            raise ValueError("imagine needs lead_s labels (a function of the state)")
        e = copy.copy(self)  # every other field is replaced on change, never changed in place
        e._history = deque(self._history)
        p, out = np.array(proprio, dtype=np.float64), []
        follow = min(1.0, STEP_DT / self.lead_s)
        # The sim graph's gripper (ExecutorConfig's defaults): its speed, and the width below which it grasps.
        step, close_below = ExecutorConfig.gripper_speed * STEP_DT, ExecutorConfig.gripper_close_below
        for info in infos:
            a = e.act(p, info)
            out.append(a)
            p = p.copy()
            p[:3] += (a[:3] - p[:3]) * follow
            goal = GRIPPER_OPEN if a[9] > close_below else e.held_width(p, info)
            p[9] += np.clip(goal - p[9], -step, step)
        return np.stack(out).astype(np.float32)

    def held_width(self, proprio: np.ndarray, info: dict) -> float:
        """The width closed fingers stop at with the TCP at proprio[:3]: nothing to hold unless a task has objects."""
        return 0.0

    def at_grasp(self) -> bool:
        """True while the expert closes in on what it will grasp: DART's clean-grasp demos keep the arm on the
        expert's path there. Tasks without a grasp never are."""
        return False

    @abstractmethod
    def _start(self, task: Task, info: dict) -> None: ...

    @abstractmethod
    def _act(self, proprio: np.ndarray, info: dict) -> np.ndarray: ...


class WaypointExpert(Expert):
    """Follows a program of Move/Grip steps planned at reset from the (static) object poses."""

    GRIP_SETTLE = 0.0005  # m per step: gripper width counts as settled below this change

    STALL_S = 3.0  # a step not done this long after the carrot arrived is given up on (the robot is stuck)

    def _start(self, task: Task, info: dict) -> None:
        self.program = self.plan(task, info)
        self._i = 0
        self._stalled = 0
        self._carrot = np.asarray(info["tcp"], dtype=np.float64).copy()
        self._gripper = GRIPPER_OPEN
        self._grip_steps = 0
        self._last_width = None

    @abstractmethod
    def plan(self, task: Task, info: dict) -> list[Move | Grip]: ...

    def _act(self, proprio: np.ndarray, info: dict) -> np.ndarray:
        if self._i < len(self.program):
            step = self.program[self._i]
            if isinstance(step, Move):
                if self.lead_s is None:
                    arrived = float(np.linalg.norm(step.xyz - self._carrot)) <= step.speed * STEP_DT
                    self._carrot = toward(self._carrot, step.xyz, step.speed * STEP_DT)
                else:
                    self._carrot = toward(proprio[:3], step.xyz, step.speed * self.lead_s)
                    arrived = bool(np.array_equal(self._carrot, step.xyz))
                self._stalled = self._stalled + 1 if arrived else 0
                if arrived and (np.linalg.norm(proprio[:3] - step.xyz) < step.tol
                                         or self._stalled * STEP_DT > self.STALL_S):
                    self._i, self._stalled = self._i + 1, 0
            else:
                self._gripper = GRIPPER_CLOSED if step.closed else GRIPPER_OPEN
                width = float(proprio[9])
                self._grip_steps += 1
                settled = self._last_width is not None and abs(width - self._last_width) < self.GRIP_SETTLE
                self._last_width = width
                moved = width < GRIPPER_OPEN - 0.01 if step.closed else width > GRIPPER_OPEN - 0.005
                if (self._grip_steps > 4 and settled and moved) or self._grip_steps * STEP_DT > self.STALL_S:
                    self._i += 1
                    self._grip_steps, self._last_width = 0, None
        return make_action(self._carrot, self._gripper)


class ReachAroundExpert(WaypointExpert):
    """Down in front of the pillar, along its left or right side, then in to the goal."""

    CLEAR = 0.17  # lateral distance TCP <-> pillar face (the hand is ~0.2 m wide across its fingers)
    HEIGHT = 0.12
    average = False  # True = the mean of both modes (straight through the pillar): the wrong way

    def plan(self, task: Task, info: dict) -> list[Move | Grip]:
        pillar, goal = np.asarray(info["pillar"]), np.asarray(info["goal"])
        side = 0.0 if self.average else (1.0 if self.mode == 0 else -1.0)
        y = pillar[1] + side * (ReachAround.PILLAR_HALF[1] + self.CLEAR)
        x0, x1 = pillar[0] - 0.13, pillar[0] + 0.11
        return [Move(np.array([x0, y, goal[2]]), tol=0.04),
                Move(np.array([x1, y, goal[2]]), tol=0.04),
                Move(goal.copy(), speed=0.2, tol=0.01)]


class PickPlaceExpert(WaypointExpert):
    """Above the chosen cube, down, grasp, lift, over the pad, down, release, up; from the top again, over the
    cube where it now lies, when the fingers close on nothing or lose the cube on the way."""

    LIFT = 0.12
    EMPTY_WIDTH = CUBE_HALF  # fingers closer than half a cube's width hold no cube
    average = False  # True = grasp midway between the cubes: the wrong way

    def _start(self, task: Task, info: dict) -> None:
        self._task = task
        super()._start(task, info)

    def _act(self, proprio: np.ndarray, info: dict) -> np.ndarray:
        # The width is in the observation, so a policy trained on these labels (DAgger relabels its own missed
        # grasps with them) can learn to open and try again; no demo of a clean run ever shows that.
        close, release = self._grips()
        if close < self._i < release and float(proprio[9]) < self.EMPTY_WIDTH:
            self.program, self._i, self._stalled = self.plan(self._task, info), 0, 0
            self._gripper = GRIPPER_OPEN
        return super()._act(proprio, info)

    def _grips(self) -> tuple[int, int]:
        """The program's steps that close and open the hand."""
        close, release = (i for i, s in enumerate(self.program) if isinstance(s, Grip))
        return close, release

    def at_grasp(self) -> bool:
        """From the arrival above the chosen cube until the fingers have closed (the descent and the grip)."""
        return 0 < self._i <= self._grips()[0]

    def held_width(self, proprio: np.ndarray, info: dict) -> float:
        """A cube's width when the TCP is inside one (x-y within half a cube, below its top), else nothing."""
        d = np.abs(np.asarray(info["cubes"])[:, :2] - proprio[:2])
        return 2 * CUBE_HALF if bool(((d < CUBE_HALF).all(axis=1)).any()) and proprio[2] < 2 * CUBE_HALF else 0.0

    def plan(self, task: Task, info: dict) -> list[Move | Grip]:
        cubes, pad = np.asarray(info["cubes"]), np.asarray(info["pad"])
        c = cubes.mean(axis=0) if self.average else cubes[self.mode]
        grasp_z = CUBE_HALF - 0.005
        above = np.array([c[0], c[1], self.LIFT])
        over_pad = np.array([pad[0], pad[1], self.LIFT])
        return [Move(above, tol=0.02), Move(np.array([c[0], c[1], grasp_z]), speed=0.12, tol=0.008),
                Grip(True), Move(above, speed=0.15, tol=0.03), Move(over_pad, tol=0.02),
                Move(np.array([pad[0], pad[1], PickPlace.PAD_TOP + CUBE_HALF + 0.012]), speed=0.12, tol=0.01),
                Grip(False), Move(over_pad, speed=0.2, tol=0.03)]


class ChaseExpert(Expert):
    """Moves the carrot toward a goal re-chosen every step (moving objects), at most SPEED m/s."""

    SPEED = 0.45  # m/s max carrot speed
    HOVER = 0.05  # TCP height above the table while on a puck

    def _start(self, task: Task, info: dict) -> None:
        self._carrot = np.asarray(info["tcp"], dtype=np.float64).copy()

    @abstractmethod
    def _goal(self, proprio: np.ndarray, info: dict) -> np.ndarray: ...

    def _act(self, proprio: np.ndarray, info: dict) -> np.ndarray:
        goal = np.array(self._goal(proprio, info), dtype=np.float64)
        if self.lead_s is None:
            self._carrot = toward(self._carrot, goal, self.SPEED * STEP_DT)
        else:
            self._carrot = toward(proprio[:3], goal, self.SPEED * self.lead_s)
        return make_action(self._carrot, GRIPPER_OPEN)


class TrackExpert(ChaseExpert):
    """Fly over the chosen puck, descend onto it and follow it, leading by the robot's tracking lag."""

    LEAD = 0.15  # s of extrapolation along the puck's velocity

    def _goal(self, proprio: np.ndarray, info: dict) -> np.ndarray:
        p = np.asarray(info["pucks"])[self.mode] + np.asarray(info["puck_vel"])[self.mode] * self.LEAD
        xy_err = float(np.linalg.norm(proprio[:2] - p[:2]))
        z = self.HOVER if xy_err < 0.06 else max(self.HOVER, min(0.2, float(proprio[2])))
        return np.array([p[0], p[1], z])


class PopUpExpert(ChaseExpert):
    """Wait at the task's READY point; once the pucks are up, go straight down onto the chosen one."""

    def _goal(self, proprio: np.ndarray, info: dict) -> np.ndarray:
        if not bool(info["up"]):
            return np.array(PopUp.READY)
        p = np.asarray(info["pucks"])[self.mode]
        return np.array([p[0], p[1], self.HOVER])


EXPERTS: dict[str, type[Expert]] = {
    ReachAround.name: ReachAroundExpert,
    PickPlace.name: PickPlaceExpert,
    Track.name: TrackExpert,
    PopUp.name: PopUpExpert,
}


def make_expert(task: str, mode: int | None = None, delay: float = 0.0, average: bool = False,
                lead_s: float | None = None) -> Expert:
    """The scripted expert of `task`; `average=True` gives the mode-averaging (wrong) variant."""
    if task not in EXPERTS:
        raise ValueError(f"no scripted expert for task {task!r}; known: {', '.join(EXPERTS)}")
    expert = EXPERTS[task](mode=mode, delay=delay, lead_s=lead_s)
    if average:
        if not hasattr(expert, "average"):
            raise ValueError(f"task {task!r} has no mode-averaging expert")
        expert.average = True
    return expert
