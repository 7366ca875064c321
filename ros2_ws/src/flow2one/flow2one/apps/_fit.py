"""Shared body of train-teacher / train-l1flow / train-regression (they differ only in the policy kind)."""

from __future__ import annotations

import argparse

import torch

from flow2one.data.windows import load_windows
from flow2one.policy.factory import build_policy
from flow2one.train import common
from flow2one.train.loop import train_policy


def add_arguments(p: argparse.ArgumentParser) -> None:
    common.add_train_arguments(p, "episode dataset directory (episode_*.npz written by flow2one.data.episodes)")
    common.add_model_arguments(p)


def run(args: argparse.Namespace, kind: str) -> int:
    common.check_out(args)
    torch.set_num_threads(args.threads)
    warm = common.warm_start(args, kind)
    cfg0 = warm.cfg if warm else common.build_config(args, kind, {}) if args.config else None
    if cfg0:
        data = common.policy_windows(args.data, cfg0, args.stride)
    else:
        data = load_windows(args.data, stride=args.stride, modalities=common.modalities(args),
                            history_steps=args.history_steps, motion_steps=args.motion_steps)
    cfg = cfg0 or common.build_config(args, kind, data)
    common.set_encoder_options(cfg, args)
    policy = warm or build_policy(cfg)
    if not warm:
        policy.fit_normalizers(common.obs_of(data, cfg), torch.as_tensor(data["action"]))
    train_data = {**common.obs_of(data, cfg), "action": torch.as_tensor(data["action"])}
    print(f"{kind}: {len(data['action'])} windows from {args.data}, "
          f"{sum(p.numel() for p in policy.parameters()) / 1e6:.2f} M parameters")
    train_policy(policy, train_data, common.settings(args), out_dir=args.out, resume=args.resume,
                 log_dir=common.log_dir(args), progress=not args.no_progress,
                 card={"data": str(args.data), "windows": len(data["action"]), **common.crop_card(args.data),
                       **({"warm_start": str(args.warm_start)} if warm else {})})
    print(f"saved {args.out}")
    return 0
