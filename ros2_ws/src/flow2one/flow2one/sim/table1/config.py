"""What a Table I run evaluates: the policy rows and the settings every cell of one table shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flow2one.sim.evaluate import GRAPH_CAMERA_LAG_STEPS

EVAL_SEED0 = 100_000  # sim-demos uses seeds from 0: evaluation episodes never repeat a training scene


@dataclass(frozen=True)
class Row:
    """One policy of the table. `key` names it in code and in the report; `label` is only for display."""

    key: str
    label: str
    model: str  # models/<model>
    sample_kw: dict[str, Any] = field(default_factory=dict)  # Policy.sample keyword arguments
    passes: str = ""  # network passes per chunk, for the table


ROWS: tuple[Row, ...] = (
    Row("teacher50", "teacher (50 steps)", "sim_teacher", {"steps": 50}, "50"),
    Row("teacher1", "teacher 1-step", "sim_teacher", {"steps": 1}, "1"),
    Row("student", "student (1 step)", "sim_student", {}, "1"),
    Row("l1flow", "L1 Flow (2 steps)", "sim_l1flow", {}, "2"),
    Row("regression", "regression", "sim_regression", {}, "1"),
)
TEACHER, TEACHER_1STEP, STUDENT, L1FLOW, REGRESSION = (r.key for r in ROWS)


def row_key(label: str) -> str:
    """The key of a row known by its display label (how files written before keys existed name rows)."""
    return next((r.key for r in ROWS if r.label == label), label)


@dataclass(frozen=True)
class Settings:
    """How each episode was run: cells evaluated with different settings are not comparable."""

    episodes_per_seed: int
    n_exec: int
    candidates: int = 1
    policy_rate_hz: float | None = None  # None: re-plan as soon as the last chunk is out
    max_obs_age_s: float | None = None  # None: a file from before the setting was recorded
    overrides: tuple[str, ...] = ()  # --set NODE.PARAM=VALUE of the sim graph's parameters, sorted
    camera_lag_steps: int = 0  # control steps the camera data trails the robot state (files before it: 0)


@dataclass(frozen=True)
class Table1Config:
    """One `flow2one table1` run."""

    models: Path  # directory holding sim_<kind>/
    out: Path  # where table1.md/.json and plots go
    tasks: tuple[str, ...]
    rows: tuple[Row, ...] = ROWS
    seeds: int = 3  # evaluation seed groups (spread is over these)
    episodes: int = 4  # per seed group, task and policy
    first_group: int = 0
    n_exec: int = 8
    candidates: int = 1
    rate_hz: float | None = None
    max_obs_age_s: float = 0.25
    camera_lag_steps: int = GRAPH_CAMERA_LAG_STEPS
    hz_repeats: int = 20  # calls timed for the inference rate
    max_time: float | None = None  # sim seconds per episode at most (None: the task's limit)
    threads: int = 1  # torch threads inside the rollout
    jobs: int = 1  # tasks evaluated at once, each in its own process
    merge_with: Path | None = None  # an earlier table1.json whose cells complete or pool with this run's
    command: str = ""  # the command line, recorded in the report
    overrides: tuple[str, ...] = ()  # --set items (in force through sim.evaluate.apply_overrides)

    @property
    def seed_groups(self) -> list[int]:
        return list(range(self.first_group, self.first_group + self.seeds))

    @property
    def settings(self) -> Settings:
        return Settings(self.episodes, self.n_exec, self.candidates, self.rate_hz, self.max_obs_age_s,
                        tuple(sorted(self.overrides)), self.camera_lag_steps)
