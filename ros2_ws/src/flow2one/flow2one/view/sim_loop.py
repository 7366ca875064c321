"""The view of sim-eval's rollout loop (no ROS graph there): the same entities as the view node, logged
from the loop through flow2one.view.log, on the sim clock."""

from __future__ import annotations

import time

import numpy as np

from flow2one.view.log import ViewLog


class SimLoopView:
    """`run_episode(..., view=SimLoopView(log))`: called after each command. Cameras are rendered for the
    view only every `image_every` steps (rendering is the loop's dearest part); the cloud is logged when the
    policy computed one; candidates when a chunk was taken."""

    def __init__(self, log: ViewLog, image_every: int = 4) -> None:
        self.log, self.image_every = log, max(1, image_every)
        self._episode: tuple | None = None
        self._outcome = (False, False)
        self._steps = 0
        self._inferences = 0
        self._state = ""
        self._clamps: tuple[str, ...] = ()

    def __call__(self, obs, controller, action: np.ndarray) -> None:
        st = obs.world.status()
        self.log.at(wall_ns=time.time_ns(), sim_s=obs.sim_t)
        if (st.episode, st.seed) != self._episode:
            self._episode, self._outcome, self._steps = (st.episode, st.seed), (False, False), 0
            self.log.new_episode(f"episode {st.episode}: {st.task} seed {st.seed}")
        if obs.cams is not None and self._steps % self.image_every == 0:
            rgbs, depths = obs.images(rgb=True)
            for cam, rgb, depth in zip(obs.cams.specs, rgbs, depths):
                self.log.camera(cam.name, rgb=rgb, depth=depth)
        self._steps += 1
        if obs.points_made is not None:
            self.log.cloud(obs.points_made)
        taken = getattr(controller, "taken", None)
        if taken is not None:
            controller.taken = None
            candidates, chosen = taken
            best = int(np.argmin([np.abs(c - chosen).sum() for c in candidates]))
            self.log.candidates([c[:, :3] for c in candidates], best=best)
            self.log.chosen(chosen)
        inf = getattr(controller, "inference_s", [])
        if len(inf) > self._inferences:
            self._inferences = len(inf)
            self.log.scalar("timing/inference_ms", 1e3 * inf[-1])
        self.log.ee(obs.proprio[:3], float(obs.proprio[-1]), path=self._steps % 5 == 0)
        executor = getattr(controller, "executor", None)  # a policy acts through control.Executor
        last = executor.filter.last if executor is not None else None
        if action is not None:
            self.log.commanded(action)
        elif last is not None:
            self.log.commanded(last.action())
        if executor is not None:
            state = f"{executor.state.value}: {executor.message}"
            if state != self._state:
                self.log.event("executor", state, "WARN" if executor.state.value in ("fault", "estop") else "INFO")
                self._state = state
            clamps = last.clamped if last is not None else ()
            if clamps != self._clamps:  # when the set of binding limits changes, not on every command
                self._clamps = clamps
                self.log.event("safety", f"clamped: {', '.join(clamps)}" if clamps else "no limit binds", "INFO")
        outcome = (bool(st.success), bool(st.failed))
        if outcome != self._outcome and any(outcome):
            self.log.event("task", f"{st.task} seed {st.seed}: {'success' if outcome[0] else 'failure'} "
                           f"({st.mode_name or st.reason})", "INFO" if outcome[0] and not outcome[1] else "WARN")
        self._outcome = outcome
        self.log.scalar("robot/task_success", float(outcome[0] and not outcome[1]))
