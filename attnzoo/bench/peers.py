"""Models from other libraries (timm's, torchvision's) timed in the same run as the zoo model they equal.

attnzoo never imports those libraries: the catalogue of peers and the code that builds them live outside the
package, in ``benchmarks/peers.py``, which registers them here and then runs ``attnzoo bench``
(``python benchmarks/peers.py --models '[se_r50, timm:seresnet50]'``). A peer is named ``LIBRARY:NAME``; with
``--peers`` (on by default) every zoo model in the run gets its registered peers whose library is installed.

Each peer is compared with its zoo equivalent as a ratio measured in the same rounds (``ratio_to_equivalent``:
peer time over zoo time), besides the ratio to the plain backbone every model gets. Where a peer is not
exactly the zoo model's architecture, ``note`` says how it differs (see docs/peers.md for the functions).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import nn

from attnzoo.errors import AttnzooError

LIBRARIES = ("timm", "torchvision")
REGISTERING_SCRIPT = "benchmarks/peers.py"


@dataclass(frozen=True)
class Peer:
    label: str  # as given on the command line, e.g. "timm:seresnet50"
    library: str  # "timm" or "torchvision": the one the builder imports
    equivalent: str  # the zoo model it is compared with
    build: Callable[[int], nn.Module]  # num_classes -> model; imports its library itself, when called
    note: str = ""


PEERS: dict[str, Peer] = {}


def register(peers: Iterable[Peer]) -> None:
    """Make ``peers`` known to the bench (benchmarks/peers.py calls this before running it)."""
    PEERS.update({peer.label: peer for peer in peers})


def is_peer_label(item: str) -> bool:
    return isinstance(item, str) and item.split(":", 1)[0] in LIBRARIES and ":" in item


def installed(library: str) -> bool:
    # find_spec, not import: importing torchvision next to a torch it was not built for fails (and is slow)
    return importlib.util.find_spec(library) is not None


def get(label: str) -> Peer:
    if not PEERS:
        raise AttnzooError(f"{label!r} is a peer model, and no peers are registered: attnzoo does not import timm or "
                           f"torchvision itself; run the bench through `python {REGISTERING_SCRIPT}` (same options).")
    if label not in PEERS:
        library = label.split(":", 1)[0]
        known = [name for name in PEERS if name.startswith(f"{library}:")]
        raise AttnzooError(f"unknown {library} peer {label!r}. Accepted: {', '.join(known)}.")
    peer = PEERS[label]
    if not installed(peer.library):
        raise AttnzooError(f"{label!r} needs {peer.library}, which is not installed here. Peers are optional: "
                           f"install {peer.library} in a separate venv (see docs/peers.md), or leave {label} out.")
    return peer


def peers_of(zoo_name: str) -> list[Peer]:
    """The registered, installed peers of a zoo model, torchvision's first."""
    return sorted((p for p in PEERS.values() if p.equivalent == zoo_name and installed(p.library)),
                  key=lambda p: (p.library != "torchvision", p.label))


def build(label: str, num_classes: int) -> nn.Module:
    return PEERS[label].build(num_classes)
