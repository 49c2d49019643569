"""The onnxruntime contestant of ``attnzoo bench --compile '[eager, default, onnxruntime]'``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from attnzoo.extras import require
from attnzoo.export.metadata import INPUT_NAME


def onnxruntime_runner(model: nn.Module, x: torch.Tensor, threads: int | None = None) -> Callable[[], None]:
    """A callable that runs ``model`` on ``x`` in onnxruntime (CPU).

    Its first call exports the model as ``attnzoo export --format onnx`` does (dynamic batch and image size,
    opset 18) and opens the session, so the bench's compile time of the row is the export plus the session's
    own graph optimisation. onnxruntime gets as many intra-op threads as torch has (``--threads``), so the row
    compares with eager and compiled torch on the same cores.
    """
    require("export", "the onnxruntime benchmark")
    from attnzoo.export.api import onnxruntime_session, to_onnx

    threads = torch.get_num_threads() if threads is None else threads
    feed = {INPUT_NAME: x.detach().cpu().contiguous().numpy()}
    state: dict = {}

    def run() -> None:
        if "session" not in state:
            state["dir"] = tempfile.TemporaryDirectory(prefix="attnzoo-bench-onnx-")
            path = Path(state["dir"].name) / "model.onnx"
            example = torch.randn(2, *x.shape[1:])  # the graph is dynamic; the example only traces it
            to_onnx(model.eval(), example).save(str(path))
            state["session"] = onnxruntime_session(path, threads)
        state["session"].run(None, feed)

    return run
