"""Which cube does a pick_place policy head for before it has moved? (results/replan/README.md, thirty-second stop)

At each episode's first window (the arm at home, nothing committed: the expert draws its cube at random) a
policy's chunk already heads to one side: its last step's y (left cube: y > 0). Per model, over 64 samples at
each of those windows, printed as JSON:
- left_share: the share of samples that head left; the demos' own labels give the expert's share;
- agree_with_demo: the share of samples that head where that episode's demo went (0.5 for a policy that cannot
  know it; more on training demos is a coin toss memorised);
- episodes_both: the share of episodes whose samples include both sides.
So a bias seen in the closed loop (the left cube rarely taken) can be placed: in the teacher's samples, or
added by the student fitted to them. About 20 s per student and 3-5 min per teacher (50 sampling steps), beside
other work on two cores.

    .venv/bin/python results/replan/mode_probe.py DEMOS/pick_place MODEL_DIR [MODEL_DIR ...]
"""

from __future__ import annotations

import json
import sys

import numpy as np

from flow2one.policy.checkpoint import load_policy
from flow2one.train import common
from flow2one.train.evaluate import sample_chunks

SAMPLES = 64


def first_windows(data: dict) -> np.ndarray:
    ep = data["episode"]
    return np.flatnonzero(np.r_[True, ep[1:] != ep[:-1]])


def probe(data_dir: str, model: str) -> tuple[dict, dict]:
    policy, cfg = load_policy(model)
    data = common.policy_windows(data_dir, cfg, stride=4)
    sel = first_windows(data)
    ends = sample_chunks(policy, {k: data[k][sel] for k in common.config_modalities(cfg)}, SAMPLES, seed=0,
                         kw={})[:, :, -1, 1]  # (windows, samples): the chunk's last y
    left = ends > 0
    demo_left = data["action"][sel, -1, 1] > 0
    both = left.any(1) & ~left.all(1)  # one window per episode
    return ({"windows": int(len(sel)), "left_share": round(float(left.mean()), 3),
             "agree_with_demo": round(float((left == demo_left[:, None]).mean()), 3),
             "episodes_both": round(float(np.mean(both)), 3)},
            {"left_share": round(float(demo_left.mean()), 3)})


def main() -> None:
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out = {}
    for model in sys.argv[2:]:
        out[model], demos = probe(sys.argv[1], model)
    out["demos"] = demos
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
