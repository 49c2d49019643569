"""Global Attention Mechanism (GAM).

Liu, Shao, Hoffmann. "Global Attention Mechanism: Retain Information to Enhance Channel-Spatial
Interactions." arXiv:2112.05561, 2021. No official code.

Sequential like CBAM, but neither sub-module pools: each produces a full C×H×W map.
    M_c = σ(MLP_c(x))      # per position, an MLP over the channel vector C -> C/r -> C with ReLU
                           # (two 1x1 convolutions), then σ
    x'  = x · M_c
    M_s = σ(BN(conv_kxk(ReLU(BN(conv_kxk(x'))))))   # C -> C/r -> C, kernel 7, padding 3
    y   = x' · M_s

Defaults: rate r = 4, kernel_size 7, groups 1. ``groups > 1`` makes both spatial convolutions grouped with a
channel shuffle between them, as the paper does on ResNet-50 to keep the cost down (the zoo's GAM
ResNet-50/101/152 use groups=4; the paper gives no group count). What we count for GAM-ResNet-50 with
groups=4 is 25.87 GMACs (51.75 GFLOPs, ``attnzoo info gam_r50``) and 158.9M parameters, against the
paper's 23.91 G (its FLOPs column, read as multiply-adds) and 149.03M: not the same. Its channel MLP
accounts for 1.64 GMACs and 10.08M parameters; without it we count 24.23 GMACs and 148.83M, within 1.4% and
0.2% of the paper's figures, which suggests the paper's counter left that MLP out (applied as a Linear to a
permuted [B, H·W, C] tensor, a form some counters miss). Groups 2 and 8 give 46.0 and 15.8 GMACs, so 4 is
the group count nearest to the paper either way.
The shuffle only mixes information between the groups of the two convolutions; the output map is never
shuffled, so every gate stays aligned with its channel.

Two bugs of widely copied reimplementations are avoided on purpose: the σ on the channel map is applied, and
no shuffle is applied without groups.
Deviation (no official code to follow): the spatial convolutions have no bias, because each is followed by a
BatchNorm whose shift makes a bias redundant. Convolutions are Kaiming-normal (fan-out), BN weight 1, bias 0.

GAM is heavy by design: ungrouped in every ResNet-50 block it adds about 0.5 billion parameters.
Hook points (see attnzoo.attention.base): ``channel_gate`` and ``spatial_gate``, both full [B, C, H, W] maps
(a recorder keeps their mean over positions and over channels).

Placement: after the last BN of the residual branch, before the addition (the paper inserts GAM in every
ResNet block; MobileNetV2: the end of every inverted-residual branch).
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.attention.base import AttentionModule, GateTap, check_odd_kernel, require_hidden
from attnzoo.errors import AttnzooError


class ChannelShuffle(nn.Module):
    """ShuffleNet's channel shuffle: channel j of group i moves to position ``j * groups + i``.

    The function of ``nn.ChannelShuffle``, written as the groups stacked along a new axis after the channel
    index and flattened back. ``aten.channel_shuffle``, and the usual view-transpose-reshape, make
    ``torch.export`` assume that the feature map is not 1 pixel high or wide, which fails a capture with dynamic
    image sizes (``attnzoo export``); a stack of the groups carries no such assumption. The result is the same
    permutation, bit for bit (tested against ``nn.ChannelShuffle``), and it comes back contiguous whatever the
    input's memory format (the shuffled map is a small part of GAM's cost next to its 7x7 convolutions).
    """

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(x.chunk(self.groups, dim=1), dim=2).flatten(1, 2)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class GAM(AttentionModule):
    def __init__(self, channels: int, rate: int = 4, kernel_size: int = 7, groups: int = 1):
        super().__init__(channels)
        self.rate = rate
        self.groups = groups
        self.kernel_size = check_odd_kernel(kernel_size, f"GAM({channels})")
        hidden = require_hidden(channels // rate, "GAM", f"rate={rate} on {channels} channels")
        if not isinstance(groups, int) or groups < 1 or channels % groups or hidden % groups:
            raise AttnzooError(
                f"GAM({channels}, rate={rate}): groups={groups!r} must divide both the {channels} channels "
                f"and the {hidden} hidden channels."
            )
        padding = kernel_size // 2
        self.channel_mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial_conv1 = nn.Conv2d(channels, hidden, kernel_size, padding=padding, groups=groups, bias=False)
        self.spatial_bn1 = nn.BatchNorm2d(hidden)
        self.shuffle = ChannelShuffle(groups) if groups > 1 else nn.Identity()
        self.spatial_conv2 = nn.Conv2d(hidden, channels, kernel_size, padding=padding, groups=groups, bias=False)
        self.spatial_bn2 = nn.BatchNorm2d(channels)
        self.channel_gate = GateTap("channel")
        self.spatial_gate = GateTap("spatial")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.channel_mlp[0].reset_parameters()
        self.channel_mlp[2].reset_parameters()
        for conv in (self.spatial_conv1, self.spatial_conv2):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.spatial_bn1.reset_parameters()
        self.spatial_bn2.reset_parameters()

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.channel_gate(torch.sigmoid(self.channel_mlp(x)))
        hidden = self.shuffle(torch.relu(self.spatial_bn1(self.spatial_conv1(x))))
        return x * self.spatial_gate(torch.sigmoid(self.spatial_bn2(self.spatial_conv2(hidden))))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, rate={self.rate}, kernel_size={self.kernel_size}, groups={self.groups}"
