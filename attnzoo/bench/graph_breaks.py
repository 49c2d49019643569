"""Graph breaks per model, for evaluation and for a training step, with ``torch._dynamo.explain``.

Dynamo traces the model once per mode and reports how many graphs it had to cut the forward into; zero
breaks is what ``fullgraph=True`` needs. A training step is the forward in train mode (batch statistics,
running-stat updates, dropout) with gradients enabled; its backward is derived from that one graph by
AOTAutograd, so it cannot add breaks of its own. Tracing does not depend on the image size, so a small input
is used. ``explain`` resets dynamo's caches: run it before compiling anything that is to be timed.
"""

from __future__ import annotations

import torch

from attnzoo.bench.selection import Entry
from attnzoo.bench.workload import Setting, build_model


def count(entry: Entry, num_classes: int, model_args: dict, resolution: int = 64, device: str = "cpu") -> dict:
    """``{"eval": n, "train": n, "reasons": [...]}`` for one model."""
    result: dict = {"reasons": []}
    for mode in ("eval", "train"):
        setting = Setting(device, "fp32", False, "train" if mode == "train" else "infer", 2, resolution)
        model = build_model(entry, setting, num_classes, model_args)
        x = torch.randn(2, 3, resolution, resolution, device=device)
        with torch.set_grad_enabled(mode == "train"):
            explanation = torch._dynamo.explain(model)(x)
        result[mode] = explanation.graph_break_count
        result["reasons"] += [f"{mode}: {reason.reason}" for reason in explanation.break_reasons]
    return result
