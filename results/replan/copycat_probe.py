"""Does a track student find the puck, or copy its own pose? (results/replan/README.md, "The copycat")

Reads a DAgger dataset of track episodes (`flow2one sim-demos --dagger-policy`: the student drove, the expert
labelled every state with its target), rebuilds each episode's pucks from its seed (the task's motion law),
and prints per puck, over the steps where the TCP is below 0.12 m:
- where the arm was: TCP minus the expert's puck, x and y (median, m);
- what the student predicts there: the chunk's first 0.4 s minus the expert's label, x and y (median, m);
- the slope of that prediction error on the TCP's own offset from the label (least squares, per axis):
  0 = the chunk goes where the expert would whatever the arm's offset, 1 = it stays wherever the arm is.
One CPU thread, about a minute per model.

    .venv/bin/python results/replan/copycat_probe.py DAGGER_DIR/track MODEL_DIR [MODEL_DIR ...]
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from flow2one.data.episodes import Episode, list_episodes, read_episode
from flow2one.policy.checkpoint import load_policy
from flow2one.sim.tasks import Track
from flow2one.train import common
from flow2one.train.evaluate import GAIN_STEPS, sample_chunks

LOW_Z = 0.12


def _r(v: np.ndarray) -> list[float]:
    return [round(float(x), 4) for x in v]


def arm_offsets(episodes: list[Episode]) -> dict[str, np.ndarray]:
    """TCP minus the followed puck (x, y) at every low step, per puck (mode as the task judged it)."""
    out: dict[str, list] = {m: [] for m in Track.modes}
    for ep in episodes:
        if ep.meta.mode < 0:
            continue
        puck = Track().sample(np.random.default_rng(ep.meta.seed))["pucks"][ep.meta.mode]
        t, tcp = ep.t - ep.t[0], ep.proprio[:, :3]
        at = np.array([Track.puck_state(puck, ti)[0][:2] for ti in t])
        out[Track.modes[ep.meta.mode]].append((tcp[:, :2] - at)[tcp[:, 2] < LOW_Z])
    return {m: np.concatenate(v) if v else np.zeros((0, 2)) for m, v in out.items()}


def prediction_errors(data_dir: str, model: str, modes: np.ndarray) -> dict[str, dict[str, list[float]]]:
    """Per puck: the chunk's start minus the expert's label, and its slope on the arm's offset from the label;
    `modes` holds each episode's mode in list_episodes order (the windows' `episode` index)."""
    policy, cfg = load_policy(model)
    data = common.policy_windows(data_dir, cfg, stride=2)
    obs = {m: data[m] for m in common.config_modalities(cfg)}
    with torch.no_grad():
        start = sample_chunks(policy, obs, 4, seed=0, kw={})[..., :GAIN_STEPS, :2].mean((1, 2))
    label = data["action"][:, :GAIN_STEPS, :2].mean(1)
    tcp = data["proprio"][:, :2]
    low = data["proprio"][:, 2] < LOW_Z
    report = {}
    for k, name in enumerate(Track.modes):
        sel = low & (modes[data["episode"]] == k)
        err, off = start[sel] - label[sel], tcp[sel] - label[sel]
        report[name] = {"windows": int(sel.sum()), "pred_minus_label_m": _r(np.median(err, 0)),
                        "slope_on_arm_offset": [float(np.polyfit(off[:, a], err[:, a], 1)[0].round(3))
                                                for a in (0, 1)] if sel.sum() > 2 else None}
    return report


def main(data_dir: str, models: list[str]) -> None:
    torch.set_num_threads(1)
    episodes = [read_episode(p) for p in list_episodes(data_dir)]
    modes = np.array([ep.meta.mode for ep in episodes])
    arm = arm_offsets(episodes)
    print(json.dumps({"arm_minus_puck_m": {m: {"steps": len(v), "median": _r(np.median(v, 0))}
                                           for m, v in arm.items() if len(v)},
                      "models": {m: prediction_errors(data_dir, m, modes) for m in models}}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
