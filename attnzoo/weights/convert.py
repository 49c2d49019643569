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
- ``senet`` (moskomule/senet.pytorch, e.g. ``seresnet50-60a8950a85b2b.pkl``): torchvision's ResNet with
  ``layerX.Y.se.fc`` = Sequential(Linear, ReLU, Linear, Sigmoid), i.e. ``se.fc.0`` and ``se.fc.2``, without
  biases in its current code. Whether the file has biases and its reduction are read from the weights, so
  SE gets ``bias=False`` (and ``reduction``) only where the file says so.
- ``gcnet`` (xvjiarui/GCNet and mmdetection's GCNet configs, Mask R-CNN ``*_gcb_c3-c5_*``): a detector's state
  dict; only the ``backbone.`` entries are a ResNet (mmdetection names BN ``bn1..bn3`` and the shortcut
  ``downsample.{0,1}`` as torchvision does), the GC block is ``backbone.layerX.Y.context_block`` with the
  official ``conv_mask`` / ``channel_add_conv`` / ``channel_mul_conv`` names. The stages with GC blocks
  (``c3-c5`` = layer2-4 = ``attention_stages=[2, 3, 4]``), the ratio (r16 / r4), the pooling and the
  fusions are read from the weights. A detection backbone has no ImageNet classifier: the converted
  model's head is freshly initialised (seeded, so the same file gives the same bytes) and must be trained;
  the converter says so in its output, in config.json and in the model card. The neck and the heads are
  dropped.

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


# (mapped state dict, registry spec, source label) -> (model options read from the weights, notes)
OptionsReader = Callable[[dict, object, str], tuple[dict, list[str]]]


@dataclass(frozen=True)
class Release:
    name: str
    attention: str | None  # the attention the target model must have (None = plain)
    description: str
    code: str
    rules: list[Rule]
    model_args: dict = field(default_factory=dict)  # options the release's architecture needs
    note: str | None = None
    keep: str | None = None  # only keys with this prefix are the network (a detector's "backbone.")
    has_classifier: bool = True
    options_from_weights: OptionsReader | None = None

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

FRESH_HEAD_NOTE = (
    "the release is a detection backbone without an ImageNet classifier: the classifier ({head}, {classes} "
    "classes) is freshly initialised (seed 0) and must be trained before the outputs mean anything; "
    "{dropped} tensors outside `backbone.` (neck, heads) were dropped."
)

RELEASES: dict[str, Release] = {
    "torchvision": Release(
        "torchvision", None, "torchvision ImageNet weights (resnet18..152, mobilenet_v2)",
        "https://github.com/pytorch/vision", []),
    "ecanet": Release(
        "ecanet", "eca", "official ECA-Net release (BangguWu/ECANet)", "https://github.com/BangguWu/ECANet",
        _rules((r"(layer\d+\.\d+)\.eca\.conv\.weight", r"\1.attn.conv.weight"),
               (r"(features\.\d+)\.conv\.\d+\.conv\.weight", r"\1.attn.conv.weight")),
        options_from_weights=lambda mapped, spec, source: _eca_options(mapped, spec, source)),
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
    "senet": Release(
        "senet", "se", "SE-ResNet PyTorch port (moskomule/senet.pytorch)", "https://github.com/moskomule/senet.pytorch",
        _rules((r"(layer\d+\.\d+)\.se\.fc\.0\.(weight|bias)", r"\1.attn.fc1.\2"),
               (r"(layer\d+\.\d+)\.se\.fc\.2\.(weight|bias)", r"\1.attn.fc2.\2")),
        options_from_weights=lambda mapped, spec, source: _se_options(mapped, source)),
    "gcnet": Release(
        "gcnet", "gc", "GCNet detection backbone (xvjiarui/GCNet, mmdetection)", "https://github.com/xvjiarui/GCNet",
        _rules((r"backbone\.(layer\d+\.\d+)\.context_block\.(.+)", r"\1.attn.\2"),
               (r"backbone\.(.+)", r"\1")),
        keep="backbone.", has_classifier=False,
        options_from_weights=lambda mapped, spec, source: _gc_options(mapped, spec, source)),
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


def _eca_options(mapped: dict[str, torch.Tensor], spec, source: str) -> tuple[dict, list[str]]:
    from attnzoo.registry import create_model

    with torch.device("meta"):  # shapes are all it takes
        registered = create_model(spec.name)
    released = _eca_kernels(mapped, registered, source)
    default = _eca_kernels(registered.state_dict(), registered, "model")
    differ = {s: v for s, v in released.items() if default.get(s) != v}
    if not differ:
        return {}, []
    return {"attention_stage_kwargs": differ}, [
        "ECA kernel sizes taken from the release where they differ from attnzoo's defaults: "
        + ", ".join(f"stage {s}: k={v['kernel_size']} (default k={default.get(s, {}).get('kernel_size')})"
                    for s, v in differ.items())]


def _attention_blocks(mapped: dict[str, torch.Tensor], suffix: str) -> dict[str, torch.Tensor]:
    """block prefix (``layer2.0``) -> the tensor ``<block>.attn.<suffix>``."""
    end = f".attn.{suffix}"
    return {key[: -len(end)]: value for key, value in mapped.items() if key.endswith(end)}


def _se_options(mapped: dict[str, torch.Tensor], source: str) -> tuple[dict, list[str]]:
    """SE's bias and reduction as the file has them (hidden = C // reduction in every block)."""
    first = _attention_blocks(mapped, "fc1.weight")
    if not first:
        raise AttnzooError(f"{source} has no SE layers (`layerX.Y.se.fc.0.weight`); is it an SE-ResNet of "
                           "moskomule/senet.pytorch?")
    widths = {(int(w.shape[0]), int(w.shape[1])) for w in first.values()}  # (hidden, channels)
    reductions = {channels // hidden for hidden, channels in widths}
    reduction = min(reductions)
    if len(reductions) != 1 or any(hidden != channels // reduction for hidden, channels in widths):
        raise AttnzooError(f"{source}: the SE layers' widths (hidden, channels) {sorted(widths)} do not follow one "
                           "reduction; attnzoo's SE uses hidden = channels // reduction.")
    options, notes = {}, []
    if not _attention_blocks(mapped, "fc1.bias"):
        options["bias"] = False
        notes.append("the release's SE layers have no biases (nn.Linear(bias=False)): SE is built with bias=False.")
    if reduction != 16:
        options["reduction"] = reduction
    return ({"attention_kwargs": options} if options else {}), notes


def _gc_options(mapped: dict[str, torch.Tensor], spec, source: str) -> tuple[dict, list[str]]:
    """GC's stages, ratio, pooling and fusions as the file has them."""
    blocks = {block for key in mapped if ".attn." in key for block in [key.split(".attn.")[0]]}
    if not blocks:
        raise AttnzooError(f"{source} has no GC blocks (`backbone.layerX.Y.context_block.*`); is it a GCNet "
                           "(gcb) backbone?")
    stages = sorted({int(block.split(".")[0][len("layer"):]) for block in blocks})
    fusion = [f for f in ("channel_add", "channel_mul") if _attention_blocks(mapped, f"{f}_conv.0.weight")]
    pooling = "att" if _attention_blocks(mapped, "conv_mask.weight") else "avg"
    widths = _attention_blocks(mapped, f"{fusion[0]}_conv.0.weight") if fusion else {}
    ratios = {(int(w.shape[0]), int(w.shape[1])) for w in widths.values()}
    ratio = min((hidden / channels for hidden, channels in ratios), default=1 / 16)
    if any(int(channels * ratio) != hidden for hidden, channels in ratios):
        raise AttnzooError(f"{source}: the GC blocks' widths (hidden, channels) {sorted(ratios)} do not follow one "
                           "ratio; attnzoo's GC uses hidden = int(channels * ratio).")
    attention_kwargs = {"ratio": ratio, "pooling": pooling, "fusion": fusion}
    defaults = {"ratio": 1 / 16, "pooling": "att", "fusion": ["channel_add"]}
    options: dict = {"attention_kwargs": {k: v for k, v in attention_kwargs.items() if v != defaults[k]}}
    if not options["attention_kwargs"]:
        del options["attention_kwargs"]
    if stages != [1, 2, 3, 4]:
        options["attention_stages"] = stages
    notes = [f"GC blocks in stages {', '.join(map(str, stages))} (layer{stages[0]}-layer{stages[-1]}), ratio 1/"
             f"{round(1 / ratio)}, {pooling} pooling, {' + '.join(fusion)} fusion, as in the release."]
    return options, notes


def convert_state_dict(release: str, state_dict: dict[str, torch.Tensor], model_name: str,
                       source: str = "the file", num_classes: int | None = None) -> tuple[torch.nn.Module, list[str]]:
    """Build ``model_name`` and load an official state dict into it; returns (model, notes).

    ``num_classes`` is the classifier's size for a release without one (``gcnet``; default 1000); a release
    with a classifier keeps the file's.
    """
    from attnzoo.registry import check_num_classes, create_model, get_spec

    if num_classes is not None:  # before anything else: a message below suggests `num_classes=` with the value
        check_num_classes(num_classes, "--num_classes")
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
    dropped = 0
    if rel.keep is not None:
        kept = {k: v for k, v in state_dict.items() if k.startswith(rel.keep)}
        if not kept:
            raise AttnzooError(f"{source} has no {rel.keep!r} entries (found: {listing(state_dict)}); is it a "
                               f"checkpoint of the {rel.description}?")
        dropped, state_dict = len(state_dict) - len(kept), kept
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = rel.rename(key)
        if new in mapped:
            raise AttnzooError(f"{source}: keys map to {new!r} twice; is it a {rel.description} checkpoint?")
        mapped[new] = value
    head = "classifier.1" if spec.backbone == "mobilenetv2" else "fc"
    notes: list[str] = []
    if rel.has_classifier:
        if f"{head}.weight" not in mapped or mapped[f"{head}.weight"].dim() != 2:
            raise AttnzooError(f"{source} has no classifier {head + '.weight'!r} (found: {listing(mapped)}); is it a "
                               f"{spec.backbone} checkpoint of the {rel.description}?")
        classes = int(mapped[f"{head}.weight"].shape[0])
        if num_classes is not None and int(num_classes) != classes:
            raise AttnzooError(f"{source} has a {classes}-class classifier; --num_classes is for releases without "
                               f"one (gcnet). For another head load the converted weights with "
                               f"attnzoo.load(DIR, num_classes={num_classes}).")
        num_classes = classes
    else:
        num_classes = 1000 if num_classes is None else num_classes
        notes.append(FRESH_HEAD_NOTE.format(head=head, classes=num_classes, dropped=dropped))
    model_args: dict = {}
    if rel.options_from_weights is not None:
        options, option_notes = rel.options_from_weights(mapped, spec, source)
        model_args.update(options)
        notes += option_notes
    model_args.update(rel.model_args)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # a fresh head (gcnet) is the same on every run: same file, same bytes
        model = create_model(spec.name, num_classes=num_classes, **model_args)
    own = model.state_dict()
    if not rel.has_classifier:
        mapped.update({k: v for k, v in own.items() if k.startswith(f"{head}.")})
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
            echo: Callable[[str], None] = print, num_classes: int | None = None) -> Path:
    """Convert an official checkpoint file into attnzoo weights in ``out``."""
    from attnzoo.files import check_writable
    from attnzoo.registry import check_num_classes
    from attnzoo.weights.api import save_pretrained

    if num_classes is not None:  # before the file is read, not after
        check_num_classes(num_classes, "--num_classes")
    check_writable(out, "--out", folder=True)  # before the conversion, not after it
    file = Path(file)
    model, notes = convert_state_dict(release, read_state_dict_file(file), model_name, source=repr(str(file)),
                                      num_classes=num_classes)
    rel = RELEASES[release]
    source = {"kind": "converted", "release": rel.description, "code": rel.code, "file": file.name,
              "file_sha256": sha256_file(file), "converter": f"attnzoo convert --from {release}"}
    if not rel.has_classifier:
        source["classifier"] = "fresh: not in the release; train it before use"
    if notes:
        source["notes"] = notes
    out = save_pretrained(model, out, source=source, overwrite=overwrite)
    for note in notes:
        echo(note)
    return out
