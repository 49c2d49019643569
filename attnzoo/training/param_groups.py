"""Optimizer parameter groups chosen by module type, never by name substrings.

- ``"gct_beta"`` (default, the GCT paper's official recipe): weight decay everywhere except GCT's beta.
- ``"norm_bias_gate"``: no weight decay on any normalisation layer's parameters, any bias, or any GCT gate
  parameter (alpha, gamma, beta) — the common "no decay on 1-D parameters" recipe, decided by type.
- ``"none"``: weight decay on every parameter (GCT's TF README reports decaying beta works as well).

Parameters in a no-decay group get ``weight_decay=0``; the others take the optimizer's own weight decay.
"""

from __future__ import annotations

from typing import Literal, get_args

from torch import nn

from attnzoo.attention import GCT
from attnzoo.errors import AttnzooError

NoWeightDecay = Literal["gct_beta", "norm_bias_gate", "none"]
NO_WEIGHT_DECAY_CHOICES = get_args(NoWeightDecay)

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)


def check_no_weight_decay(mode: str) -> None:
    """Refuse an unknown ``no_weight_decay`` in one line (the modules check it when built, before any data)."""
    if mode not in NO_WEIGHT_DECAY_CHOICES:
        raise AttnzooError(f"unknown no_weight_decay {mode!r}. Accepted: {', '.join(NO_WEIGHT_DECAY_CHOICES)}.")


def no_weight_decay_parameters(model: nn.Module, mode: str) -> set[int]:
    """ids of the parameters of ``model`` that must not be decayed under ``mode``."""
    check_no_weight_decay(mode)
    excluded: set[int] = set()
    for module in model.modules():
        if mode == "gct_beta" and isinstance(module, GCT):
            excluded.add(id(module.beta))
        elif mode == "norm_bias_gate":
            if isinstance(module, (*NORM_TYPES, GCT)):
                excluded.update(id(p) for p in module.parameters(recurse=False))
            else:
                excluded.update(id(p) for name, p in module.named_parameters(recurse=False) if name == "bias")
    return excluded


def parameter_groups(model: nn.Module, mode: str = "gct_beta") -> list[dict]:
    """``[{"params": decayed, "name": "decay"}, {"params": others, "weight_decay": 0.0, "name": "no_decay"}]``,
    leaving out an empty group."""
    excluded = no_weight_decay_parameters(model, mode)
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if id(param) in excluded else decay).append(param)
    groups = [{"params": decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    return groups
