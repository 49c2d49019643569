"""The ``--device`` of the commands that run a model outside Lightning (evaluate, explain, bench, export), read
once and checked before any work: a mistyped device ends in one line naming the accepted ones, not a torch
traceback after the model was loaded or the images listed."""

from __future__ import annotations

import torch

from attnzoo.errors import AttnzooError

ACCEPTED = "cpu, cuda, cuda:N, mps or auto"


def cuda_count() -> int:
    """How many CUDA devices this torch can use (0 without CUDA): one count, so that ``--device`` and the training
    preflight never disagree about the machine."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str | torch.device | None, option: str = "--device") -> str:
    """``device`` as torch names it; ``None`` and ``auto`` pick cuda when torch sees one, else cpu. A device this
    machine does not have (cuda without CUDA, cuda:3 on a two-GPU machine) is refused by name."""
    if device is None or str(device).strip() == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    text = str(device).strip()
    try:
        parsed = torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        raise AttnzooError(f"{option} {text!r} is not a device. Accepted: {ACCEPTED}.") from None
    if parsed.type == "cuda":
        count = cuda_count()
        if count == 0:
            raise AttnzooError(f"{option} {text!r}: this torch sees no CUDA device. Accepted here: cpu, auto.")
        if parsed.index is not None and parsed.index >= count:
            raise AttnzooError(f"{option} {text!r}: this machine has {count} CUDA device(s), cuda:0 to "
                               f"cuda:{count - 1}.")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise AttnzooError(f"{option} {text!r}: MPS is not available here. Accepted here: cpu, auto.")
    elif parsed.type != "cpu":
        raise AttnzooError(f"{option} {text!r} is not a device attnzoo runs on. Accepted: {ACCEPTED}.")
    return text
