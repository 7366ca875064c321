"""Checkpoint directories: `model.safetensors` + `config.yaml` (full PolicyConfig) + `card.yaml`.

A checkpoint rebuilds its module from config.yaml alone, so every consumer (runtime, export, evaluate)
loads with `load_policy(dir)` and never needs training code or the training command line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import load_file, save_file

from flow2one.fileio import write_text_atomic
from flow2one.policy.base import Policy
from flow2one.policy.config import PolicyConfig, from_dict, to_dict
from flow2one.policy.factory import build_policy
from flow2one.yamlio import load_yaml

MODEL_FILE, CONFIG_FILE, CARD_FILE = "model.safetensors", "config.yaml", "card.yaml"


def save_policy(directory: str | Path, policy: Policy, card: dict[str, Any] | None = None) -> Path:
    """Write the three files (each atomically); `card` entries are merged over the generated basics."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    tmp = d / (MODEL_FILE + ".tmp")
    save_file(state, str(tmp), metadata={"kind": policy.cfg.kind})
    os.replace(tmp, d / MODEL_FILE)
    write_text_atomic(d / CONFIG_FILE, yaml.safe_dump(to_dict(policy.cfg), sort_keys=False))
    info = dict(card or {})
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if policy.cfg.encoder.kind == "observation":  # a deployable model: the runtime's full card format
        from flow2one.runtime.card import card_for_policy, save_card
        save_card(d, card_for_policy(policy, name=str(info.pop("name", d.resolve().name)),
                                     trained_on=str(info.pop("trained_on", info.get("data", "not recorded"))),
                                     cameras=tuple(info.pop("cameras", ())), notes=str(info.pop("notes", "")),
                                     cloud_crop=dict(info.pop("cloud_crop", None) or {}), created_utc=created,
                                     extra=info))
    else:  # generic vector-condition models are not deployable; record the basics
        basics = {"kind": policy.cfg.kind, "horizon": policy.cfg.horizon, "action_dim": policy.cfg.action_dim,
                  "inputs": policy.export_input_names, "parameters": sum(p.numel() for p in policy.parameters()),
                  "created_utc": created}
        write_text_atomic(d / CARD_FILE, yaml.safe_dump({**basics, **info}, sort_keys=False))
    return d


def load_config(directory: str | Path) -> PolicyConfig:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: no {CONFIG_FILE}; not a flow2one checkpoint directory")
    return from_dict(load_yaml(path, "policy config"))


def load_policy(directory: str | Path, device: str | torch.device = "cpu") -> tuple[Policy, PolicyConfig]:
    """(module in eval mode, its config). Raises ValueError if files are missing or do not match the config."""
    cfg = load_config(directory)
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise ValueError(f"{directory}: no {MODEL_FILE}")
    policy = build_policy(cfg)
    try:
        policy.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match {CONFIG_FILE}: {exc}") from exc
    return policy.to(device).eval(), cfg
