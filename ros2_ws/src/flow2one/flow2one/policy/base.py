"""What every policy kind shares: encoder, action normaliser, observation handling, sample/export API."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from flow2one.data.normalize import RangeNormalizer
from flow2one.policy.config import PolicyConfig
from flow2one.policy.encoder import build_encoder, hand_points
from flow2one.policy.unet1d import TemporalUNet1D

Obs = dict[str, Any] | torch.Tensor | np.ndarray


class Policy(nn.Module):
    """Base of teacher, student, L1 Flow and regression. Subclasses define `loss` and `_generate`.

    All network work happens in normalised action units; `sample` and `export_forward` return robot units.
    """

    time_conditioned: ClassVar[bool] = True

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder)
        self.action_norm = RangeNormalizer(cfg.action_dim)
        self.net = TemporalUNet1D(cfg.action_dim, cfg.encoder.embed_dim, cfg.unet, self.time_conditioned)
        w = torch.tensor(cfg.loss_weights or (1.0,) * cfg.action_dim, dtype=torch.float32)
        self.register_buffer("loss_w", w / w.mean(), persistent=False)

    # ---- observations -------------------------------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return list(self.encoder.input_names)

    def prepare_obs(self, obs: Obs) -> dict[str, torch.Tensor]:
        """numpy/torch dict (or a bare condition array for the vector encoder) -> checked tensors on our device."""
        if not isinstance(obs, dict):
            obs = {"cond": obs}
        dev = self.loss_w.device
        out = {}
        for name in self.input_names:
            if name not in obs or obs[name] is None:
                raise ValueError(f"observation lacks {name!r} (this policy uses {self.input_names})")
            v = torch.as_tensor(obs[name], device=dev)
            out[name] = v if v.dtype == torch.uint8 else v.float()
        self.encoder.check(out)
        return out

    def scene_shifted(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The training batch with each sample translated in x-y: by encoder.object_shift the objects (cloud(s)
        and labels, `action` or `teacher_set` in robot units, x-y first) with the arm and the hand's points
        kept (not where a label ends inside the hand mask), then by encoder.scene_shift the whole scene (the EE
        position too). The training step applies it before any kind's loss; unchanged in eval mode."""
        enc = self.cfg.encoder
        if not (self.training and (enc.scene_shift > 0 or enc.object_shift > 0)):
            return batch
        dev = self.loss_w.device
        out = {k: torch.as_tensor(batch[k], device=dev).float()
               for k in ("points", "points_prev", "proprio", "action", "teacher_set") if k in batch}
        n = len(next(iter(out.values())))

        def moved(v: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:  # offset (B, 2) or (B, N, 2)
            return torch.cat([v[..., :2] + offset.view(n, *[1] * (v.ndim - offset.ndim), *offset.shape[1:]),
                              v[..., 2:]], dim=-1)

        def hand(v: torch.Tensor) -> torch.Tensor:  # (B, N) bool: inside the hand mask
            return hand_points(v, out["proprio"][:, :3], enc.points_hand_radius, enc.points_hand_from)

        for s, arm_moves in ((enc.object_shift, False), (enc.scene_shift, True)):
            if s <= 0:
                continue
            offset = (torch.rand(n, 2, device=dev) * 2 - 1) * s
            hand_kept = not arm_moves and enc.points_hand_radius > 0 and "proprio" in out
            labels = [k for k in ("action", "teacher_set") if k in out]
            if hand_kept and labels:
                # A label that ends inside the hand mask heads for something the pool cannot see (the
                # reach_around ball at the hand's height): its shift would be unobservable, so it stays.
                ends = torch.cat([out[k][..., -1, :3].reshape(n, -1, 3) for k in labels], dim=1)
                offset = offset * ~hand(ends).any(1, keepdim=True)
            for k, v in out.items():
                if k == "proprio" and not arm_moves:
                    continue
                out[k] = moved(v, offset[:, None] * ~hand(v)[..., None] if hand_kept and k.startswith("points")
                               else offset)
        return {**batch, **out}

    def fit_normalizers(self, obs: dict[str, torch.Tensor], actions: torch.Tensor) -> None:
        """Set every normaliser from training data (robot units) before training."""
        self.encoder.fit_normalizers({k: torch.as_tensor(v) for k, v in obs.items()})
        self.action_norm.fit(torch.as_tensor(actions))

    # ---- sampling -----------------------------------------------------------------------------------------
    def _generate(self, emb: torch.Tensor, noise: torch.Tensor, **kw: Any) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, obs: Obs, n_samples: int = 1, generator: torch.Generator | None = None,
               **kw: Any) -> torch.Tensor:
        """(B, n_samples, H, action_dim) trajectories in robot units for a batch of observations."""
        if n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {n_samples}")
        o = self.prepare_obs(obs)
        emb = self.encoder(o)
        b = emb.shape[0]
        noise = torch.randn((b * n_samples, self.cfg.horizon, self.cfg.action_dim), generator=generator,
                            device=emb.device)
        x = self._generate(emb.repeat_interleave(n_samples, dim=0), noise, **kw)
        return self.action_norm.unnormalize(x).reshape(b, n_samples, self.cfg.horizon, self.cfg.action_dim)

    def export_forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Traceable single pass: (*observation inputs in `export_input_names` order, noise) -> (B, H, A) robot units.

        Inputs (robot observation encoder, only the enabled modalities, in this order):
          points  (B, N, 3) float32 base frame;  proprio (B, 10) float32;
          points_prev (B, N, 3): the cloud history_steps control steps earlier (with a history);
          rgb     (B, V, h, w, 3) uint8;         depth   (B, V, h, w) float32 metres;
          noise   (B, H, A) float32 standard normal (the runtime owns it: M candidates = batch M).
        Vector encoder: (cond (B, cond_dim) float32, noise). No data-dependent Python control flow.
        """
        names = self.input_names
        if len(inputs) != len(names) + 1:
            raise ValueError(f"export_forward takes {self.export_input_names}, got {len(inputs)} inputs")
        emb = self.encoder(dict(zip(names, inputs[:-1])))
        return self.action_norm.unnormalize(self._generate(emb, inputs[-1].float(), **self._export_kwargs()))

    def _export_kwargs(self) -> dict[str, Any]:
        return {}

    @property
    def export_input_names(self) -> list[str]:
        return self.input_names + ["noise"]

    # ---- training -----------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def _weighted(self, err: torch.Tensor) -> torch.Tensor:
        return (err * self.loss_w).mean()
