"""Which models a benchmark runs: names, globs and variants, grouped with the plain backbone they are compared to.

A model is given as a registered name (``se_r50``), a glob (``*_r50``) or a variant with attention options
after ``@`` (``gam_mobilenetv2@groups=2``, several joined by ``,``; values are read as JSON, else as text).
Every attention model is measured against its plain backbone in the same run, so the plain backbone is
added when it was not asked for.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field

from attnzoo.errors import AttnzooError
from attnzoo.registry import get_spec, list_models


@dataclass(frozen=True)
class Entry:
    label: str  # what the tables show: the canonical name, plus "@options" for a variant
    name: str  # canonical registry name
    backbone: str
    attention: str | None
    options: dict = field(default_factory=dict)  # attention options of a variant, on top of the registered ones

    @property
    def is_plain(self) -> bool:
        return self.attention is None


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_options(text: str, label: str) -> dict:
    options = {}
    for part in filter(None, text.split(",")):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise AttnzooError(f"model variant {label!r}: options are written key=value[,key=value], got {part!r}.")
        options[key.strip()] = _value(value.strip())
    return options


def _entries_for(item: str) -> list[Entry]:
    if not isinstance(item, str) or not item.strip():
        raise AttnzooError(f"a model must be a name or glob such as 'se_r50' or '*_r50', got {item!r}.")
    if item.startswith(TIMM_PREFIX):
        return [timm_peer(item)]
    pattern, _, options_text = item.strip().partition("@")
    if any(ch in pattern for ch in "*?["):
        names = list_models(pattern)
        if not names:
            raise AttnzooError(f"no model matches {pattern!r}; `attnzoo list` shows all of them.")
    else:
        names = [get_spec(pattern).name]  # raises the registry's "unknown model" error
    entries = []
    for name in names:
        spec = get_spec(name)
        options = _parse_options(options_text, item) if options_text else {}
        if options and spec.attention is None:
            raise AttnzooError(f"{item!r}: options after '@' are attention options, but {name} has no attention.")
        label = name + (f"@{options_text}" if options_text else "")
        entries.append(Entry(label, name, spec.backbone, spec.attention, options))
    return entries


TIMM_PREFIX = "timm:"
# timm's counterparts of the zoo's ResNet-50 models, compared against the zoo's plain r50 in the same run.
TIMM_PEERS = {
    "timm:resnet50": ("resnet50", {}),
    "timm:seresnet50": ("seresnet50", {}),
    "timm:resnet50+eca": ("resnet50", {"block_args": {"attn_layer": "eca"}}),
    "timm:resnet50+cbam": ("resnet50", {"block_args": {"attn_layer": "cbam"}}),
}


def timm_peer(item: str) -> Entry:
    """A timm model as a peer of the zoo's r50 (only where timm is installed, e.g. the GPU machine)."""
    if item not in TIMM_PEERS:
        raise AttnzooError(f"unknown timm peer {item!r}. Accepted: {', '.join(TIMM_PEERS)}.")
    if importlib.util.find_spec("timm") is None:  # optional peer, never a dependency; imported only to build it
        raise AttnzooError(f"{item!r} needs timm, which is not installed here (timm peers are for the GPU machine).")
    return Entry(item, item, "r50", "timm")


def select(models: list[str] | str) -> dict[str, list[Entry]]:
    """backbone -> [plain entry, attention entries...], in the order given, without duplicates."""
    if isinstance(models, str):
        models = [models]
    groups: dict[str, list[Entry]] = {}
    seen: set[str] = set()
    for item in models:
        for entry in _entries_for(item):
            if entry.label in seen:
                continue
            seen.add(entry.label)
            groups.setdefault(entry.backbone, []).append(entry)
    for backbone, entries in groups.items():
        plain = [e for e in entries if e.is_plain]
        if not plain:
            spec = get_spec(backbone)
            plain = [Entry(spec.name, spec.name, backbone, None)]
        groups[backbone] = plain[:1] + [e for e in entries if not e.is_plain]
    return groups
