"""Rebuild a trained network from a Lightning ``.ckpt`` alone (for scripts, predict and export)."""

from __future__ import annotations

import os

from torch import nn


def load_checkpoint_model(path: str | os.PathLike, use_ema: bool | None = None) -> nn.Module:
    """The network of an :class:`~attnzoo.training.ImageClassifier` checkpoint, in eval mode, with the run's
    class names and preprocessing in its ``model.config``. Read with ``torch.load(weights_only=True)``.

    Args:
        use_ema: take the EMA weights (default: when the run kept them).
    """
    from attnzoo.weights.lightning_checkpoint import model_from_lightning_checkpoint

    return model_from_lightning_checkpoint(path, use_ema=use_ema).model
