"""ResNet-18/34/50/101/152 with pluggable attention, laid out like torchvision's (stride in the 3x3 conv).

Every plain part keeps torchvision's module names (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, fc),
so the plain networks' state dicts have exactly torchvision's keys and shapes and ImageNet weights load.
Attention enters in two places only: ``block.attn`` at the end of the residual branch (after the last BN,
before the addition; an ``nn.Identity`` when there is none) and a gate in front of each convolution
(``<conv>.gate``) when the attention's placement is "pre_conv" (GCT). Never on the shortcut path's output.

Stages for ``attention_stages``: 0 = the stem convolution, 1..4 = layer1..layer4.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from attnzoo.backbones.base import ImageClassifierNet, Stage
from attnzoo.backbones.layers import attention_or_identity, conv2d
from attnzoo.backbones.plan import AttentionPlan, ModuleFactory
from attnzoo.errors import AttnzooError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        attn: ModuleFactory | None = None,
        gate: ModuleFactory | None = None,
    ):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = conv2d(in_channels, planes, 3, stride, gate=gate)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv2d(planes, out_channels, 3, gate=gate)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.attn = attention_or_identity(attn, out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride, gate)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.attn(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's bottleneck: the stride sits in the 3x3 conv, or in the first 1x1 with ``stride_in_1x1``
    (the original MSRA layout, used by the official GCT-ResNet) — same shapes, different function."""

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        planes: int,
        stride: int = 1,
        attn: ModuleFactory | None = None,
        gate: ModuleFactory | None = None,
        stride_in_1x1: bool = False,
    ):
        super().__init__()
        out_channels = planes * self.expansion
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv2d(in_channels, planes, 1, stride_1x1, gate=gate)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2d(planes, planes, 3, stride_3x3, gate=gate)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv2d(planes, out_channels, 1, gate=gate)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.attn = attention_or_identity(attn, out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride, gate)

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attn(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


def _downsample(in_channels: int, out_channels: int, stride: int, gate: ModuleFactory | None) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(conv2d(in_channels, out_channels, 1, stride, gate=gate), nn.BatchNorm2d(out_channels))


class ResNet(ImageClassifierNet):
    classifier_name = "fc"
    default_out_indices = (1, 2, 3, 4)  # layer1..layer4, strides 4, 8, 16, 32

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Iterable[int],
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        zero_init_residual: bool = False,
        attention: str | None = None,
        attention_kwargs: Mapping | None = None,
        attention_stages: Iterable[int] | None = None,
        attention_stage_kwargs: Mapping | None = None,
        stride_in_1x1: bool = False,
    ):
        super().__init__(num_classes, in_chans, drop_rate)
        layers = list(layers)
        if stride_in_1x1 and block is not Bottleneck:
            raise AttnzooError("stride_in_1x1 applies to bottleneck ResNets (50/101/152) only.")
        block_kwargs = {"stride_in_1x1": True} if stride_in_1x1 else {}
        if len(layers) != 4:
            raise AttnzooError(f"ResNet takes 4 stage depths (layer1..layer4), got {layers!r}.")
        self._stages = self.stage_layout(block, layers)
        plan = AttentionPlan.build(
            attention, attention_kwargs, attention_stages, attention_stage_kwargs, range(len(self._stages))
        )
        self.conv1 = conv2d(in_chans, 64, 7, 2, gate=plan.conv_gate(0))
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for index, num_blocks in enumerate(layers, start=1):
            planes = 64 * 2 ** (index - 1)
            stage = self._make_layer(block, in_channels, planes, num_blocks, 1 if index == 1 else 2, plan, index, **block_kwargs)
            self.add_module(f"layer{index}", stage)
            in_channels = planes * block.expansion
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(module.last_bn().weight)

    @classmethod
    def stage_layout(cls, block: type[BasicBlock] | type[Bottleneck], layers: Iterable[int], **_) -> tuple[Stage, ...]:
        """0: the stem (conv1, bn1, relu; stride 2); 1..4: layer1..layer4 (strides 4, 8, 16, 32; the maxpool
        opens stage 1)."""
        stem = Stage(0, "conv1", 64, ("conv1", "bn1"), reduction=2, sequence=("conv1", "bn1", "relu"))
        return (stem, *(Stage(i, f"layer{i}", 64 * 2 ** (i - 1) * block.expansion, (f"layer{i}",), blocks,
                              reduction=2 ** (i + 1), sequence=("maxpool", "layer1") if i == 1 else ())
                        for i, blocks in enumerate(layers, start=1)))

    @staticmethod
    def _make_layer(
        block, in_channels, planes, num_blocks, stride, plan: AttentionPlan, stage: int, **block_kwargs
    ) -> nn.Sequential:
        attn, gate = plan.block_attention(stage), plan.conv_gate(stage)
        blocks = [block(in_channels, planes, stride, attn, gate, **block_kwargs)]
        blocks += [block(planes * block.expansion, planes, 1, attn, gate, **block_kwargs) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(torch.flatten(self.avgpool(x), 1)))

