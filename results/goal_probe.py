"""Can the CPU model's PointNet place the reach_around goal ball? (results/README.md, Models, "The table out of the PointNet's pool")

Trains the sim models' PointNet (16-32 channels, max-pool) with a small head to regress the goal (the
demo's last commanded position) from clouds in the first third of each reach_around demo, with and without
the table in the pool (EncoderConfig.points_floor_z), and prints the held-out error next to always
predicting the mean goal. One CPU thread, about 40 s per variant.

    .venv/bin/python results/goal_probe.py runs/reproduce_v4/data/all
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from flow2one.policy.encoder import PointNet

FLOOR_Z, TEST_FROM, STEPS = 0.005, 64, 1500  # episodes >= TEST_FROM (of 80) are held out


def load(data: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    clouds, goals, test = [], [], []
    episodes = [f for f in sorted(data.glob("episode_*.npz"))
                if json.loads(bytes(np.load(f)["meta"]).decode())["task"] == "reach_around"]
    for i, f in enumerate(episodes):
        z = np.load(f)
        for k in range(0, len(z["points"]) // 3, 3):
            clouds.append(z["points"][k])
            goals.append(z["action"][-1, :3])
            test.append(i >= TEST_FROM)
    return torch.tensor(np.stack(clouds)), torch.tensor(np.stack(goals)), torch.tensor(test)


def probe(clouds: torch.Tensor, goals: torch.Tensor, test: torch.Tensor, floor: bool) -> float:
    torch.manual_seed(0)
    net, head = PointNet((16, 32), 32), torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Linear(32, 3))
    mean, std = goals[~test].mean(0), goals[~test].std(0)
    centre = torch.tensor([0.5, 0.0, 0.24])

    def predict(p: torch.Tensor) -> torch.Tensor:
        return head(net((p - centre) / 0.5, p[..., 2:3] > FLOOR_Z if floor else None))

    opt = torch.optim.AdamW([*net.parameters(), *head.parameters()], 1e-3)
    train = torch.nonzero(~test).squeeze(1)
    for _ in range(STEPS):
        b = train[torch.randint(len(train), (16,))]
        loss = ((predict(clouds[b]) - (goals[b] - mean) / std) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = predict(clouds[test]) * std + mean
    return float((pred - goals[test]).norm(dim=1).median())


def main() -> None:
    torch.set_num_threads(1)
    clouds, goals, test = load(Path(sys.argv[1]))
    mean_err = float((goals[~test].mean(0) - goals[test]).norm(dim=1).median())
    print(json.dumps({"held_out_clouds": int(test.sum()), "median_goal_error_cm": {
        "always_the_mean_goal": round(100 * mean_err, 2),
        "table_in_the_pool": round(100 * probe(clouds, goals, test, floor=False), 2),
        "table_left_out": round(100 * probe(clouds, goals, test, floor=True), 2)}}))


if __name__ == "__main__":
    main()
