"""Per-dimension normalisers as nn.Modules, so their statistics live in the policy's state dict.

A checkpoint then carries everything needed to map robot units <-> network units, and the exported
ONNX graph includes the mapping: the runtime never handles normalisation itself.
"""

from __future__ import annotations

import torch
from torch import nn


class RangeNormalizer(nn.Module):
    """Maps each feature dimension from its data range to [-1, 1] (the scale Gaussian noise lives at).

    A dimension that barely moved in the data gets a half-range of at least `min_half_range` (robot
    units: m, rot6d components, m of gripper width). Without that floor the EE orientation a scripted
    expert held within 0.0002 was scaled 5,000x, and the sim arm's 0.01 orientation wobble at run time
    became an input of 50: the policies learned nothing usable (Table I, first run).
    """

    def __init__(self, dim: int, min_half_range: float = 0.05) -> None:
        super().__init__()
        self.min_half_range = min_half_range
        self.register_buffer("center", torch.zeros(dim))
        self.register_buffer("half_range", torch.ones(dim))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> RangeNormalizer:
        """data: (..., dim) samples in robot units."""
        flat = torch.as_tensor(data, dtype=torch.float32).reshape(-1, self.center.numel())
        if not torch.isfinite(flat).all():
            raise ValueError("normaliser statistics: data contains NaN or inf")
        lo, hi = flat.min(0).values, flat.max(0).values
        self.center.copy_((hi + lo) / 2)
        self.half_range.copy_(((hi - lo) / 2).clamp_min(self.min_half_range))
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.half_range

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.half_range + self.center


class StandardNormalizer(RangeNormalizer):
    """Zero mean, unit std per dimension (inputs in any units, such as condition vectors); a constant
    dimension gets a unit std instead of a zero divisor."""

    def __init__(self, dim: int, eps: float = 1e-4) -> None:
        super().__init__(dim)
        self.eps = eps

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> StandardNormalizer:
        flat = torch.as_tensor(data, dtype=torch.float32).reshape(-1, self.center.numel())
        if not torch.isfinite(flat).all():
            raise ValueError("normaliser statistics: data contains NaN or inf")
        std = flat.std(0) if len(flat) > 1 else torch.ones_like(flat[0])
        self.center.copy_(flat.mean(0))
        self.half_range.copy_(torch.where(std < self.eps, torch.ones_like(std), std))
        return self


class PointNormalizer(RangeNormalizer):
    """One centre and ONE isotropic scale for xyz clouds, so the geometry is not distorted."""

    def __init__(self) -> None:
        super().__init__(3)

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> PointNormalizer:
        super().fit(data)
        self.half_range.fill_(float(self.half_range.max()))
        return self
