"""Convolutional Block Attention Module (CBAM).

Woo, Park, Lee, Kweon. "CBAM: Convolutional Block Attention Module." ECCV 2018 (arXiv:1807.06521).
Official code: Jongchan/attention-module.

Channel gate, then spatial gate on the channel-gated map:
    M_c = σ(MLP(GAP(x)) + MLP(GMP(x)))            # one shared MLP C -> C//r -> C, ReLU, biases on
    x'  = x · M_c
    M_s = σ(BN(conv_kxk([max_c(x'), mean_c(x')])))  # [max, mean] in that order, 2 -> 1, padding k//2, no bias
    y   = x' · M_s

Defaults: reduction 16, kernel_size 7. Deviations from the paper, following the official code (which the
released checkpoints use): the spatial gate has a BatchNorm after its convolution (momentum 0.01, as
released), and its weight is initialised to zero so the spatial gate starts at a constant 0.5; all biases
start at zero; the spatial conv is Kaiming-normal (fan-out). The MLP is written as 1x1 convolutions on the
pooled [B, C, 1, 1] tensors (same function as the official Linear layers).
Hook points (see attnzoo.attention.base): ``channel_gate`` [B, C] and ``spatial_gate`` [B, 1, H, W].

timm (tests/test_peers.py): ``timm.layers.CbamModule(C, mlp_bias=True)`` is the same function once the
spatial conv's two input channels are swapped (timm concatenates [mean, max]) and its spatial BN momentum is
set to 0.01 (timm: 0.1): max |diff| 1.6e-15 in float64, in eval and in training mode, running statistics
included. With its defaults (no MLP biases, [mean, max], momentum 0.1) it is another module, and official
CBAM weights do not load into it as they are.

Placement: after the last BN of the residual branch, before the addition.

Implementation note: the channel MLP is stored as 1x1 convolutions ([C//r, C, 1, 1], as converted
checkpoints expect) but applied to the pooled [B, C] vectors as matrix products with the weights viewed as
[C//r, C]: the same arithmetic without four 1x1-map convolution calls, which torch.compile cannot fuse and
which dominated the channel gate's cost on the CPU. Both gates multiply x in passes compile fuses with the
residual addition. Compiled training recomputes the channel-gated map x' in the backward pass from x and
the saved channel gate (``apply_gate`` with ``recompute_for_backward``) instead of keeping it, one feature
map per block: measured on CBAM-R50, that brings peak training memory close to plain R50's and does not slow
the step (the run is in docs/benchmarks.md, "Design measurements"). The spatial gate's BatchNorm updates its
running statistics once per step (tested).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.attention.base import AttentionModule, GateTap, check_odd_kernel, require_hidden


class CBAM(AttentionModule):
    recompute_for_backward: ClassVar[bool] = True

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__(channels)
        self.reduction = reduction
        self.kernel_size = check_odd_kernel(kernel_size, f"CBAM({channels})")
        hidden = require_hidden(channels // reduction, "CBAM", f"reduction={reduction} on {channels} channels")
        self.channel_mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial_conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.spatial_bn = nn.BatchNorm2d(1, momentum=0.01)
        self.channel_gate = GateTap("channel")
        self.spatial_gate = GateTap("spatial")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in (self.channel_mlp[0], self.channel_mlp[2]):
            layer.reset_parameters()
            nn.init.zeros_(layer.bias)
        nn.init.kaiming_normal_(self.spatial_conv.weight, mode="fan_out", nonlinearity="relu")
        self.spatial_bn.reset_parameters()
        nn.init.zeros_(self.spatial_bn.weight)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self._mlp(x.mean((2, 3))) + self._mlp(x.amax((2, 3)))  # [B, C]
        x = self.apply_gate(x, self.channel_gate(torch.sigmoid(pooled))[:, :, None, None])
        descriptor = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)], dim=1)
        return x * self.spatial_gate(torch.sigmoid(self.spatial_bn(self.spatial_conv(descriptor))))

    def _mlp(self, pooled: torch.Tensor) -> torch.Tensor:
        """The shared channel MLP (conv1x1, ReLU, conv1x1) on a [B, C] vector."""
        first, _, second = self.channel_mlp
        hidden = torch.relu(F.linear(pooled, first.weight.flatten(1), first.bias))
        return F.linear(hidden, second.weight.flatten(1), second.bias)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, kernel_size={self.kernel_size}"
