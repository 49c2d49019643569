"""Building blocks shared by the backbones."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from attnzoo.backbones.plan import ModuleFactory


class _GatedConvolution(torch.autograd.Function):
    """``conv2d(x · gate)`` that keeps x and the small gate for the backward pass, not the product.

    Autograd would keep the product x · g for the convolution's weight gradient beside x, which the gate's own
    statistics keep anyway: one extra feature map per gated convolution until the backward pass (GCT-ResNet-50
    has 53). Here the product is recomputed from x and g in the backward pass, one elementwise multiply; the
    convolution itself is not repeated. Autocast is honoured by hand: the forward runs the convolution in the
    autocast dtype as ``F.conv2d`` would, and the backward casts the same way before
    ``aten.convolution_backward``.
    """

    @staticmethod
    def forward(ctx, x, gate, weight, bias, stride, padding, dilation, groups):
        device_type = x.device.type
        autocasts = torch.amp.is_autocast_available(device_type)  # not on "meta" (FLOP counting)
        dtype = torch.get_autocast_dtype(device_type) if autocasts and torch.is_autocast_enabled(device_type) else None
        with torch.autocast(device_type, enabled=False) if autocasts else contextlib.nullcontext():
            gated = x * gate
            if dtype is not None:
                gated, weight_used = gated.to(dtype), weight.to(dtype)
                bias_used = None if bias is None else bias.to(dtype)
            else:
                weight_used, bias_used = weight, bias
            out = F.conv2d(gated, weight_used, bias_used, stride, padding, dilation, groups)
        ctx.save_for_backward(x, gate, weight)
        ctx.conv = (stride, padding, dilation, groups)
        ctx.dtype = dtype
        ctx.bias_shape = None if bias is None else bias.shape
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, gate, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        need_x, need_gate, need_weight, need_bias = ctx.needs_input_grad[:4]
        product = x * gate
        weight_used = weight
        if ctx.dtype is not None:
            product, weight_used = product.to(ctx.dtype), weight.to(ctx.dtype)
        grad_product, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad_out.to(product.dtype), product, weight_used, ctx.bias_shape, stride, padding, dilation, False,
            [0, 0], groups, [need_x or need_gate, need_weight, need_bias],
        )
        grad_x = grad_gate = None
        if grad_product is not None:
            grad_product = grad_product.to(torch.promote_types(x.dtype, gate.dtype))
            if need_x:
                grad_x = (grad_product * gate).to(x.dtype)
            if need_gate:
                grad_gate = _sum_to(grad_product * x, gate.shape).to(gate.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        if grad_bias is not None:
            grad_bias = grad_bias.to(weight.dtype)
        return grad_x, grad_gate, grad_weight, grad_bias, None, None, None, None


def _sum_to(tensor: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The gradient of a broadcast: ``tensor`` summed over the dimensions that ``shape`` broadcast along."""
    dims = tuple(i for i, size in enumerate(shape) if size == 1 and tensor.shape[i] != 1)
    return tensor.sum(dims, keepdim=True) if dims else tensor


class GatedConv2d(nn.Conv2d):
    """A convolution whose input first passes through a gate (GCT's place: before every convolution).

    It keeps ``nn.Conv2d``'s own parameter names (``weight``), so plain weights load unchanged; the gate's
    parameters sit beside them under ``<conv>.gate``.

    In an eager training step (training mode, grad enabled) a gate that exposes its multiplier (``AttentionModule.gate_for``)
    is applied inside the convolution's own autograd function, which keeps x rather than x · g for the backward
    pass (see ``_GatedConvolution``), the same arithmetic. There the gate module's ``forward`` is not called
    (its ``GateTap`` still sees the gate). Compiled training gets the same saving from the gate's
    ``apply_gate``; inference and export call ``conv(gate(x))`` as written.
    """

    def __init__(self, *args, gate: nn.Module, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_for = getattr(self.gate, "gate_for", None)
        plain_call = self.padding_mode != "zeros" or isinstance(self.padding, str)  # what F.conv2d alone can do
        # Compiled, the product is recomputed by the gate's own apply_gate (a checkpoint the partitioner turns into
        # recomputation); traced, this function's backward multiply would be merged with the forward's and saved.
        # A training step only: an eval pass with gradients (Grad-CAM, FLOP counting) calls the gate module itself,
        # so that its hooks see it as written.
        training_step = self.training and torch.is_grad_enabled()
        if gate_for is None or plain_call or not training_step or torch.compiler.is_compiling():
            return super().forward(self.gate(x))
        multiplier = gate_for(x)
        if multiplier is None:
            return super().forward(self.gate(x))
        return _GatedConvolution.apply(
            x, multiplier, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
        )


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
