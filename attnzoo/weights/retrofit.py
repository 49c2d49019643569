"""Retrofit: plain ResNet/MobileNetV2 weights into an attention model.

The attention model keeps torchvision's names for every plain part, so plain weights load by name; the
attention parameters (``<block>.attn.*``, ``<conv>.gate.*``) keep their initialisation. GCT and GC with
additive fusion start as exact identities, so right after retrofitting such a model computes exactly what
the plain network computes — which is what makes "freeze the backbone, train the attention, then unfreeze"
(the GCT authors' recipe) safe.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from attnzoo.errors import AttnzooError
from attnzoo.registry import config_of
from attnzoo.weights.format import clean_state_dict, listing

log = logging.getLogger("attnzoo.weights")

ATTENTION_PARTS = ("attn", "gate")


def is_attention_key(key: str) -> bool:
    return any(part in ATTENTION_PARTS for part in key.split(".")[:-1])


def _source_state_dict(source) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(source, dict):
        return dict(source), "the given state dict"
    text = str(source)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix != ".safetensors":
        from attnzoo.weights.pickles import read_state_dict_file

        return read_state_dict_file(path), text
    if path.is_file() and not (path.parent / "config.json").is_file():
        from attnzoo.weights.format import read_weights

        return read_weights(path), text  # a bare safetensors state dict (no attnzoo config beside it)
    from attnzoo.weights.api import load_state_dict

    _, state_dict = load_state_dict(text)
    return state_dict, text


def load_backbone_weights(model: nn.Module, source) -> dict:
    """Load plain backbone weights into ``model``; attention parameters keep their initialisation.

    Args:
        model: an attnzoo model (plain or with attention).
        source: a torchvision-style state dict file (.pth, read weights-only), a .safetensors file, an attnzoo
            weights directory, ``hf-hub:ORG/NAME[@REV]``, a name from the zoo's index, or a state dict.

    The classifier is loaded only when its shape matches (a 1000-class ImageNet head into a 10-class model is
    skipped and keeps its fresh initialisation). Every other plain parameter must be in the source with the same
    shape, else an AttnzooError names the keys. Attention parameters found in the source are ignored.

    Returns a report: ``{"source", "loaded", "attention_kept", "classifier_loaded", "ignored"}``.
    """
    state_dict, label = _source_state_dict(source)
    state_dict = clean_state_dict(state_dict)
    config = config_of(model)
    name = config.architecture if config is not None else type(model).__name__
    own = model.state_dict()
    classifier = getattr(model, "classifier_name", None)
    head = {f"{classifier}.weight", f"{classifier}.bias"} if classifier else set()
    plain = {k for k in own if not is_attention_key(k)}
    missing = sorted(k for k in plain - head if k not in state_dict)
    if missing:
        raise AttnzooError(f"{label} lacks plain weights of {name}: "
                           f"{listing(missing)}. Is it a checkpoint of the same backbone?")
    mis_shaped = [f"{k} {list(state_dict[k].shape)} (model: {list(own[k].shape)})"
                  for k in sorted(plain - head) if state_dict[k].shape != own[k].shape]
    if mis_shaped:
        raise AttnzooError(f"{label} does not fit {name}: shapes differ for "
                           f"{listing(mis_shaped, 5)}.")
    ignored_attention = sorted(k for k in state_dict if is_attention_key(k))
    unexpected = sorted(k for k in state_dict if k not in own and not is_attention_key(k))
    if unexpected:
        raise AttnzooError(f"{label} has weights that {name} lacks: "
                           f"{listing(unexpected)}. Is it a checkpoint of the same backbone?")
    load = {k: state_dict[k] for k in plain - head}
    head_loaded = bool(head) and all(k in state_dict and state_dict[k].shape == own[k].shape for k in head)
    if head_loaded:
        load.update({k: state_dict[k] for k in head})
    elif head & set(state_dict):
        log.warning("backbone weights from %s: classifier %s has another shape; it keeps its fresh initialisation.",
                    label, classifier)
    model.load_state_dict(load, strict=False)
    report = {
        "source": label,
        "loaded": len(load),
        "attention_kept": len([k for k in own if is_attention_key(k)]),
        "classifier_loaded": head_loaded,
        "ignored": ignored_attention,
    }
    if ignored_attention:
        log.warning("backbone weights from %s: %d attention entries ignored (the model keeps its own init).",
                    label, len(ignored_attention))
    log.info("backbone weights from %s: %d tensors loaded, %d attention tensors keep their init.", label,
             report["loaded"], report["attention_kept"])
    return report
