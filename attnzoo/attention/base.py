"""What every attention module shares: one constructor shape and one contract.

An attention module is built as ``Module(channels, **options)``, maps ``[B, C, H, W]`` to the same shape, and
restores its official initialisation in ``reset_parameters()``, so a backbone can run its own weight init
first and let each attention module put its own back afterwards.

``placement`` tells a backbone where the paper puts the module:
- ``"residual"``: at the end of the residual branch, after the last BN and before the addition;
- ``"pre_conv"``: in front of every convolution (GCT).

Subclasses implement ``attend(x)``; ``forward`` checks the input first. A module whose intermediates are as
large as its input but cheap to recompute sets ``recompute_for_backward``: in a compiled training step it then
keeps only its input for the backward pass (``torch.utils.checkpoint``, which the compiler turns into
recomputation inside the backward kernels). Eager mode and inference are unaffected.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from attnzoo.errors import AttnzooError


class AttentionModule(nn.Module):
    placement: ClassVar[str] = "residual"

    def __init__(self, channels: int):
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise AttnzooError(f"{type(self).__name__}: channels must be a positive integer, got {channels!r}.")
        self.channels = channels

    # True where the module's intermediates are as large as its input but cheap to recompute (a reduction and
    # a few elementwise passes): a compiled training step then keeps only the input for the backward pass and
    # recomputes the rest there, instead of holding extra feature-map-sized tensors per module.
    recompute_for_backward: ClassVar[bool] = False

    def reset_parameters(self) -> None:  # pragma: no cover - every module overrides it
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        # Only under torch.compile: there the partitioner turns the checkpoint into recomputation fused into
        # the backward kernels; in eager mode it would re-run the module and save nothing.
        if self.recompute_for_backward and torch.is_grad_enabled() and torch.compiler.is_compiling():
            return checkpoint(self.attend, x, use_reentrant=False)
        return self.attend(x)

    def attend(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - every module overrides it
        """The module's function on an input already checked to be [B, channels, H, W]."""
        raise NotImplementedError

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
