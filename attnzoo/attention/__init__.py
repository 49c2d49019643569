"""The six attention modules and their registry.

    >>> from attnzoo import attention
    >>> attention.list_attention()
    ['cbam', 'eca', 'gam', 'gc', 'gct', 'se']
    >>> attention.create("eca", 256, kernel_size=5)

Each module is ``Module(channels, **options)`` and maps [B, C, H, W] to the same shape; see each file's
docstring for its formula, paper, defaults and deviations.
"""

from __future__ import annotations

import inspect

from attnzoo.attention.base import AttentionModule, GateTap
from attnzoo.attention.cbam import CBAM
from attnzoo.attention.eca import ECA
from attnzoo.attention.gam import GAM
from attnzoo.attention.gc import GlobalContext
from attnzoo.attention.gct import GCT
from attnzoo.attention.se import SE
from attnzoo.errors import AttnzooError, unknown

_ATTENTIONS: dict[str, type[AttentionModule]] = {
    "se": SE,
    "eca": ECA,
    "gct": GCT,
    "gc": GlobalContext,
    "cbam": CBAM,
    "gam": GAM,
}

__all__ = ["AttentionModule", "GateTap", "SE", "ECA", "GCT", "GlobalContext", "CBAM", "GAM", "check_options", "create", "get", "list_attention", "options"]


def list_attention() -> list[str]:
    return sorted(_ATTENTIONS)


def get(name: str) -> type[AttentionModule]:
    """The attention class registered under ``name``."""
    try:
        return _ATTENTIONS[name]
    except (KeyError, TypeError):
        raise unknown("attention", name, _ATTENTIONS) from None


def options(name: str) -> list[str]:
    """The keyword options the attention ``name`` accepts besides ``channels``."""
    params = list(inspect.signature(get(name)).parameters)
    return [p for p in params if p != "channels"]


def check_options(name: str, kwargs) -> None:
    """Refuse options that the attention ``name`` does not take, naming them and the accepted ones."""
    accepted = options(name)
    bad = sorted(set(kwargs) - set(accepted))
    if bad:
        raise AttnzooError(f"attention {name!r} has no option {', '.join(map(repr, bad))}. Accepted: {', '.join(accepted)}.")


def create(name: str, channels: int, **kwargs) -> AttentionModule:
    """Build the attention module ``name`` for ``channels`` channels; unknown options are refused by name."""
    check_options(name, kwargs)
    return get(name)(channels, **kwargs)
