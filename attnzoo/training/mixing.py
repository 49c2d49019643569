"""Mixup and CutMix on a batch, with label smoothing folded into the soft targets.

Each batch is mixed with itself in reverse order. With both alphas set, each batch is CutMix with probability
``switch_prob``, otherwise Mixup. The CutMix box is clipped at the border and the mixing weight corrected to the
area actually pasted.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from attnzoo.errors import AttnzooError


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    return F.one_hot(labels, num_classes).float() * (1 - smoothing) + off


class MixupCutmix:
    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
    ):
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise AttnzooError(f"mixup_alpha and cutmix_alpha must be >= 0, got {mixup_alpha} and {cutmix_alpha}.")
        self.num_classes = num_classes
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing

    @property
    def active(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed images, soft targets [B, num_classes])."""
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha == 0 or random.random() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        lam = random.betavariate(alpha, alpha)
        partner = images.flip(0)
        if use_cutmix:
            height, width = images.shape[-2:]
            cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
            cy, cx = random.randrange(height), random.randrange(width)
            top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
            left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
            images = images.clone()
            images[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
            lam = 1 - (bottom - top) * (right - left) / (height * width)
        else:
            images = images * lam + partner * (1 - lam)
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)
        return images, targets * lam + targets.flip(0) * (1 - lam)
