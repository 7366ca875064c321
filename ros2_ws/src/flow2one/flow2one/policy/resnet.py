"""ResNet-18 written out here because torchvision cannot be installed beside the CPU torch wheel
(see docs/ENVIRONMENT_FACTS.md) and no pretrained weights can be downloaded anyway.

Same topology as torchvision's resnet18 (BasicBlock x [2, 2, 2, 2]); GroupNorm replaces BatchNorm as in
Diffusion Policy, because policy batches are small and BN statistics would differ between training and
the exported model. `width` scales every stage (64 = the standard network).
"""

from __future__ import annotations

import torch
from torch import nn


def _norm(ch: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, ch // 16), ch)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = _norm(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = _norm(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(y)) + self.down(x))


class ResNet18(nn.Module):
    """(B, C, h, w) -> feature map (B, 8*width, h/32, w/32); the caller pools or tokenises it."""

    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 7, 2, 3, bias=False), _norm(width), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.stem(x))
