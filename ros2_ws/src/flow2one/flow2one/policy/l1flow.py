"""L1 Sample Flow (seed 003): x-prediction flow trained with an L1 loss, sampled in two network passes.

Pass 1 predicts x̂1 from pure noise and takes ONE Euler step to `l1_mid_time`; pass 2 predicts the
sample directly from there. t is uniform in training (the seed does not use a logit-normal schedule).
"""

from __future__ import annotations

from typing import Any

import torch

from flow2one.policy.base import Policy


class L1Flow(Policy):
    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x1 = self.action_norm.normalize(batch["action"])
        x0 = torch.randn_like(x1)
        t = torch.rand(len(x1), device=x1.device)
        x_t = (1 - t).view(-1, 1, 1) * x0 + t.view(-1, 1, 1) * x1
        pred = self.net(x_t, self.encoder(self.prepare_obs(batch)), t)
        loss = self._weighted((pred - x1).abs())
        return loss, {"loss": float(loss.detach())}

    def _generate(self, emb: torch.Tensor, noise: torch.Tensor, **_: Any) -> torch.Tensor:
        mid = self.cfg.flow.l1_mid_time
        b = noise.shape[0]
        x1 = self.net(noise, emb, torch.zeros(b, device=noise.device))
        x_mid = noise + mid * (x1 - noise)  # one Euler step of dx/dt = (x̂1 - x) / (1 - t) from t=0
        return self.net(x_mid, emb, torch.full((b,), mid, device=noise.device))
