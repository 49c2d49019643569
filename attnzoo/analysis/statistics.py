"""Statistics of recorded gates over many images: what ``summary.json`` and the figures show.

:class:`TapStatistics` follows one tap of one module (say ``layer3.1.attn``'s ``channel_gate``) over every
image: mean, std, min and max are streamed exactly over all of them; percentiles come from the values of the
first ``keep_images`` images (the summary says how many). For a channel tap it also keeps, per channel, the
mean and the spread over images, which separate two questions: do channels differ from each other
(``std_over_channels``: the std over channels of each channel's mean gate), and does a channel's gate depend on
the image (``std_over_images``: the mean over channels of each channel's std over images).

:class:`ClassGateStatistics` does the same per class for channel taps (the SE paper's Fig. 6): each channel's
mean gate for each class, and how far those class means lie apart (``between_class_std``, the mean over
channels of the std over classes of the class means) against the spread inside a class
(``within_class_std``, the mean over channels of the pooled within-class std).
"""

from __future__ import annotations

import numpy as np
import torch

PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
KEEP_IMAGES = 1000


def _round(value: float, digits: int = 6) -> float:
    return float(round(float(value), digits))


class TapStatistics:
    """One tap's values over images: ``add`` a [B, C] or [B, 1, H, W] batch at a time."""

    def __init__(self, keep_images: int = KEEP_IMAGES):
        self.keep_images = keep_images
        self.count = 0  # images
        self.shape: list[int] | None = None
        self._sum = 0.0
        self._sumsq = 0.0
        self._min = float("inf")
        self._max = float("-inf")
        self._kept: list[np.ndarray] = []
        self._kept_images = 0
        self._channel_sum: torch.Tensor | None = None  # float64 [C], channel taps only
        self._channel_sumsq: torch.Tensor | None = None

    def add(self, values: torch.Tensor) -> None:
        values = values.detach().to("cpu", torch.float64)
        if self.shape is None:
            self.shape = list(values.shape[1:])
        elif list(values.shape[1:]) != self.shape:
            raise ValueError(f"tap values changed shape from {self.shape} to {list(values.shape[1:])}")
        self.count += values.shape[0]
        self._sum += float(values.sum())
        self._sumsq += float(values.square().sum())
        self._min = min(self._min, float(values.min()))
        self._max = max(self._max, float(values.max()))
        if values.dim() == 2:
            if self._channel_sum is None:
                self._channel_sum = torch.zeros(values.shape[1], dtype=torch.float64)
                self._channel_sumsq = torch.zeros(values.shape[1], dtype=torch.float64)
            self._channel_sum += values.sum(0)
            self._channel_sumsq += values.square().sum(0)
        room = self.keep_images - self._kept_images
        if room > 0:
            kept = values[:room]
            self._kept.append(kept.flatten(1).numpy().astype(np.float32))
            self._kept_images += kept.shape[0]

    @property
    def values(self) -> np.ndarray:
        """The kept values, [images, elements] (float32)."""
        return np.concatenate(self._kept) if self._kept else np.zeros((0, 0), np.float32)

    def channel_mean(self) -> torch.Tensor:
        """Mean gate of each channel over all images (channel taps)."""
        return self._channel_sum / self.count

    def channel_std(self) -> torch.Tensor:
        """Std over images of each channel's gate (channel taps)."""
        mean = self.channel_mean()
        return (self._channel_sumsq / self.count - mean.square()).clamp_min(0).sqrt()

    def summary(self) -> dict:
        n = self.count * int(np.prod(self.shape))
        mean = self._sum / n
        std = max(self._sumsq / n - mean * mean, 0.0) ** 0.5
        kept = self.values
        out = {
            "shape": self.shape,
            "images": self.count,
            "mean": _round(mean),
            "std": _round(std),
            "min": _round(self._min),
            "max": _round(self._max),
            "percentiles": {f"p{q}": _round(v) for q, v in zip(PERCENTILES, np.percentile(kept, PERCENTILES))},
        }
        if self._kept_images < self.count:
            out["percentiles_from_images"] = self._kept_images
        if self._channel_sum is not None:
            out["std_over_channels"] = _round(self.channel_mean().std(unbiased=False))
            out["std_over_images"] = _round(self.channel_std().mean())
        return out


class ClassGateStatistics:
    """Per-class sums of one channel tap: ``add(values [B, C], labels [B])``."""

    def __init__(self, num_classes: int, channels: int):
        self.counts = torch.zeros(num_classes, dtype=torch.float64)
        self.sums = torch.zeros(num_classes, channels, dtype=torch.float64)
        self.sumsq = torch.zeros(num_classes, channels, dtype=torch.float64)

    def add(self, values: torch.Tensor, labels: torch.Tensor) -> None:
        values = values.detach().to("cpu", torch.float64)
        labels = labels.to("cpu", torch.long)
        self.counts.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64))
        self.sums.index_add_(0, labels, values)
        self.sumsq.index_add_(0, labels, values.square())

    def present(self) -> torch.Tensor:
        """Indices of the classes with at least one image."""
        return torch.nonzero(self.counts > 0).flatten()

    def class_means(self) -> torch.Tensor:
        """[classes, C] mean gate of each channel for each class (NaN where a class has no image)."""
        return self.sums / self.counts[:, None]

    def summary(self) -> dict:
        present = self.present()
        means = self.class_means()[present]
        counts = self.counts[present]
        variances = (self.sumsq[present] / counts[:, None] - means.square()).clamp_min(0)
        pooled = (variances * counts[:, None]).sum(0) / counts.sum()
        between = means.std(0, unbiased=False).mean() if len(present) > 1 else torch.tensor(0.0)
        within = pooled.sqrt().mean()
        return {
            "between_class_std": _round(between),
            "within_class_std": _round(within),
            "class_specificity": _round(between / within) if within > 0 else None,
        }
