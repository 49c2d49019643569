"""Rebuild a trained network from a Lightning ``.ckpt`` alone (for ``attnzoo export``, ``push`` and scripts)."""

from __future__ import annotations

import os

import torch
from torch import nn

from attnzoo.errors import AttnzooError


def read_checkpoint(path: str | os.PathLike) -> dict:
    if not os.path.isfile(path):
        raise AttnzooError(f"checkpoint {str(path)!r} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any failure means "not a checkpoint we can read safely"
        raise AttnzooError(f"{str(path)!r} is not a readable checkpoint: {type(err).__name__}: {err}") from None


def load_checkpoint_model(path: str | os.PathLike, use_ema: bool | None = None) -> nn.Module:
    """The network of an :class:`~attnzoo.training.ImageClassifier` checkpoint, in eval mode, with
    ``attnzoo_config``, ``preprocessing`` and ``class_names`` set.

    Args:
        use_ema: take the EMA weights (default: when the run kept them).
    """
    checkpoint = read_checkpoint(path)
    meta = checkpoint.get("attnzoo")
    if not meta or not meta.get("attnzoo_config"):
        raise AttnzooError(f"{str(path)!r} is not an attnzoo training checkpoint of a registry model.")
    has_ema = bool(meta.get("ema"))
    if use_ema and not has_ema:
        raise AttnzooError(f"{str(path)!r} has no EMA weights (the run had ema_decay unset).")
    prefix = "ema.module." if (has_ema if use_ema is None else use_ema) else "model."
    state = {k[len(prefix) :]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}

    from attnzoo.registry import create_model

    config = meta["attnzoo_config"]
    model = create_model(config["architecture"], num_classes=config["num_classes"], **config.get("model_args", {}))
    model.load_state_dict(state, strict=True)
    model.preprocessing = dict(meta.get("preprocessing") or model.preprocessing)
    model.class_names = list(meta.get("class_names") or [])
    return model.eval()
