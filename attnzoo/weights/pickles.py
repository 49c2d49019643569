"""Reading local PyTorch pickles (Lightning checkpoints, official ``.pth.tar`` releases) safely.

Only ever with ``torch.load(weights_only=True)``: tensors, numbers, strings and containers come back; a pickle
that asks to build any other object is refused instead of run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from attnzoo.errors import AttnzooError

# Where training scripts put the weights inside a checkpoint dict, most specific first.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")


def load_pickle(path: str | Path) -> object:
    path = Path(path).expanduser()
    if not path.is_file():
        raise AttnzooError(f"no such file: {str(path)!r}.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure here is "this file is not a safe tensor pickle"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AttnzooError(f"cannot read {str(path)!r} as a weights-only PyTorch checkpoint ({first}). attnzoo never "
                           "unpickles arbitrary objects; re-save the file as a plain state dict "
                           "(torch.save(model.state_dict(), path)).") from None


def is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def find_state_dict(obj, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a file: the file itself, or the tensors under ``state_dict`` (or a similar key)."""
    if is_state_dict(obj):
        return dict(obj)
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if is_state_dict(obj.get(key)):
                return dict(obj[key])
    keys = ", ".join(map(str, list(obj)[:10])) if isinstance(obj, Mapping) else type(obj).__name__
    raise AttnzooError(f"{str(path)!r} holds no state dict (top-level: {keys}); expected a mapping of names to "
                       f"tensors, possibly under one of: {', '.join(STATE_DICT_KEYS)}.")


def read_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a weights-only pickle (.pth, .pth.tar, .pt, .bin, .ckpt)."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        from attnzoo.weights.format import read_weights

        return read_weights(path)
    return find_state_dict(load_pickle(path), path)
