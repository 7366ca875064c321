"""Offline evaluation of a checkpoint on held-out episodes: trajectory errors of sampled chunks against the
demonstrated chunks (best-of-N and mean over N samples, position in metres, gripper in metres) and the
batch-1 CPU latency, as JSON. Also `pose_gain`: how far the chunk's first 0.4 s moves per metre the EE
position input moves (0: placed from the scene; near 1: the policy copies its own pose, a demo shortcut that
holds offsets in closed loop; train with --pose-noise against it). Closed-loop success in the simulator is
measured by the sim tools.
"""

from __future__ import annotations

import argparse
import json

import torch

from flow2one.train.evaluate import evaluate


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint directory")
    p.add_argument("--data", required=True, help="episode dataset directory")
    p.add_argument("--episodes", default=":", help="python slice of episodes to use, e.g. '40:' for held-out ones")
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--steps", type=int, default=0, help="teacher Euler steps (0 = config default)")
    p.add_argument("--max-windows", type=int, default=256)
    p.add_argument("--stride", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    print(json.dumps(evaluate(args.ckpt, args.data, args.episodes, args.n_samples, args.steps, args.max_windows,
                              args.stride, args.seed), indent=2))
    return 0
