"""Attention into an existing torchvision detector, in place: COCO-pretrained Faster / Mask R-CNN, RetinaNet
and FCOS with a ResNet body gain attention modules and keep every weight they had.

    >>> model = torchvision.models.detection.maskrcnn_resnet50_fpn(weights="DEFAULT")
    >>> attnzoo.detection.add_attention(model, "gc", attention_kwargs={"ratio": 1 / 4})   # GCNet's c3-c5 r4

The body (``model.backbone.body``) is torchvision's ResNet behind an ``IntermediateLayerGetter``; its module
names are attnzoo's own (``conv1``, ``layer1``..``layer4``, ``layer2.0.conv3``), and so are its stages (0: the
stem, 1..4: layer1..layer4). Each residual block that gets attention becomes attnzoo's block of the same kind
holding torchvision's very modules (the same parameter objects, frozen or not, FrozenBatchNorm2d kept), plus
``<block>.attn``; GCT's gates wrap the existing convolutions as ``<conv>.gate``. So the detector's state dict
keeps every key it had and gains only attention keys, named as in attnzoo's models: the COCO checkpoint still
loads (``strict=False`` for the new keys), and GC and GCT, exact identities at initialisation, leave the
detector's outputs bitwise unchanged until they are trained (tests/test_detection_backbone.py).

Where attention goes when ``attention_stages`` is not given: the papers' detection placement. GC in c3-c5
(stages 2-4), as GCNet's official Mask R-CNN configs (``stage_with_gcb=(False, True, True, True)``); every
other attention where its classification model has it (SE, ECA, CBAM, GAM in every block, GCT before every
convolution, the stem's included). On the depths attnzoo registers (ResNet-18..152) the options are those of
the registered model (ECA's per-stage kernel sizes of ``eca_r50``, GAM's groups), the caller's on top.

New modules follow their block: in a layer the detector froze (``trainable_backbone_layers``), the attention
is frozen too and stays at its initialisation, as mmdetection's ``frozen_stages`` freezes everything in a stage.
Build the optimizer after this call: it replaces blocks, so an optimizer built before would miss the new
parameters.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from attnzoo import attention as attention_registry
from attnzoo.backbones.layers import GatedConv2d
from attnzoo.backbones.plan import AttentionPlan, ModuleFactory
from attnzoo.backbones.resnet import BasicBlock, Bottleneck
from attnzoo.errors import AttnzooError
from attnzoo.extras import require
from attnzoo.registry import BACKBONES, ModelConfig


# The papers' detection placement where it differs from "every stage" (see the module docstring).
DETECTION_STAGES = {"gc": (2, 3, 4)}

STAGES = range(5)  # 0: the stem, 1..4: layer1..layer4, as attnzoo's ResNet numbers them
_BLOCK_CHILDREN = {BasicBlock: ("conv1", "bn1", "relu", "conv2", "bn2", "downsample"),
                   Bottleneck: ("conv1", "bn1", "conv2", "bn2", "conv3", "bn3", "relu", "downsample")}


def _blocks() -> dict[type, type]:
    """torchvision's ResNet block classes, each with attnzoo's of the same kind; or one line naming the extra
    (imported where used: the rest of attnzoo, this module's names included, never needs torchvision)."""
    require("detection", "attnzoo.detection.add_attention (torchvision's detectors)", only=("torchvision",))
    from torchvision.models import resnet as tv_resnet

    return {tv_resnet.BasicBlock: BasicBlock, tv_resnet.Bottleneck: Bottleneck}


def resnet_body(model: nn.Module) -> nn.Module:
    """The ResNet body of a torchvision detector (``model.backbone.body``), of a ``BackboneWithFPN``
    (``.body``), or ``model`` itself when it is one (a torchvision ResNet or its IntermediateLayerGetter)."""
    for candidate in (getattr(getattr(model, "backbone", None), "body", None), getattr(model, "body", None), model):
        if isinstance(candidate, nn.Module) and hasattr(candidate, "conv1") and hasattr(candidate, "layer1"):
            return candidate
    raise AttnzooError(f"add_attention takes a torchvision detector with a ResNet body (model.backbone.body with "
                       f"conv1 and layer1..layer4), its backbone, or the body; got a {type(model).__name__}.")


def _zoo_backbone(body: nn.Module) -> str | None:
    """The registered backbone (r18..r152) with this body's block kind and depths, or None (ResNeXt, wide)."""
    layers = [getattr(body, f"layer{i}", None) for i in range(1, 5)]
    if any(layer is None for layer in layers):
        return None
    kinds = {type(block) for layer in layers for block in layer}
    depths = [len(layer) for layer in layers]
    first = body.layer1[0]
    if len(kinds) != 1 or first.conv1.groups != 1 or first.conv2.groups != 1:
        return None
    kind = _blocks().get(kinds.pop())
    planes = first.conv1.out_channels if kind is Bottleneck else first.conv2.out_channels
    for name, (cls, fixed) in BACKBONES.items():
        if fixed.get("block") is kind and list(fixed["layers"]) == depths and planes == 64:
            return name
    return None


def _plan(body: nn.Module, attention: str, attention_kwargs, attention_stages, attention_stage_kwargs):
    """The AttentionPlan: the registered model's options on a registered depth, the caller's on top."""
    stages = DETECTION_STAGES.get(attention) if attention_stages is None else attention_stages
    backbone = _zoo_backbone(body)
    if backbone is not None:
        attention_registry.get(attention)  # an unknown name is refused as such, not as an unknown model
        config = ModelConfig(f"{attention}_{backbone}", model_args={
            "attention_kwargs": attention_kwargs or {}, "attention_stages": None if stages is None else list(stages),
            "attention_stage_kwargs": attention_stage_kwargs or {}})
        attention_kwargs, stages = config.attention_kwargs, config.attention_stages
        attention_stage_kwargs = config.attention_stage_kwargs
    return AttentionPlan.build(attention, attention_kwargs, stages, attention_stage_kwargs, STAGES), backbone


def _like(module: nn.Module, reference: nn.Module) -> nn.Module:
    """``module`` on the device and dtype of ``reference``'s weights, in its mode, frozen when all of it is."""
    weight = next(iter([*reference.parameters(), *reference.buffers()]))
    module.to(device=weight.device, dtype=weight.dtype).train(reference.training)
    if not any(p.requires_grad for p in reference.parameters()):
        module.requires_grad_(False)
    return module


def _gated(conv: nn.Conv2d, gate: nn.Module, added: list[nn.Module]) -> GatedConv2d:
    """``conv`` with ``gate`` in front of it, holding the very same weight (and bias) parameters."""
    if type(conv) is not nn.Conv2d:
        raise AttnzooError(f"cannot put a gate before a {type(conv).__name__}: it already has one, or is not a "
                           "plain convolution (add attention once).")
    # Built on the meta device: its weight is replaced by the convolution's own parameter at once.
    gated = GatedConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                        conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
                        gate=nn.Identity())
    gated.weight, gated.bias = conv.weight, conv.bias
    gated.gate = _like(gate, conv)
    added.append(gated.gate)
    return gated.train(conv.training)


def _gate_convs(module: nn.Module, factory: ModuleFactory, added: list[nn.Module]) -> None:
    """A gate before every convolution inside ``module`` (a block: its downsample's too, as attnzoo's GCT)."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Conv2d:
            setattr(module, name, _gated(child, factory(child.in_channels), added))
        else:
            _gate_convs(child, factory, added)


def _attended(block: nn.Module, where: str, attn: ModuleFactory | None, gate: ModuleFactory | None,
              added: list[nn.Module]) -> nn.Module:
    """attnzoo's block of the same kind holding ``block``'s own modules, with the attention and the gates."""
    kind = _blocks().get(type(block))
    if type(block) in _BLOCK_CHILDREN:
        raise AttnzooError(f"{where} has attention already (it is attnzoo's {type(block).__name__}): add "
                           "attention to a detector once.")
    if kind is None:
        raise AttnzooError(f"{where} is a {type(block).__name__}, not one of torchvision's ResNet blocks "
                           "(BasicBlock, Bottleneck): add_attention extends torchvision's ResNet bodies.")
    children = dict(block.named_children())
    unknown_parts = set(children) - set(_BLOCK_CHILDREN[kind])
    if unknown_parts:
        raise AttnzooError(f"{where} has modules attnzoo's {kind.__name__} would not run: "
                           f"{', '.join(sorted(unknown_parts))}.")
    # attnzoo's block runs torchvision's arithmetic plus ``attn`` before the addition. Its own parts are built
    # on the meta device and replaced at once by torchvision's modules (weights, norms and freezing kept).
    with torch.device("meta"):
        new = kind(block.conv1.in_channels, block.conv1.out_channels)
    for name in _BLOCK_CHILDREN[kind]:
        setattr(new, name, children.get(name))
    new.train(block.training)
    if gate is not None:
        if isinstance(new.downsample, nn.Sequential):  # a new container: the detector's stays as it is until the end
            new.downsample = nn.Sequential(OrderedDict(new.downsample.named_children())).train(block.training)
        _gate_convs(new, gate, added)
    if attn is not None:
        channels = new.last_bn().weight.shape[0]  # torchvision's FrozenBatchNorm2d has no num_features
        new.attn = _like(attn(channels), block)
        added.append(new.attn)
    return new


def add_attention(
    model: nn.Module,
    attention: str,
    attention_kwargs: Mapping | None = None,
    attention_stages: Iterable[int] | None = None,
    attention_stage_kwargs: Mapping | None = None,
) -> dict:
    """Insert ``attention`` into a torchvision detector's ResNet body, in place (see the module docstring).

    Args:
        model: a torchvision detector with a ResNet body (``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn``,
            ``retinanet_resnet50_fpn``, ``fcos_resnet50_fpn``, or one built on ``resnet_fpn_backbone``), its
            ``backbone``, or the body itself.
        attention: se, eca, gct, gc, cbam or gam.
        attention_kwargs: the attention's options (GC's ``ratio``: 1/16 or 1/4 in GCNet's configs).
        attention_stages: the stages (0: the stem, 1..4: layer1..layer4) that get attention; None: the papers'
            detection placement (GC in 2-4, the others in every stage).
        attention_stage_kwargs: options for single stages, ``{stage: {option: value}}``.

    Returns what was added: ``{"attention", "backbone", "stages", "modules", "parameters", "trainable_parameters"}``
    (``backbone``: the registered depth whose options were used, None for another ResNet).
    """
    _blocks()  # torchvision, or the one line naming the extra, before anything is looked at
    body = resnet_body(model)
    plan, backbone = _plan(body, attention, attention_kwargs, attention_stages, attention_stage_kwargs)
    present = [0, *(stage for stage in STAGES[1:] if hasattr(body, f"layer{stage}"))]
    absent = sorted(set(plan.stages or ()) - set(present))
    if absent:
        raise AttnzooError(f"attention stage {absent[0]} is not in this body: it has stages "
                           f"{', '.join(map(str, present))} (the layers after the last returned feature map are "
                           "dropped).")
    targets = [(f"layer{stage}.{index}", stage, block) for stage in present[1:]
               if plan.block_attention(stage) or plan.conv_gate(stage)
               for index, block in enumerate(getattr(body, f"layer{stage}"))]
    # Everything is built first (an attention's options are checked as it is built), then put in place: a refused
    # call leaves the detector as it was.
    added: list[nn.Module] = []
    stem = _gated(body.conv1, plan.conv_gate(0)(body.conv1.in_channels), added) if plan.conv_gate(0) else None
    blocks = [(where, stage, _attended(block, where, plan.block_attention(stage), plan.conv_gate(stage), added))
              for where, stage, block in targets]
    if stem is not None:
        body.conv1 = stem
    for where, stage, block in blocks:
        getattr(body, f"layer{stage}")[int(where.rpartition(".")[2])] = block
    parameters = [p for module in added for p in module.parameters()]
    return {
        "attention": attention,
        "backbone": backbone,
        "stages": sorted({0} if plan.conv_gate(0) else set()) + sorted({stage for _, stage, _ in targets}),
        "modules": len(added),
        "parameters": sum(p.numel() for p in parameters),
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
    }
