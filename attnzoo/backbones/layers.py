"""Building blocks shared by the backbones."""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.backbones.plan import ModuleFactory


class GatedConv2d(nn.Conv2d):
    """A convolution whose input first passes through a gate (GCT's place: before every convolution).

    It keeps ``nn.Conv2d``'s own parameter names (``weight``), so plain weights load unchanged; the gate's
    parameters sit beside them under ``<conv>.gate``.
    """

    def __init__(self, *args, gate: nn.Module, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.gate(x))


def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    gate: ModuleFactory | None = None,
) -> nn.Conv2d:
    """A bias-free 'same'-padded convolution, gated when the attention plan puts a gate before convolutions."""
    padding = (kernel_size - 1) // 2
    if gate is None:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
    return GatedConv2d(
        in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False, gate=gate(in_channels)
    )


def attention_or_identity(factory: ModuleFactory | None, channels: int) -> nn.Module:
    return nn.Identity() if factory is None else factory(channels)
