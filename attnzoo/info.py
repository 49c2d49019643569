"""``model_info``: what a model costs and where its attention sits.

FLOPs are counted with ``torch.utils.flop_counter`` on the meta device (no memory, no compute), so the
figures for every registered model take a fraction of a second. The counter counts the multiply-adds of
convolutions and matrix products as 2 FLOPs each (FLOPs = 2 × MACs) and ignores elementwise work (gates,
BN, activations); ``macs`` is given beside ``flops`` because most papers' tables are in MACs.
"""

from __future__ import annotations

import copy
import functools
from collections import Counter

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnzoo import attention as attention_registry
from attnzoo.attention import AttentionModule
from attnzoo.errors import AttnzooError
from attnzoo.preprocessing import check_image_side
from attnzoo.registry import ModelConfig, build, config_of, create_model, get_spec


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size=(3, 224, 224)) -> int:
    """FLOPs (2 × multiply-adds of conv/linear/matmul) of one forward pass on one image, on the meta device."""
    meta_model = model if _on_meta(model) else copy.deepcopy(model).to("meta")
    meta_model.eval()
    x = torch.empty(1, *input_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        meta_model(x)
    return int(counter.get_total_flops())


def _on_meta(model: nn.Module) -> bool:
    return all(p.is_meta for p in model.parameters())


def _build_on_meta(name: str, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **kwargs)


def attention_sites(model: nn.Module) -> dict[str, int]:
    """Where attention sits: the count of attention modules in each stage of the backbone that has any, in
    stage order, keyed by the stage's name (``{"layer1": 3, ...}``; see ``model.stages()``)."""
    sites: Counter[int] = Counter()
    for path, module in model.named_modules():
        if isinstance(module, AttentionModule):
            sites[model.stage_of(path)] += 1
    return {stage.name: sites[stage.index] for stage in model.stages() if sites[stage.index]}


def model_info(name_or_model: str | nn.Module, input_size=(3, 224, 224), num_classes: int = 1000, **overrides) -> dict:
    """Parameters, extra parameters over the plain backbone, FLOPs/MACs and where attention sits.

    ``name_or_model`` is a registry name (built on the meta device: instant, even for GAM-ResNet-152) or a
    model made by :func:`attnzoo.create_model`.
    """
    input_size = _checked_input_size(input_size)
    if isinstance(name_or_model, str) and not overrides:
        return copy.deepcopy(_registered_model_info(get_spec(name_or_model).name, tuple(input_size), num_classes))
    if isinstance(name_or_model, str):
        model = _build_on_meta(name_or_model, num_classes=num_classes, **overrides)
    else:
        model = name_or_model
    return _describe(model, tuple(input_size))


def _checked_input_size(input_size) -> tuple[int, int, int]:
    """[channels, height, width], each in range, before a model is traced at that size."""
    values = list(input_size) if isinstance(input_size, (list, tuple)) else [input_size]
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or values[0] < 1:
        raise AttnzooError(f"input_size must be three integers [channels, height, width], channels 1 or more, e.g. "
                           f"3 224 224; got {values!r}.")
    check_image_side(values[1], "input_size's height")
    check_image_side(values[2], "input_size's width")
    return tuple(values)


@functools.lru_cache(maxsize=None)
def _registered_model_info(name: str, input_size: tuple, num_classes: int) -> dict:
    # Tables list every model and compare each with its plain backbone: build each one once per process.
    return _describe(_build_on_meta(name, num_classes=num_classes), input_size)


@functools.lru_cache(maxsize=None)
def _plain_costs(plain: ModelConfig, input_size: tuple) -> tuple[int, int]:
    with torch.device("meta"):
        model = build(plain)
    return count_parameters(model), count_flops(model, input_size)


def _describe(model: nn.Module, input_size: tuple) -> dict:
    config = config_of(model)
    if config is None:
        raise TypeError("model_info needs a registry name or a model built by attnzoo.create_model")
    plain_params, plain_flops = _plain_costs(config.plain(), input_size)
    params, flops = count_parameters(model), count_flops(model, input_size)
    placement = None if config.attention is None else attention_registry.get(config.attention).placement
    sites = attention_sites(model)
    return {
        "name": config.architecture,
        "backbone": config.backbone,
        "attention": config.attention,
        "placement": {"residual": "end of each residual branch, before the addition",
                      "pre_conv": "before every convolution"}.get(placement),
        "attention_modules": sum(sites.values()),
        "attention_sites": sites,
        "input_size": list(input_size),
        "params": params,
        "plain_params": plain_params,
        "extra_params": params - plain_params,
        "flops": flops,
        "macs": flops // 2,
        "plain_flops": plain_flops,
        "extra_flops": flops - plain_flops,
        "flops_note": "FLOPs = 2 x multiply-adds of conv/linear/matmul; elementwise ops (gates, BN) not counted",
    }
