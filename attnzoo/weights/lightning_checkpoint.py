"""A Lightning checkpoint of ``attnzoo.training.module.ImageClassifier`` back into a plain attnzoo model.

The checkpoint is read with ``torch.load(weights_only=True)``. The model is rebuilt from what the training
module saved: ``checkpoint["attnzoo"]`` = {attnzoo_config, preprocessing, class_names, ema} (written by
``ImageClassifier.on_save_checkpoint``), else ``hyper_parameters`` (an ``attnzoo_config``, or the model name,
``num_classes`` and ``model_args``). The network's weights are the entries under ``model.`` (wrapper prefixes
stripped), and EMA weights win when the checkpoint has them: the module's ``AveragedModel`` copy
(``ema.module.*``), or Lightning's ``WeightAveraging`` callback, which already puts the averaged weights in
``state_dict`` (the live ones move to ``current_model_state``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from attnzoo.errors import AttnzooError
from attnzoo.weights.format import apply_state_dict, clean_state_dict
from attnzoo.weights.pickles import load_pickle

NET_PREFIXES = ("model.", "net.", "network.")
EMA_PREFIXES = ("ema.module.", "model_ema.module.", "ema_model.module.")  # AveragedModel / timm-style copies
NAME_KEYS = ("model_name", "model", "arch", "architecture", "name")
ARGS_KEYS = ("model_args", "model_kwargs", "model_overrides", "overrides")


@dataclass
class ExportedModel:
    model: nn.Module
    class_names: list[str] | None
    metrics: dict
    train_config: dict | None
    weights: str  # "ema" or "live", said in the model card
    notes: list[str] = field(default_factory=list)


def _model_config(meta: Mapping, hparams: Mapping, path: Path) -> dict:
    """(architecture, num_classes, model_args) from the training module's metadata or hyper-parameters."""
    cfg = meta.get("attnzoo_config") or hparams.get("attnzoo_config")
    if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping) and "architecture" in cfg["model"]:
        cfg = cfg["model"]
    if isinstance(cfg, Mapping) and "architecture" in cfg:
        return {"architecture": cfg["architecture"], "num_classes": cfg.get("num_classes", hparams.get("num_classes")),
                "model_args": dict(cfg.get("model_args") or {})}
    name = next((hparams[k] for k in NAME_KEYS if isinstance(hparams.get(k), str)), None)
    if name is None:
        raise AttnzooError(f"{str(path)!r}: its hyper_parameters do not name the model (looked for attnzoo_config or "
                           f"{', '.join(NAME_KEYS)}; found {', '.join(map(str, hparams)) or 'nothing'}). Was it "
                           "written by attnzoo's training module?")
    args = next((dict(hparams[k]) for k in ARGS_KEYS if isinstance(hparams.get(k), Mapping)), {})
    args.pop("backbone_weights", None)  # the weights in the checkpoint replace them
    return {"architecture": name, "num_classes": hparams.get("num_classes"), "model_args": args}


def _split_state(state: Mapping[str, torch.Tensor], use_ema: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    state = clean_state_dict(state)
    for prefix in EMA_PREFIXES if use_ema else ():
        ema = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if ema:
            return clean_state_dict(ema), "ema"
    for prefix in NET_PREFIXES:
        net = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if net:
            return clean_state_dict(net), "live"
    return dict(state), "live"


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
    from attnzoo.registry import create_model

    path = Path(path)
    checkpoint = load_pickle(path)
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise AttnzooError(f"{str(path)!r} is not a Lightning checkpoint (no state_dict); for an official release "
                           "use `attnzoo convert`.")
    hparams = checkpoint.get("hyper_parameters") or {}
    meta = checkpoint.get("attnzoo") if isinstance(checkpoint.get("attnzoo"), Mapping) else {}
    cfg = _model_config(meta, hparams, path)
    if use_ema and not meta.get("ema") and not any(
        k.startswith(p) for k in checkpoint["state_dict"] for p in EMA_PREFIXES
    ) and "current_model_state" not in checkpoint:
        raise AttnzooError(f"{str(path)!r} has no EMA weights (the run had ema_decay unset).")
    averaged_by_callback = isinstance(checkpoint.get("current_model_state"), Mapping)
    if averaged_by_callback and use_ema is False:  # the trained (not averaged) weights
        state, weights = _split_state(checkpoint["current_model_state"], use_ema=False)
    else:
        state, weights = _split_state(checkpoint["state_dict"], use_ema=use_ema is not False)
    notes = []
    if averaged_by_callback and use_ema is not False:
        weights = "ema"
        notes.append("weights: the averaged (EMA) weights saved by Lightning's WeightAveraging callback")
    elif weights == "ema":
        notes.append("weights: the EMA copy kept by the training module")
    num_classes = cfg["num_classes"]
    if num_classes is None:
        raise AttnzooError(f"{str(path)!r}: its hyper_parameters give no num_classes.")
    model = create_model(cfg["architecture"], num_classes=int(num_classes), **cfg["model_args"])
    apply_state_dict(model, state, strict=True, what=f"the weights in {str(path)!r}")
    if meta.get("ema") and weights != "ema" and use_ema is not False:
        raise AttnzooError(f"{str(path)!r} says it kept EMA weights, but its state_dict has no ema.module.* entries.")
    if isinstance(meta.get("preprocessing"), Mapping) and meta["preprocessing"]:
        model.preprocessing = {**model.preprocessing, **meta["preprocessing"]}
    class_names = meta.get("class_names") or hparams.get("class_names")
    model.class_names = list(class_names) if class_names else None
    return ExportedModel(model.eval(), list(class_names) if class_names else None, _metrics(checkpoint),
                         _train_config(hparams), weights, notes)


def _train_config(hparams: Mapping) -> dict | None:
    """The JSON-able hyper-parameters (optimizer factories and the like are left out)."""
    import json

    out = {}
    for key, value in hparams.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            continue
        out[str(key)] = value
    return out or None
