"""One-step student distilled from the teacher's trajectory sets with set-level IMLE.

Same U-Net as the teacher with every time-conditioning module removed (`time_conditioned = False`):
noise + observation embedding -> a full chunk in one pass. The loss is the bi-directional Chamfer
distance between the K teacher trajectories and M student hypotheses of the same observation.
"""

from __future__ import annotations

from typing import Any

import torch

from flow2one.policy.base import Policy
from flow2one.policy.chamfer import chamfer_terms


class IMLEStudent(Policy):
    time_conditioned = False

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        target = self.action_norm.normalize(batch["teacher_set"])  # (B, K, H, A)
        b, m = target.shape[0], self.cfg.student.n_hypotheses
        emb = self.encoder(self.prepare_obs(batch)).repeat_interleave(m, dim=0)
        noise = torch.randn((b * m, self.cfg.horizon, self.cfg.action_dim), device=target.device)
        pred = self.net(noise, emb).reshape(b, m, self.cfg.horizon, self.cfg.action_dim)
        cover, seek = chamfer_terms(target, pred, self.loss_w)
        loss = (cover + seek).mean()
        return loss, {"loss": float(loss.detach()), "chamfer_cover": float(cover.detach().mean()), "chamfer_seek": float(seek.detach().mean())}

    def _generate(self, emb: torch.Tensor, noise: torch.Tensor, **_: Any) -> torch.Tensor:
        return self.net(noise, emb)
