"""A Lightning checkpoint of ``attnzoo.training.module.ImageClassifier`` back into a plain attnzoo model.

The checkpoint is read with ``torch.load(weights_only=True)``. The model is rebuilt from what the training
module saved in ``checkpoint["attnzoo"]`` (written by ``ImageClassifier.on_save_checkpoint``):
``attnzoo_config`` (architecture, num_classes, model_args), ``preprocessing``, ``class_names`` and ``ema``.
The network's weights are the entries under ``model.`` (wrapper prefixes stripped), and EMA weights win when
the checkpoint has them: the module's ``AveragedModel`` copy (``ema.module.*``), or Lightning's
``WeightAveraging`` callback, which already puts the averaged weights in ``state_dict`` (the live ones move to
``current_model_state``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from attnzoo.errors import AttnzooError
from attnzoo.registry import ModelConfig
from attnzoo.weights.format import build_fitting, clean_state_dict
from attnzoo.weights.pickles import load_pickle

NET_PREFIX = "model."
EMA_PREFIX = "ema.module."  # the training module's AveragedModel copy


@dataclass
class ExportedModel:
    model: nn.Module  # with its ModelConfig (class names and preprocessing of the run) as model.config
    metrics: dict
    train_config: dict | None
    weights: str  # "ema" or "live", said in the model card
    notes: list[str] = field(default_factory=list)


def _model_config(meta: Mapping, path: Path) -> ModelConfig:
    """The model's config from the training module's metadata."""
    saved = meta.get("attnzoo_config")
    if not isinstance(saved, Mapping) or "architecture" not in saved:
        raise AttnzooError(f"{str(path)!r} does not say which attnzoo model it holds (no checkpoint['attnzoo']"
                           "['attnzoo_config']): it was not written by attnzoo's training module with a model "
                           "given by name (`attnzoo fit --model.model NAME`).")
    preprocessing = meta.get("preprocessing") if isinstance(meta.get("preprocessing"), Mapping) else None
    return ModelConfig.from_dict({**saved, "preprocessing": preprocessing or None,
                                  "label_names": meta.get("class_names") or None})


def _split_state(state: Mapping[str, torch.Tensor], path: Path, use_ema: bool = True) -> tuple[dict, str]:
    state = clean_state_dict(state)
    for prefix, weights in ((EMA_PREFIX, "ema"), (NET_PREFIX, "live")) if use_ema else ((NET_PREFIX, "live"),):
        found = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if found:
            return clean_state_dict(found), weights
    raise AttnzooError(f"{str(path)!r} has no network weights in its state_dict (no {NET_PREFIX}* entries).")


def _metrics(checkpoint: Mapping) -> dict:
    """The best monitored score that ModelCheckpoint recorded, e.g. ``{"val/acc1": 0.77}``."""
    out = {}
    for key, value in (checkpoint.get("callbacks") or {}).items():
        if isinstance(value, Mapping) and "best_model_score" in value and value.get("best_model_score") is not None:
            monitor = value.get("monitor") or str(key)
            score = value["best_model_score"]
            out[str(monitor)] = float(score.item() if isinstance(score, torch.Tensor) else score)
    for key in ("epoch", "global_step"):
        if isinstance(checkpoint.get(key), int):
            out[key] = checkpoint[key]
    return out


def model_from_lightning_checkpoint(path: str | Path, use_ema: bool | None = None) -> ExportedModel:
    """Rebuild the network of a training checkpoint.

    Args:
        use_ema: take the EMA weights; None (default) takes them when the checkpoint has them.
    """
    path = Path(path)
    checkpoint = load_pickle(path)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise AttnzooError(f"{str(path)!r} is not a Lightning checkpoint (no state_dict); for an official release "
                           "use `attnzoo convert`.")
    hparams = checkpoint.get("hyper_parameters") or {}
    meta = checkpoint.get("attnzoo") if isinstance(checkpoint.get("attnzoo"), Mapping) else {}
    config = _model_config(meta, path)
    if use_ema and not meta.get("ema") and not any(
        k.startswith(EMA_PREFIX) for k in checkpoint["state_dict"]
    ) and "current_model_state" not in checkpoint:
        raise AttnzooError(f"{str(path)!r} has no EMA weights (the run had ema_decay unset).")
    averaged_by_callback = isinstance(checkpoint.get("current_model_state"), Mapping)
    if averaged_by_callback and use_ema is False:  # the trained (not averaged) weights
        state, weights = _split_state(checkpoint["current_model_state"], path, use_ema=False)
    else:
        state, weights = _split_state(checkpoint["state_dict"], path, use_ema=use_ema is not False)
    notes = []
    if averaged_by_callback and use_ema is not False:
        weights = "ema"
        notes.append("weights: the averaged (EMA) weights saved by Lightning's WeightAveraging callback")
    elif weights == "ema":
        notes.append("weights: the EMA copy kept by the training module")
    model = build_fitting(config, state, strict=True, what=f"the weights in {str(path)!r}")
    if meta.get("ema") and weights != "ema" and use_ema is not False:
        raise AttnzooError(f"{str(path)!r} says it kept EMA weights, but its state_dict has no ema.module.* entries.")
    return ExportedModel(model.eval(), _metrics(checkpoint), _train_config(hparams), weights, notes)


def _train_config(hparams: Mapping) -> dict | None:
    """The JSON-able hyper-parameters (optimizer factories and the like are left out)."""
    out = {}
    for key, value in hparams.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out or None
