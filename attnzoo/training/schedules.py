"""Learning-rate schedules of the papers, counted in epochs.

- Step decay (SE, ECA, CBAM on ResNets: lr / 10 every 30 epochs): :class:`WarmupStepLR` with ``step_size: 30``
  (or ``torch.optim.lr_scheduler.StepLR``).
- GCT's official run: the same step decay after one epoch at 0.1 x lr (``warmup_epochs: 1``,
  ``warmup: constant``) — :class:`WarmupStepLR`.
- Exponential per-epoch decay (ECA-MobileNetV2: lr x 0.98 per epoch): ``torch.optim.lr_scheduler.ExponentialLR``
  with ``gamma: 0.98``.
- Linear warm-up then cosine decay: :class:`WarmupCosineLR`.
- Detection's "1x" (Mask R-CNN, mmdetection / Detectron): linear warm-up over 500 iterations from 1/3, lr / 10
  at epochs 8 and 11 of 12: :class:`WarmupMultiStepLR`.

The classes here are :class:`EpochSchedule` s: :class:`attnzoo.training.ImageClassifier` calls
:meth:`EpochSchedule.bind` with the optimizer steps per epoch and steps them every optimizer step, so warm-ups
are smooth and epoch boundaries exact. Used on their own without ``bind``, one ``step()`` is one epoch.
"""

from __future__ import annotations

import math
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from attnzoo.errors import AttnzooError


class EpochSchedule(LRScheduler):
    """A schedule given as ``factor(epoch)`` (epochs may be fractional) times the base learning rate."""

    def __init__(self, optimizer: Optimizer, warmup_epochs: float, warmup_start_factor: float, last_epoch: int = -1):
        if warmup_epochs < 0 or not 0 <= warmup_start_factor <= 1:
            raise AttnzooError(
                f"{type(self).__name__} needs warmup_epochs >= 0 and warmup_start_factor in [0, 1], got "
                f"{warmup_epochs} and {warmup_start_factor}."
            )
        self.warmup_epochs = warmup_epochs
        self.warmup_start_factor = warmup_start_factor
        self.steps_per_epoch = 1
        super().__init__(optimizer, last_epoch)

    def bind(self, steps_per_epoch: int, max_epochs: int | None) -> None:
        """Count ``steps_per_epoch`` calls to ``step()`` as one epoch."""
        self.steps_per_epoch = max(1, int(steps_per_epoch))

    def warmup_factor(self, epoch: float) -> float:
        raise NotImplementedError

    def decay_factor(self, epoch: float) -> float:
        raise NotImplementedError

    def factor(self, step: int) -> float:
        epoch = step / self.steps_per_epoch
        if epoch < self.warmup_epochs:
            return self.warmup_factor(epoch)
        return self.decay_factor(epoch)

    def get_lr(self) -> list[float]:
        factor = self.factor(self.last_epoch)
        return [base_lr * factor for base_lr in self.base_lrs]


def scheduler_config(scheduler: LRScheduler, trainer) -> dict:
    """Lightning's ``lr_scheduler`` entry for ``scheduler``: an :class:`EpochSchedule` bound to the trainer's steps
    per epoch and stepped every optimizer step; any other schedule stepped every epoch."""
    if not isinstance(scheduler, EpochSchedule):
        return {"scheduler": scheduler, "interval": "epoch"}
    max_epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    steps = trainer.estimated_stepping_batches
    steps_per_epoch = steps // max_epochs if max_epochs and steps != float("inf") else 1
    scheduler.bind(steps_per_epoch, max_epochs)
    return {"scheduler": scheduler, "interval": "step"}


class WarmupCosineLR(EpochSchedule):
    """Linear warm-up from ``warmup_start_factor x lr`` to ``lr`` over ``warmup_epochs``, then a half cosine
    down to ``min_lr_factor x lr`` at ``max_epochs`` (default: the Trainer's ``max_epochs``)."""

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_epochs: float = 5.0,
        max_epochs: int | None = None,
        warmup_start_factor: float = 0.01,
        min_lr_factor: float = 0.0,
        last_epoch: int = -1,
    ):
        if not 0 <= min_lr_factor <= 1:
            raise AttnzooError(f"WarmupCosineLR needs min_lr_factor in [0, 1], got {min_lr_factor}.")
        self.max_epochs = max_epochs
        self.min_lr_factor = min_lr_factor
        super().__init__(optimizer, warmup_epochs, warmup_start_factor, last_epoch)

    def bind(self, steps_per_epoch: int, max_epochs: int | None) -> None:
        super().bind(steps_per_epoch, max_epochs)
        if self.max_epochs is None:
            self.max_epochs = max_epochs
        if self.max_epochs is None or self.max_epochs <= self.warmup_epochs:
            raise AttnzooError(
                f"WarmupCosineLR needs max_epochs greater than warmup_epochs ({self.warmup_epochs}); got "
                f"{self.max_epochs}. Set the schedule's max_epochs or trainer.max_epochs."
            )

    def warmup_factor(self, epoch: float) -> float:
        return self.warmup_start_factor + (1 - self.warmup_start_factor) * epoch / self.warmup_epochs

    def decay_factor(self, epoch: float) -> float:
        if self.max_epochs is None:  # not bound yet
            return 1.0
        progress = min(1.0, (epoch - self.warmup_epochs) / (self.max_epochs - self.warmup_epochs))
        return self.min_lr_factor + (1 - self.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupStepLR(EpochSchedule):
    """``lr x gamma ** (epoch // step_size)``, after an optional warm-up of ``warmup_epochs``: ``linear`` from
    ``warmup_start_factor x lr`` up to ``lr``, or ``constant`` at ``warmup_start_factor x lr`` (GCT's official
    run: one epoch at 0.1 x lr)."""

    def __init__(
        self,
        optimizer: Optimizer,
        step_size: int = 30,
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        warmup: Literal["linear", "constant"] = "linear",
        warmup_start_factor: float = 0.1,
        last_epoch: int = -1,
    ):
        if step_size < 1 or not 0 < gamma <= 1 or warmup not in ("linear", "constant"):
            raise AttnzooError(
                f"WarmupStepLR needs step_size >= 1, gamma in (0, 1] and warmup linear or constant; got "
                f"{step_size}, {gamma}, {warmup!r}."
            )
        self.step_size, self.gamma, self.warmup = step_size, gamma, warmup
        super().__init__(optimizer, warmup_epochs, warmup_start_factor, last_epoch)

    def warmup_factor(self, epoch: float) -> float:
        if self.warmup == "constant":
            return self.warmup_start_factor
        return self.warmup_start_factor + (1 - self.warmup_start_factor) * epoch / self.warmup_epochs

    def decay_factor(self, epoch: float) -> float:
        return self.gamma ** (int(epoch + 1e-9) // self.step_size)


class WarmupMultiStepLR(EpochSchedule):
    """``lr x gamma ** (number of milestones passed)``, after a linear warm-up from ``warmup_start_factor x lr``
    over ``warmup_epochs``, or over ``warmup_iters`` optimizer steps (the detection papers' unit: 1x warms up
    over 500 iterations from 1/3, then divides by 10 at epochs 8 and 11 of 12)."""

    def __init__(
        self,
        optimizer: Optimizer,
        milestones: list[int] = (8, 11),
        gamma: float = 0.1,
        warmup_epochs: float = 0.0,
        warmup_iters: int | None = None,
        warmup_start_factor: float = 1 / 3,
        last_epoch: int = -1,
    ):
        milestones = sorted(milestones)
        if warmup_iters is not None and (warmup_iters < 1 or warmup_epochs):
            raise AttnzooError(f"WarmupMultiStepLR takes warmup_iters >= 1 or warmup_epochs, not both; got "
                               f"{warmup_iters} and {warmup_epochs}.")
        self.warmup_iters = warmup_iters
        if not milestones or milestones[0] < 1 or not 0 < gamma <= 1:
            raise AttnzooError(f"WarmupMultiStepLR needs milestones >= 1 and gamma in (0, 1]; got {list(milestones)} "
                               f"and {gamma}.")
        self.milestones, self.gamma = milestones, gamma
        # Unbound, one step is one epoch, so warmup_iters epochs are warmup_iters steps until bind() says more.
        super().__init__(optimizer, warmup_iters or warmup_epochs, warmup_start_factor, last_epoch)

    def bind(self, steps_per_epoch: int, max_epochs: int | None) -> None:
        super().bind(steps_per_epoch, max_epochs)
        if self.warmup_iters is not None:
            self.warmup_epochs = self.warmup_iters / self.steps_per_epoch

    def warmup_factor(self, epoch: float) -> float:
        return self.warmup_start_factor + (1 - self.warmup_start_factor) * epoch / self.warmup_epochs

    def decay_factor(self, epoch: float) -> float:
        return self.gamma ** sum(epoch + 1e-9 >= m for m in self.milestones)
