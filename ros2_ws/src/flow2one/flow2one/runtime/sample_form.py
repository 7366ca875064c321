"""The runtime form of a policy, shared by the export (the graph written to ONNX) and the PyTorch backend."""

from __future__ import annotations

import torch
from torch import nn


class SampleForm(nn.Module):
    """forward(points, [points_prev], proprio, [rgb], [depth], noise (B, M, H, A)) -> actions (B, M, H, A), robot units.

    The runtime form of every backend: flow2one.policy's export_forward with the observation encoded
    ONCE for its M candidates (as Policy.sample does). Feeding M copies of the observation through
    export_forward instead costs M encoder passes: 4x the latency for M=4 on the CPU sim model, where the
    4,096-point encoder is about half the work.
    """

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        self.names = list(policy.export_input_names[:-1])

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        p, noise = self.policy, args[-1]
        b, m, h, a = noise.shape
        emb = p.encoder(dict(zip(self.names, args[:-1])))
        emb = emb[:, None].expand(b, m, emb.shape[-1]).reshape(b * m, emb.shape[-1])
        x = p._generate(emb, noise.reshape(b * m, h, a).float(), **p._export_kwargs())
        return p.action_norm.unnormalize(x).reshape(b, m, h, a)
