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

    @torch.no_grad()
    def init_from_teacher(self, teacher: Policy) -> None:
        """Start as the teacher's one-step prediction at t = 0 (its x-prediction from pure noise): every
        weight and normaliser copied, the t = 0 time embedding folded into each FiLM bias, since the student
        has no time input. The IMLE loss then only has to spread that prediction over the teacher's modes,
        instead of learning perception from scratch (a few epochs on a CPU, not the paper's 1,500)."""
        if not teacher.cfg.encoder.same_weights(self.cfg.encoder) or teacher.cfg.unet != self.cfg.unet:
            raise ValueError("the teacher's encoder/U-Net config differs from the student's: cannot initialise")
        src = teacher.state_dict()
        t_feat = torch.nn.functional.silu(teacher.net.time_mlp(torch.zeros(1)))[0]  # FiLM's SiLU(cond) time part
        td = t_feat.shape[0]
        state = {}
        for key, value in self.state_dict().items():
            if key.endswith(".film.1.weight"):  # teacher FiLM input: cat([time, observation])
                state[key] = src[key][:, td:]
            elif key.endswith(".film.1.bias"):
                state[key] = src[key] + src[key[:-len("bias")] + "weight"][:, :td] @ t_feat
            else:
                state[key] = src[key]
            if state[key].shape != value.shape:
                raise ValueError(f"teacher weight {key} has shape {tuple(state[key].shape)}, student "
                                 f"{tuple(value.shape)}")
        self.load_state_dict(state)
