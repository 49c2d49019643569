"""What the analysis needs to know about a model: its identity and its stages, read in one place.

Every read of a model's identity attributes (architecture, class names, preprocessing) goes through
:func:`model_metadata`, and every question about stages through :func:`stage_of` and :func:`stage_outputs`,
so a change of where models keep that information is a change here alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from attnzoo.backbones.base import ImageClassifierNet
from attnzoo.preprocessing import Preprocessing


@dataclass(frozen=True)
class ModelMetadata:
    architecture: str | None  # the registry name, e.g. "eca_r18"; None for a model built elsewhere
    attention: str | None
    num_classes: int | None
    class_names: list[str] | None
    preprocessing: Preprocessing


def model_metadata(model: nn.Module) -> ModelMetadata:
    from attnzoo.registry import config_of

    config = config_of(model)
    if config is None:  # a network built elsewhere: ImageNet's preprocessing, no names
        return ModelMetadata(None, None, getattr(model, "num_classes", None), None, Preprocessing())
    class_names = list(config.class_names) if config.class_names else None
    return ModelMetadata(config.architecture, config.attention, config.num_classes, class_names,
                         config.preprocessing)


def stage_of(model: nn.Module, path: str) -> int | None:
    """The backbone stage (0 = stem) that the module at ``path`` belongs to, as in ``attention_stages``; None
    outside the stages, or for a network that does not number its stages."""
    return model.stage_of(path) if isinstance(model, ImageClassifierNet) else None


def stage_outputs(model: nn.Module) -> list[tuple[int, str]]:
    """(stage, module path) of the module whose output ends each stage, shallow to deep (Grad-CAM's layers).

    A stage whose output is not one module's is left out: ResNet's stem (conv1, bn1, then a ReLU and a max-pool
    that are not among its modules)."""
    if not isinstance(model, ImageClassifierNet):
        return []
    return [(stage.index, stage.modules[-1]) for stage in model.stages() if stage.blocks or len(stage.modules) == 1]
