"""Converters for the official released checkpoints: their key layout into attnzoo's, then save_pretrained.

Each official repo names its modules its own way; the key names below come from reading their model code:

- ``torchvision``: torchvision's ResNet / MobileNetV2 files. attnzoo keeps torchvision's names: identity.
  Into an attention model, use ``create_model(name, backbone_weights=FILE)`` (retrofit) instead.
- ``ecanet`` (BangguWu/ECANet, ``eca_resnet*.pth.tar``, ``eca_mobilenetv2_k13.pth.tar``): the ECA layer is
  ``layerX.Y.eca`` in the ResNets and the last entry of ``features.N.conv`` in MobileNetV2
  (``features.N.conv.4.conv.weight``; ``conv.3`` in the first block, which has no expansion).
  The released models use per-stage kernel sizes; they are read from the file, so the converted model gets
  exactly the released kernels whatever the registry's defaults.
- ``cbam`` (Jongchan/attention-module, ``RESNET50_CBAM*.pth``): ``layerX.Y.cbam.ChannelGate.mlp.{1,3}``
  (nn.Linear, reshaped to attnzoo's 1x1 convolutions) and ``layerX.Y.cbam.SpatialGate.spatial.{conv,bn}``.
- ``gct`` (z-x-yang/GCT, PyTorch GCT-ResNet-50): each GCT sits in an ``nn.Sequential`` before its conv:
  ``stem.conv1.0`` (GCT) + ``stem.conv1.1`` (conv), ``layerX.Y.convK.{0,1}``, and the shortcut
  ``downsample.0`` (GCT), ``.1`` (conv), ``.2`` (BN).
  That ResNet (from maskrcnn-benchmark) has ``stride_in_1x1=True``: the stride of a downsampling block is in
  its first 1x1 conv, while attnzoo's default (torchvision's) puts it in the 3x3 conv. Every tensor has the
  same shape, so the converted model is built with attnzoo's ``stride_in_1x1=True`` option to compute the
  function that was trained; the converter says so in its output, in config.json and in the model card.

Official files are pickles: they are read with ``torch.load(weights_only=True)`` only, and a ``state_dict``
wrapper (as saved by their training scripts, with DataParallel's ``module.`` prefix) is accepted.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from attnzoo.errors import AttnzooError, unknown
from attnzoo.weights.format import clean_state_dict, listing, sha256_file, state_dict_problems
from attnzoo.weights.pickles import read_state_dict_file

log = logging.getLogger("attnzoo.weights")

Rule = tuple[re.Pattern, str]


def _rules(*pairs: tuple[str, str]) -> list[Rule]:
    return [(re.compile(f"^{pattern}$"), replacement) for pattern, replacement in pairs]


@dataclass(frozen=True)
class Release:
    name: str
    attention: str | None  # the attention the target model must have (None = plain)
    description: str
    code: str
    rules: list[Rule]
    model_args: dict = field(default_factory=dict)  # options the release's architecture needs
    note: str | None = None

    def rename(self, key: str) -> str:
        for pattern, replacement in self.rules:
            if pattern.match(key):
                return pattern.sub(replacement, key)
        return key  # unchanged keys are the plain torchvision-named parts


GCT_STRIDE_NOTE = (
    "the official GCT-ResNet puts the stride of downsampling blocks in the first 1x1 conv; the converted model "
    "is built with stride_in_1x1=True (attnzoo's default is False: torchvision's layout, strides in the 3x3 "
    "conv) so it computes the function that was trained."
)

RELEASES: dict[str, Release] = {
    "torchvision": Release(
        "torchvision", None, "torchvision ImageNet weights (resnet18..152, mobilenet_v2)",
        "https://github.com/pytorch/vision", []),
    "ecanet": Release(
        "ecanet", "eca", "official ECA-Net release (BangguWu/ECANet)", "https://github.com/BangguWu/ECANet",
        _rules((r"(layer\d+\.\d+)\.eca\.conv\.weight", r"\1.attn.conv.weight"),
               (r"(features\.\d+)\.conv\.\d+\.conv\.weight", r"\1.attn.conv.weight"))),
    "cbam": Release(
        "cbam", "cbam", "official CBAM release (Jongchan/attention-module)",
        "https://github.com/Jongchan/attention-module",
        _rules((r"(layer\d+\.\d+)\.cbam\.ChannelGate\.mlp\.1\.(weight|bias)", r"\1.attn.channel_mlp.0.\2"),
               (r"(layer\d+\.\d+)\.cbam\.ChannelGate\.mlp\.3\.(weight|bias)", r"\1.attn.channel_mlp.2.\2"),
               (r"(layer\d+\.\d+)\.cbam\.SpatialGate\.spatial\.conv\.weight", r"\1.attn.spatial_conv.weight"),
               (r"(layer\d+\.\d+)\.cbam\.SpatialGate\.spatial\.bn\.(\w+)", r"\1.attn.spatial_bn.\2"))),
    "gct": Release(
        "gct", "gct", "official GCT PyTorch release (z-x-yang/GCT)", "https://github.com/z-x-yang/GCT",
        _rules((r"stem\.conv1\.0\.(alpha|gamma|beta)", r"conv1.gate.\1"),
               (r"stem\.conv1\.1\.weight", r"conv1.weight"),
               (r"stem\.bn1\.(\w+)", r"bn1.\1"),
               (r"(layer\d+\.\d+)\.(conv\d)\.0\.(alpha|gamma|beta)", r"\1.\2.gate.\3"),
               (r"(layer\d+\.\d+)\.(conv\d)\.1\.weight", r"\1.\2.weight"),
               (r"(layer\d+\.\d+)\.downsample\.0\.(alpha|gamma|beta)", r"\1.downsample.0.gate.\2"),
               (r"(layer\d+\.\d+)\.downsample\.1\.weight", r"\1.downsample.0.weight"),
               (r"(layer\d+\.\d+)\.downsample\.2\.(\w+)", r"\1.downsample.1.\2")),
        model_args={"stride_in_1x1": True}, note=GCT_STRIDE_NOTE),
}


def _fit(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    """The value in the target's shape when they differ only by size-1 dims (nn.Linear vs 1x1 conv), else None."""
    if value.shape == target.shape:
        return value
    squeeze = lambda shape: [d for d in shape if d != 1]  # noqa: E731
    return value.reshape(target.shape) if squeeze(value.shape) == squeeze(target.shape) else None


def _eca_kernels(mapped: dict[str, torch.Tensor], model: torch.nn.Module, source: str) -> dict[str, dict]:
    """Per-stage ECA kernel sizes as released (read from the weights' shapes), by ``model``'s stages."""
    per_stage: dict[int, set[int]] = {}
    for key, value in mapped.items():
        if key.endswith(".attn.conv.weight"):
            stage = model.stage_of(key)
            if stage is not None:
                per_stage.setdefault(stage, set()).add(int(value.shape[-1]))
    mixed = {s: sorted(k) for s, k in per_stage.items() if len(k) > 1}
    if mixed:
        raise AttnzooError(f"{source}: ECA kernel sizes differ within a stage ({mixed}); attnzoo sets one per stage.")
    return {str(stage): {"kernel_size": ks.pop()} for stage, ks in sorted(per_stage.items())}


def convert_state_dict(release: str, state_dict: dict[str, torch.Tensor], model_name: str,
                       source: str = "the file") -> tuple[torch.nn.Module, list[str]]:
    """Build ``model_name`` and load an official state dict into it; returns (model, notes)."""
    from attnzoo.registry import create_model, get_spec

    if release not in RELEASES:
        raise unknown("official release", release, RELEASES)
    rel = RELEASES[release]
    spec = get_spec(model_name)
    if spec.attention != rel.attention:
        hint = (f" Load plain weights into an attention model with attnzoo.create_model({spec.name!r}, "
                "backbone_weights=FILE)." if rel.attention is None else "")
        want = f"a model with {rel.attention} attention ({rel.attention}_*)" if rel.attention else "a plain model"
        raise AttnzooError(f"--from {release} converts the {rel.description} into {want}; {spec.name!r} is not.{hint}")

    state_dict = clean_state_dict(state_dict)
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = rel.rename(key)
        if new in mapped:
            raise AttnzooError(f"{source}: keys map to {new!r} twice; is it a {rel.description} checkpoint?")
        mapped[new] = value
    head = "classifier.1.weight" if spec.backbone == "mobilenetv2" else "fc.weight"
    if head not in mapped or mapped[head].dim() != 2:
        raise AttnzooError(f"{source} has no classifier {head!r} (found: {listing(mapped)}); is it a "
                           f"{spec.backbone} checkpoint of the {rel.description}?")
    num_classes = int(mapped[head].shape[0])
    model_args: dict = {}
    notes: list[str] = []
    if rel.attention == "eca":
        with torch.device("meta"):  # shapes are all it takes
            registered = create_model(spec.name, num_classes=num_classes)
        released = _eca_kernels(mapped, registered, source)
        default = _eca_kernels(registered.state_dict(), registered, "model")
        differ = {s: v for s, v in released.items() if default.get(s) != v}
        if differ:
            model_args["attention_stage_kwargs"] = differ
            notes.append("ECA kernel sizes taken from the release where they differ from attnzoo's defaults: "
                         + ", ".join(f"stage {s}: k={v['kernel_size']} (default k={default.get(s, {}).get('kernel_size')})"
                                     for s, v in differ.items()))
    model_args.update(rel.model_args)
    model = create_model(spec.name, num_classes=num_classes, **model_args)
    own = model.state_dict()
    # Files from PyTorch < 0.4.1 have no BatchNorm step counters; they do not change the function.
    mapped.update({k: v for k, v in own.items() if k.endswith("num_batches_tracked") and k not in mapped})
    problems, _ = state_dict_problems(
        own, mapped, fits=lambda value, target: _fit(value, target) is not None,
        missing_label="missing in the file", unexpected_label=f"not in {spec.name}", own_label="attnzoo",
    )
    if problems:
        raise AttnzooError(f"{source} does not fit {spec.name} as a {rel.description} checkpoint: "
                           f"{'; '.join(problems)}. Check --model (depth, backbone) and --from.")
    model.load_state_dict({k: _fit(mapped[k], own[k]) for k in own}, strict=True)
    if rel.note:
        notes.insert(0, rel.note)
    return model.eval(), notes


def convert(release: str, file: str | Path, model_name: str, out: str | Path, overwrite: bool = False,
            echo: Callable[[str], None] = print) -> Path:
    """Convert an official checkpoint file into attnzoo weights in ``out``."""
    from attnzoo.weights.api import save_pretrained

    file = Path(file)
    model, notes = convert_state_dict(release, read_state_dict_file(file), model_name, source=repr(str(file)))
    rel = RELEASES[release]
    source = {"kind": "converted", "release": rel.description, "code": rel.code, "file": file.name,
              "file_sha256": sha256_file(file), "converter": f"attnzoo convert --from {release}"}
    if notes:
        source["notes"] = notes
    out = save_pretrained(model, out, source=source, overwrite=overwrite)
    for note in notes:
        echo(note)
    return out
