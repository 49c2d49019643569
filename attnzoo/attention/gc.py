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
Hook points (see attnzoo.attention.base): ``context_mask`` [B, 1, H, W] ('att' pooling), ``context_add``
[B, C, 1, 1] ('channel_add'), ``channel_gate`` [B, C, 1, 1] ('channel_mul').

timm (tests/test_peers.py): ``timm.layers.GlobalContext(C, fuse_add=True, fuse_scale=False, rd_ratio=1/16)``
(its "gca" at the paper's ratio) is the same function once its LayerNorm eps is set to 1e-5, the official
``nn.LayerNorm``'s (timm's LayerNorm2d uses 1e-6, which moves outputs by up to 2.7e-9): then bitwise equal
in float64, and so are the mul, add + mul and 'avg' pooling variants. It still differs in two places: timm
rounds the hidden width to the nearest integer where the official code (and this one) floors ``int(C *
ratio)``, the same when C is a multiple of 16; and its init zeroes the last conv's weight but not its bias,
so timm's "gca" is not an identity at start (|y - x| = 0.25 measured) where this block is.

The mask conv's bias is kept because the official code (and its checkpoints) has it, but it does nothing: the
softmax over positions is unchanged by a constant shift, so the bias gets zero gradient and stays where it
was initialised.

Placement: after the last conv + BN of the residual branch, before the addition. The official code has no
BasicBlock version; the same spot is used there, as the author suggests.

Implementation notes (the same function, in a form torch.compile fuses):
- The mask logits ``W_k x_j + b`` are a weighted sum over channels with the stored [1, C, 1, 1] mask weight,
  the softmax runs over the flattened positions, and the context is a weighted sum over positions. As a 1x1 convolution to one channel and a batched
  matmul these were two oneDNN/BLAS calls that compile cannot fuse (on the CPU the block cost ~35% over
  the plain ResNet-50); as reductions they fuse with the BatchNorm before them, with no reshapes, for
  contiguous and channels_last inputs alike.
- The transforms are stored as 1x1 convolutions and a LayerNorm over [P, 1, 1] (the official keys and
  shapes) but applied to the pooled [B, C] vector as matrix products and a LayerNorm over P: the same
  arithmetic without 1x1-map convolution calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.attention.base import AttentionModule, GateTap, require_hidden
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
        self.context_mask = GateTap("spatial") if pooling == "att" else None
        self.channel_gate = GateTap("channel") if "channel_mul" in fusion else None
        self.context_add = GateTap("channel") if "channel_add" in fusion else None
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
        """The [B, C] global context of x."""
        if self.conv_mask is None:
            return x.mean((2, 3))
        logits = (x * self.conv_mask.weight).sum(1, keepdim=True) + self.conv_mask.bias  # [B, 1, H, W]
        weights = self.context_mask(logits.flatten(2).softmax(dim=-1).view_as(logits))  # over all H·W positions
        return (x * weights.to(x.dtype)).sum((2, 3))

    def elementwise_macs(self, input_shape: torch.Size) -> int:
        # 'att' pooling: the mask's 1x1 convolution C -> 1 and the softmax-weighted sum over positions, C·H·W
        # multiply-adds each per image. 'avg' pooling is a mean: no multiply-adds.
        batch, channels, height, width = input_shape
        return 0 if self.conv_mask is None else 2 * batch * channels * height * width

    @staticmethod
    def _transform(transform: nn.Sequential, context: torch.Tensor) -> torch.Tensor:
        """``transform`` (conv1x1, LayerNorm([P, 1, 1]), ReLU, conv1x1) applied to a [B, C] vector."""
        conv1, norm, _, conv2 = transform
        hidden = F.linear(context, conv1.weight.flatten(1), conv1.bias)
        hidden = F.layer_norm(hidden, (conv1.out_channels,), norm.weight.flatten(), norm.bias.flatten(), norm.eps)
        return F.linear(torch.relu(hidden), conv2.weight.flatten(1), conv2.bias)[:, :, None, None]

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        context = self.context(x)
        out = x
        if self.channel_mul_conv is not None:
            out = out * self.channel_gate(torch.sigmoid(self._transform(self.channel_mul_conv, context)))
        if self.channel_add_conv is not None:
            out = out + self.context_add(self._transform(self.channel_add_conv, context))
        return out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, ratio={self.ratio}, pooling={self.pooling!r}, fusion={self.fusion}"
