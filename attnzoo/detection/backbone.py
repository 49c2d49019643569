"""A feature pyramid on any zoo model: the backbone torchvision's detectors take.

    >>> from torchvision.models.detection import FasterRCNN, RetinaNet
    >>> from torchvision.ops.feature_pyramid_network import LastLevelP6P7
    >>> model = FasterRCNN(fpn_backbone("eca_r50", weights="r50.pth"), num_classes=91)
    >>> model = RetinaNet(fpn_backbone("gc_r50", returned_layers=[2, 3, 4],
    ...                                extra_blocks=LastLevelP6P7(256, 256)), num_classes=91)

The body is the model's multi-scale features (``create_model(name, features_only=True)``, the classifier's
own modules under their own names) and the pyramid is torchvision's ``FeaturePyramidNetwork``. The result has
the attributes and names of torchvision's ``BackboneWithFPN``: ``out_channels``, ``body`` and ``fpn``, and a
forward that returns an OrderedDict of maps named "0", "1", ... (plus "pool", or "p6" and "p7", from the extra
block). So the state dict of a torchvision ResNet-FPN detector (a COCO checkpoint) loads into a detector built
on ``fpn_backbone("r50")`` key for key, and into one on ``fpn_backbone("gc_r50")`` with only the attention
keys left at their initialisation.

``trainable_layers`` counts stages back from the network's last one, as torchvision counts ResNet layers
(layer4, layer3, layer2, layer1, the stem: 0-5, 5 for all). The stages before them are frozen as
mmdetection's ``frozen_stages`` freezes (``create_model``'s ``frozen_stages``): no gradients, attention
included, and eval mode through ``.train()``. With ``norm="frozen"`` (torchvision's
default) that is exactly torchvision's network; with trainable BatchNorm torchvision leaves the frozen layers'
BatchNorms in training mode (they keep updating statistics no gradient uses), where here they are fixed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from attnzoo.backbones.base import ImageClassifierNet, take_indices
from attnzoo.backbones.features import FeatureNet, features_of
from attnzoo.errors import AttnzooError
from attnzoo.extras import require
from attnzoo.registry import create_model

if TYPE_CHECKING:
    from torchvision.ops.feature_pyramid_network import ExtraFPNBlock


def _torchvision_fpn():
    """torchvision's FeaturePyramidNetwork and LastLevelMaxPool, or one line naming the extra (imported where
    used: the rest of attnzoo, this module's names included, never needs torchvision)."""
    require("detection", "attnzoo.detection.fpn_backbone (torchvision's detectors)", only=("torchvision",))
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

    return FeaturePyramidNetwork, LastLevelMaxPool

# What each norm option makes of the backbone's BatchNorms (its attention modules' own norms stay trainable,
# see attnzoo.backbones.features). frozen: FrozenBatchNorm2d, statistics and affine fixed (torchvision's default
# for pretrained backbones); eval: BatchNorm kept in eval mode, affine trained (mmdetection's norm_eval, GCNet's
# "fixBN"); bn: ordinary BatchNorm; syncbn: SyncBatchNorm across the processes of a distributed run (GCNet's SyncBN).
NORMS = ("frozen", "eval", "bn", "syncbn")
# create_model's options that fpn_backbone sets itself, and what to use instead.
OWN_OPTIONS = {
    "features_only": "the body is always the model's features",
    "out_indices": "use returned_layers",
    "frozen_stages": "use trainable_layers (counted back from the last stage)",
    "norm_eval": "use norm='eval'",
    "frozen_bn": "use norm='frozen'",
    "num_classes": "the detector has the classes, the backbone has no head",
}


class FPNBackbone(nn.Module):
    """``body`` (a :class:`~attnzoo.backbones.features.FeatureNet`) with torchvision's FPN on its maps.

    Attributes: ``out_channels`` (what a torchvision detector reads), ``body``, ``fpn``, ``feature_names`` (the
    keys of the maps the FPN takes, "0".. in stride order).
    """

    def __init__(self, body: FeatureNet, out_channels: int = 256, extra_blocks: ExtraFPNBlock | None = None,
                 norm_layer: Callable[..., nn.Module] | None = None):
        super().__init__()
        FeaturePyramidNetwork, LastLevelMaxPool = _torchvision_fpn()
        self.body = body
        self.fpn = FeaturePyramidNetwork(in_channels_list=list(body.feature_info.channels()), out_channels=out_channels,
                                         extra_blocks=LastLevelMaxPool() if extra_blocks is None else extra_blocks,
                                         norm_layer=norm_layer)
        self.out_channels = out_channels
        self.feature_names = tuple(str(i) for i in range(len(body.out_indices)))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.fpn(OrderedDict(zip(self.feature_names, self.body(x))))


def _check_trainable_layers(trainable_layers, num_stages: int) -> int:
    if not isinstance(trainable_layers, int) or isinstance(trainable_layers, bool) or \
            not 0 <= trainable_layers <= num_stages:
        raise AttnzooError(f"trainable_layers={trainable_layers!r}: must be 0..{num_stages}, the stages trained counting "
                           f"back from the last ({num_stages}: all of them, the stem included).")
    return trainable_layers


def fpn_backbone(
    name: str | ImageClassifierNet,
    *,
    weights=None,
    trainable_layers: int = 3,
    returned_layers: Sequence[int] | None = None,
    norm: str = "frozen",
    out_channels: int = 256,
    extra_blocks: ExtraFPNBlock | None = None,
    fpn_norm_layer: Callable[..., nn.Module] | None = None,
    **model_options,
) -> FPNBackbone:
    """A zoo model's multi-scale features with torchvision's FPN on top, for torchvision's detectors.

    Args:
        name: any zoo name (``"gc_r50"``, ``"eca_mobilenetv2"``, ``"r50"``; ``attnzoo list``), or a zoo classifier
            with its weights (``attnzoo.load(...)``: attention weights included), whose modules the body takes.
        weights: plain backbone weights for the body, anything ``create_model``'s ``backbone_weights`` takes
            (a torchvision state dict file, a state dict, ...): attention parameters keep their initialisation,
            the head is dropped and said so. None: the zoo's initialisation (or the given model's weights).
        trainable_layers: stages trained, counted back from the last (ResNet: layer4, layer3, layer2, layer1,
            the stem; 0-5 as torchvision's); the others are frozen (see the module docstring).
        returned_layers: the stages (``model.stages()`` numbering) whose maps feed the FPN; None: strides 4, 8,
            16, 32 (ResNet 1-4, MobileNetV2 2, 3, 5, 8). RetinaNet and FCOS take [2, 3, 4] with LastLevelP6P7.
        norm: the backbone's BatchNorm: "frozen", "eval", "bn" or "syncbn" (see ``NORMS``).
        out_channels: channels of every FPN output.
        extra_blocks: torchvision's extra FPN block (default ``LastLevelMaxPool``: the "pool" map of Faster and
            Mask R-CNN; ``LastLevelP6P7(256, 256)`` for RetinaNet and FCOS).
        fpn_norm_layer: a norm for the FPN's convolutions (torchvision's ``norm_layer``), None for none.
        **model_options: the model's options, as ``create_model`` takes them (``attention_stages=[2, 3, 4]``,
            ``attention_kwargs={"ratio": 1 / 4}``, ``in_chans``, ...).
    """
    _torchvision_fpn()  # before the model is built
    if norm not in NORMS:
        raise AttnzooError(f"norm={norm!r} is not one of {', '.join(NORMS)}.")
    for option, instead in OWN_OPTIONS.items():
        if option in model_options:
            raise AttnzooError(f"fpn_backbone takes no {option}: {instead}.")
    if isinstance(name, ImageClassifierNet):  # a model with its weights (attnzoo.load, a checkpoint's): its modules
        if model_options:
            raise AttnzooError(f"fpn_backbone of a built model takes no model options ({', '.join(model_options)}): "
                               "they are the model's already.")
        model = name
    else:
        model = create_model(name, **model_options)
    num_stages = len(model.stages())
    trainable_layers = _check_trainable_layers(trainable_layers, num_stages)
    returned = take_indices(num_stages, model.default_out_indices if returned_layers is None else returned_layers)
    if weights is not None:
        from attnzoo.weights.retrofit import load_backbone_weights

        load_backbone_weights(model, weights)
    # A stage after the last returned one is not part of the features, so there is nothing of it to freeze.
    options = {"frozen_stages": min(num_stages - 1 - trainable_layers, returned[-1]), "frozen_bn": norm == "frozen",
               "norm_eval": norm == "eval"}
    # Loaded weights (given here, or a built model's own) bring a head that the features drop, which features_of
    # says; a fresh model's is not news.
    trained = weights is not None or model is name
    body = (features_of if trained else FeatureNet)(model, returned, **options)
    if norm == "syncbn":
        body = nn.SyncBatchNorm.convert_sync_batchnorm(body)
    return FPNBackbone(body, out_channels, extra_blocks, fpn_norm_layer)
