"""Backbone freezing as a callback: for the first N epochs only the attention modules (and optionally the
classifier) train — GCT's recipe for inserting attention into a pretrained network.

Frozen parameters keep ``requires_grad=True``; their gradients are dropped just before each optimizer step.
That keeps DDP's gradient reducer (which registers hooks on every parameter once) and compiled graphs (which
guard on ``requires_grad``) intact when the backbone thaws; the optimizer skips a parameter without a gradient
entirely (no update, no weight decay, no momentum). Lightning's ``BackboneFinetuning`` flips ``requires_grad``
instead, which neither DDP nor a compiled graph survives.

The backbone's BatchNorm layers also keep their statistics while frozen (eval mode); the attention modules' own
norms still train. The mode is set again before every training batch, since Lightning puts the whole module
back into training mode after each validation.
"""

from __future__ import annotations

import lightning as L
from torch import nn

from attnzoo.attention import AttentionModule
from attnzoo.backbones.frozen import batch_norms
from attnzoo.errors import AttnzooError


def trainable_while_frozen(net: nn.Module, train_head: bool) -> set[int]:
    """ids of the parameters that train while the backbone is frozen: attention modules (and the classifier)."""
    ids = {id(p) for m in net.modules() if isinstance(m, AttentionModule) for p in m.parameters()}
    if train_head and hasattr(net, "get_classifier"):
        ids.update(id(p) for p in net.get_classifier().parameters())
    return ids


def backbone_norms(net: nn.Module) -> list[nn.Module]:
    """The BatchNorm layers outside the attention modules (those ``norm_eval`` and ``frozen_bn`` fix, too)."""
    return batch_norms(net, include_attention=False)


class BackboneFreeze(L.Callback):
    """Train only the attention modules of ``pl_module.model`` for the first ``epochs`` epochs.

    Args:
        epochs: how many epochs the backbone stays frozen (0: never).
        train_head: also train the classifier while frozen (needed when the head is new).
    """

    def __init__(self, epochs: int, train_head: bool = False):
        if epochs < 0:
            raise AttnzooError(f"freeze_backbone_epochs must be >= 0, got {epochs}.")
        self.epochs = epochs
        self.train_head = train_head

    def frozen(self, trainer: L.Trainer) -> bool:
        return trainer.current_epoch < self.epochs

    def frozen_parameters(self, net: nn.Module) -> list[nn.Parameter]:
        trainable = trainable_while_frozen(net, self.train_head)
        return [p for p in net.parameters() if id(p) not in trainable]

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        frozen = self.frozen(trainer)
        for module in backbone_norms(pl_module.model):
            module.train(not frozen)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.frozen(trainer):
            for param in self.frozen_parameters(pl_module.model):
                param.grad = None
