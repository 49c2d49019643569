"""Multi-scale features: a zoo classifier's body as a network that returns its stage outputs (``features_only``).

:class:`FeatureNet` takes the modules of a classifier (not copies) up to the last stage asked for, under
the same names (``conv1``, ``bn1``, ``layer1``..``layer4``; ``features.N``), so a torchvision or attnzoo
classification state dict loads into it once the head (and any stage it does not run) is dropped, which
:meth:`FeatureNet.load_state_dict` does and logs. Its forward runs the classifier's stages in the
classifier's order, so each map is bitwise the tensor the classifier computes there.

Stage indices are those of ``model.stages()``: 0 is the stem (stride 2); ResNet 1..4 = layer1..layer4 at
strides 4, 8, 16, 32; MobileNetV2 2, 3, 5, 8 = features.3, .6, .13, .18 at strides 4, 8, 16, 32.

Detection options, as mmdetection's ResNet has them:

- ``frozen_stages=N``: the stem and stages 1..N get no gradients (``requires_grad=False``) and stay in eval
  mode through ``.train()``; everything in them is frozen, attention modules included. -1 freezes nothing.
- ``norm_eval=True``: the backbone's BatchNorms stay in eval mode through ``.train()`` (running statistics
  fixed, affine parameters still learn).
- ``frozen_bn=True``: the backbone's BatchNorms become :class:`~attnzoo.backbones.frozen.FrozenBatchNorm2d`
  (statistics and affine fixed, torchvision's detection default).

``norm_eval`` and ``frozen_bn`` leave the attention modules' own norms as ordinary trainable layers: GAM's
and CBAM's BatchNorms (a freshly inserted attention needs its statistics to learn) and GC's LayerNorm (no
statistics; it normalises each image on its own). Only ``frozen_stages`` freezes an attention, with its stage.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from attnzoo.backbones.base import ImageClassifierNet, Stage, check_images, run_stages, stage_containing, submodule, \
    take_indices
from attnzoo.backbones.frozen import batch_norms, freeze_batch_norm
from attnzoo.errors import AttnzooError

log = logging.getLogger("attnzoo.features")


class FeatureInfo:
    """timm's ``feature_info``: one dict per stage (``num_chs``, ``reduction``, ``module``, ``index``, ``stage``),
    indexable by stage index, and the channels / reductions / module names of the returned maps.

    As in timm, ``channels()``, ``reduction()`` and ``module_name()`` without an index list the outputs in
    order (``out_indices``); with ``idx`` they read the stage(s) of that index.
    """

    def __init__(self, info: Sequence[dict], out_indices: Sequence[int]):
        self.info = [dict(entry) for entry in info]
        self.out_indices = tuple(out_indices)

    @classmethod
    def from_stages(cls, stages: Sequence[Stage], out_indices: Sequence[int]) -> FeatureInfo:
        return cls([{"num_chs": s.channels, "reduction": s.reduction, "module": s.runs[-1], "index": s.index,
                     "stage": s.index} for s in stages], out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None, idx: int | Sequence[int] | None = None):
        def pick(entry):
            return dict(entry) if keys is None else {key: entry[key] for key in keys}

        if idx is None:
            return [pick(self.info[i]) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(self.info[i]) for i in idx]
        return pick(self.info[idx])

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self) -> Iterator[dict]:
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, info={self.info})"


def _check_frozen_stages(value, num_stages: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -1 <= value < num_stages:
        raise AttnzooError(f"frozen_stages={value!r}: must be -1 (nothing frozen) or a stage index 0..{num_stages - 1} "
                           "(0 freezes the stem; N the stem and stages 1..N).")
    return value


class FeatureNet(nn.Module):
    """The stage outputs of a zoo classifier: ``forward(x)`` -> list of maps, one per ``out_indices``.

    Args:
        model: a classifier from ``attnzoo.create_model`` or ``attnzoo.load`` (its weights are kept; its modules
            are taken, not copied, and its head is dropped).
        out_indices: stage indices (``model.stages()``); None for the model's strides 4, 8, 16, 32
            (``default_out_indices``: ResNet (1, 2, 3, 4), MobileNetV2 (2, 3, 5, 8)).
        frozen_stages: freeze the stem and stages 1..N (-1: none). See the module's docstring.
        norm_eval: keep the backbone's BatchNorms in eval mode through ``.train()``.
        frozen_bn: turn the backbone's BatchNorms into FrozenBatchNorm2d.

    Attributes: ``feature_info`` (:class:`FeatureInfo`), ``out_indices``, ``config`` (the classifier's
    ModelConfig), ``in_chans``, ``dropped_keys`` (the classifier state-dict keys it does not have).
    """

    def __init__(self, model: ImageClassifierNet, out_indices: Sequence[int] | None = None, *, frozen_stages: int = -1,
                 norm_eval: bool = False, frozen_bn: bool = False):
        super().__init__()
        if not isinstance(model, ImageClassifierNet):
            raise AttnzooError(f"features need a zoo classifier (attnzoo.create_model / attnzoo.load), got "
                               f"{type(model).__name__}.")
        all_stages = model.stages()
        take = take_indices(len(all_stages), model.default_out_indices if out_indices is None else out_indices)
        self.out_indices = tuple(take)
        self._stages = tuple(all_stages[: take[-1] + 1])
        self.frozen_stages = _check_frozen_stages(frozen_stages, len(self._stages))
        self.norm_eval = bool(norm_eval)
        self.frozen_bn = bool(frozen_bn)
        self.config = model.config
        self.in_chans = model.in_chans
        self.feature_info = FeatureInfo.from_stages(all_stages, take)
        self._adopt(model, {path for stage in self._stages for path in stage.runs})
        own = set(self.state_dict())
        self.dropped_keys = tuple(k for k in model.state_dict() if k not in own)
        for module in self._frozen_modules():
            for param in module.parameters():
                param.requires_grad_(False)
        if self.frozen_bn:
            freeze_batch_norm(self)
        self.register_load_state_dict_pre_hook(_drop_classifier_keys)
        self.train(model.training)

    def _adopt(self, model: nn.Module, paths: set[str]) -> None:
        """Register the modules the stages run under their classifier names: a top-level module whole, or a
        Sequential with only the children that run (``features`` of MobileNetV2 up to the last stage)."""
        for name, child in model.named_children():
            if name in paths:
                self.add_module(name, child)
                continue
            inner = {path[len(name) + 1:] for path in paths if path.startswith(name + ".")}
            if not inner:
                continue
            if not isinstance(child, nn.Sequential) or any("." in path for path in inner):
                raise AttnzooError(f"cannot take part of {name} ({type(child).__name__}) as features.")
            self.add_module(name, nn.Sequential(OrderedDict((key, m) for key, m in child.named_children() if key in inner)))

    def _frozen_modules(self) -> Iterator[nn.Module]:
        """The modules of the frozen stages (``frozen_stages``), looked up each time: a SyncBatchNorm conversion
        after construction replaces some of them."""
        for stage in self._stages[: self.frozen_stages + 1]:
            for path in stage.runs:
                yield submodule(self, path)

    def stages(self) -> list[Stage]:
        """The stages this network runs (those of the classifier up to the last output)."""
        return list(self._stages)

    def stage_of(self, path: str) -> int | None:
        return stage_containing(self._stages, path)

    def train(self, mode: bool = True) -> FeatureNet:
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for norm in batch_norms(self):
                    norm.eval()
        return self

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_images(x, self.in_chans)
        return run_stages(self, self._stages, self.out_indices, x)[1]


def _drop_classifier_keys(module: FeatureNet, state_dict, prefix, local_metadata, strict, missing_keys,
                          unexpected_keys, error_msgs) -> None:
    """A classifier's state dict loads into its features: the head's (and unused stages') entries are dropped,
    and said so."""
    dropped = [key for key in module.dropped_keys if prefix + key in state_dict]
    for key in dropped:
        del state_dict[prefix + key]
    if dropped:
        _log_dropped(module, dropped)


def _log_dropped(features: FeatureNet, keys: Sequence[str]) -> None:
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    name = features.config.architecture if features.config is not None else "the classifier"
    log.warning("features of %s: %d classifier weight entries dropped (%s): the head, and any stage after the last "
                "output (out_indices=%s), are not part of the features.", name, len(keys), shown,
                list(features.out_indices))


def features_of(model: ImageClassifierNet, out_indices: Sequence[int] | None = None, *, frozen_stages: int = -1,
                norm_eval: bool = False, frozen_bn: bool = False) -> FeatureNet:
    """The :class:`FeatureNet` of a classifier that has weights (``attnzoo.load``, a checkpoint, retrofit); the
    entries it drops (the head) are logged as a warning with their count. The classifier's modules are taken,
    not copied: use the result, not the classifier, afterwards."""
    features = FeatureNet(model, out_indices, frozen_stages=frozen_stages, norm_eval=norm_eval, frozen_bn=frozen_bn)
    if features.dropped_keys:
        _log_dropped(features, features.dropped_keys)
    return features
