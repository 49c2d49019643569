"""The model registry: one table of names, one :class:`ModelConfig`, one ``create_model``.

Names are ``<backbone>`` for the plain networks (r18 r34 r50 r101 r152 mobilenetv2; aliases resnet18 ...
mobilenet_v2) and ``<attention>_<backbone>`` for attention models (se, eca, gct, gc, cbam, gam).
A registered attention model is its backbone plus the attention with the defaults of the paper's released
models (ECA's per-stage kernel sizes, GAM's grouped spatial convolutions on the deep ResNets). Anything can
be overridden: ``create_model("eca_r50", attention_kwargs={"kernel_size": None})`` gives ECA's adaptive rule
back, ``attention_stages=[3, 4]`` puts attention in the last two stages only.

A model's identity is its :class:`ModelConfig` (``model.config``): the name and options that rebuild it, the
attention those resolve to, its preprocessing and class names. ``to_dict``/``from_dict`` are the model part of
a weight's config.json. Loading pretrained backbone weights is the public facade's part
(``attnzoo.create_model(..., backbone_weights=...)``); the registry only builds.

Dropout: ``eca_mobilenetv2`` is registered with ``drop_rate=0.25``, the dropout before the classifier of the
official ECA-MobileNetV2 (BangguWu/ECANet) and of the paper's recipe; every other MobileNetV2 keeps
torchvision's 0.2, since no released model of theirs says otherwise. Dropout changes nothing in eval mode,
so converted weights compute the same either way; it is the registry's default so that fine-tuning
``create_model("eca_mobilenetv2")`` or ``attnzoo.load`` of the release trains the network that was
released. ``drop_rate=...`` overrides it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from attnzoo import attention as attention_registry
from attnzoo.backbones import BasicBlock, Bottleneck, ImageClassifierNet, MobileNetV2, ResNet
from attnzoo.errors import AttnzooError, unknown
from attnzoo.preprocessing import Preprocessing

# name -> (class, fixed constructor arguments)
BACKBONES: dict[str, tuple[type[ImageClassifierNet], dict]] = {
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
# no group count; 4 is the count nearest its GAM-R50 cost: we count 25.87 GMACs against its 23.91 G, 24.23 G
# without the channel MLP (see docs/attention/gam.md).
GAM_GROUPS = {"r50": 4, "r101": 4, "r152": 4}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    backbone: str
    attention: str | None
    attention_kwargs: dict = field(default_factory=dict)
    backbone_kwargs: dict = field(default_factory=dict)  # backbone options of the released model (drop_rate)

    def stage_kwargs(self) -> dict[int, dict]:
        """Per-stage attention options of the released models."""
        if self.attention != "eca":
            return {}
        cls, fixed = BACKBONES[self.backbone]
        block_stages = [stage for stage in cls.stage_layout(**fixed) if stage.blocks]
        if self.backbone == "mobilenetv2":
            # Official ECA-MobileNetV2 (BangguWu/ECANet HEAD, models/eca_mobilenetv2.py): k = 1 where the
            # paper's table has c < 96 (the layout at width 1.0, whatever the width multiplier), else 3. The
            # released eca_mobilenetv2_k13 has k=3 in the 96-channel stage (features.11-13); the code's earlier
            # `c <= 96` did not load it (fixed there in PR #32, reported in issue #22).
            kernels = [1 if stage.channels < 96 else 3 for stage in block_stages]
        else:
            kernels = ECA_RESNET_KERNELS[self.backbone]
        return {stage.index: {"kernel_size": k} for stage, k in zip(block_stages, kernels, strict=True)}


def _build_table() -> dict[str, ModelSpec]:
    table = {name: ModelSpec(name, name, None) for name in BACKBONES}
    for attn in attention_registry.list_attention():
        for backbone in BACKBONES:
            kwargs = {"groups": GAM_GROUPS[backbone]} if attn == "gam" and backbone in GAM_GROUPS else {}
            name = f"{attn}_{backbone}"
            table[name] = ModelSpec(name, backbone, attn, kwargs)
    table["eca_mobilenetv2"] = dataclasses.replace(table["eca_mobilenetv2"], backbone_kwargs={"drop_rate": 0.25})
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


class FrozenMapping(Mapping):
    """A read-only dict for the nested options of a frozen :class:`ModelConfig`: hashable, picklable, and equal
    to a dict with the same items."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping = ()):
        self._items = dict(items)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self) -> Iterator:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)

    def __reduce__(self):
        return type(self), (self._items,)


def _freeze(value):
    if isinstance(value, Mapping):
        return FrozenMapping({key: _freeze(v) for key, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value):
    """Plain dicts and lists again, as a constructor and json.dumps take them."""
    if isinstance(value, Mapping):
        return {key: _thaw(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _short(value, limit: int = 80) -> str:
    """``repr`` cut to one readable line (a 1000-entry list in an error message helps nobody)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def check_num_classes(num_classes, option: str = "num_classes") -> None:
    """One line naming ``option`` unless ``num_classes`` is a positive int (True and 5.0 are not)."""
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise AttnzooError(f"{option} must be a positive integer, got {num_classes!r}.")


def _stage_options(value, option: str) -> dict[int, Mapping]:
    if not isinstance(value, Mapping):
        raise AttnzooError(f"{option} must map stage numbers to option dicts, got {value!r}.")
    out = {}
    for stage, options in value.items():
        try:
            number = int(stage)
        except (TypeError, ValueError):
            raise AttnzooError(f"{option}: {stage!r} is not a stage number (0 is the stem).") from None
        if not isinstance(options, Mapping):
            raise AttnzooError(f"{option}[{stage!r}] must be a dict of attention options, got {options!r}.")
        out[number] = options
    return out


@dataclass(frozen=True)
class ModelConfig:
    """What identifies a model: the registered name and options that rebuild it, the attention they resolve
    to, and what the model expects and predicts. Every model from :func:`attnzoo.create_model` or ``attnzoo.load``
    carries one as ``model.config``; ``reset_classifier`` keeps it true.

    Only the first five fields are given; the others are resolved by the registry from them, so a config is
    never inconsistent (``dataclasses.replace`` resolves again).

    Args:
        architecture: a registered name or alias (stored canonical: ``"resnet50"`` -> ``"r50"``).
        num_classes: outputs of the classifier.
        model_args: the options given to :func:`attnzoo.create_model` (``width_mult``, ``attention_stages``, ...), as
            config.json stores them.
        preprocessing: what the model expects of its input images.
        class_names: one name per output, or None.

    Resolved: ``backbone``; ``attention`` (None for none) with ``attention_kwargs`` (options for every stage:
    the registered ones with the user's on top) and ``attention_stage_kwargs`` (per stage, on top of those);
    ``attention_stages`` (the stages given attention, None for all); ``in_chans``.
    """

    architecture: str
    num_classes: int = 1000
    model_args: Mapping[str, Any] = field(default_factory=FrozenMapping)
    preprocessing: Preprocessing = Preprocessing()
    class_names: tuple[str, ...] | None = None
    backbone: str = field(init=False)
    attention: str | None = field(init=False)
    attention_kwargs: Mapping[str, Any] = field(init=False)
    attention_stages: tuple[int, ...] | None = field(init=False)
    attention_stage_kwargs: Mapping[int, Mapping[str, Any]] = field(init=False)
    in_chans: int = field(init=False)

    def __post_init__(self) -> None:
        spec = get_spec(self.architecture)
        num_classes = self.num_classes
        check_num_classes(num_classes)
        if not isinstance(self.model_args, Mapping):
            raise AttnzooError(f"model options must be a dict, got {self.model_args!r}.")
        args = _thaw(self.model_args)  # given as a dict, or frozen already (dataclasses.replace)
        try:
            json.dumps(args)
        except (TypeError, ValueError) as err:
            raise AttnzooError(f"model options must be plain values (numbers, strings, lists, dicts): {err}") from None
        cls, fixed = BACKBONES[spec.backbone]
        signature = inspect.signature(cls).parameters
        accepted = [p for p in signature if p not in fixed and p != "num_classes"]
        bad = sorted(set(args) - set(accepted))
        if bad:
            hint = " (num_classes is given on its own)" if "num_classes" in bad else ""
            # timm's pretrained=True and torchvision's weights=...: say where weights go in attnzoo.
            habits = [name for name in ("pretrained", "weights") if name in bad]
            if habits:
                hint += (f" ({' and '.join(habits)}: plain ImageNet weights for the backbone go in "
                         f"create_model({spec.name!r}, backbone_weights=FILE_OR_HUB_ID), e.g. torchvision's "
                         f"file; whole published weights load with attnzoo.load(SOURCE))")
            attention = args.get("attention", spec.attention)
            if isinstance(attention, str) and attention in attention_registry.list_attention():
                module_options = set(inspect.signature(attention_registry.get(attention)).parameters) - {"channels"}
                theirs = {name: args[name] for name in bad if name in module_options}
                if theirs:
                    hint += (f" ({', '.join(theirs)} {'is an option' if len(theirs) == 1 else 'are options'} of its "
                             f"{attention} attention: pass attention_kwargs={theirs!r})")
            raise AttnzooError(f"{spec.name} has no option {', '.join(map(repr, bad))}{hint}. Accepted: "
                               f"{', '.join(accepted)}.")
        if "attention_stage_kwargs" in args and args["attention_stage_kwargs"] is not None:
            # Stage numbers as ints: the same config whether it was typed in Python or read back from JSON.
            args["attention_stage_kwargs"] = _stage_options(args["attention_stage_kwargs"], "attention_stage_kwargs")
        attention = args.get("attention", spec.attention)
        if attention is not None:
            attention_registry.get(attention)  # an unknown name is refused here, before anything is built
        user_kwargs = args.get("attention_kwargs") or {}
        user_stage = args.get("attention_stage_kwargs") or {}
        if not isinstance(user_kwargs, Mapping):
            raise AttnzooError(f"attention_kwargs must be a dict of attention options, got {user_kwargs!r}.")
        if attention is None:
            if user_kwargs or user_stage:
                raise AttnzooError("attention options were given but attention is None; name an attention first.")
            attention_kwargs, stage_kwargs = {}, {}
        elif attention == spec.attention:
            attention_kwargs = {**spec.attention_kwargs, **user_kwargs}
            # An option the user sets for all stages wins over the registered per-stage value.
            registered = {stage: {k: v for k, v in opts.items() if k not in user_kwargs}
                          for stage, opts in spec.stage_kwargs().items()}
            stage_kwargs = {stage: {**registered.get(stage, {}), **user_stage.get(stage, {})}
                            for stage in sorted(set(registered) | set(user_stage))}
        else:
            attention_kwargs, stage_kwargs = dict(user_kwargs), dict(user_stage)
        stages = args.get("attention_stages")
        if attention is not None and stages is not None:
            try:
                stages = tuple(sorted({int(stage) for stage in stages}))
            except (TypeError, ValueError):
                raise AttnzooError(f"attention_stages must be a list of stage numbers, got {stages!r}.") from None
        class_names = None if self.class_names is None else tuple(str(name) for name in self.class_names)
        if class_names is not None and len(class_names) != num_classes:
            raise AttnzooError(f"class_names has {len(class_names)} names but the model has {num_classes} classes.")
        resolved = {
            "architecture": spec.name,
            "model_args": _freeze(args),
            "preprocessing": Preprocessing.from_dict(self.preprocessing),
            "class_names": class_names,
            "backbone": spec.backbone,
            "attention": attention,
            "attention_kwargs": _freeze(attention_kwargs),
            "attention_stages": stages if attention is not None else None,
            "attention_stage_kwargs": _freeze(stage_kwargs),
            "in_chans": args.get("in_chans", signature["in_chans"].default),
        }
        for name, value in resolved.items():
            object.__setattr__(self, name, value)

    @classmethod
    def from_dict(cls, values: Mapping) -> ModelConfig:
        """The config of a config.json (or of a checkpoint's metadata): ``architecture``, ``num_classes``,
        ``model_args``, ``preprocessing``, ``label_names``. Other keys (metrics, source, ...) belong to the weights
        format and are left to it. Every reader of a saved model (``attnzoo.load``, the model card, the
        checkpoint reader) comes through here, so this is the one place to check what a file may say."""
        if not isinstance(values, Mapping):
            raise AttnzooError(f"a model config must be a JSON object, got {type(values).__name__}.")
        missing = [key for key in ("architecture", "num_classes") if values.get(key) is None]
        if missing:
            raise AttnzooError(f"the model config lacks {', '.join(missing)}: it is not an attnzoo config.")
        architecture, num_classes = values["architecture"], values["num_classes"]
        if not isinstance(architecture, str):
            raise AttnzooError(f"architecture must be a registered model name (a string), got {architecture!r}.")
        check_num_classes(num_classes)  # before the label count is compared with it
        model_args = values.get("model_args")
        if model_args is not None and not isinstance(model_args, Mapping):
            raise AttnzooError(f"model_args must be an object of create_model options (or null), got {model_args!r}.")
        # Python callers may give any names (str() is taken); a file must say exactly one string per class.
        labels = values.get("label_names")
        if labels is not None:
            if not isinstance(labels, (list, tuple)) or not all(isinstance(name, str) for name in labels):
                raise AttnzooError(f"label_names must be a list of strings, one per class (or null), got "
                                   f"{_short(labels)}.")
            if len(labels) != num_classes:
                raise AttnzooError(f"label_names has {len(labels)} names but num_classes is {num_classes}: one name "
                                   "per class (or null).")
        return cls(architecture, num_classes, model_args or {}, Preprocessing.from_dict(values.get("preprocessing")),
                   labels)

    def to_dict(self) -> dict:
        """The model part of config.json, in plain JSON values."""
        return {
            "architecture": self.architecture,
            "num_classes": self.num_classes,
            "model_args": _thaw(self.model_args),
            "preprocessing": self.preprocessing.to_dict(),
            "label_names": None if self.class_names is None else list(self.class_names),
        }

    def replace(self, **changes) -> ModelConfig:
        """A copy with some of the given fields changed (resolved again)."""
        return dataclasses.replace(self, **changes)

    def with_num_classes(self, num_classes: int) -> ModelConfig:
        """The config after a new classifier of ``num_classes`` outputs: class names no longer apply."""
        if num_classes == self.num_classes:
            return self
        return self.replace(num_classes=num_classes, class_names=None)

    def plain(self) -> ModelConfig:
        """The plain backbone with the same backbone options, no attention (what attention is compared to)."""
        args = {k: v for k, v in _thaw(self.model_args).items() if not k.startswith("attention")}
        return ModelConfig(self.backbone, self.num_classes, args, self.preprocessing)

    def backbone_kwargs(self) -> dict:
        """The keyword arguments of the backbone's constructor, besides the registry's fixed ones."""
        kwargs = {"num_classes": self.num_classes, **get_spec(self.architecture).backbone_kwargs}
        kwargs.update({k: v for k, v in _thaw(self.model_args).items() if not k.startswith("attention")})
        if self.attention is not None:
            kwargs.update(attention=self.attention, attention_kwargs=_thaw(self.attention_kwargs),
                          attention_stages=None if self.attention_stages is None else list(self.attention_stages),
                          attention_stage_kwargs=_thaw(self.attention_stage_kwargs))
        return kwargs


def config_of(model) -> ModelConfig | None:
    """The :class:`ModelConfig` of a zoo network, None for any other module."""
    config = getattr(model, "config", None)
    return config if isinstance(config, ModelConfig) else None


def build(config: ModelConfig) -> ImageClassifierNet:
    """The network of ``config`` (fresh initialisation), carrying it as ``model.config``."""
    cls, fixed = BACKBONES[config.backbone]
    model = cls(**fixed, **config.backbone_kwargs())
    model.config = config
    return model


# Options of features_only=True (attnzoo.backbones.features.FeatureNet), not of the classifier's config.
FEATURE_OPTIONS = ("out_indices", "frozen_stages", "norm_eval", "frozen_bn")


def feature_options(features_only: bool, overrides: dict) -> dict:
    """Take the features options out of ``overrides`` (in place); refuse them without ``features_only``."""
    options = {key: overrides.pop(key) for key in FEATURE_OPTIONS if key in overrides}
    if not isinstance(features_only, bool):
        raise AttnzooError(f"features_only must be True or False, got {features_only!r}.")
    if options and not features_only:
        raise AttnzooError(f"{', '.join(options)} {'applies' if len(options) == 1 else 'apply'} to the multi-scale "
                           "features of a model: pass features_only=True as well.")
    return options


def create_model(name: str, num_classes: int = 1000, features_only: bool = False, **overrides):
    """Build a registered model.

    Args:
        name: a registered name or alias, e.g. ``"gct_r50"``, ``"eca_mobilenetv2"``, ``"resnet50"``.
        num_classes: outputs of the classifier.
        features_only: return the multi-scale features network
            (:class:`attnzoo.backbones.features.FeatureNet`) instead of the classifier; it then takes
            ``out_indices``, ``frozen_stages``, ``norm_eval`` and ``frozen_bn``.
        **overrides: backbone options (``in_chans``, ``drop_rate``, ``zero_init_residual``, ``width_mult``,
            ``stride_in_1x1``) and attention options (``attention``, ``attention_kwargs``,
            ``attention_stages``, ``attention_stage_kwargs``).

    The returned model carries its :class:`ModelConfig` as ``model.config``. ``attnzoo.create_model`` (the
    public one) also takes ``backbone_weights``.
    """
    options = feature_options(features_only, overrides)
    model = build(ModelConfig(name, num_classes, overrides))
    if not features_only:
        return model
    from attnzoo.backbones.features import FeatureNet

    return FeatureNet(model, **options)
