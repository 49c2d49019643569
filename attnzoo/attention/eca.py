"""Efficient Channel Attention (ECA).

Wang, Wu, Zhu, Li, Zuo, Hu. "ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks."
CVPR 2020 (arXiv:1910.03151). Official code: BangguWu/ECANet.

    s = GAP(x)                    # [B, C]
    g = σ(conv1d_k(s))            # one k-tap kernel slid along the channel axis, shared by all channels,
                                  # no bias, zero padding (k-1)/2 at both ends (not circular)
    y = x · g

Kernel size: ``kernel_size=None`` applies the paper's adaptive rule
``k = |log2(C)/γ + b/γ|_odd`` with γ = 2, b = 1 (``t = int(|(log2 C + b) / γ|)``, ``k = t`` if odd else
``t + 1``). The official code and its released checkpoints do not use that rule but fixed per-stage sizes
(ResNet-50: 3, 5, 5, 7; MobileNetV2: k = 1 in the stages whose width in the paper's table is below 96, else
3, which is what the released ECA-MobileNetV2 holds); the zoo's registered ECA models follow the
checkpoints (see attnzoo.registry), and ``attention_kwargs={"kernel_size": None}`` gives the adaptive rule
back.
Even kernels are refused: they would shift the gates by half a channel.
Initialisation: PyTorch's default for the 1-D convolution, as in the official code (its weight init loop
touches only 2-D convolutions).
Hook point (see attnzoo.attention.base): ``channel_gate`` [B, C].

timm (tests/test_peers.py): ``timm.layers.EcaModule(None, kernel_size=k)`` equals ``ECA(C, kernel_size=k)``
bitwise in float64. Given ``channels``, timm ignores ``kernel_size`` and applies the adaptive rule with a
minimum of 3: the same kernels as ``kernel_size=None`` here from 8 channels on, 3 instead of 1 below. So
timm's ResNet-50 with ``attn_layer='eca'`` has kernels 5, 5, 5, 7, not the released 3, 5, 5, 7.

Placement: after the last BN of the residual branch, before the addition; in MobileNetV2 at the end of every
inverted-residual branch (the official ECA-MobileNetV2).

Implementation note: the k-tap convolution along the channels is computed as the sum of k shifted slices of
the zero-padded [B, C] descriptor, each times its tap (``conv.weight`` is still the stored [1, 1, k] kernel):
exactly the cross-correlation ``nn.Conv1d`` computes. As a Conv1d it was a separate oneDNN call on a
[B, 1, C] tensor that torch.compile cannot fuse, and on the CPU it cost several times the pooling itself;
as k multiply-adds it fuses into one small kernel, and the gate multiplies x in one pass that compile fuses
with the residual addition. k and C are fixed at construction, so the slices are static under compile.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.attention.base import AttentionModule, GateTap, check_odd_kernel


def adaptive_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """The paper's channel-dependent kernel size (Eq. 12)."""
    t = int(abs((math.log2(channels) + beta) / gamma))
    return t if t % 2 else t + 1


class ECA(AttentionModule):
    def __init__(self, channels: int, kernel_size: int | None = None, gamma: float = 2, beta: float = 1):
        super().__init__(channels)
        if kernel_size is None:
            kernel_size = adaptive_kernel_size(channels, gamma, beta)
        self.kernel_size = check_odd_kernel(kernel_size, f"ECA({channels})")
        self.conv = nn.Conv1d(1, 1, self.kernel_size, padding=(self.kernel_size - 1) // 2, bias=False)
        self.channel_gate = GateTap("channel")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        pad = (self.kernel_size - 1) // 2
        padded = F.pad(x.mean((2, 3)), (pad, pad))  # [B, C + k - 1], zeros at both ends
        taps = self.conv.weight[0, 0]
        logits = sum(taps[i] * padded[:, i : i + self.channels] for i in range(self.kernel_size))
        return x * self.channel_gate(torch.sigmoid(logits))[:, :, None, None]

    def elementwise_macs(self, input_shape: torch.Size) -> int:
        # The k-tap convolution along the channels: k multiply-adds per channel per image (zero padding included,
        # as nn.Conv1d's count would).
        return input_shape[0] * self.channels * self.kernel_size

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
