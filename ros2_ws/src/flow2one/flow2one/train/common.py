"""Command-line pieces the training commands share: options, config building, data loading."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flow2one.data.windows import load_windows
from flow2one.policy.base import Policy
from flow2one.policy.checkpoint import load_policy
from flow2one.policy.config import EncoderConfig, PolicyConfig, from_dict, preset, to_dict
from flow2one.train.loop import TrainSettings
from flow2one.yamlio import load_yaml

MODALITIES = ("points", "proprio", "rgb", "depth")


def add_train_arguments(p: argparse.ArgumentParser, data_help: str) -> None:
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--out", required=True, help="checkpoint directory (model.safetensors, config.yaml, card.yaml)")
    p.add_argument("--steps", type=int, default=20000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--encoder-lr-scale", type=float, default=1.0, metavar="F",
                   help="the observation encoder's learning rate as a fraction of --lr; 0 freezes it, so a student "
                        "initialised from its teacher keeps the teacher's encoder (in the sim that aimed worse than "
                        "training it: results/replan/, twenty-third stop)")
    p.add_argument("--ckpt-every", type=int, default=1000, help="steps between checkpoints (resume points)")
    p.add_argument("--resume", action="store_true", help="continue from --out/train_state.pt")
    p.add_argument("--force", action="store_true", help="train from scratch into an existing --out, replacing its model")
    p.add_argument("--warm-start", metavar="MODEL_DIR",
                   help="continue training this checkpoint (same kind) on --data: its config, weights and normalisers "
                        "are kept, so a DAgger round fine-tunes the model it corrects instead of retraining it")
    p.add_argument("--log-dir", help="TensorBoard folder (default: OUT/tb)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--pose-noise", type=float, metavar="M",
                   help="training only: the arm displaced by noise of this std (m) with the scene and labels kept, "
                        "so the policy finds its target in the cloud instead of copying its own pose (default: the "
                        "model's setting: 0, or the --warm-start's or the distillation set's teacher's)")
    p.add_argument("--pose-noise-radius", type=float, metavar="R",
                   help="with --pose-noise: the cloud's points within R m of the TCP (x-y, from the fingertips up: "
                        "the hand) move with it; 0 = only the EE position input moves (default: the model's)")
    p.add_argument("--scene-shift", type=float, metavar="M",
                   help="training only: each sample's whole scene (cloud, EE position, labels) translated in x-y by "
                        "up to M m, so the policy finds its target in the cloud instead of where targets usually "
                        "are; no gain on sim pick_place, results/replan (default: the model's setting: 0, or the "
                        "--warm-start's or the set's teacher's)")
    p.add_argument("--object-shift", type=float, metavar="M",
                   help="training only: each sample's objects (cloud and labels) translated in x-y by up to M m while "
                        "the arm stays (its EE position and, with --hand-mask, the hand's points), so only the cloud "
                        "says where the target went; with --hand-mask, samples whose label ends inside the mask are "
                        "not shifted. Sim student, 3 cm: better aim offline, level held out, results/replan "
                        "(default: the model's setting: 0, or the --warm-start's or the set's teacher's)")
    p.add_argument("--hand-mask", type=float, metavar="R",
                   help="self-filter, in training and at inference: the cloud's points within R m (x-y) of the TCP, "
                        "from the fingertips up (the hand and what it holds), are left out of the PointNet's pool "
                        "(default: the model's setting: 0 = kept, or the --warm-start's or the set's teacher's)")
    p.add_argument("--ceiling-z", type=float, metavar="Z",
                   help="self-filter: points at or above this base-frame height (m; the arm above the objects) are "
                        "left out of the pool too (default: the model's setting)")
    p.add_argument("--hand-mask-from", type=float, metavar="H",
                   help="self-filter: the hand mask counts points from H m above the TCP up; above the grasp "
                        "(0.03 for the sim's 4 cm cubes) it keeps a held object in view (default: the model's "
                        "setting: -0.015, just below the fingertips)")
    p.add_argument("--no-progress", action="store_true")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="small", choices=("tiny", "small", "paper"), help="model size")
    p.add_argument("--config", help="YAML PolicyConfig (as written to config.yaml) instead of --preset")
    p.add_argument("--modalities", default="points,proprio",
                   help=f"comma list of observation inputs from {','.join(MODALITIES)}")
    p.add_argument("--stride", type=int, default=1, help="take a window every STRIDE steps of each episode")
    p.add_argument("--history-steps", type=int, default=0,
                   help="also encode the cloud this many control steps earlier (velocity of moving objects)")
    p.add_argument("--motion-steps", type=int, default=0,
                   help="proprio also carries its change over this many control steps (the arm's own motion)")
    p.add_argument("--motion-noise", type=float, default=0.0,
                   help="training only: std of noise on the normalised motion input (needs --motion-steps)")


def check_out(args: argparse.Namespace) -> None:
    """Refuse to replace a trained model by accident: an existing --out needs --resume or --force. Checked
    before any data is loaded, so the mistake costs nothing."""
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file; it must be a checkpoint directory")
    held = [f for f in ("model.safetensors", "train_state.pt") if (out / f).is_file()]
    if held and not (args.resume or args.force):
        raise FileExistsError(f"--out {out} already holds a checkpoint; pass --resume to continue it or "
                              "--force to train a new one in its place")
    if args.steps < 1 or args.batch_size < 1 or not args.lr > 0:
        raise ValueError(f"--steps ({args.steps}), --batch-size ({args.batch_size}) and --lr ({args.lr}) must be > 0")
    if not 0 <= args.encoder_lr_scale <= 1:
        raise ValueError(f"--encoder-lr-scale must be in [0, 1], got {args.encoder_lr_scale}")


def warm_start(args: argparse.Namespace, kind: str) -> Policy | None:
    """The --warm-start model in training mode, or None. Its normalisers stay as trained: its weights only
    make sense in their units. A resume has its own weights, so there --warm-start only sets the config."""
    if not args.warm_start:
        return None
    policy, cfg = load_policy(args.warm_start)
    if cfg.kind != kind:
        raise ValueError(f"--warm-start {args.warm_start} is a {cfg.kind} checkpoint; this command trains a {kind}")
    return policy.train()


# The encoder settings a trainer's flags may change on any start (none changes a weight): flag -> config field.
ENCODER_OPTIONS = {"pose_noise": "pose_noise", "pose_noise_radius": "pose_noise_radius", "scene_shift": "scene_shift",
                   "object_shift": "object_shift", "hand_mask": "points_hand_radius", "ceiling_z": "points_ceiling_z",
                   "hand_mask_from": "points_hand_from"}


def encoder_flags(encoder: dict[str, float]) -> list[str]:
    """The trainer flags that set these ENCODER_OPTIONS fields (a recipe's command line)."""
    flag = {v: k for k, v in ENCODER_OPTIONS.items()}
    return [a for k, v in encoder.items() for a in (f"--{flag[k].replace('_', '-')}", str(v))]


def set_encoder_options(cfg: PolicyConfig, args: argparse.Namespace) -> None:
    """--pose-noise / --pose-noise-radius / --scene-shift / --object-shift (training only) and --hand-mask /
    --ceiling-z / --hand-mask-from (which points are pooled) onto the model's config: none changes a weight, so
    they may change on a warm start or a teacher initialisation. Checked as the config checks them."""
    change = {field: getattr(args, arg) for arg, field in ENCODER_OPTIONS.items() if getattr(args, arg) is not None}
    checked = dataclasses.replace(cfg.encoder, **change)
    for k in change:
        setattr(cfg.encoder, k, getattr(checked, k))


def same_encoder(a: PolicyConfig, b: dict[str, Any]) -> bool:
    """Whether config `a`'s encoder has config dict `b`'s weights (its own training settings and masks aside)."""
    return a.encoder.same_weights(EncoderConfig(**b["encoder"]))


def settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         ckpt_every=args.ckpt_every, encoder_lr_scale=args.encoder_lr_scale)


def modalities(args: argparse.Namespace) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in args.modalities.split(",") if m.strip())
    bad = set(mods) - set(MODALITIES)
    if bad or not mods:
        raise ValueError(f"--modalities {args.modalities!r}: choose from {MODALITIES}")
    return mods + (("points_prev",) if args.history_steps else ())


def build_config(args: argparse.Namespace, kind: str, data: dict[str, np.ndarray]) -> PolicyConfig:
    """Config from --config or --preset, with the image geometry taken from the data."""
    if args.config:
        return from_dict({**load_yaml(args.config, "--config file"), "kind": kind})
    mods = modalities(args)
    over: dict[str, Any] = {f"use_{m}": m in mods for m in MODALITIES} | {"history_steps": args.history_steps,
                                                                 "motion_steps": args.motion_steps,
                                                                 "motion_noise": args.motion_noise}
    for m in ("rgb", "depth"):
        if m in mods:
            over["n_views"], over["image_size"] = data[m].shape[1], tuple(data[m].shape[2:4])
    cfg = preset(args.preset, kind, **over)
    return from_dict(to_dict(cfg))


def config_modalities(cfg: PolicyConfig) -> tuple[str, ...]:
    """The data arrays a policy reads: its modalities, plus points_prev with a cloud history."""
    return tuple(m for m in MODALITIES if getattr(cfg.encoder, f"use_{m}")) + (
        ("points_prev",) if cfg.encoder.history_steps else ())


def policy_windows(data_dir: str | Path, cfg: PolicyConfig, stride: int,
                   episodes: slice | None = None) -> dict[str, np.ndarray]:
    """The training windows of `data_dir` with exactly the inputs `cfg`'s policy reads."""
    return load_windows(data_dir, cfg.horizon, stride, config_modalities(cfg), episodes,
                        cfg.encoder.history_steps, cfg.encoder.motion_steps)


def obs_of(data: dict[str, Any], cfg: PolicyConfig) -> dict[str, torch.Tensor]:
    return {m: torch.as_tensor(data[m]) for m in config_modalities(cfg)}


def log_dir(args: argparse.Namespace) -> Path:
    return Path(args.log_dir) if args.log_dir else Path(args.out) / "tb"


def crop_card(data_dir: str | Path, model_dir: str | Path | None = None) -> dict[str, Any]:
    """The card entry of the episodes' point-cloud crop ({} when they do not all record one). `model_dir`: a
    model these episodes are fed to (the teacher a distillation set is made with); a crop it records must be
    the same, or its labels come from clouds it never saw."""
    from flow2one.data.episodes import dataset_crop
    from flow2one.runtime.card import CardError, load_card

    crop = dataset_crop(data_dir)
    if crop is None:
        print(f"{data_dir}: the episodes do not all record their point-cloud crop; the card will not either")
        return {}
    if model_dir is not None:
        try:
            theirs = load_card(model_dir).crop
        except CardError:
            theirs = None
        if theirs is not None and not theirs.same(crop):
            raise ValueError(f"{model_dir} was trained on clouds cropped to {theirs}, the episodes of {data_dir} "
                             f"to {crop}")
    return {"cloud_crop": crop.to_dict()}
