"""MobileNetV2 with pluggable attention, laid out like torchvision's (features.N..., classifier.1).

Sandler, Howard, Zhu, Zhmoginov, Chen. "MobileNetV2: Inverted Residuals and Linear Bottlenecks." CVPR 2018.

Attention enters in two places only: ``features.N.attn`` at the end of each inverted-residual branch (after
the projection conv + BN, in every block, with or without a residual connection — the ECA-MobileNetV2
placement), or a gate in front of every convolution (``<conv>.gate``, GCT), the stem and the final 1x1
convolution included, never the classifier.

Stages for ``attention_stages`` (see :meth:`MobileNetV2.stage_layout`): 0 = the stem convolution (features.0),
1..7 = the seven inverted-residual groups of the paper's Table 2, 8 = the final 1x1 convolution (features.18).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from attnzoo.backbones.base import ImageClassifierNet, Stage
from attnzoo.backbones.layers import attention_or_identity, conv2d
from attnzoo.backbones.plan import AttentionPlan, ModuleFactory
from attnzoo.errors import AttnzooError

# expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
INVERTED_RESIDUAL_SETTING = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor`` without losing more than 10% (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def stage_channels(width_mult: float = 1.0) -> list[int]:
    """Output channels of the seven inverted-residual groups at a width multiplier."""
    return [make_divisible(c * width_mult) for _, c, _, _ in INVERTED_RESIDUAL_SETTING]


class ConvBNReLU6(nn.Sequential):
    """torchvision's Conv2dNormActivation with ReLU6: keys ``0`` (conv), ``1`` (BN)."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, groups=1, gate=None):
        super().__init__(
            conv2d(in_channels, out_channels, kernel_size, stride, groups=groups, gate=gate),
            nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: int,
        attn: ModuleFactory | None = None,
        gate: ModuleFactory | None = None,
    ):
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(in_channels, hidden, 1, gate=gate))
        layers += [
            ConvBNReLU6(hidden, hidden, 3, stride, groups=hidden, gate=gate),
            conv2d(hidden, out_channels, 1, gate=gate),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.attn = attention_or_identity(attn, out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.attn(self.conv(x))
        return x + out if self.use_res_connect else out


class MobileNetV2(ImageClassifierNet):
    classifier_name = "classifier.1"
    default_out_indices = (2, 3, 5, 8)  # the last stage at strides 4, 8, 16, 32

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        width_mult: float = 1.0,
        attention: str | None = None,
        attention_kwargs: Mapping | None = None,
        attention_stages: Iterable[int] | None = None,
        attention_stage_kwargs: Mapping | None = None,
    ):
        super().__init__(num_classes, in_chans, drop_rate)
        if not width_mult > 0:
            raise AttnzooError(f"width_mult must be > 0, got {width_mult!r}.")
        self.width_mult = width_mult
        self._stages = self.stage_layout(width_mult)
        plan = AttentionPlan.build(
            attention, attention_kwargs, attention_stages, attention_stage_kwargs, range(len(self._stages))
        )
        in_channels = self._stages[0].channels
        last_channels = self._stages[-1].channels
        features: list[nn.Module] = [ConvBNReLU6(in_chans, in_channels, 3, 2, gate=plan.conv_gate(0))]
        for stage, (t, _, _, s) in zip(self._stages[1:-1], INVERTED_RESIDUAL_SETTING):
            attn, gate = plan.block_attention(stage.index), plan.conv_gate(stage.index)
            for i in range(stage.blocks):
                features.append(InvertedResidual(in_channels, stage.channels, s if i == 0 else 1, t, attn, gate))
                in_channels = stage.channels
        features.append(ConvBNReLU6(in_channels, last_channels, 1, gate=plan.conv_gate(self._stages[-1].index)))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(last_channels, num_classes))
        self._init_weights()

    @classmethod
    def stage_layout(cls, width_mult: float = 1.0, **_) -> tuple[Stage, ...]:
        """0: the stem (features.0); 1..7: the inverted-residual groups of the paper's Table 2 (features.1,
        features.2-3, ...); 8: the final 1x1 convolution (features.18).

        Output strides: 2 (stages 0, 1), 4 (2), 8 (3), 16 (4, 5), 32 (6, 7, 8). ``features_only`` takes the
        last stage at each stride 4..32 by default: 2, 3, 5, 8 (features.3, .6, .13, .18), as timm does."""
        stages = [Stage(0, "features.0", make_divisible(32 * width_mult), ("features.0",), reduction=2)]
        first, reduction = 1, 2
        for stage, ((_, _, repeats, stride), channels) in enumerate(
            zip(INVERTED_RESIDUAL_SETTING, stage_channels(width_mult)), start=1
        ):
            modules = tuple(f"features.{i}" for i in range(first, first + repeats))
            name = modules[0] if repeats == 1 else f"features.{first}-{first + repeats - 1}"
            reduction *= stride
            stages.append(Stage(stage, name, channels, modules, repeats, reduction=reduction))
            first += repeats
        last = make_divisible(1280 * max(1.0, width_mult))
        stages.append(Stage(len(stages), f"features.{first}", last, (f"features.{first}",), reduction=reduction))
        return tuple(stages)

    def _init_classifier(self, linear: nn.Linear) -> None:
        nn.init.normal_(linear.weight, 0, 0.01)
        nn.init.zeros_(linear.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.features(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
