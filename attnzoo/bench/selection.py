"""Which models a benchmark runs: names, globs and variants, grouped with the plain backbone they are compared to.

A model is given as a registered name (``se_r50``), a glob (``*_r50``) or a variant with attention options
after ``@`` (``gam_mobilenetv2@groups=2``, several joined by ``,``; values are read as JSON, else as text).
Every attention model is measured against its plain backbone in the same run, so the plain backbone is
added when it was not asked for. A timm or torchvision peer (``timm:seresnet50``, see
:mod:`attnzoo.bench.peers`) is measured against its zoo equivalent too, which is added in the same way;
``peers=None`` adds the installed peers of every zoo model asked for (those benchmarks/peers.py registered).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from attnzoo.bench import peers as peer_catalogue
from attnzoo.errors import AttnzooError
from attnzoo.registry import get_spec, list_models


@dataclass(frozen=True)
class Entry:
    label: str  # what the tables show: the canonical name, plus "@options" for a variant
    name: str  # canonical registry name
    backbone: str
    attention: str | None
    options: dict = field(default_factory=dict)  # attention options of a variant, on top of the registered ones
    peer_of: str | None = None  # a timm/torchvision peer: the zoo model it is compared with

    @property
    def is_plain(self) -> bool:
        return self.attention is None

    @property
    def is_peer(self) -> bool:
        return self.peer_of is not None


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
    if peer_catalogue.is_peer_label(item):
        return [peer_entry(item)]
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


def peer_entry(label: str) -> Entry:
    """A timm/torchvision model, timed beside the zoo model it equals (only where its library is installed)."""
    peer = peer_catalogue.get(label)
    spec = get_spec(peer.equivalent)
    return Entry(label, label, spec.backbone, peer.library, peer_of=spec.name)


def select(models: list[str] | str, peers: bool | None = False) -> dict[str, list[Entry]]:
    """backbone -> [plain entry, attention entries..., peers...], in the order given, without duplicates.

    ``peers``: False adds no peer by itself; None adds the installed peers of every registered zoo model asked
    for (not of variants with ``@`` options); True does the same and refuses a run where neither timm nor
    torchvision is installed.
    """
    if isinstance(models, str):
        models = [models]
    if peers is True and not any(peer_catalogue.installed(p.library) for p in peer_catalogue.PEERS.values()):
        raise AttnzooError("peers=true, but no peer can be built here: timm and torchvision are not installed (install "
                           "them in a separate venv, see docs/peers.md) or no peers are registered (run the bench "
                           f"through `python {peer_catalogue.REGISTERING_SCRIPT}`); or pass peers=false.")
    groups: dict[str, list[Entry]] = {}
    seen: set[str] = set()

    def add(entry: Entry) -> None:
        if entry.label not in seen:
            seen.add(entry.label)
            groups.setdefault(entry.backbone, []).append(entry)

    asked = [entry for item in models for entry in _entries_for(item)]
    for entry in asked:
        add(entry)
    for entry in asked:
        if entry.is_peer and entry.peer_of not in seen:  # a peer is compared with its zoo equivalent
            add(Entry(entry.peer_of, entry.peer_of, entry.backbone, get_spec(entry.peer_of).attention))
    if peers is not False:
        for entry in [e for e in asked if not e.is_peer and not e.options]:
            for peer in peer_catalogue.peers_of(entry.name):
                add(peer_entry(peer.label))
    for backbone, entries in groups.items():
        plain = [e for e in entries if e.is_plain]
        if not plain:
            spec = get_spec(backbone)
            plain = [Entry(spec.name, spec.name, backbone, None)]
        zoo = [e for e in entries if not e.is_plain and not e.is_peer]
        groups[backbone] = plain[:1] + zoo + [e for e in entries if e.is_peer]
    return groups
