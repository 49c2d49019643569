"""The model registry: one table of names, one ``create_model``.

Names are ``<backbone>`` for the plain networks (r18 r34 r50 r101 r152 mobilenetv2; aliases resnet18 ...
mobilenet_v2) and ``<attention>_<backbone>`` for attention models (se, eca, gct, gc, cbam, gam).
A registered attention model is its backbone plus the attention with the defaults of the paper's released
models (ECA's per-stage kernel sizes, GAM's grouped spatial convolutions on the deep ResNets). Anything can
be overridden: ``create_model("eca_r50", attention_kwargs={"kernel_size": None})`` gives ECA's adaptive rule
back, ``attention_stages=[3, 4]`` puts attention in the last two stages only.

Dropout: ``eca_mobilenetv2`` is registered with ``drop_rate=0.25``, the dropout before the classifier of the
official ECA-MobileNetV2 (BangguWu/ECANet) and of the paper's recipe; every other MobileNetV2 keeps
torchvision's 0.2, since no released model of theirs says otherwise. Dropout changes nothing in eval mode,
so converted weights compute the same either way; it is the registry's default so that fine-tuning
``create_model("eca_mobilenetv2")`` or ``attnzoo.load`` of the release trains the network that was
released. ``drop_rate=...`` overrides it.
"""

from __future__ import annotations

import fnmatch
import inspect
import json
from dataclasses import dataclass, field, replace

from torch import nn

from attnzoo import attention as attention_registry
from attnzoo.backbones import BasicBlock, Bottleneck, MobileNetV2, ResNet
from attnzoo.backbones.mobilenetv2 import INVERTED_RESIDUAL_SETTING
from attnzoo.errors import AttnzooError, unknown

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_PREPROCESSING = {
    "input_size": [3, 224, 224],
    "interpolation": "bilinear",
    "crop_pct": 0.875,
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}

# name -> (class, fixed constructor arguments)
BACKBONES: dict[str, tuple[type[nn.Module], dict]] = {
    "r18": (ResNet, {"block": BasicBlock, "layers": [2, 2, 2, 2]}),
    "r34": (ResNet, {"block": BasicBlock, "layers": [3, 4, 6, 3]}),
    "r50": (ResNet, {"block": Bottleneck, "layers": [3, 4, 6, 3]}),
    "r101": (ResNet, {"block": Bottleneck, "layers": [3, 4, 23, 3]}),
    "r152": (ResNet, {"block": Bottleneck, "layers": [3, 8, 36, 3]}),
    "mobilenetv2": (MobileNetV2, {}),
}
BACKBONE_ALIASES = {
    "resnet18": "r18",
    "resnet34": "r34",
    "resnet50": "r50",
    "resnet101": "r101",
    "resnet152": "r152",
    "mobilenet_v2": "mobilenetv2",
}

# Kernel sizes of the released ECA-Net ImageNet checkpoints, one per stage (layer1..layer4).
ECA_RESNET_KERNELS = {
    "r18": [3, 5, 7, 7],
    "r34": [3, 3, 5, 7],
    "r50": [3, 5, 5, 7],
    "r101": [3, 3, 5, 7],
    "r152": [3, 3, 5, 7],
}
# GAM's grouped spatial convolutions (with channel shuffle), as the paper does on ResNet-50. The paper gives
# no group count; 4 puts GAM-R50 at ~24 GMACs, close to the paper's 23.91 G (see docs/attention/gam.md).
GAM_GROUPS = {"r50": 4, "r101": 4, "r152": 4}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backbone: str
    attention: str | None
    attention_kwargs: dict = field(default_factory=dict)
    description: str = ""
    backbone_kwargs: dict = field(default_factory=dict)  # backbone options of the released model (drop_rate)

    def stage_kwargs(self) -> dict[int, dict]:
        """Per-stage attention options of the released models."""
        if self.attention != "eca":
            return {}
        if self.backbone == "mobilenetv2":
            # Official ECA-MobileNetV2 (BangguWu/ECANet HEAD, models/eca_mobilenetv2.py): k = 1 where the
            # paper's table has c < 96 (before any width multiplier), else 3. The released
            # eca_mobilenetv2_k13 has k=3 in the 96-channel stage (features.11-13); the code's earlier
            # `c <= 96` did not load it (fixed there in PR #32, reported in issue #22).
            kernels = [1 if c < 96 else 3 for _, c, _, _ in INVERTED_RESIDUAL_SETTING]
        else:
            kernels = ECA_RESNET_KERNELS[self.backbone]
        return {stage: {"kernel_size": k} for stage, k in enumerate(kernels, start=1)}


def _build_table() -> dict[str, ModelSpec]:
    table = {name: ModelSpec(name, name, None, description=f"plain {name}") for name in BACKBONES}
    for attn in attention_registry.list_attention():
        for backbone in BACKBONES:
            kwargs = {"groups": GAM_GROUPS[backbone]} if attn == "gam" and backbone in GAM_GROUPS else {}
            name = f"{attn}_{backbone}"
            table[name] = ModelSpec(name, backbone, attn, kwargs, f"{backbone} with {attn}")
    table["eca_mobilenetv2"] = replace(table["eca_mobilenetv2"], backbone_kwargs={"drop_rate": 0.25})
    return table


MODELS = _build_table()


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise AttnzooError(f"a model name must be a string, got {name!r}.")
    key = name.strip().lower().replace("-", "_")
    if key in MODELS:
        return key
    if key in BACKBONE_ALIASES:
        return BACKBONE_ALIASES[key]
    attn, _, backbone = key.partition("_")
    if backbone in BACKBONE_ALIASES and f"{attn}_{BACKBONE_ALIASES[backbone]}" in MODELS:
        return f"{attn}_{BACKBONE_ALIASES[backbone]}"
    raise unknown(
        "model",
        name,
        list(MODELS) + list(BACKBONE_ALIASES),
        accepted=f"{', '.join(BACKBONES)} and <attention>_<backbone> with attention one of "
        f"{', '.join(attention_registry.list_attention())} (`attnzoo list` shows all)",
    )


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names (canonical, no aliases), filtered by a glob pattern such as ``"eca_*"``."""
    names = list(MODELS)
    return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]


def get_spec(name: str) -> ModelSpec:
    return MODELS[_canonical(name)]


def create_model(name: str, num_classes: int = 1000, backbone_weights: str | None = None, **overrides) -> nn.Module:
    """Build a registered model.

    Args:
        name: a registered name or alias, e.g. ``"gct_r50"``, ``"eca_mobilenetv2"``, ``"resnet50"``.
        num_classes: outputs of the classifier.
        backbone_weights: plain ResNet/MobileNetV2 weights to load into the backbone (a file, directory,
            ``hf-hub:`` id or registry name); attention parameters keep their initialisation.
        **overrides: backbone options (``in_chans``, ``drop_rate``, ``zero_init_residual``, ``width_mult``)
            and attention options (``attention``, ``attention_kwargs``, ``attention_stages``,
            ``attention_stage_kwargs``).

    The returned model carries ``attnzoo_config`` (enough to rebuild it) and ``preprocessing``.
    """
    spec = get_spec(name)
    try:
        json.dumps(overrides)
    except TypeError as err:
        raise AttnzooError(f"model options must be plain values (numbers, strings, lists, dicts): {err}") from None
    kwargs = {"num_classes": num_classes, **spec.backbone_kwargs, **overrides}
    attention = overrides.get("attention", spec.attention)
    if attention is not None:
        user_kwargs = dict(overrides.get("attention_kwargs") or {})
        kwargs["attention"] = attention
        if attention == spec.attention:
            kwargs["attention_kwargs"] = {**spec.attention_kwargs, **user_kwargs}
            # An option the user sets for all stages wins over the registered per-stage value.
            registered = {
                stage: {k: v for k, v in opts.items() if k not in user_kwargs}
                for stage, opts in spec.stage_kwargs().items()
            }
            user_stage = {int(k): v for k, v in (overrides.get("attention_stage_kwargs") or {}).items()}
            kwargs["attention_stage_kwargs"] = {
                s: {**registered.get(s, {}), **user_stage.get(s, {})} for s in set(registered) | set(user_stage)
            }
    cls, fixed = BACKBONES[spec.backbone]
    accepted = [p for p in inspect.signature(cls).parameters if p not in fixed]
    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise AttnzooError(f"{spec.name} has no option {', '.join(map(repr, bad))}. Accepted: {', '.join(accepted)}.")
    model = cls(**fixed, **kwargs)
    model.attnzoo_config = {"architecture": spec.name, "num_classes": num_classes, "model_args": dict(overrides)}
    model.preprocessing = {k: (list(v) if isinstance(v, list) else v) for k, v in IMAGENET_PREPROCESSING.items()}
    if backbone_weights is not None:
        from attnzoo.weights import load_backbone_weights

        load_backbone_weights(model, backbone_weights)
    return model
