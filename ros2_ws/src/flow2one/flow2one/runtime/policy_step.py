"""One policy step: an assembled observation -> M candidates in one backend call -> the chunk to execute.

The policy node and every closed-loop evaluation (sim-eval, table1) run this same object, so what a
figure in results/ measures is what the deployed node does: the same input assembly and checks
(ObservationAssembler, from the model card), the same noise draw, the same backend and the same
candidate choice (the candidate continuing the chunk being executed). Only who feeds the assembler and
when a step runs differ: ROS callbacks and a timer on the robot, the sim clock in an evaluation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from flow2one import spec
from flow2one.runtime.backends import Backend
from flow2one.runtime.card import ModelCard, example_inputs
from flow2one.runtime.handoff import agrees_with_plan, select_candidate
from flow2one.runtime.observation import Observation, ObservationAssembler


@dataclass(frozen=True)
class Chunk:
    """A chunk to execute: actions[i] is the target at stamp_ns + i * dt (the observation's robot-state time)."""

    actions: np.ndarray  # (H, A), robot units
    stamp_ns: int
    dt: float
    candidates: np.ndarray  # (M, H, A): every sample of this step, for markers
    best: int  # index of `actions` in `candidates`
    inference_s: float  # wall time of the backend call
    obs_stamp_ns: int  # the oldest input's stamp: freshness is judged on it
    keeps_plan: bool = False  # it agrees with the executing plan (keep_plan_within_m): not sent, not committed


class PolicyStep:
    """Assembler + backend + candidate choice. `infer` is pure apart from the noise draw; `commit` records
    a chunk as the one being executed, which the next step's candidate choice continues."""

    def __init__(self, card: ModelCard, backend: Backend, n_candidates: int = 1, seed: int = 0,
                 base_frame: str = spec.BASE_FRAME, handoff_window_s: float = 0.0,
                 keep_plan_within_m: float = 0.0, state_at_cloud: bool = False) -> None:
        if n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {n_candidates}")
        if not handoff_window_s >= 0:
            raise ValueError(f"handoff_window_s must be >= 0 (0 = the whole overlap), got {handoff_window_s}")
        if not keep_plan_within_m >= 0:
            raise ValueError(f"keep_plan_within_m must be >= 0 (0 = every chunk replaces the plan), "
                             f"got {keep_plan_within_m}")
        self.card, self.backend, self.n_candidates = card, backend, n_candidates
        self.handoff_window_s, self.keep_plan_within_m = handoff_window_s, keep_plan_within_m
        self.assembler = ObservationAssembler(card, base_frame, state_at_cloud)
        self._rng = np.random.default_rng(seed)
        self.prev: tuple[np.ndarray, int, float] | None = None  # last committed chunk, stamp, dt

    def infer(self, obs: Observation) -> Chunk:
        """M candidates for `obs` (one backend call) and the one continuing the committed chunk."""
        noise = self._rng.standard_normal((1, self.n_candidates, *self.card.inputs["noise"]), dtype=np.float32)
        t0 = time.perf_counter()
        candidates = self.backend({**obs.inputs, "noise": noise})[0]
        inference_s = time.perf_counter() - t0
        prev, prev_stamp, prev_dt = self.prev if self.prev else (None, 0, self.card.dt)
        # stamped with its start, the given robot state's time: the executor skips what has passed by then
        best, _ = select_candidate(candidates, obs.origin_ns, self.card.dt, prev, prev_stamp, prev_dt,
                                   window_s=self.handoff_window_s)
        keeps = agrees_with_plan(candidates[best], obs.origin_ns, self.card.dt, prev, prev_stamp, prev_dt,
                                 self.keep_plan_within_m)
        return Chunk(candidates[best], obs.origin_ns, self.card.dt, candidates, best, inference_s, obs.stamp_ns,
                     keeps)

    def warm_up(self, calls: int = 2) -> float:
        """Backend calls on example inputs of the deployed batch, so that the first observation does not pay for
        the backend's first call: ONNX Runtime's allocations (CPU: 8.8 against 6.3 ms after), a CUDA backend's
        lazily loaded kernels. The noise stream is not drawn from. Returns the last call's wall time in ms."""
        inputs = example_inputs(self.card, 1, self.n_candidates)
        for _ in range(calls):
            t0 = time.perf_counter()
            self.backend(inputs)
        return (time.perf_counter() - t0) * 1e3

    def commit(self, chunk: Chunk) -> None:
        self.prev = (chunk.actions, chunk.stamp_ns, chunk.dt)

    def reset(self) -> None:
        """A new episode: forget the executing chunk and every kept input (the noise stream goes on)."""
        self.prev = None
        a = self.assembler
        self.assembler = ObservationAssembler(self.card, a.base_frame, a.state_at_cloud)

    def close(self) -> None:
        self.backend.close()
