"""The ``torch.compile`` modes and arguments attnzoo uses everywhere it compiles (the trainer and the bench).

On the CPU, inductor lays out every forward graph's convolutions channels-last (its rule for oneDNN). It makes
that decision for each graph on its own, and a training step's backward graph holds ``convolution_backward``
nodes but no ``convolution`` node, so the backward graph comes out contiguous (pytorch/pytorch#189239). The
activations saved by the forward graph and the gradients computed by the backward graph then reach each
``convolution_backward`` in different layouts. ATen reorders them on every call, and a depthwise convolution's
backward runs several times slower. Measured on this project's CPU machine (batch 8, 224x224, fp32, one
thread, interleaved), a MobileNetV2 training step ran 1.35x and 1.46x faster in two runs with the layout forced
in both graphs; ResNet-50's was unchanged (1.01x and 1.00x; it has no depthwise convolution).

Forcing inductor's layout optimisation on the CPU gives the backward graph the layout the forward graph
already has; it changes nothing for inference, where the CPU rule already applies. On CUDA inductor's own
heuristic stays in charge: there it weighs the layout per convolution kind (it avoids channels-last for
grouped convolutions), and the CPU measurement says nothing about it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

import torch

# torch.compile's modes, the one list the trainer (--model.compile) and the bench (--compile) accept.
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
COMPILE_MODES: tuple[str, ...] = get_args(CompileMode)
DEFAULT_MODE = "default"


def compile_kwargs(mode: str | None, device: torch.device | str) -> dict[str, Any]:
    """Keyword arguments for ``torch.compile`` in ``mode`` (None means the default) for a model on ``device``."""
    mode = mode or DEFAULT_MODE
    if torch.device(device).type != "cpu":
        return {"mode": mode}
    # torch.compile takes either a mode or an options dict, not both: spell the mode out as its options.
    options = dict(torch._inductor.list_mode_options(mode))
    options["force_layout_optimization"] = True
    return {"options": options}
