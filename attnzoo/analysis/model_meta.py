"""What the analysis needs to know about a model: its identity and its stages, read in one place.

Every read of a model's identity attributes (architecture, class names, preprocessing) goes through
:func:`model_metadata`, and every question about stages through :func:`stage_of` and :func:`stage_outputs`,
so a change of where models keep that information is a change here alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from attnzoo.registry import IMAGENET_PREPROCESSING


@dataclass(frozen=True)
class ModelMetadata:
    architecture: str | None  # the registry name, e.g. "eca_r18"; None for a model built elsewhere
    attention: str | None
    num_classes: int | None
    class_names: list[str] | None
    preprocessing: dict


def model_metadata(model: nn.Module) -> ModelMetadata:
    config = getattr(model, "attnzoo_config", None) or {}
    architecture = config.get("architecture")
    attention = None
    if architecture is not None:
        from attnzoo.registry import get_spec

        attention = (config.get("model_args") or {}).get("attention", get_spec(architecture).attention)
    preprocessing = dict(getattr(model, "preprocessing", None) or IMAGENET_PREPROCESSING)
    class_names = getattr(model, "class_names", None)
    num_classes = config.get("num_classes", getattr(model, "num_classes", None))
    return ModelMetadata(architecture, attention, num_classes, list(class_names) if class_names else None,
                         preprocessing)


def _mobilenet_stage_starts(model: nn.Module) -> list[int]:
    """Index in ``features`` where each stage begins: 0 = stem, 1..7 = the inverted-residual groups, 8 = last."""
    from attnzoo.backbones.mobilenetv2 import INVERTED_RESIDUAL_SETTING

    starts, index = [0], 1
    for _, _, repeats, _ in INVERTED_RESIDUAL_SETTING:
        starts.append(index)
        index += repeats
    starts.append(index)
    return starts


def _is_mobilenet(model: nn.Module) -> bool:
    from attnzoo.backbones.mobilenetv2 import MobileNetV2

    return isinstance(model, MobileNetV2)


def stage_of(model: nn.Module, path: str) -> int | None:
    """The backbone stage (0 = stem) that the module at ``path`` belongs to, as in ``attention_stages``."""
    if hasattr(model, "stage_of"):
        return model.stage_of(path)
    head = path.split(".")
    if head[0] == "features" and len(head) > 1 and head[1].isdigit() and _is_mobilenet(model):
        block = int(head[1])
        return max(stage for stage, start in enumerate(_mobilenet_stage_starts(model)) if block >= start)
    if head[0] == "conv1":
        return 0
    if head[0].startswith("layer") and head[0][5:].isdigit():
        return int(head[0][5:])
    return None


def stage_outputs(model: nn.Module) -> list[tuple[int, str]]:
    """(stage, module path) of the module whose output ends each stage, shallow to deep (Grad-CAM's layers)."""
    if _is_mobilenet(model):
        starts = _mobilenet_stage_starts(model)
        ends = [start - 1 for start in starts[1:]] + [len(model.features) - 1]
        return [(stage, f"features.{end}") for stage, end in enumerate(ends)]
    names = [name for name, _ in model.named_children()]
    layers = [name for name in names if name.startswith("layer") and name[5:].isdigit()]
    return [(int(name[5:]), name) for name in layers]
