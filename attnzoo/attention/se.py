"""Squeeze-and-Excitation (SE).

Hu, Shen, Albanie, Sun, Wu. "Squeeze-and-Excitation Networks." CVPR 2018 (arXiv:1709.01507).
Official release: hujie-frank/SENet (Caffe).

    s = GAP(x)                        # [B, C, 1, 1], mean over H and W
    g = σ(W2 · ReLU(W1 · s + b1) + b2)  # W1: C -> C//r, W2: C//r -> C
    y = x · g

Defaults: reduction r = 16, hidden width ``C // r`` exactly (no rounding to a multiple of 8 as timm does).
Both fully connected layers have biases, as in the official release. ``bias=False`` drops them, as the
widely used PyTorch port moskomule/senet.pytorch does (its SE-ResNet-50 has 16,048 fewer parameters):
``attnzoo convert --from senet`` sets it for that port's weights. They are stored as 1x1 convolutions (``fc1.weight`` is [C//r, C, 1, 1],
the layout of converted checkpoints) but applied as matrix products on the pooled [B, C] vector with the
weight viewed as [C//r, C]: the same arithmetic, but a 1x1 convolution on a 1x1 map is a separate oneDNN
call that torch.compile cannot fuse, and it made SE's gate cost more than the pooling and the gating pass
together on the CPU. The gate [B, C, 1, 1] then multiplies x in one pass that compile fuses with the
residual addition; the product keeps x's memory format, channels_last included.
Not an identity at start: the gate begins near 0.5.
Hook point (see attnzoo.attention.base): ``channel_gate`` [B, C].

timm (tests/test_peers.py): ``timm.layers.SEModule(C, rd_channels=C // 16)`` is the same function, with or
without biases (max |diff| 4.4e-16 in float64, weights copied: the keys are the same). timm's default rounds
the hidden width to a multiple of 8: the same for C = 256..2048 (ResNet-50, so timm's ``seresnet50`` has
this SE), wider than the paper's for C = 32, 64, 96 (ResNet-18's first stage, MobileNetV2's early stages).

Placement: after the last BN of the residual branch, before the addition (the paper's SE-ResNet module).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.attention.base import AttentionModule, GateTap, require_hidden


class SE(AttentionModule):
    def __init__(self, channels: int, reduction: int = 16, bias: bool = True):
        super().__init__(channels)
        self.reduction = reduction
        self.bias = bool(bias)
        hidden = require_hidden(channels // reduction, "SE", f"reduction={reduction} on {channels} channels")
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=self.bias)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=self.bias)
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
        return f"channels={self.channels}, reduction={self.reduction}" + ("" if self.bias else ", bias=False")
