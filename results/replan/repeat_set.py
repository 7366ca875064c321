"""A task-heavy distillation set: one set with another appended R times (results/replan/README.md, ninth stop).

The multi-task set has no per-task index, so a task's share is raised by appending that task's own set
(made by the same teacher) R more times; `train-student` then draws its windows R + 1 times as often.
Both sets must come from the same teacher (checked). Writes a new file; the inputs are only read.

    .venv/bin/python results/replan/repeat_set.py ALL.safetensors TRACK.safetensors R OUT.safetensors
"""

from __future__ import annotations

import sys

import torch

from flow2one.data.distill_set import load_distill_set, save_distill_set


def main(base: str, extra: str, repeats: int, out: str) -> None:
    obs, sets, meta = load_distill_set(base)
    x_obs, x_sets, x_meta = load_distill_set(extra)
    if (meta.get("teacher"), meta.get("teacher_config")) != (x_meta.get("teacher"), x_meta.get("teacher_config")):
        raise SystemExit(f"{base} and {extra} come from different teachers")
    obs = {k: torch.cat([v, *[x_obs[k]] * repeats]) for k, v in obs.items()}
    save_distill_set(out, obs, torch.cat([sets, *[x_sets] * repeats]),
                     {**meta, "data": f"{meta.get('data')} + {repeats} x {x_meta.get('data')}"})
    print(f"{out}: {len(sets) + repeats * len(x_sets)} observations")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
