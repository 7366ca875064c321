"""Plain MSE regression to demonstrations: the collapse baseline.

Same time-free U-Net as the student and the same (noise, observation) inputs, but trained with MSE to a
single demonstration: the noise carries no information about which mode, so it learns the conditional
mean, i.e. the average of the modes.
"""

from __future__ import annotations

from typing import Any

import torch

from flow2one.policy.base import Policy


class RegressionPolicy(Policy):
    time_conditioned = False

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x1 = self.action_norm.normalize(batch["action"])
        pred = self.net(torch.randn_like(x1), self.encoder(self.prepare_obs(batch)))
        loss = self._weighted((pred - x1) ** 2)
        return loss, {"loss": float(loss.detach())}

    def _generate(self, emb: torch.Tensor, noise: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.net(noise, emb)
