"""Training: the LightningModule, parameter groups, schedules, mixing, and the LightningCLI entry point."""

from attnzoo.training.checkpoint import load_checkpoint_model
from attnzoo.training.module import ImageClassifier
from attnzoo.training.param_groups import parameter_groups
from attnzoo.training.schedules import EpochSchedule, WarmupCosineLR, WarmupStepLR

__all__ = ["ImageClassifier", "EpochSchedule", "WarmupCosineLR", "WarmupStepLR", "load_checkpoint_model", "parameter_groups"]
