"""``attnzoo.export_onnx`` and ``attnzoo.export_program``: a model as a file another runtime can run.

Every export is checked before it is put in place: the saved file is run (onnxruntime, or the loaded
``torch.export`` program) on two random batches of different shapes, and its outputs must equal eager
PyTorch's within ``TOLERANCE``, relative to the largest logit. The file is written beside its destination and
moved there only then, so a failed or interrupted export leaves nothing half-written, and an existing file is
replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from attnzoo.errors import AttnzooError
from attnzoo.export.capture import (Source, capture, deployable, evaluating, example_input, load_source,
                                   quiet_exporter)
from attnzoo.export.metadata import model_identity
from attnzoo.extras import require
from attnzoo.files import cannot_write, check_writable, move_into, reporting_write_errors, staging_folder
from attnzoo.export.metadata import INPUT_NAME, PROGRAM_METADATA_FILE, crop_size, describe, encode, output_names

FORMATS = ("safetensors", "onnx", "pt2")
# The opset of torch.onnx's function library (onnxscript's torchlib): no version conversion is involved.
DEFAULT_OPSET = 18
TOLERANCE = 1e-4


class ExportCheckError(AttnzooError):
    """The exported file does not compute what the PyTorch model computes (a bug to report, not a user error)."""


@dataclass
class Exported:
    """What an export wrote and how it was checked."""
    path: Path
    format: str
    metadata: dict
    files: list[Path] = field(default_factory=list)  # the .onnx and, over 1.5 GB of weights, its external data
    opset: int | None = None
    checks: list[dict] = field(default_factory=list)  # per checked shape: shape, relative_error
    seconds: float = 0.0

    @property
    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.files)

    @property
    def max_relative_error(self) -> float | None:
        return max((c["relative_error"] for c in self.checks), default=None)


def relative_error(got, want) -> float:
    """max |got - want| over max |want|: the error relative to the scale of the logits (for several outputs,
    feature maps, the largest over them, each relative to its own scale)."""
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return float("inf")
        return max(relative_error(g, w) for g, w in zip(got, want))
    got, want = torch.as_tensor(got, dtype=torch.float64), torch.as_tensor(want, dtype=torch.float64)
    if got.shape != want.shape:
        return float("inf")
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def check_shapes(size: int) -> list[tuple[int, int, int, int]]:
    """Two batches unlike each other and unlike the capture's example: batch 2 square, batch 1 non-square."""
    return [(2, 3, size, size), (1, 3, max(8, round(size * 5 / 7)), size)]


def _destination(path: str | Path, overwrite: bool, suffix: str) -> Path:
    path = Path(path).expanduser()
    if not str(path).strip() or path.name in ("", ".", ".."):
        raise AttnzooError(f"--out must name a file, e.g. model{suffix}; got {str(path)!r}.")
    if path.is_dir():
        raise AttnzooError(f"{str(path)!r} is a directory; --out names the file to write, e.g. {path / ('model' + suffix)}.")
    if path.exists() and not overwrite:
        raise AttnzooError(f"{str(path)!r} already exists; choose another path or pass overwrite=True (--overwrite) "
                           "to replace it.")
    return check_writable(path, "--out")


@contextlib.contextmanager
def _parent_folders(destination: Path):
    """Make the destination's missing folders for the write, and remove those it made if the export fails:
    a bad source or a failed check leaves nothing behind."""
    made, folder = [], destination.parent
    while not folder.exists():
        made.append(folder)
        folder = folder.parent
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_write(destination, err) from None
    try:
        yield
    except BaseException:
        for folder in made:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _compare(run, module: nn.Module, source: Source, fold_preprocessing: bool, tolerance: float, what: str,
             shapes=None) -> list[dict]:
    """Run ``run(x)`` and the eager module on the check batches; refuse a difference above ``tolerance``."""
    checks = []
    for i, shape in enumerate(shapes or check_shapes(crop_size(source.identity["preprocessing"]))):
        x = example_input(source, fold_preprocessing, shape, seed=i + 1)
        with torch.no_grad():
            want = module(x)
        got = run(x)
        error = relative_error(got, want)
        checks.append({"shape": list(shape), "relative_error": error})
        if not error <= tolerance:
            raise ExportCheckError(
                f"{what} differs from PyTorch by {error:.3g} (relative to the largest logit; tolerance {tolerance:g}) "
                f"on a batch of shape {list(shape)}; nothing was written. Please report it with the model "
                f"({source.identity['architecture']}) and the torch ({torch.__version__}) version; check=False "
                "(--check false) writes the file unchecked.")
    return checks


def onnxruntime_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session for ``path`` (``threads``: intra-op threads; default onnxruntime's choice)."""
    require("export", "running ONNX models", only=("onnxruntime",))
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def to_onnx(module: nn.Module, example: torch.Tensor, opset: int = DEFAULT_OPSET, outputs: list[str] | None = None):
    """``torch.onnx.export(..., dynamo=True)`` of the captured ``module``: an ``ONNXProgram`` with dynamic
    batch, height and width, input ``image`` and outputs ``outputs`` (default ``logits``)."""
    program = capture(module, example)
    with quiet_exporter():
        onnx_program = torch.onnx.export(program, (example,), dynamo=True, opset_version=opset,
                                         input_names=[INPUT_NAME], output_names=outputs or output_names({}),
                                         optimize=True, verbose=False)
    name_dynamic_dims(onnx_program.model.graph)
    return onnx_program


def name_dynamic_dims(graph) -> None:
    """torch.export numbers the input's symbols (``s77``, ``s53``): a consumer reads ``batch``, ``height`` and
    ``width`` instead, in the input, the output and every intermediate shape derived from them."""
    import re

    import onnx_ir

    axes = {0: "batch", 2: "height", 3: "width"}
    image = graph.inputs[0]
    renames = {str(dim.value): axes[axis] for axis, dim in enumerate(image.shape)
               if axis in axes and isinstance(dim, onnx_ir.SymbolicDim) and dim.value}
    if not renames:
        return
    symbol = re.compile(r"\b(" + "|".join(map(re.escape, renames)) + r")\b")
    values = [*graph.inputs, *graph.outputs, *(value for node in graph.all_nodes() for value in node.outputs)]
    for value in values:
        if value.shape is None or not any(isinstance(d, onnx_ir.SymbolicDim) and d.value for d in value.shape):
            continue
        value.shape = onnx_ir.Shape([onnx_ir.SymbolicDim(symbol.sub(lambda m: renames[m[1]], d.value))
                                     if isinstance(d, onnx_ir.SymbolicDim) and d.value else d
                                     for d in value.shape])


def _as_features(source: Source, features_only: bool, out_indices) -> Source:
    """The source's features network when asked (its head dropped, logged), with the identity that says so."""
    if not features_only:
        if out_indices is not None:
            raise AttnzooError("out_indices applies with features_only=True (--features_only true).")
        return source
    from attnzoo.backbones.features import FeatureNet, features_of

    model = source.model
    if isinstance(model, FeatureNet):
        if out_indices is not None and tuple(out_indices) != model.out_indices:
            raise AttnzooError(f"the source is a features network with out_indices={list(model.out_indices)}; "
                               f"out_indices={list(out_indices)!r} cannot change it (build it with those).")
        return source
    features = features_of(model, out_indices)
    return Source(features, source.label, model_identity(features), source.metrics)


def export_onnx(source: str | Path | nn.Module, path: str | Path, *, opset: int = DEFAULT_OPSET,
                fold_preprocessing: bool = False, check: bool = True, overwrite: bool = False,
                tolerance: float = TOLERANCE, features_only: bool = False, out_indices=None) -> Exported:
    """Export a model to ONNX with dynamic batch and image size, the preprocessing and labels in its metadata.

    Args:
        source: a Lightning checkpoint, anything :func:`attnzoo.load` accepts, or a model from
            :func:`attnzoo.create_model`.
        path: the ``.onnx`` file to write (over 1.5 GB of weights go to ``<path>.data`` beside it).
        opset: the ONNX opset (default 18, that of torch's ONNX function library).
        fold_preprocessing: put ``(image / 255 - mean) / std`` inside the graph, which then takes uint8 RGB
            NCHW images (0-255) instead of normalised float32 ones.
        check: run the file in onnxruntime (CPU) on two batches and refuse it unless it matches eager PyTorch
            within ``tolerance`` (relative to the largest logit).
        overwrite: replace an existing file.
        features_only: export the multi-scale features of the model (its head dropped): one output per
            feature map, ``stage<i>`` by stage index; ``out_indices`` picks the stages (default strides 4..32).
            A features network (``create_model(..., features_only=True)``) is exported so without it.
    """
    require("export", "ONNX export", only=("onnx", "onnxscript", *(("onnxruntime",) if check else ())))
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < DEFAULT_OPSET:
        raise AttnzooError(f"opset must be an integer >= {DEFAULT_OPSET} (torch's exporter writes opset 18 and later), "
                           f"got {opset!r}.")
    destination = _destination(path, overwrite, ".onnx")
    start = time.perf_counter()
    with _parent_folders(destination):
        source = _as_features(load_source(source), features_only, out_indices)
        with evaluating(source.model):
            return _export_onnx(source, destination, opset, fold_preprocessing, check, tolerance, start)


def _export_onnx(source: Source, destination: Path, opset: int, fold_preprocessing: bool, check: bool,
                 tolerance: float, start: float) -> Exported:
    module = deployable(source, fold_preprocessing)
    metadata = describe(source.identity, fold_preprocessing, source.label, source.metrics)
    outputs = output_names(source.identity)
    onnx_program = to_onnx(module, example_input(source, fold_preprocessing), opset, outputs)
    onnx_program.model.metadata_props.update(encode(metadata))
    onnx_program.model.doc_string = (f"attnzoo {metadata['architecture']}: {INPUT_NAME} -> {', '.join(outputs)}; "
                                     "metadata_props hold the preprocessing and label names (JSON values)")
    checks = []
    with staging_folder(destination.parent) as tmp:
        tmp_file = tmp / destination.name
        with quiet_exporter(), reporting_write_errors(destination):
            onnx_program.save(str(tmp_file))
        del onnx_program
        if check:
            session = onnxruntime_session(tmp_file)
            run = session.run if len(outputs) > 1 else lambda *args: session.run(*args)[0]
            checks = _compare(lambda x: run(None, {INPUT_NAME: x.numpy()}), module, source,
                              fold_preprocessing, tolerance, "the ONNX model run in onnxruntime")
            del session
        files = move_into(tmp, destination.parent)
    return Exported(destination, "onnx", metadata, files, opset, checks, time.perf_counter() - start)


def export_program(source: str | Path | nn.Module, path: str | Path, *, fold_preprocessing: bool = False,
                   check: bool = True, overwrite: bool = False, tolerance: float = TOLERANCE,
                   features_only: bool = False, out_indices=None) -> Exported:
    """Save a ``torch.export`` program (``.pt2``) with dynamic batch and image size; the metadata rides along
    as the archive's ``attnzoo.json``. Load it with :func:`load_program` (or ``torch.export.load``).

    Arguments as for :func:`export_onnx`; the check runs the saved program after loading it back.
    """
    destination = _destination(path, overwrite, ".pt2")
    start = time.perf_counter()
    with _parent_folders(destination):
        source = _as_features(load_source(source), features_only, out_indices)
        with evaluating(source.model):
            return _export_program(source, destination, fold_preprocessing, check, tolerance, start)


def _export_program(source: Source, destination: Path, fold_preprocessing: bool, check: bool, tolerance: float,
                    start: float) -> Exported:
    module = deployable(source, fold_preprocessing)
    metadata = describe(source.identity, fold_preprocessing, source.label, source.metrics)
    program = capture(module, example_input(source, fold_preprocessing))
    checks = []
    with staging_folder(destination.parent) as tmp:
        tmp_file = tmp / destination.name
        # Through a Python file: a full disk is then an OSError naming the file, not a RuntimeError of torch's writer.
        with reporting_write_errors(destination), open(tmp_file, "wb") as handle:
            torch.export.save(program, handle, extra_files={PROGRAM_METADATA_FILE: json.dumps(metadata)})
        if check:
            loaded, _ = load_program(tmp_file)
            runnable = loaded.module()
            with torch.no_grad():
                checks = _compare(runnable, module, source, fold_preprocessing, tolerance,
                                  "the torch.export program, loaded back,")
        files = move_into(tmp, destination.parent)
    return Exported(destination, "pt2", metadata, files, None, checks, time.perf_counter() - start)


def load_program(path: str | Path) -> tuple[torch.export.ExportedProgram, dict]:
    """A program written by :func:`export_program` and its metadata. ``torch.export.load`` unpickles parts of
    the archive: load only files you trust, as with any PyTorch pickle."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AttnzooError(f"no such file: {str(path)!r}.")
    extra = {PROGRAM_METADATA_FILE: ""}
    with quiet_exporter():
        program = torch.export.load(str(path), extra_files=extra)
    return program, json.loads(extra[PROGRAM_METADATA_FILE]) if extra[PROGRAM_METADATA_FILE] else {}
