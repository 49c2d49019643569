"""Squeeze-and-Excitation (SE).

Hu, Shen, Albanie, Sun, Wu. "Squeeze-and-Excitation Networks." CVPR 2018 (arXiv:1709.01507).
Official release: hujie-frank/SENet (Caffe).

    s = GAP(x)                        # [B, C, 1, 1], mean over H and W
    g = σ(W2 · ReLU(W1 · s + b1) + b2)  # W1: C -> C//r, W2: C//r -> C
    y = x · g

Defaults: reduction r = 16, hidden width ``C // r`` exactly (no rounding to a multiple of 8 as timm does).
Both fully connected layers have biases, as in the official release (a popular PyTorch port drops them and
so has a different parameter count). They are written as 1x1 convolutions on the pooled ``[B, C, 1, 1]``
tensor: the same function as a Linear layer, with no reshapes, so channels_last input stays channels_last.
Not an identity at start: the gate begins near 0.5.

Placement: after the last BN of the residual branch, before the addition (the paper's SE-ResNet module).
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.attention.base import AttentionModule, require_hidden


class SE(AttentionModule):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__(channels)
        self.reduction = reduction
        hidden = require_hidden(channels // reduction, "SE", f"reduction={reduction} on {channels} channels")
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        squeezed = x.mean((2, 3), keepdim=True)
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(squeezed))))
        return x * gate

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
