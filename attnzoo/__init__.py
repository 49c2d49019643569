"""attnzoo: paper-exact attention modules on ResNet and MobileNetV2.

    >>> import attnzoo
    >>> model = attnzoo.create_model("gct_r50", num_classes=10)
    >>> model.config                      # its ModelConfig: name, options, attention, preprocessing, classes
    >>> attnzoo.list_models("eca_*")
    >>> attnzoo.model_info("se_r50")
    >>> attnzoo.attention.create("se", 64)

This module is the public facade, on top of everything else: the subpackages (attention, backbones, data,
training, weights, bench, export, analysis) are its attributes, and nothing inside the package imports it. Imports are
lazy so that ``import attnzoo`` stays cheap (the command line starts fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and the API reference (docs/reference/)
    from attnzoo.errors import AttnzooError
    from attnzoo.export import export_onnx, export_program
    from attnzoo.info import model_info
    from attnzoo.preprocessing import Preprocessing
    from attnzoo.registry import ModelConfig, list_models
    from attnzoo.weights import load, save_pretrained

from attnzoo._version import __version__

_LAZY = {
    "list_models": "attnzoo.registry",
    "ModelConfig": "attnzoo.registry",
    "Preprocessing": "attnzoo.preprocessing",
    "model_info": "attnzoo.info",
    "AttnzooError": "attnzoo.errors",
    "load": "attnzoo.weights",
    "save_pretrained": "attnzoo.weights",
    "export_onnx": "attnzoo.export",
    "export_program": "attnzoo.export",
}
# Reachable as attributes (`attnzoo.attention.create(...)`) without importing them first.
SUBMODULES = (
    "analysis", "attention", "backbones", "bench", "compare", "data", "detection", "export", "training", "weights",
    "compiling", "errors", "info", "preprocessing", "registry",
)

__all__ = ["__version__", "create_model", *_LAZY]


def create_model(name: str, num_classes: int = 1000, backbone_weights=None, features_only: bool = False,
                 **overrides):
    """Build a registered model, optionally with pretrained plain-backbone weights.

    Args:
        name: a registered name or alias, e.g. ``"gct_r50"``, ``"eca_mobilenetv2"``, ``"resnet50"``
            (``attnzoo list`` shows them all).
        num_classes: outputs of the classifier.
        backbone_weights: plain ResNet/MobileNetV2 weights to load into the backbone (a file, directory,
            ``hf-hub:`` id or index name); attention parameters keep their initialisation.
        features_only: return the multi-scale features network instead of the classifier: its forward
            gives the list of stage outputs ``out_indices`` (default: strides 4, 8, 16, 32), with
            ``feature_info``; it also takes ``frozen_stages``, ``norm_eval`` and ``frozen_bn``
            (see :class:`attnzoo.backbones.features.FeatureNet`).
        **overrides: backbone options (``in_chans``, ``drop_rate``, ``zero_init_residual``, ``width_mult``,
            ``stride_in_1x1``) and attention options (``attention``, ``attention_kwargs``,
            ``attention_stages``, ``attention_stage_kwargs``).

    The model carries its :class:`~attnzoo.registry.ModelConfig` as ``model.config``.
    """
    from attnzoo.registry import create_model as build, feature_options

    options = feature_options(features_only, overrides)
    model = build(name, num_classes=num_classes, **overrides)
    if backbone_weights is not None:
        from attnzoo.weights.retrofit import load_backbone_weights

        load_backbone_weights(model, backbone_weights)
    if features_only:
        from attnzoo.backbones.features import FeatureNet, features_of

        # weights loaded: the head they brought is dropped and said so
        return (FeatureNet if backbone_weights is None else features_of)(model, **options)
    return model


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in SUBMODULES:
        return importlib.import_module(f"attnzoo.{name}")
    raise AttributeError(f"module 'attnzoo' has no attribute {name!r}")


def __dir__():
    return sorted({*__all__, *SUBMODULES})
