"""Gated Channel Transformation (GCT).

Yang, Zhu, Wu, Yang. "Gated Channel Transformation for Visual Recognition." CVPR 2020 (arXiv:1909.11519).
Official code: z-x-yang/GCT.

Parameters α, γ, β of shape [1, C, 1, 1]; ε = 1e-5.

l2 mode (default):
    s_c = α_c · sqrt(Σ_hw x_c² + ε)                  # global context embedding
    ŝ_c = s_c / sqrt(mean_c(s_c²) + ε)               # channel normalisation; the RMS over channels is the
                                                     # paper's √C / ||s||₂ factor
    y_c = x_c · (1 + tanh(γ_c · ŝ_c + β_c))          # gating adaptation
l1 mode:
    s_c = α_c · Σ_hw |x_c|   (no abs when ``after_relu``: the input is known to be non-negative)
    ŝ_c = s_c / (mean_c |s_c| + ε)

Initialisation α = 1, γ = 0, β = 0, as in the official code: the gate is exactly 1 and the module is an exact
identity at start, which is what makes inserting GCT into a pretrained network safe.
Hook point (see attnzoo.attention.base): ``channel_gate`` [B, C, 1, 1].

Placement: in front of every convolution (``placement = "pre_conv"``), the stem's included, each with its own
parameters (the downsample convolution gets its own GCT too, as in the official ResNet).

Implementation notes (same function as the paper, cheaper and safer):
- The statistics are accumulated in float32 with one reduction pass over the feature map
  (``vector_norm(..., dtype=float32)``), so float16/bfloat16 inputs cannot overflow Σx²; only the [B, C]
  statistics are float32, the feature map is never copied. ``sqrt(‖x‖² + ε)`` equals the official
  ``(Σx² + ε) ** 0.5``.
- The gate is cast back to the input's dtype before the one multiply pass over x.
- Compiled training recomputes the gated copy x·g in the backward pass from x and the saved [B, C] gate
  (``apply_gate`` with ``recompute_for_backward``) instead of keeping it beside x for the following
  convolution's weight gradient: one multiply, against one extra feature map per convolution held until the
  backward pass. Measured, it brings GCT's peak training memory from above plain to below it (ResNet-50 and
  MobileNetV2), with MobileNetV2's step time unchanged. Recomputing the whole module instead, statistics
  included, repeats their reduction pass in the backward pass and costs step time.
- In the backbones GCT sits in a ``GatedConv2d``, which takes the gate from ``gate_for`` and applies it inside
  the convolution's own autograd function in an eager training step: x (kept by the gate's statistics anyway)
  and the [B, C] gate are saved, x·g is recomputed in the backward pass, the convolution is not. Measured with
  ``python benchmarks/gct_memory.py --modes eager default`` (CPU, batch 32, 224x224, the peak of live
  tensors): GCT-ResNet-50's peak training-step memory went from 1.47x plain ResNet-50's to 1.01x eager, and is
  0.86x compiled (SE-ResNet-50: 1.25x and 1.01x); GCT-MobileNetV2 1.00x eager, 0.54x compiled (SE: 1.03x, 1.00x).
- What remains of its cost is memory traffic: the gated copy must be written before every convolution
  (the convolutions are library calls that cannot take a per-channel input scale) and read by it. Folding
  the gate into per-sample 1x1 weights (a batched matmul) was measured and was not faster on the CPU, and it
  would give up the bitwise identity at initialisation.
- In training most of it is in the backward pass: ``benchmarks/kernel_profile.py gct_mobilenetv2`` puts
  inductor's fused backward kernels at about twice plain MobileNetV2's, the forward kernels barely above, and
  the convolutions unchanged. The gradient ∂L/∂x = g·∂L/∂y + x·(∂L/∂s)/s needs the reduction Σ_hw x·∂L/∂y to
  finish before the preceding BatchNorm's backward can start its own reductions over that gradient, so each
  gated map is read in one more pass than in the plain network, and inductor keeps the gradient in a buffer
  between them. Raising inductor's ``realize_reads_threshold`` (to inline that buffer) did not change the time.
- The runs behind these conclusions are in docs/benchmarks.md ("Design measurements").
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from attnzoo.attention.base import AttentionModule, GateTap
from attnzoo.errors import AttnzooError

MODES = ("l2", "l1")


class GCT(AttentionModule):
    placement: ClassVar[str] = "pre_conv"
    recompute_for_backward: ClassVar[bool] = True

    def __init__(self, channels: int, epsilon: float = 1e-5, mode: str = "l2", after_relu: bool = False):
        super().__init__(channels)
        if mode not in MODES:
            raise AttnzooError(f"GCT: unknown mode {mode!r}. Accepted: {', '.join(MODES)}.")
        if not epsilon > 0:
            raise AttnzooError(f"GCT: epsilon must be > 0, got {epsilon!r}.")
        self.epsilon = float(epsilon)
        self.mode = mode
        self.after_relu = after_relu
        self.alpha = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.empty(1, channels, 1, 1))
        self.channel_gate = GateTap("channel")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.ones_(self.alpha)
        nn.init.zeros_(self.gamma)
        nn.init.zeros_(self.beta)

    def gate_for(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self._gate(x)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_gate(x, self._gate(x))

    def _gate(self, x: torch.Tensor) -> torch.Tensor:
        """The [B, C, 1, 1] gate 1 + tanh(γ · ŝ + β), in x's dtype."""
        eps = self.epsilon
        acc = torch.promote_types(x.dtype, torch.float32)  # at least float32, float64 stays float64
        if self.mode == "l2":
            norm = torch.linalg.vector_norm(x, 2, dim=(2, 3), keepdim=True, dtype=acc)
            embedding = (norm.square() + eps).sqrt() * self.alpha
            normalizer = (embedding.square().mean(dim=1, keepdim=True) + eps).rsqrt()
        else:
            if self.after_relu:
                total = x.sum(dim=(2, 3), keepdim=True, dtype=acc)
            else:
                total = torch.linalg.vector_norm(x, 1, dim=(2, 3), keepdim=True, dtype=acc)
            embedding = total * self.alpha
            normalizer = 1.0 / (embedding.abs().mean(dim=1, keepdim=True) + eps)
        gate = 1.0 + torch.tanh(self.gamma * (embedding * normalizer) + self.beta)
        return self.channel_gate(gate.to(x.dtype))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, mode={self.mode!r}, epsilon={self.epsilon}, after_relu={self.after_relu}"
