"""attnzoo's backbones in torchvision's detectors (the ``detection`` extra: ``pip install 'attnzoo[detection]'``).

    >>> from torchvision.models.detection import MaskRCNN, maskrcnn_resnet50_fpn
    >>> backbone = attnzoo.detection.fpn_backbone("gc_r50", attention_stages=[2, 3, 4])   # GCNet's c3-c5
    >>> model = MaskRCNN(backbone, num_classes=91)
    >>> coco = maskrcnn_resnet50_fpn(weights="DEFAULT")
    >>> attnzoo.detection.add_attention(coco, "gc", attention_kwargs={"ratio": 1 / 4})     # in place

This is the one part of attnzoo that imports torchvision; the rest never does (docs/detection.md). The names
below are imported when first used, so that the parts of this package that need no torchvision (the data)
import without it; without torchvision, using them is one line naming the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnzoo.detection.backbone import NORMS, FPNBackbone, fpn_backbone
    from attnzoo.detection.data import CocoDataModule, ShapesDetectionDataModule
    from attnzoo.detection.module import Detector
    from attnzoo.detection.retrofit import DETECTION_STAGES, add_attention, resnet_body

_LAZY = {
    "fpn_backbone": "attnzoo.detection.backbone",
    "FPNBackbone": "attnzoo.detection.backbone",
    "NORMS": "attnzoo.detection.backbone",
    "add_attention": "attnzoo.detection.retrofit",
    "resnet_body": "attnzoo.detection.retrofit",
    "DETECTION_STAGES": "attnzoo.detection.retrofit",
    "Detector": "attnzoo.detection.module",
    "CocoDataModule": "attnzoo.detection.data",
    "ShapesDetectionDataModule": "attnzoo.detection.data",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnzoo.detection' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
