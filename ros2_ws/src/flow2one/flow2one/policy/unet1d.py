"""Temporal 1D U-Net over an action chunk with FiLM conditioning (Diffusion Policy's ConditionalUnet1D).

With `time_conditioned=False` (the one-step student) the sinusoidal time encoding and its MLP do not
exist at all, and the FiLM projections are fed by the observation embedding alone: the module cannot
receive a time input, which is what the paper's student is.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from flow2one.policy.config import UNetConfig


class SinusoidalTimeEmbedding(nn.Module):
    """Flow time t in [0, 1] -> (B, dim) sin/cos features (t is scaled by 100 so [0, 1] spans many periods)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1)))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        arg = 100.0 * t.reshape(-1, 1) * self.freqs
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Conv1dBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, groups: int) -> None:
        super().__init__(nn.Conv1d(cin, cout, k, padding=k // 2), nn.GroupNorm(groups, cout), nn.SiLU())


class FiLMResBlock(nn.Module):
    """Two conv blocks; the conditioning vector predicts a per-channel scale and bias between them."""

    def __init__(self, cin: int, cout: int, cond_dim: int, k: int, groups: int) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(cin, cout, k, groups)
        self.block2 = Conv1dBlock(cout, cout, k, groups)
        self.film = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * cout))
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        return self.block2(self.block1(x) * (1 + scale) + bias) + self.skip(x)


class TemporalUNet1D(nn.Module):
    """(B, H, action_dim) x (B, cond_dim) [x (B,) t] -> (B, H, action_dim)."""

    def __init__(self, action_dim: int, cond_dim: int, cfg: UNetConfig, time_conditioned: bool) -> None:
        super().__init__()
        k, g, dims = cfg.kernel_size, cfg.n_groups, (action_dim, *cfg.down_dims)
        if time_conditioned:
            td = cfg.time_embed_dim
            self.time_mlp: nn.Module | None = nn.Sequential(
                SinusoidalTimeEmbedding(td), nn.Linear(td, 4 * td), nn.SiLU(), nn.Linear(4 * td, td))
            cond_dim += td
        else:
            self.time_mlp = None
        pairs = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (cin, cout) in enumerate(pairs):
            last = i == len(pairs) - 1
            self.down.append(nn.ModuleList([
                FiLMResBlock(cin, cout, cond_dim, k, g), FiLMResBlock(cout, cout, cond_dim, k, g),
                nn.Conv1d(cout, cout, 3, 2, 1) if not last else nn.Identity()]))
        mid = dims[-1]
        self.mid = nn.ModuleList([FiLMResBlock(mid, mid, cond_dim, k, g), FiLMResBlock(mid, mid, cond_dim, k, g)])
        self.up = nn.ModuleList()
        for cin, cout in reversed(pairs[1:]):
            self.up.append(nn.ModuleList([
                FiLMResBlock(2 * cout, cin, cond_dim, k, g), FiLMResBlock(cin, cin, cond_dim, k, g),
                nn.ConvTranspose1d(cin, cin, 4, 2, 1)]))
        start = dims[1]
        self.final = nn.Sequential(Conv1dBlock(start, start, k, g), nn.Conv1d(start, action_dim, 1))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        if (t is None) != (self.time_mlp is None):
            raise TypeError("this U-Net " + ("needs" if self.time_mlp is not None else "takes no") + " time input")
        if self.time_mlp is not None:
            cond = torch.cat([self.time_mlp(t), cond], dim=-1)
        h = x.transpose(1, 2)
        skips = []
        for res1, res2, down in self.down:
            h = res2(res1(h, cond), cond)
            skips.append(h)
            h = down(h)
        for res in self.mid:
            h = res(h, cond)
        for res1, res2, up in self.up:
            h = torch.cat([h, skips.pop()], dim=1)
            h = up(res2(res1(h, cond), cond))
        return self.final(h).transpose(1, 2)
