"""``attnzoo export SOURCE --format onnx|pt2 --out FILE``: the command line over :mod:`attnzoo.export`.

``--format safetensors`` (the default) stays with :mod:`attnzoo.weights.commands`, which calls this for the
other formats.
"""

from __future__ import annotations

from attnzoo.errors import unknown
from attnzoo.export.api import DEFAULT_OPSET, FORMATS, Exported, export_onnx, export_program


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def summary(result: Exported) -> str:
    meta = result.metadata
    what = f"ONNX opset {result.opset}" if result.format == "onnx" else "a torch.export program"
    image = "uint8 images, normalisation in the graph" if meta["input"]["normalize"] == "in_graph" else \
        "normalised float32 images"
    outputs = meta["output"]
    contents = (f"{len(outputs['names'])} feature maps at strides {', '.join(str(m['reduction']) for m in outputs['maps'])}"
                if "maps" in outputs else f"{meta['num_classes']} classes")
    line = (f"wrote {meta['architecture']} ({contents}) as {what} to {result.path} "
            f"({_size(result.size_bytes)}; any batch and image size; input '{meta['input']['name']}': {image})")
    if result.checks:
        runtime = "onnxruntime" if result.format == "onnx" else "the loaded program"
        shapes = " and ".join("x".join(map(str, c["shape"])) for c in result.checks)
        line += f"; {runtime} matches PyTorch to {result.max_relative_error:.1e} (relative) on {shapes}"
    else:
        line += "; not checked (--check false)"
    return line


def export_deployable(source: str, *, out: str, format: str, opset: int | None = None,
                      fold_preprocessing: bool = False, check: bool = True, overwrite: bool = False,
                      features_only: bool = False, out_indices: list[int] | None = None) -> Exported:
    if format not in FORMATS:
        raise unknown("export format", format, FORMATS)
    features = {"features_only": features_only, "out_indices": out_indices}
    if format == "onnx":
        result = export_onnx(source, out, opset=DEFAULT_OPSET if opset is None else opset,
                             fold_preprocessing=fold_preprocessing, check=check, overwrite=overwrite, **features)
    else:
        if opset is not None:
            from attnzoo.errors import AttnzooError

            raise AttnzooError(f"--opset applies to --format onnx, not {format}.")
        result = export_program(source, out, fold_preprocessing=fold_preprocessing, check=check, overwrite=overwrite,
                                **features)
    print(summary(result))
    return result
