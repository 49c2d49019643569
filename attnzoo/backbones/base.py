"""What the ResNet and MobileNetV2 classifiers share: the forward split, input checks, head access, init, and
the numbered stages that ``attention_stages`` selects."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from attnzoo.attention import AttentionModule
from attnzoo.errors import AttnzooError


@dataclass(frozen=True)
class Stage:
    """One numbered stage of a backbone, as ``attention_stages`` and ``attention_stage_kwargs`` count them.

    Each backbone numbers its own: 0 is always the stem convolution. The stages run one after the other, each
    on the previous one's output, so stage ``i``'s output is a feature map at ``reduction`` (its stride from the
    input): what ``features_only`` and ``forward_intermediates`` return.
    """

    index: int
    name: str  # the modules it spans, as the state dict names them: "layer2", "features.2-3"
    channels: int  # output channels of its convolutions
    modules: tuple[str, ...]  # the top-level module paths it owns
    blocks: int = 0  # residual blocks in it (0: a stage that is a single convolution)
    reduction: int = 1  # stride of its output relative to the input image
    # the modules its forward applies, in order, when that is more than ``modules`` (the ResNet stem's relu, the
    # maxpool that opens layer1): parameter-free modules no stage owns for ``attention_stages``
    sequence: tuple[str, ...] = ()

    @property
    def runs(self) -> tuple[str, ...]:
        """Module paths applied, in order, to the previous stage's output."""
        return self.sequence or self.modules


def check_images(x: torch.Tensor, in_chans: int) -> None:
    # Shapes are static under torch.compile, so this check is resolved at trace time (no graph break).
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise AttnzooError(f"expected images of shape [B, {in_chans}, H, W] (in_chans={in_chans}), got {list(x.shape)}.")


def stage_containing(stages, path: str) -> int | None:
    """The stage a module or parameter path belongs to (``"layer3.1.attn"`` -> 3), or None (pooling, head)."""
    for stage in stages:
        if any(path == module or path.startswith(module + ".") for module in stage.modules):
            return stage.index
    return None


def submodule(root: nn.Module, path: str) -> nn.Module:
    # getattr one name at a time (not Module.get_submodule) so that dynamo resolves each step to a constant.
    for name in path.split("."):
        root = getattr(root, name)
    return root


def run_stage(root: nn.Module, stage: Stage, x: torch.Tensor) -> torch.Tensor:
    for path in stage.runs:
        x = submodule(root, path)(x)
    return x


def run_stages(root: nn.Module, stages: Sequence[Stage], take, x: torch.Tensor) -> tuple[torch.Tensor, list]:
    """Run ``stages`` in order from ``x``: (the last one's output, [the outputs of the stages in ``take``])."""
    outputs = []
    for stage in stages:
        x = run_stage(root, stage, x)
        if stage.index in take:
            outputs.append(x)
    return x, outputs


def take_indices(num_stages: int, indices) -> list[int]:
    """The stage indices ``forward_intermediates`` returns, sorted: None -> all; an int n -> the last n; a list
    of indices (negative ones count from the end, as in Python). Out-of-range or repeated indices are refused."""
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int) and not isinstance(indices, bool):
        if not 1 <= indices <= num_stages:
            raise AttnzooError(f"indices={indices!r}: as a number it takes the last n stages, 1 <= n <= {num_stages}.")
        return list(range(num_stages - indices, num_stages))
    try:
        given = list(indices)
    except TypeError:
        raise AttnzooError(f"indices must be None, a number of last stages, or a list of stage indices; got "
                           f"{indices!r}.") from None
    taken = []
    for index in given:
        if not isinstance(index, int) or isinstance(index, bool) or not -num_stages <= index < num_stages:
            raise AttnzooError(f"stage index {index!r} does not exist: this network has stages 0..{num_stages - 1} "
                               "(0 is the stem; model.stages() lists them).")
        taken.append(index % num_stages)
    if not taken or len(set(taken)) != len(taken):
        raise AttnzooError(f"indices must name each stage once and at least one, got {given!r}.")
    return sorted(taken)


class ImageClassifierNet(nn.Module):
    """``forward(x) = forward_head(forward_features(x))``; subclasses build ``self.<classifier>`` and describe
    their stages in :meth:`stage_layout`.

    ``config`` is the :class:`attnzoo.registry.ModelConfig` the registry built the network from (None for a
    network constructed directly); :meth:`reset_classifier` keeps it true.
    """

    classifier_name: str  # dotted path of the final nn.Linear, e.g. "fc" or "classifier.1"
    default_out_indices: tuple[int, ...]  # the stages features_only returns by default: strides 4, 8, 16, 32
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
        check_images(x, self.in_chans)

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

    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """timm's contract: ``(final_features, [stage outputs])``, or only the list with ``intermediates_only``.

        Args:
            indices: the stages (of :meth:`stages`) whose outputs to return: None for all, an int n for the
                last n, or a list of indices.
            norm: accepted for timm's signature; these networks have no norm after the last stage, so it
                changes nothing.
            stop_early: stop after the last stage asked for (then ``final_features`` is that stage's output).
            output_fmt: "NCHW" only (the networks are convolutional).
            intermediates_only: return the list only (and stop early).

        The maps are the tensors the classifier's own forward computes (same modules, same order), so
        they are bitwise equal to what ``forward_features`` passes through.
        """
        if output_fmt != "NCHW":
            raise AttnzooError(f"output_fmt={output_fmt!r} is not supported; convolutional stage outputs are 'NCHW'.")
        take = take_indices(len(self._stages), indices)
        self.check_input(x)
        last = take[-1] if stop_early or intermediates_only else len(self._stages) - 1
        x, intermediates = run_stages(self, self._stages[:last + 1], take, x)
        return intermediates if intermediates_only else (x, intermediates)

    def stage_of(self, path: str) -> int | None:
        """The stage a module or parameter path belongs to (``"layer3.1.attn"`` -> 3), or None (pooling, head)."""
        return stage_containing(self._stages, path)

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
