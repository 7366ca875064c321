"""What do pick_place chunk labels say where the hand is low over a cube? (results/replan/README.md, twenty-first stop)

A training window's label is the H = 32 per-step labels of the states that follow it, or the step's own chunk
label where the episode has one (DAgger since the twenty-first stop: the expert's plan from that state). In an
expert demo the states that follow are the expert's own; in a DAgger episode they are the driving policy's. Windows: hand open, TCP below
12 cm and within 6 cm (x-y) of a cube (cubes rebuilt from each episode's seed). Per directory, printed as JSON:
the TCP's median x-y distance to that cube, the label's at the step where it first closes the hand (its end if
it never does), and the share of windows whose label closes the hand at all.

    .venv/bin/python results/replan/dagger_label_probe.py EPISODE_DIR [EPISODE_DIR ...]
"""

from __future__ import annotations

import json
import sys

import numpy as np

from flow2one.control.config import ExecutorConfig
from flow2one.data.episodes import list_episodes, read_episode
from flow2one.sim.tasks import PickPlace

H = 32
CLOSED = ExecutorConfig.gripper_close_below  # m: a commanded width below this closes the hand


def probe(data_dir: str) -> dict:
    tcp_off, label_off, closes = [], [], []
    for path in list_episodes(data_dir):
        e = read_episode(path)
        cubes = np.asarray(PickPlace().sample(np.random.default_rng(e.meta.seed))["cubes"])[:, :2]
        for t in range(0, len(e.t) - H, 2):
            p = e.proprio[t]
            dist = np.linalg.norm(cubes - p[:2], axis=1)
            k = int(np.argmin(dist))
            if p[9] < 0.07 or p[2] > 0.12 or dist[k] > 0.06:
                continue
            label = e.action[t:t + H] if e.action_chunk is None else e.action_chunk[t]
            shut = np.flatnonzero(label[:, 9] < CLOSED)
            at = label[shut[0] if len(shut) else len(label) - 1, :2]
            tcp_off.append(dist[k])
            label_off.append(np.linalg.norm(at - cubes[k]))
            closes.append(len(shut) > 0)
    return {"windows": len(tcp_off), "tcp_to_cube_cm": round(100 * float(np.median(tcp_off)), 1),
            "label_grasp_to_cube_cm": round(100 * float(np.median(label_off)), 1),
            "labels_that_close": round(float(np.mean(closes)), 2)}


if __name__ == "__main__":
    print(json.dumps({d: probe(d) for d in sys.argv[1:]}, indent=1))
