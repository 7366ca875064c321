"""Generate the distillation set: the frozen teacher samples K trajectories (default 16, 50 Euler steps)
for every training window's observation and stores them with the observations in one safetensors file,
so `flow2one train-student` needs neither the teacher nor the episodes.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from tqdm import tqdm

from flow2one.data.distill_set import save_distill_set
from flow2one.policy.checkpoint import load_policy
from flow2one.policy.config import to_dict
from flow2one.train import common


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher checkpoint directory")
    p.add_argument("--data", required=True, help="episode dataset directory (the teacher's training data)")
    p.add_argument("--out", required=True, help="output .safetensors file")
    p.add_argument("--k", type=int, default=16, help="teacher trajectories per observation")
    p.add_argument("--steps", type=int, default=50, help="teacher Euler steps")
    p.add_argument("--stride", type=int, default=1, help="take a window every STRIDE steps")
    p.add_argument("--max-obs", type=int, default=0, help="use at most this many observations (0 = all)")
    p.add_argument("--batch-size", type=int, default=16, help="observations per teacher call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-progress", action="store_true")


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    if args.k < 1 or args.steps < 1:
        raise ValueError("--k and --steps must be >= 1")
    teacher, cfg = load_policy(args.teacher)
    if cfg.kind != "teacher":
        raise ValueError(f"{args.teacher} is a {cfg.kind!r} checkpoint, not a teacher")
    crop = common.crop_card(args.data, args.teacher)
    data = common.policy_windows(args.data, cfg, args.stride)
    n = len(data["action"]) if args.max_obs <= 0 else min(args.max_obs, len(data["action"]))
    pick = np.random.default_rng(args.seed).permutation(len(data["action"]))[:n] if n < len(data["action"]) else \
        np.arange(n)
    obs = {m: data[m][pick] for m in common.config_modalities(cfg)}
    gen = torch.Generator().manual_seed(args.seed)
    sets = []
    for i in tqdm(range(0, n, args.batch_size), desc="teacher sets", disable=args.no_progress):
        sets.append(teacher.sample({m: v[i:i + args.batch_size] for m, v in obs.items()}, args.k,
                                   generator=gen, steps=args.steps))
    meta = {"teacher": str(args.teacher), "teacher_config": to_dict(cfg), "k": args.k, "steps": args.steps,
            "data": str(args.data), **crop}
    save_distill_set(args.out, obs, torch.cat(sets), meta)
    print(f"saved {n} observations x {args.k} trajectories to {args.out}")
    return 0
