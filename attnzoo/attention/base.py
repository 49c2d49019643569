"""What every attention module shares: one constructor shape and one contract.

An attention module is built as ``Module(channels, **options)``, maps ``[B, C, H, W]`` to the same shape, and
restores its official initialisation in ``reset_parameters()``, so a backbone can run its own weight init
first and let each attention module put its own back afterwards.

``placement`` tells a backbone where the paper puts the module:
- ``"residual"``: at the end of the residual branch, after the last BN and before the addition;
- ``"pre_conv"``: in front of every convolution (GCT).

Subclasses implement ``attend(x)``; ``forward`` checks the input first. A module that multiplies a feature map
by a gate where the product would otherwise be kept for the backward pass (by the convolution that follows, or
by its own second gate) applies the gate with ``apply_gate`` and sets ``recompute_for_backward``: in a compiled
training step the product is then recomputed inside the backward kernels from the input and the small gate
(``torch.utils.checkpoint`` around the multiply alone), while the gate's statistics stay saved, so the backward
pass does not repeat their reductions. Eager mode and inference are unaffected.

What a module applies passes through a :class:`GateTap` submodule, an identity: the one place where a forward
hook (:mod:`attnzoo.analysis`) can see the gate without the module knowing about it. The taps are named by what
they carry, the same names in every module:
- ``channel_gate``: multiplies every position of a channel ([B, C]; GCT's [B, C, 1, 1]; GAM's full map);
- ``spatial_gate``: multiplies every channel at a position ([B, 1, H, W]; GAM's full map);
- ``context_mask``: GC's softmax weights over positions ([B, 1, H, W]), which pool the context;
- ``context_add``: GC's transformed context, added at every position ([B, C]).
A tap holds no parameters (state dicts are unchanged) and is inlined by torch.compile.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from attnzoo.errors import AttnzooError


class GateTap(nn.Module):
    """The identity on a gate tensor: a hook point for recording what an attention module applies.

    ``kind`` says what the recorder keeps of a full [B, C, H, W] map (GAM's gates): "channel" its mean over
    positions ([B, C]), "spatial" its mean over channels ([B, 1, H, W]).
    """

    def __init__(self, kind: str):
        super().__init__()
        if kind not in ("channel", "spatial"):
            raise ValueError(f"GateTap kind must be 'channel' or 'spatial', got {kind!r}")
        self.kind = kind

    def forward(self, gate: torch.Tensor) -> torch.Tensor:
        return gate

    def extra_repr(self) -> str:
        return self.kind


class AttentionModule(nn.Module):
    placement: ClassVar[str] = "residual"

    def __init__(self, channels: int):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise AttnzooError(f"{type(self).__name__}: channels must be a positive integer, got {channels!r}.")
        self.channels = channels

    # See the module docstring: set by modules whose ``apply_gate`` product would otherwise be kept.
    recompute_for_backward: ClassVar[bool] = False

    def reset_parameters(self) -> None:  # pragma: no cover - every module overrides it
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.attend(x)

    def apply_gate(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """``x * gate`` (gate broadcast over x), recomputed in the backward pass where the module asks for it."""
        # Only under torch.compile: there the partitioner turns the checkpoint into recomputation fused into
        # the backward kernels; in eager mode it would re-run the multiply and save nothing.
        if self.recompute_for_backward and torch.is_grad_enabled() and torch.compiler.is_compiling():
            return checkpoint(torch.mul, x, gate, use_reentrant=False)
        return x * gate

    def attend(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every module overrides it
        """The module's function on an input already checked to be [B, channels, H, W]."""
        raise NotImplementedError

    def gate_for(self, x: torch.Tensor) -> torch.Tensor | None:
        """For a module whose output is ``x * g`` (g broadcast over x, computed from x), g; else None.

        A layer that consumes the product (``GatedConv2d``) can then apply the gate inside its own autograd
        function and keep x rather than the product for the backward pass. The input is checked as in forward.
        """
        return None

    def elementwise_macs(self, input_shape: torch.Size) -> int:
        """Multiply-adds of the module's convolutions and matrix products that ``attend`` writes as elementwise
        products and sums (for speed under torch.compile), on an input of ``input_shape``.

        A dispatch-level FLOP counter sees ``mul`` and ``sum``, which it cannot tell from gating and pooling, so
        it misses them; :func:`attnzoo.info.count_flops` adds what each module declares here. A module whose
        contractions all run as conv/linear/matmul calls declares none.
        """
        return 0

    def check_input(self, x: torch.Tensor) -> None:
        # Static under torch.compile (shapes are known at trace time), so it costs no graph break.
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise AttnzooError(
                f"{type(self).__name__}({self.channels}) expects input [B, {self.channels}, H, W], "
                f"got shape {list(x.shape)}."
            )


def require_hidden(hidden: int, owner: str, option: str) -> int:
    """Refuse a bottleneck width of zero channels, naming the option that caused it."""
    if hidden < 1:
        raise AttnzooError(f"{owner}: {option} leaves {hidden} hidden channels; at least 1 is needed.")
    return hidden


def check_odd_kernel(kernel_size, owner: str) -> int:
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
        raise AttnzooError(
            f"{owner}: kernel_size must be a positive odd integer (the output must stay aligned with its "
            f"input), got {kernel_size!r}."
        )
    return kernel_size
