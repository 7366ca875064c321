"""The Table I report as types (a row per policy, a cell per task and policy) and its JSON form.

The JSON keeps the layout every earlier table1.json has (cells under results[task][row label], inference and
passes by label), so files written before this module existed load, and tools that read them keep working.
`format` 2 adds each row's key; a file without it is format 1 and its rows are found by label.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from flow2one.sim.rollout import EpisodeResult
from flow2one.sim.table1.config import Settings, row_key

FORMAT = 2


@dataclass
class Inference:
    """Wall time of one policy step (batch 1, all candidates, one CPU thread): median over repeated calls."""

    ms_median: float
    hz: float

    @classmethod
    def median(cls, runs: list[Inference]) -> Inference:
        """One figure from several measurements (one per task's observation): their median."""
        ms = float(np.median([r.ms_median for r in runs]))
        return cls(ms, 1e3 / ms)


@dataclass
class Cell:
    """One policy on one task: the outcome of its episodes over the seed groups."""

    success_mean: float  # mean over seed groups of the group's success rate
    success_std: float
    success_per_seed: list[float]
    episodes: int
    successes: int
    mode_histogram: dict[str, int]  # mode the task observed -> episodes
    mode_histogram_success: dict[str, int]
    failures: dict[str, int]  # failure reason -> episodes
    time_to_success_s: float | None
    sim_rtf_mean: float
    planner_errors: int
    seed_groups: list[int]
    inference_ms_in_loop_median: float | None = None
    replans_per_sim_s: float | None = None
    chunks_rejected: int = 0
    chunks_stale: int | None = None  # None: a file from before stale chunks were counted
    chunks_kept_plan: int | None = None  # inferences that kept the executing plan; None: a file from before
    reacted: int = 0  # episodes with a command heading for the goal an event revealed (pop_up)
    reaction_s_median: float | None = None  # from the event to that command, over those episodes
    per_episode: list[EpisodeResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["per_episode"] = [e.to_dict() for e in self.per_episode]
        for key in ("chunks_stale", "chunks_kept_plan"):
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any], default_groups: list[int]) -> Cell:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        kw["per_episode"] = [EpisodeResult(**e) for e in d.get("per_episode", [])]
        kw.setdefault("seed_groups", default_groups)  # files from before groups were recorded: 0..seeds-1
        return cls(**kw)


@dataclass
class PolicyRow:
    key: str
    label: str
    passes: str  # network passes per chunk
    inference: Inference | None = None


@dataclass
class Table1Report:
    created_utc: str
    command: str
    models: str
    settings: Settings
    seeds: int
    first_seed_group: int
    tasks: list[str]
    policies: list[PolicyRow]
    cells: dict[str, dict[str, Cell]]  # task -> policy key -> cell
    cards: dict[str, str] = field(default_factory=dict)  # model directory name -> its card.yaml
    wall_s: float | None = None
    checks: list[str] = field(default_factory=list)

    def policy(self, key: str) -> PolicyRow | None:
        return next((p for p in self.policies if p.key == key), None)

    def inference(self, key: str) -> Inference | None:
        p = self.policy(key)
        return p.inference if p is not None else None

    def seed_group_counts(self) -> list[int]:
        return sorted({len(c.seed_groups) for cells in self.cells.values() for c in cells.values()})

    def to_json(self) -> dict[str, Any]:
        label = {p.key: p.label for p in self.policies}
        return {
            "format": FORMAT, "created_utc": self.created_utc, "command": self.command, "models": self.models,
            "tasks": self.tasks, "rows": [p.label for p in self.policies],
            "keys": {p.label: p.key for p in self.policies}, "passes": {p.label: p.passes for p in self.policies},
            "seeds": self.seeds, **asdict(self.settings), "overrides": list(self.settings.overrides),
            "first_seed_group": self.first_seed_group,
            "results": {t: {label[k]: c.to_json() for k, c in cells.items()} for t, cells in self.cells.items()},
            "inference": {p.label: asdict(p.inference) for p in self.policies if p.inference is not None},
            "cards": self.cards, "wall_s": self.wall_s, "checks": self.checks,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Table1Report:
        """A report from a table1.json or table1.partial.json of either format."""
        if d.get("format", 1) > FORMAT:
            raise ValueError(f"table1.json format {d['format']} is newer than this flow2one reads ({FORMAT})")
        keys = {label: d.get("keys", {}).get(label) or row_key(label) for label in d["rows"]}
        policies = [PolicyRow(keys[label], label, str(d.get("passes", {}).get(label, "")),
                              _inference(d.get("inference", {}).get(label))) for label in d["rows"]]
        groups = list(range(d["seeds"]))
        cells = {t: {keys.get(label, row_key(label)): Cell.from_json(c, groups) for label, c in res.items()}
                 for t, res in d["results"].items()}
        settings = Settings(d["episodes_per_seed"], d["n_exec"], d.get("candidates", 1),  # older: the default 1
                            d.get("policy_rate_hz"), d.get("max_obs_age_s"), tuple(d.get("overrides", ())),
                            d.get("camera_lag_steps", 0))
        return cls(created_utc=d.get("created_utc", ""), command=d.get("command", ""), models=d.get("models", ""),
                   settings=settings, seeds=d["seeds"], first_seed_group=d.get("first_seed_group", 0),
                   tasks=[t for t in d["tasks"] if t in cells],  # a partial run: the tasks it finished
                   policies=policies, cells=cells, cards=d.get("cards", {}), wall_s=d.get("wall_s"),
                   checks=list(d.get("checks", [])))


def _inference(value: dict | list | None) -> Inference | None:
    if value is None:
        return None
    if isinstance(value, list):  # a partial file of the first format: one measurement per task so far
        return Inference.median([Inference(**v) for v in value])
    return Inference(**value)


def load(path: str | Path) -> Table1Report:
    return Table1Report.from_json(json.loads(Path(path).read_text()))


def save(report: Table1Report, path: Path) -> None:
    path.write_text(json.dumps(report.to_json(), indent=1, default=str))
