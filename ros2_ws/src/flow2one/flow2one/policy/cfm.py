"""Conditional Flow Matching teacher: data-space x-prediction on the linear path x_t = (1-t) x0 + t x1.

Training samples t from a logit-normal and masks a t-dependent share of the noisy input's steps (the
anti-shortcut regulariser: near t=1 the model could otherwise copy x_t and ignore the observation).
Sampling integrates dx/dt = (x̂1 - x_t) / (1 - t) with Euler steps (50 by default; 1 = the naive
one-step baseline, which returns the conditional mean and collapses the modes).
"""

from __future__ import annotations

from typing import Any

import torch

from flow2one.policy.base import Policy


def logit_normal_t(n: int, mean: float, std: float, device: torch.device | None = None,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.sigmoid(mean + std * torch.randn(n, device=device, generator=generator))


def time_dependent_mask(x_t: torch.Tensor, t: torch.Tensor, max_prob: float,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero whole time steps of x_t (B, H, A), each with probability max_prob * t (so never at t=0).

    Returns (masked x_t, keep mask (B, H, 1)). Training only; sampling never masks.
    """
    if not 0.0 <= max_prob <= 1.0:
        raise ValueError(f"mask probability must be in [0, 1], got {max_prob}")
    p = (max_prob * t).reshape(-1, 1, 1).expand(x_t.shape[0], x_t.shape[1], 1)
    keep = (torch.rand(p.shape, device=x_t.device, generator=generator) >= p).to(x_t.dtype)
    return x_t * keep, keep


def euler_x_prediction(predict, x: torch.Tensor, steps: int, t0: float = 0.0) -> torch.Tensor:
    """Integrate the x-prediction ODE from t0 to 1 in `steps` Euler steps; predict(x, t (B,)) -> x̂1."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dt = (1.0 - t0) / steps
    for i in range(steps):
        t = t0 + i * dt
        x1 = predict(x, torch.full((x.shape[0],), t, device=x.device))
        x = x + dt * (x1 - x) / (1.0 - t)
    return x


class CFMTeacher(Policy):
    """The multi-step expert; `export_steps` (default the config's sample_steps) fixes the unrolled export."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.export_steps = cfg.flow.sample_steps

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        f = self.cfg.flow
        x1 = self.action_norm.normalize(batch["action"])
        x0 = torch.randn_like(x1)
        t = logit_normal_t(len(x1), f.t_logit_mean, f.t_logit_std, x1.device)
        x_t = (1 - t).view(-1, 1, 1) * x0 + t.view(-1, 1, 1) * x1
        x_in, keep = time_dependent_mask(x_t, t, f.mask_max_prob)
        pred = self.net(x_in, self.encoder(self.prepare_obs(batch)), t)
        loss = self._weighted((pred - x1) ** 2)
        return loss, {"loss": float(loss.detach()), "masked_frac": float(1 - keep.mean())}

    def _generate(self, emb: torch.Tensor, noise: torch.Tensor, steps: int | None = None, **_: Any) -> torch.Tensor:
        return euler_x_prediction(lambda x, t: self.net(x, emb, t), noise, steps or self.cfg.flow.sample_steps)

    def _export_kwargs(self) -> dict[str, Any]:
        return {"steps": self.export_steps}
