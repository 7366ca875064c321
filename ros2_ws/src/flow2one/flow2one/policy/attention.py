"""Bi-directional cross-attention between RGB and depth tokens, and the gated fusion of the two.

Written with plain matmuls (no nn.MultiheadAttention fast path) so the exported ONNX graph at opset 17
is ordinary MatMul/Softmax on every runtime.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossAttention(nn.Module):
    """Queries from one modality attend to keys/values of the other (pre-norm, residual)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        m, h = ctx.shape[1], self.heads
        q = self.q(self.norm_q(x)).reshape(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(self.norm_kv(ctx)).reshape(b, m, 2, h, d // h).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        return x + self.out((attn @ v).transpose(1, 2).reshape(b, n, d))


class BiCrossAttention(nn.Module):
    """RGB <- depth and depth <- RGB, both from the inputs (symmetric, Eqs. 5-6 of the paper)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.rgb_from_depth = CrossAttention(dim, heads)
        self.depth_from_rgb = CrossAttention(dim, heads)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rgb_from_depth(rgb, depth), self.depth_from_rgb(depth, rgb)


class GatedFusion(nn.Module):
    """A gating network predicts per-sample modality weights (softmax) so a degraded sensor can be down-weighted."""

    def __init__(self, dim: int, n_modalities: int = 2) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(n_modalities * dim, dim), nn.SiLU(), nn.Linear(dim, n_modalities))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        w = torch.softmax(self.gate(torch.cat(feats, dim=-1)), dim=-1)
        return sum(w[:, i:i + 1] * f for i, f in enumerate(feats))
