"""Does a pick_place policy aim its grasp at the cube? (results/replan/README.md, eleventh stop)

Reads pick_place demos (`flow2one sim-demos --task pick_place`), rebuilds each episode's cubes from its seed,
and takes the windows where the arm is still open and above MIN_Z while the demo's chunk ends on the picked
cube (x-y within 1 cm): the approach from above. There the policy's chunk end (4 samples, averaged) is its
aim. Per model and axis (x, y), printed as JSON:
- aim_slope_on_cube: least-squares slope of the aim on the cube's position over the episodes: 1 = the aim
  moves with the cube, 0 = one place whatever the cube;
- aim_minus_cube_m: median |aim - cube|; aim_within_2cm_y: the share of samples within 2 cm of the cube in y,
  the finger axis (the 8 cm hand around a 4 cm cube grasps it from 2 cm off);
- other_side_share: samples aimed at the other cube (a mode, not an aim); of the samples on the picked cube's
  side, own_side_bias_m: median |their mean - cube| (an error every sample shares, which no choice among
  candidates removes), and own_side_spread_m: median std among them (twenty-second stop).
The demos' own labels score 1 and 0 m by construction. About 10 s per student, 30 s per teacher. Probe on demos
no model trained on (fourteenth stop: the last 20 of 80 from `sim-demos --seed 2000`): on its training demos a
model that memorised them aims well.

    .venv/bin/python results/replan/grasp_probe.py DEMOS/pick_place MODEL_DIR [MODEL_DIR ...]
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from flow2one.control.config import ExecutorConfig
from flow2one.data.episodes import list_episodes, read_episode
from flow2one.policy.checkpoint import load_policy
from flow2one.sim.tasks import PickPlace
from flow2one.train import common
from flow2one.train.evaluate import sample_chunks

MIN_Z = 0.25  # m: TCP height above which the arm is still approaching
EPISODES = 40
OPEN = ExecutorConfig.gripper_close_below  # m: a label's width above this keeps the hand open


def probe(data_dir: str, model: str, cubes: np.ndarray) -> dict:
    policy, cfg = load_policy(model)
    data = common.policy_windows(data_dir, cfg, stride=2, episodes=slice(0, EPISODES))
    cube = cubes[data["episode"]]
    proprio, label = data["proprio"], data["action"]
    sel = np.flatnonzero((np.linalg.norm(label[:, -1, :2] - cube, axis=1) < 0.01) & (proprio[:, 9] > 0.07)
                         & (label[:, 0, 9] > OPEN) & (proprio[:, 2] > MIN_Z))
    with torch.no_grad():
        aim = sample_chunks(policy, {k: data[k][sel] for k in common.config_modalities(cfg)}, 4, seed=0,
                            kw={})[:, :, -1, :2]  # (N, samples, 2)
    cube, mean = cube[sel], aim.mean(1)
    own = np.sign(aim[..., 1]) == np.sign(cube[:, None, 1])  # samples on the picked cube's side (its mode)
    off = np.where(own[..., None], aim - cube[:, None], np.nan)
    seen = own.any(1)
    return {"windows": int(len(sel)),
            "aim_slope_on_cube": [round(float(np.polyfit(cube[:, a], mean[:, a], 1)[0]), 3) for a in (0, 1)],
            "aim_minus_cube_m": np.median(np.abs(mean - cube), 0).round(4).tolist(),
            "aim_within_2cm_y": round(float(np.mean(np.abs(aim[..., 1] - cube[:, None, 1]) < 0.02)), 3),
            "other_side_share": round(float(1 - own.mean()), 3),
            "own_side_bias_m": np.median(np.abs(np.nanmean(off[seen], 1)), 0).round(4).tolist(),
            "own_side_spread_m": np.median(np.nanstd(off[seen], 1), 0).round(4).tolist()}


def main(data_dir: str, models: list[str]) -> None:
    torch.set_num_threads(1)
    episodes = [read_episode(p) for p in list_episodes(data_dir)[:EPISODES]]
    cubes = np.array([PickPlace().sample(np.random.default_rng(e.meta.seed))["cubes"][max(e.meta.mode, 0)][:2]
                      for e in episodes])
    print(json.dumps({m: probe(data_dir, m, cubes) for m in models}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
