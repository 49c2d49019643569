"""Backbones: ResNet-18..152 and MobileNetV2, each taking any attention module through an AttentionPlan, and
their multi-scale features (``features_only``) with frozen BatchNorm for detection."""

from attnzoo.backbones.base import ImageClassifierNet, Stage
from attnzoo.backbones.features import FeatureInfo, FeatureNet, features_of
from attnzoo.backbones.frozen import FrozenBatchNorm2d, freeze_batch_norm
from attnzoo.backbones.mobilenetv2 import MobileNetV2
from attnzoo.backbones.resnet import BasicBlock, Bottleneck, ResNet

__all__ = ["ImageClassifierNet", "Stage", "ResNet", "BasicBlock", "Bottleneck", "MobileNetV2", "FeatureNet",
           "FeatureInfo", "features_of", "FrozenBatchNorm2d", "freeze_batch_norm"]
