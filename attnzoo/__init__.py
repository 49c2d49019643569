"""attnzoo: paper-exact attention modules on ResNet and MobileNetV2.

    >>> import attnzoo
    >>> model = attnzoo.create_model("gct_r50", num_classes=10)
    >>> attnzoo.list_models("eca_*")
    >>> attnzoo.model_info("se_r50")

Imports are lazy so that `import attnzoo` stays cheap (the command line starts fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what the lazy names below are, for type checkers and the API reference (docs/reference/)
    from attnzoo.errors import AttnzooError
    from attnzoo.info import model_info
    from attnzoo.registry import create_model, list_models
    from attnzoo.weights import load, save_pretrained

__version__ = "0.1.0"

_LAZY = {
    "create_model": "attnzoo.registry",
    "list_models": "attnzoo.registry",
    "model_info": "attnzoo.info",
    "AttnzooError": "attnzoo.errors",
    "load": "attnzoo.weights",
    "save_pretrained": "attnzoo.weights",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnzoo' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
