"""Training: the LightningModule, parameter groups, schedules, mixing, callbacks (EMA, freezing, trusted
checkpoints), and the LightningCLI entry point."""

from attnzoo.training.checkpoint import load_checkpoint_model
from attnzoo.training.checkpointing import AtomicCheckpointIO, LastCheckpoint, RandomState
from attnzoo.training.ema import EMA
from attnzoo.training.freezing import BackboneFreeze
from attnzoo.training.module import ImageClassifier
from attnzoo.training.param_groups import parameter_groups
from attnzoo.training.schedules import EpochSchedule, WarmupCosineLR, WarmupMultiStepLR, WarmupStepLR

__all__ = [
    "AtomicCheckpointIO",
    "BackboneFreeze",
    "EMA",
    "EpochSchedule",
    "ImageClassifier",
    "LastCheckpoint",
    "RandomState",
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupStepLR",
    "load_checkpoint_model",
    "parameter_groups",
]
