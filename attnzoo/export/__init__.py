"""Deploying a model: ONNX checked in onnxruntime, and ``torch.export`` programs, with the preprocessing attached.

    >>> import attnzoo
    >>> attnzoo.export_onnx("hf-hub:org/eca_mobilenetv2", "eca_mobilenetv2.onnx")    # checked in onnxruntime
    >>> attnzoo.export_program("runs/x/checkpoints/best.ckpt", "model.pt2")
    >>> attnzoo.export.read_metadata("eca_mobilenetv2.onnx")["preprocessing"]

A source is anything :func:`attnzoo.load` accepts, a Lightning checkpoint written by ``attnzoo fit``, or a model
built by :func:`attnzoo.create_model`. Both formats take any batch size and image size, and carry the
architecture, the preprocessing (input size, resize, crop, interpolation, mean, std) and the label names, so a
consumer needs nothing else (see docs/deploy.md). ``fold_preprocessing=True`` moves the normalisation into the
graph, which then takes uint8 RGB images.

ONNX needs the ``export`` extra (``pip install 'attnzoo[export]'``: onnx, onnxscript, onnxruntime); the
``torch.export`` program needs torch alone.
"""

from attnzoo.export.api import FORMATS, DEFAULT_OPSET, Exported, export_onnx, export_program, load_program
from attnzoo.export.metadata import read_metadata

__all__ = ["DEFAULT_OPSET", "FORMATS", "Exported", "export_onnx", "export_program", "load_program", "read_metadata"]
