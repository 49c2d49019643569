"""Optional dependencies, grouped in pyproject.toml's extras, and the one message for a missing one."""

from __future__ import annotations

import importlib.util

from attnzoo.errors import AttnzooError

# extra -> the importable modules it provides (pyproject.toml's [project.optional-dependencies]).
EXTRAS = {
    "viz": ("matplotlib", "captum"),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "detection": ("torchvision", "pycocotools"),
    "stats": ("scipy",),
}


def missing(extra: str, only: tuple[str, ...] | None = None) -> list[str]:
    """The modules of ``extra`` (or those of them in ``only``) that cannot be imported here."""
    return [name for name in EXTRAS[extra] if (only is None or name in only) and importlib.util.find_spec(name) is None]


def require(extra: str, what: str, only: tuple[str, ...] | None = None) -> None:
    """Raise one line naming the extra when any of its modules (or of those in ``only``) is missing; ``what``
    says what needed it."""
    absent = missing(extra, only)
    if absent:
        raise AttnzooError(f"{what} needs {' and '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} not "
                           f"installed: pip install 'attnzoo[{extra}]'")
