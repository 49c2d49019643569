"""The optional ``export`` extra: one clear line when a package of it is missing."""

from __future__ import annotations

import importlib

from attnzoo.errors import AttnzooError

EXPORT_EXTRA = ("onnx", "onnxscript", "onnxruntime")


def require(*modules: str, what: str = "ONNX export") -> None:
    """Refuse early, naming the extra, when one of ``modules`` cannot be imported."""
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise AttnzooError(f"{what} needs the 'export' extra, which is not installed (missing: {', '.join(missing)}): "
                           "pip install 'attnzoo[export]'.")
