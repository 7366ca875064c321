"""The one training loop every policy kind and the generic API use.

In-memory tensors, random mini-batches, AdamW with warm-up + cosine decay, gradient clipping, tqdm,
TensorBoard scalars, safetensors checkpoints (policy) + `train_state.pt` (optimizer, schedule, RNG)
so `resume=True` continues where it stopped. Under torchrun (WORLD_SIZE > 1) the loss runs through
DistributedDataParallel, each rank drawing its own batches; rank 0 logs and saves.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from flow2one.policy.base import Policy
from flow2one.policy.checkpoint import MODEL_FILE, save_policy

STATE_FILE = "train_state.pt"
# Threads a running train_policy takes from its next step on (0: those it started with). Another thread of the
# process raises it when cores come free (`reproduce`: the teacher round's, once the baselines beside it end,
# instead of one core idling until the round ends). The loop sets it itself: under OpenMP torch's thread count
# belongs to the thread that sets it.
threads_wanted = 0


@dataclass
class TrainSettings:
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    warmup: int = 100
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 25
    ckpt_every: int = 1000
    encoder_lr_scale: float = 1.0  # the encoder's learning rate over the rest's; 0 freezes it

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("steps and batch_size must be >= 1 and lr > 0")
        if not 0 <= self.encoder_lr_scale <= 1:
            raise ValueError(f"encoder_lr_scale must be in [0, 1], got {self.encoder_lr_scale}")


def param_groups(policy: Policy, settings: TrainSettings) -> list[dict[str, Any]]:
    """The optimizer's groups: the encoder at `encoder_lr_scale` x lr, the rest at lr. A scale of 0 takes the
    encoder out of autograd rather than giving it a zero rate, so it stays exactly as loaded (a student's: its
    teacher's) and its backward pass is skipped."""
    enc = list(policy.encoder.parameters())
    enc_ids = {id(p) for p in enc}
    rest = [p for p in policy.parameters() if id(p) not in enc_ids]
    if settings.encoder_lr_scale == 0:
        policy.encoder.requires_grad_(False)
        return [{"params": rest}]
    return [{"params": rest}, {"params": enc, "lr": settings.lr * settings.encoder_lr_scale}]


class _LossModule(nn.Module):
    """One training step's loss: the batch as training sees it (Policy.scene_shifted), then `policy.loss`. A
    module so that DDP can wrap it (DDP only synchronises through a module's forward)."""

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.policy.loss(self.policy.scene_shifted(batch))


def distributed_setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device). Initialises the process group only when torchrun set WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    return rank, world, dev


def train_policy(policy: Policy, data: dict[str, Any], settings: TrainSettings, out_dir: str | Path | None = None,
                 resume: bool = False, log_dir: str | Path | None = None, progress: bool = True,
                 device: torch.device | str | None = None, card: dict[str, Any] | None = None) -> Policy:
    """Train `policy` in place on `data` (dict of arrays with equal first dimension; keys its loss reads)."""
    rank, world, auto_dev = distributed_setup() if device is None else (0, 1, torch.device(device))
    tensors = {k: torch.as_tensor(v) for k, v in data.items()}
    n = {len(v) for v in tensors.values()}
    if len(n) != 1:
        raise ValueError(f"training arrays differ in length: { {k: len(v) for k, v in tensors.items()} }")
    n_rows = n.pop()
    if n_rows == 0:
        raise ValueError("no training data")
    policy.to(auto_dev).train()
    tensors = {k: v.to(auto_dev) for k, v in tensors.items()}
    opt = torch.optim.AdamW(param_groups(policy, settings), lr=settings.lr, weight_decay=settings.weight_decay)
    def lr_at(step: int) -> float:
        if step < settings.warmup:
            return (step + 1) / settings.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - settings.warmup) / max(1, settings.steps - settings.warmup)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(settings.seed + 1000 * rank)
    torch.manual_seed(settings.seed + 1000 * rank)
    start = 0
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is not None and (out / STATE_FILE).is_file():
        from safetensors.torch import load_file
        policy.load_state_dict(load_file(str(out / MODEL_FILE)))
        st = torch.load(out / STATE_FILE, weights_only=False)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        start = st["step"]
    model: nn.Module = _LossModule(policy)
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[auto_dev] if auto_dev.type == "cuda" else None)
    writer = None
    if rank == 0 and log_dir is not None:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(log_dir))

    def save(step: int) -> None:
        if rank != 0 or out is None:
            return
        save_policy(out, policy, {**(card or {}), "train_steps": step, "train": asdict(settings)})
        torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(), "step": step}, out / STATE_FILE)

    bar = tqdm(range(start, settings.steps), initial=start, total=settings.steps, disable=not progress or rank != 0,
               desc=f"train {policy.cfg.kind}", dynamic_ncols=True)
    for step in bar:
        if threads_wanted and threads_wanted != torch.get_num_threads():
            torch.set_num_threads(threads_wanted)
        idx = torch.randint(0, n_rows, (settings.batch_size,), generator=gen).to(auto_dev)
        loss, logs = model({k: v[idx] for k, v in tensors.items()})
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at step {step}; last checkpoint kept")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = nn.utils.clip_grad_norm_(policy.parameters(), settings.grad_clip)
        opt.step()
        sched.step()
        if step % settings.log_every == 0 or step == settings.steps - 1:
            bar.set_postfix(loss=f"{logs['loss']:.4f}")
            if writer is not None:
                for k, v in {**logs, "grad_norm": float(gnorm), "lr": sched.get_last_lr()[0]}.items():
                    writer.add_scalar(f"{policy.cfg.kind}/{k}", v, step)
        if (step + 1) % settings.ckpt_every == 0 and step + 1 < settings.steps:
            save(step + 1)
    save(settings.steps)
    if writer is not None:
        writer.close()
    return policy.eval()
