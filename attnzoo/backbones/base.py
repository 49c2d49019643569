"""What the ResNet and MobileNetV2 classifiers share: the forward split, input checks, head access, init, and
the numbered stages that ``attention_stages`` selects."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnzoo.attention import AttentionModule
from attnzoo.errors import AttnzooError


@dataclass(frozen=True)
class Stage:
    """One numbered stage of a backbone, as ``attention_stages`` and ``attention_stage_kwargs`` count them.

    Each backbone numbers its own: 0 is always the stem convolution.
    """

    index: int
    name: str  # the modules it spans, as the state dict names them: "layer2", "features.2-3"
    channels: int  # output channels of its convolutions
    modules: tuple[str, ...]  # the top-level module paths it owns
    blocks: int = 0  # residual blocks in it (0: a stage that is a single convolution)


class ImageClassifierNet(nn.Module):
    """``forward(x) = forward_head(forward_features(x))``; subclasses build ``self.<classifier>`` and describe
    their stages in :meth:`stage_layout`.

    ``config`` is the :class:`attnzoo.registry.ModelConfig` the registry built the network from (None for a
    network constructed directly); :meth:`reset_classifier` keeps it true.
    """

    classifier_name: str  # dotted path of the final nn.Linear, e.g. "fc" or "classifier.1"
    config = None

    def __init__(self, num_classes: int, in_chans: int, drop_rate: float):
        super().__init__()
        for option, value in (("num_classes", num_classes), ("in_chans", in_chans)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise AttnzooError(f"{option} must be a positive integer, got {value!r}.")
        if not 0.0 <= drop_rate < 1.0:
            raise AttnzooError(f"drop_rate must be in [0, 1), got {drop_rate!r}.")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate

    def check_input(self, x: torch.Tensor) -> None:
        # Shapes are static under torch.compile, so this check is resolved at trace time (no graph break).
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise AttnzooError(
                f"expected images of shape [B, {self.in_chans}, H, W] (in_chans={self.in_chans}), "
                f"got {list(x.shape)}."
            )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Linear:
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer by a freshly initialised one with ``num_classes`` outputs."""
        old = self.get_classifier()
        new = nn.Linear(old.in_features, num_classes, device=old.weight.device, dtype=old.weight.dtype)
        self._init_classifier(new)
        parent_name, _, child = self.classifier_name.rpartition(".")
        setattr(self.get_submodule(parent_name) if parent_name else self, child, new)
        self.num_classes = num_classes
        if self.config is not None:
            self.config = self.config.with_num_classes(num_classes)

    @classmethod
    def stage_layout(cls, **options) -> tuple[Stage, ...]:
        """The stages of the network the constructor builds from ``options`` (without building it)."""
        raise NotImplementedError

    def stages(self) -> list[Stage]:
        """This network's stages, from 0 (the stem) up."""
        return list(self._stages)

    def stage_of(self, path: str) -> int | None:
        """The stage a module or parameter path belongs to (``"layer3.1.attn"`` -> 3), or None (pooling, head)."""
        for stage in self._stages:
            if any(path == module or path.startswith(module + ".") for module in stage.modules):
                return stage.index
        return None

    @property
    def num_features(self) -> int:
        return self.get_classifier().in_features

    def _init_classifier(self, linear: nn.Linear) -> None:
        linear.reset_parameters()

    def _init_weights(self) -> None:
        """torchvision's init for the backbone, then each attention module's own official init."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        self._init_classifier(self.get_classifier())
        for module in self.modules():
            if isinstance(module, AttentionModule):
                module.reset_parameters()
