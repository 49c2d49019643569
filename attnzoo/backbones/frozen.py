"""Frozen BatchNorm for detection backbones: torchvision's ``FrozenBatchNorm2d`` without torchvision.

Detectors train on one or two large images per device, too few for batch statistics, so the backbone's
BatchNorm is fixed: its running statistics *and* its affine parameters become constants (buffers), and the
layer is an affine map per channel. :class:`FrozenBatchNorm2d` computes that map with torchvision's formula
in its order of operations (scale = w * (rv + eps).rsqrt(); shift = b - rm * scale; x * scale + shift), so its
output is bitwise torchvision's, and its state dict has the same keys (BatchNorm's, without
``num_batches_tracked``, which it drops when loading).

Attention modules' own BatchNorms (GAM's ``spatial_bn1/2``, CBAM's ``spatial_bn``) are left alone by default:
an attention inserted into a pretrained backbone starts from a fresh initialisation and needs its statistics
to learn. ``include_attention=True`` freezes them too (an attention model pretrained as a whole).
GC's LayerNorm has no statistics and is never converted.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.attention import AttentionModule
from attnzoo.errors import AttnzooError

BATCH_NORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (all buffers: nothing to train).

    Args:
        num_features: channels.
        eps: added to the variance (BatchNorm's default, as torchvision's).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    @classmethod
    def from_batch_norm(cls, bn: nn.modules.batchnorm._BatchNorm) -> FrozenBatchNorm2d:
        """The frozen equivalent of ``bn`` in eval mode (its statistics, affine parameters, eps, dtype, device)."""
        if bn.running_mean is None or bn.running_var is None:
            raise AttnzooError(f"{bn!r} keeps no running statistics (track_running_stats=False); there is nothing to "
                               "freeze.")
        frozen = cls(bn.num_features, bn.eps).to(device=bn.running_mean.device, dtype=bn.running_mean.dtype)
        with torch.no_grad():
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
        return frozen

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A BatchNorm's state dict (a classification checkpoint) loads as is: its step counter means nothing here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.reshape(1, -1, 1, 1)
        bias = self.bias.reshape(1, -1, 1, 1)
        running_var = self.running_var.reshape(1, -1, 1, 1)
        running_mean = self.running_mean.reshape(1, -1, 1, 1)
        scale = weight * (running_var + self.eps).rsqrt()
        shift = bias - running_mean * scale
        return x * scale + shift

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def attention_owned(root: nn.Module) -> set[int]:
    """ids of the modules that belong to an attention module (the attention modules included)."""
    return {id(m) for a in root.modules() if isinstance(a, AttentionModule) for m in a.modules()}


def batch_norms(root: nn.Module, include_attention: bool = False) -> list[nn.Module]:
    """The BatchNorm layers of ``root``; those inside attention modules only with ``include_attention``."""
    inside = set() if include_attention else attention_owned(root)
    return [m for m in root.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in inside]


def freeze_batch_norm(root: nn.Module, include_attention: bool = False) -> nn.Module:
    """Replace every BatchNorm2d (and SyncBatchNorm) in ``root`` by its :class:`FrozenBatchNorm2d`, in place.

    Args:
        root: any module; a BatchNorm itself is returned converted.
        include_attention: also freeze the BatchNorms inside attention modules (GAM's, CBAM's).

    Returns ``root`` (or the converted layer when ``root`` is one). In eval mode the converted network
    computes what it computed before, up to rounding (BatchNorm's kernel is fused differently).
    """
    if isinstance(root, BATCH_NORMS):
        return FrozenBatchNorm2d.from_batch_norm(root)
    skip = set() if include_attention else attention_owned(root)
    for parent in list(root.modules()):
        if id(parent) in skip:
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, BATCH_NORMS) and id(child) not in skip:
                setattr(parent, name, FrozenBatchNorm2d.from_batch_norm(child))
    return root
