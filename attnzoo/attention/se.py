"""Squeeze-and-Excitation (SE).

Hu, Shen, Albanie, Sun, Wu. "Squeeze-and-Excitation Networks." CVPR 2018 (arXiv:1709.01507).
Official release: hujie-frank/SENet (Caffe).

    s = GAP(x)                        # [B, C, 1, 1], mean over H and W
    g = σ(W2 · ReLU(W1 · s + b1) + b2)  # W1: C -> C//r, W2: C//r -> C
    y = x · g

Defaults: reduction r = 16, hidden width ``C // r`` exactly (no rounding to a multiple of 8 as timm does).
Both fully connected layers have biases, as in the official release (a popular PyTorch port drops them and
so has a different parameter count). They are stored as 1x1 convolutions (``fc1.weight`` is [C//r, C, 1, 1],
the layout of converted checkpoints) but applied as matrix products on the pooled [B, C] vector with the
weight viewed as [C//r, C]: the same arithmetic, but a 1x1 convolution on a 1x1 map is a separate oneDNN
call that torch.compile cannot fuse, and it made SE's gate cost more than the pooling and the gating pass
together on the CPU. The gate [B, C, 1, 1] then multiplies x in one pass that compile fuses with the
residual addition; the product keeps x's memory format, channels_last included.
Not an identity at start: the gate begins near 0.5.
Hook point (see attnzoo.attention.base): ``channel_gate`` [B, C].

Placement: after the last BN of the residual branch, before the addition (the paper's SE-ResNet module).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.attention.base import AttentionModule, GateTap, require_hidden


class SE(AttentionModule):
    def __init__(self, channels: int, reduction: int = 16):
        super().__init__(channels)
        self.reduction = reduction
        hidden = require_hidden(channels // reduction, "SE", f"reduction={reduction} on {channels} channels")
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)
        self.channel_gate = GateTap("channel")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc1.reset_parameters()
        self.fc2.reset_parameters()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean((2, 3))  # [B, C]
        hidden = torch.relu(F.linear(squeezed, self.fc1.weight.flatten(1), self.fc1.bias))
        gate = self.channel_gate(torch.sigmoid(F.linear(hidden, self.fc2.weight.flatten(1), self.fc2.bias)))
        return x * gate[:, :, None, None]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"
