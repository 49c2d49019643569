"""Global Context block (GC, from GCNet).

Cao, Xu, Lin, Wei, Hu. "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond." ICCV
Workshops 2019 (arXiv:1904.11492). Official code: xvjiarui/GCNet (``ContextBlock``).

    context = Σ_j softmax_j(W_k x_j) · x_j        # 'att' pooling: 1x1 conv C -> 1 (with bias), softmax over
                                                  # all H·W positions; 'avg' pooling: GAP(x)
    T(c)    = W_v2 · ReLU(LN(W_v1 · c))           # 1x1 conv C -> P, LayerNorm over [P, 1, 1], 1x1 conv P -> C,
                                                  # P = int(C · ratio), both convs with biases
    y       = x · σ(T_mul(context)) + T_add(context)   # 'channel_mul' then 'channel_add', each if chosen

Defaults: ratio 1/16 (the paper's ImageNet setting r = 16), 'att' pooling, 'channel_add' fusion — the paper's
module (timm's "gc" defaults to multiplicative fusion with ratio 1/8, which is not).
Initialisation as in the official code: the mask conv is Kaiming-normal (fan-in), the last conv of each
transform has weight and bias zero. With 'channel_add' alone the block is an exact identity at start.
Submodule names follow the official code (``conv_mask``, ``channel_add_conv``, ``channel_mul_conv``), so
official weights map key for key.

Placement: after the last conv + BN of the residual branch, before the addition. The official code has no
BasicBlock version; the same spot is used there, as the author suggests.

Implementation note: the attention-weighted sum is one batched matmul of the [B, C, HW] view of x with the
[B, HW, 1] softmax weights — a view, not a copy, for contiguous and channels_last inputs alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attnzoo.attention.base import AttentionModule, require_hidden
from attnzoo.errors import AttnzooError

POOLINGS = ("att", "avg")
FUSIONS = ("channel_add", "channel_mul")


def _transform(channels: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, hidden, 1),
        nn.LayerNorm([hidden, 1, 1]),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, channels, 1),
    )


class GlobalContext(AttentionModule):
    def __init__(
        self,
        channels: int,
        ratio: float = 1 / 16,
        pooling: str = "att",
        fusion: Sequence[str] = ("channel_add",),
    ):
        super().__init__(channels)
        if pooling not in POOLINGS:
            raise AttnzooError(f"GlobalContext: unknown pooling {pooling!r}. Accepted: {', '.join(POOLINGS)}.")
        fusion = (fusion,) if isinstance(fusion, str) else tuple(fusion)
        bad = [f for f in fusion if f not in FUSIONS]
        if bad or not fusion:
            raise AttnzooError(
                f"GlobalContext: fusion must be a non-empty subset of {', '.join(FUSIONS)}, got {list(fusion)!r}."
            )
        if not 0 < ratio <= 1:
            raise AttnzooError(f"GlobalContext: ratio must be in (0, 1] (a fraction, e.g. 1/16), got {ratio!r}.")
        self.ratio = ratio
        self.pooling = pooling
        self.fusion = fusion
        hidden = require_hidden(int(channels * ratio), "GlobalContext", f"ratio={ratio!r} on {channels} channels")
        self.conv_mask = nn.Conv2d(channels, 1, 1) if pooling == "att" else None
        self.channel_add_conv = _transform(channels, hidden) if "channel_add" in fusion else None
        self.channel_mul_conv = _transform(channels, hidden) if "channel_mul" in fusion else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.conv_mask is not None:
            nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(self.conv_mask.bias)
        for transform in (self.channel_add_conv, self.channel_mul_conv):
            if transform is None:
                continue
            transform[0].reset_parameters()
            transform[1].reset_parameters()
            nn.init.zeros_(transform[3].weight)
            nn.init.zeros_(transform[3].bias)

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """The [B, C, 1, 1] global context of x."""
        if self.conv_mask is None:
            return x.mean((2, 3), keepdim=True)
        weights = self.conv_mask(x).flatten(2).softmax(dim=-1)  # [B, 1, HW]
        pooled = torch.bmm(x.flatten(2), weights.transpose(1, 2).to(x.dtype))  # [B, C, 1]
        return pooled.unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        context = self.context(x)
        out = x
        if self.channel_mul_conv is not None:
            out = out * torch.sigmoid(self.channel_mul_conv(context))
        if self.channel_add_conv is not None:
            out = out + self.channel_add_conv(context)
        return out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, ratio={self.ratio}, pooling={self.pooling!r}, fusion={self.fusion}"
