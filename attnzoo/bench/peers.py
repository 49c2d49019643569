"""timm's and torchvision's counterparts of the zoo's models, timed in the same run as the zoo model they equal.

A peer is named ``timm:NAME`` or ``torchvision:NAME`` (``attnzoo bench --models '[se_r50, timm:seresnet50]'``),
or added by itself (``--peers``, on by default) for every zoo model in the run that has one, where the
peer's library is installed. Neither library is a dependency: this module imports them only to build a
peer, and a missing one only means no peers of it.

Each peer is compared with its zoo equivalent as a ratio measured in the same rounds (``ratio_to_equivalent``:
peer time over zoo time), besides the ratio to the plain backbone every model gets. Where a peer is not
exactly the zoo model's architecture, ``note`` says how it differs (see docs/peers.md for the functions).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from attnzoo.errors import AttnzooError

LIBRARIES = ("timm", "torchvision")
DEPTHS = (18, 34, 50, 101, 152)


@dataclass(frozen=True)
class Peer:
    label: str  # as given on the command line, e.g. "timm:seresnet50"
    library: str  # "timm" or "torchvision"
    equivalent: str  # the zoo model it is compared with
    build: Callable[[object, int], nn.Module]  # (the imported library, num_classes) -> model
    note: str = ""


def _torchvision(name: str):
    return lambda tv, num_classes: getattr(tv.models, name)(weights=None, num_classes=num_classes)


def _timm(name: str):
    return lambda timm, num_classes: timm.create_model(name, num_classes=num_classes)


def _timm_resnet_with(depth: int, attention: str):
    """timm's ResNet with its attention layer in every block, at the paper's options where timm has them."""

    def build(timm, num_classes):
        from timm.layers import cbam, global_context

        layer = {
            "eca": "eca",  # adaptive kernels (5, 5, 5, 7 on ResNet-50), not the released per-stage ones
            "cbam": functools.partial(cbam.CbamModule, mlp_bias=True),
            "gca": functools.partial(global_context.GlobalContext, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16),
        }[attention]
        return timm.create_model(f"resnet{depth}", num_classes=num_classes, block_args={"attn_layer": layer})

    return build


def _catalogue() -> dict[str, Peer]:
    peers = [Peer("torchvision:mobilenet_v2", "torchvision", "mobilenetv2", _torchvision("mobilenet_v2")),
             Peer("timm:mobilenetv2_100", "timm", "mobilenetv2", _timm("mobilenetv2_100"),
                  "timm's EfficientNet-builder MobileNetV2: the same layers and parameter count, other module names")]
    for depth in DEPTHS:
        zoo = f"r{depth}"
        peers += [
            Peer(f"torchvision:resnet{depth}", "torchvision", zoo, _torchvision(f"resnet{depth}")),
            Peer(f"timm:resnet{depth}", "timm", zoo, _timm(f"resnet{depth}")),
            Peer(f"timm:seresnet{depth}", "timm", f"se_{zoo}", _timm(f"seresnet{depth}"),
                 "SE hidden widths rounded up to a multiple of 8" if depth < 50 else ""),
            Peer(f"timm:resnet{depth}+eca", "timm", f"eca_{zoo}", _timm_resnet_with(depth, "eca"),
                 "ECA kernels by the adaptive rule, not the released per-stage sizes"),
            Peer(f"timm:resnet{depth}+cbam", "timm", f"cbam_{zoo}", _timm_resnet_with(depth, "cbam"),
                 "CbamModule(mlp_bias=True): [mean, max] descriptor, BN momentum 0.1"),
            Peer(f"timm:resnet{depth}+gca", "timm", f"gc_{zoo}", _timm_resnet_with(depth, "gca"),
                 "GlobalContext(fuse_add=True, fuse_scale=False, rd_ratio=1/16)"),
        ]
    return {peer.label: peer for peer in peers}


PEERS = _catalogue()


def is_peer_label(item: str) -> bool:
    return isinstance(item, str) and item.split(":", 1)[0] in LIBRARIES and ":" in item


def installed(library: str) -> bool:
    # find_spec, not import: importing torchvision next to a torch it was not built for fails (and is slow)
    return importlib.util.find_spec(library) is not None


def get(label: str) -> Peer:
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
    """The installed peers of a zoo model, torchvision's first."""
    return sorted((p for p in PEERS.values() if p.equivalent == zoo_name and installed(p.library)),
                  key=lambda p: (p.library != "torchvision", p.label))


def build(label: str, num_classes: int) -> nn.Module:
    peer = PEERS[label]
    return peer.build(importlib.import_module(peer.library), num_classes)
