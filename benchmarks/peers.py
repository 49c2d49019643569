"""timm's and torchvision's counterparts of the zoo's models, for ``attnzoo bench``: the catalogue, and the
bench run with it.

    python benchmarks/peers.py --models '[r50, se_r50, timm:seresnet50]' --device cpu ...

takes the options of ``attnzoo bench``. attnzoo never imports timm or torchvision (they cannot even be
installed beside the CPU torch of our machines): this script, outside the package, registers the peers with
:func:`attnzoo.bench.peers.register` and each builder imports its library only when called. Run it in a venv
with timm and/or torchvision (docs/peers.md).
"""

from __future__ import annotations

import functools
import sys

from attnzoo.bench.peers import Peer, register

DEPTHS = (18, 34, 50, 101, 152)


def _torchvision(name: str):
    def build(num_classes):
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


def _timm(name: str):
    def build(num_classes):
        import timm

        return timm.create_model(name, num_classes=num_classes)

    return build


def _timm_resnet_with(depth: int, attention: str):
    """timm's ResNet with its attention layer in every block, at the paper's options where timm has them."""

    def build(num_classes):
        import timm
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


def main(argv: list[str] | None = None) -> int:
    """``attnzoo bench`` with the peers registered."""
    from attnzoo.cli import main as attnzoo_main

    register(PEERS.values())
    attnzoo_main(["bench", *(sys.argv[1:] if argv is None else argv)])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
