"""From a source to a ``torch.export`` program with dynamic batch and image size.

One capture serves both formats: ``export_program`` saves it, ``export_onnx`` hands it to
``torch.onnx.export(..., dynamo=True)``, which translates it with onnxscript's function library.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from attnzoo.errors import AttnzooError
from attnzoo.export.metadata import crop_size, model_identity

PICKLE_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".tar")
EXAMPLE_BATCH = 2  # not 1: torch.export would take a size-1 example dimension for a constant


@dataclass
class Source:
    """A model to export and what it says about itself."""
    model: nn.Module
    label: str  # recorded as the metadata's "source"
    identity: dict = field(default_factory=dict)
    metrics: dict | None = None


def load_source(source: str | Path | nn.Module) -> Source:
    """A Lightning checkpoint (``.ckpt`` and other pickles, read weights-only), anything :func:`attnzoo.load`
    accepts (a registry name, ``hf-hub:ORG/NAME[@REV]``, a weights directory or ``.safetensors`` file), or a model
    built by attnzoo."""
    if isinstance(source, nn.Module):
        identity = model_identity(source)
        return Source(source, f"{identity['architecture']} (a model in memory)", identity)
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise AttnzooError(f"an export source must be a non-empty string or a model, got {source!r}.")
    text = str(source).strip()
    path = Path(text).expanduser()
    if path.suffix in PICKLE_SUFFIXES and not path.exists():
        raise AttnzooError(f"no such file or directory: {text!r}.")
    if path.is_file() and path.suffix in PICKLE_SUFFIXES:
        from attnzoo.weights.lightning_checkpoint import model_from_lightning_checkpoint

        exported = model_from_lightning_checkpoint(path)
        return Source(exported.model, path.name, model_identity(exported.model), exported.metrics)
    from attnzoo.weights import load

    try:
        model = load(text)
    except AttnzooError as err:
        if path.exists():
            raise
        raise AttnzooError(f"{err} Export also takes a Lightning checkpoint (a .ckpt file written by `attnzoo fit`).") \
            from None
    from attnzoo.weights.api import resolve
    from attnzoo.weights.format import read_config

    resolved = resolve(text)  # what load() just read: from the cache, no second download
    # The label is the file's name, not its whole path (that would name the exporting user's directories), or
    # for a Hub source or an index name the commit the weights came from.
    label = path.name if path.exists() else resolved.label
    metrics = dict(read_config(resolved.config_path).get("metrics") or {})
    return Source(model, label, model_identity(model), metrics)


class FoldedNormalization(nn.Module):
    """``net((image / 255 - mean) / std)`` on a uint8 RGB batch: the normalisation as part of the graph.

    The normalisation of the training module (``ImageClassifier.prepare_input``) and of the metadata's
    ``(pixel / 255 - mean) / std``, so the folded graph gives the logits of the unfolded one (to float rounding).
    """

    def __init__(self, net: nn.Module, mean, std):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net((image.to(torch.float32) / 255 - self.mean) / self.std)


def deployable(source: Source, fold_preprocessing: bool) -> nn.Module:
    """The module whose forward the exported graph is: the network, behind the folded normalisation if asked."""
    if not fold_preprocessing:
        return source.model
    pre = source.identity["preprocessing"]
    return FoldedNormalization(source.model, pre["mean"], pre["std"]).train(source.model.training)


def example_input(source: Source, fold_preprocessing: bool, shape: tuple[int, ...] | None = None,
                  seed: int = 0) -> torch.Tensor:
    """A random batch of the graph's input type: ``shape``, or ``EXAMPLE_BATCH`` images at the model's input size."""
    if shape is None:
        size = crop_size(source.identity["preprocessing"])
        shape = (EXAMPLE_BATCH, 3, size, size)
    generator = torch.Generator().manual_seed(seed)
    if fold_preprocessing:
        return torch.randint(0, 256, tuple(shape), dtype=torch.uint8, generator=generator)
    return torch.randn(tuple(shape), generator=generator)


def dynamic_shapes() -> tuple[dict]:
    """Any batch size and any image height and width (each dimension its own symbol), for the one input."""
    dim = torch.export.Dim
    return ({0: dim("batch", min=1), 2: dim("height", min=1), 3: dim("width", min=1)},)


@contextlib.contextmanager
def quiet_exporter():
    """torch.onnx logs a warning per torchvision op it cannot register (torchvision is not ours to need), and
    its internals warn about deprecations of their own; a user can do nothing about either."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@contextlib.contextmanager
def _size_oblivious():
    # The setting torch.onnx.export itself captures with: a symbolic size is not assumed to differ from 1
    # because the example's does, so one graph serves 1-pixel feature maps too (e.g. 32x32 inputs to a ResNet).
    try:
        from torch.fx.experimental import _config as fx_config
    except ImportError:  # pragma: no cover - a torch without that switch captures without it
        yield
        return
    with fx_config.patch(backed_size_oblivious=True):
        yield


@contextlib.contextmanager
def evaluating(module: nn.Module):
    """``module`` in eval mode (what is exported is inference), its train/eval state put back afterwards."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@contextlib.contextmanager
def out_of_place(module: nn.Module):
    """Activations (``nn.ReLU(inplace=True)``, ``nn.ReLU6``...) computed out of place while the graph is captured.

    The same function: in inference an in-place activation only saves an allocation. But each in-place op
    reaches the ONNX exporter's decomposition pass as a functionalised copy whose shapes torch works out in
    Python references, once per symbolic op: out of place, MobileNetV2's decomposition took 4.2 s of CPU time
    instead of 10.8 s (ResNet-50: 4.9 s instead of 6.1 s). The captured graph is functional either way.
    """
    flagged = [m for m in module.modules() if isinstance(getattr(m, "inplace", None), bool) and m.inplace]
    for m in flagged:
        m.inplace = False
    try:
        yield module
    finally:
        for m in flagged:
            m.inplace = True


def capture(module: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of ``module`` in eval mode, for any batch and image size."""
    with evaluating(module), out_of_place(module), torch.no_grad(), _size_oblivious(), quiet_exporter():
        return torch.export.export(module, (example,), dynamic_shapes=dynamic_shapes(), strict=False)
