"""Distil the one-step student (no time input) from a distillation set (`flow2one distill`) with set-level
IMLE: bi-directional Chamfer between the K teacher trajectories and M student hypotheses per observation.
The architecture is the teacher's (from the set's metadata) minus every time-conditioning module.
Writes a checkpoint directory; TensorBoard logs go to OUT/tb; --resume continues; torchrun for DDP.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from flow2one.data.distill_set import load_distill_set
from flow2one.policy.checkpoint import load_policy
from flow2one.policy.config import from_dict
from flow2one.policy.factory import build_policy
from flow2one.train import common
from flow2one.train.loop import STATE_FILE, train_policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_train_arguments(p, "distillation set file written by `flow2one distill`")
    p.add_argument("--hypotheses", type=int, default=32,
                   help="M student samples per observation in the loss (32 did better in closed loop than 16, "
                        "for ~1.7x the training time; results/replan/, sixteenth stop)")
    p.add_argument("--init-from", metavar="TEACHER_DIR",
                   help="start from this teacher checkpoint's one-step (t = 0) prediction instead of random "
                        "weights (its encoder and U-Net; normalisers too); the set's own teacher is the natural choice")


def main(args: argparse.Namespace) -> int:
    common.check_out(args)
    torch.set_num_threads(args.threads)
    obs, sets, meta = load_distill_set(args.data)
    if "teacher_config" not in meta:
        raise ValueError(f"{args.data}: metadata lacks the teacher config")
    warm = common.warm_start(args, "student")
    if warm and args.init_from:
        raise ValueError("--warm-start and --init-from both set the starting weights; pass one")
    if warm and not common.same_encoder(warm.cfg, meta["teacher_config"]):
        raise ValueError(f"--warm-start {args.warm_start}: its encoder config differs from the set's teacher")
    cfg = warm.cfg if warm else from_dict({**meta["teacher_config"], "kind": "student"})
    cfg.student.n_hypotheses, cfg.student.k_teacher = args.hypotheses, sets.shape[1]
    common.set_encoder_options(cfg, args)
    policy = warm or build_policy(cfg)
    if not warm:
        policy.fit_normalizers(obs, sets.flatten(0, 1))
    if args.init_from and not (args.resume and (Path(args.out) / STATE_FILE).is_file()):  # a resume has its weights
        teacher, _ = load_policy(args.init_from)
        policy.init_from_teacher(teacher)
        print(f"student: initialised from {args.init_from} (its t = 0 prediction)")
    print(f"student: {len(sets)} observations x {sets.shape[1]} teacher trajectories, M={args.hypotheses}")
    train_policy(policy, {**obs, "teacher_set": sets}, common.settings(args), out_dir=args.out, resume=args.resume,
                 log_dir=common.log_dir(args), progress=not args.no_progress,
                 card={"distill_set": str(args.data), "teacher": meta.get("teacher", ""),
                       **{k: meta[k] for k in ("cloud_crop",) if k in meta},
                       **({"warm_start": str(args.warm_start)} if warm else {})})
    print(f"saved {args.out}")
    return 0
