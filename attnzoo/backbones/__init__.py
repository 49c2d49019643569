"""Backbones: ResNet-18..152 and MobileNetV2, each taking any attention module through an AttentionPlan."""

from attnzoo.backbones.base import ImageClassifierNet, Stage
from attnzoo.backbones.mobilenetv2 import MobileNetV2
from attnzoo.backbones.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["ImageClassifierNet", "Stage", "ResNet", "BasicBlock", "Bottleneck", "MobileNetV2"]
