"""``attnzoo.save_pretrained`` and ``attnzoo.load``: the public face of the weights format."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from attnzoo.errors import AttnzooError, unknown
from attnzoo.files import (cannot_write, check_writable, move_into, remove_stale, reporting_write_errors,
                           staging_folder)
from attnzoo.registry import FEATURE_OPTIONS, MODELS, feature_options, get_spec
from attnzoo.weights import hub
from attnzoo.weights.card import render_card
from attnzoo.weights.releases import BACKBONE_ONLY, release_of
from attnzoo.weights.format import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    build_config,
    build_model,
    listing,
    read_config,
    read_weights,
    sha256_file,
    write_weights,
)
from attnzoo.weights.index import WeightRecord, load_index

log = logging.getLogger("attnzoo.weights")

_ORG_NAME = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")


def save_pretrained(model: nn.Module, directory: str | Path, metrics: dict | None = None,
                    class_names: list[str] | None = None, train_config: dict | None = None, source=None,
                    repo_id: str | None = None, license: str = "apache-2.0", datasets: list[str] | None = None,
                    overwrite: bool = False) -> Path:
    """Write ``model`` as attnzoo weights: model.safetensors, config.json and a README.md model card.

    Args:
        model: a model from ``attnzoo.create_model`` or ``attnzoo.load``.
        directory: where to write; an existing non-empty directory is refused unless ``overwrite=True``.
        metrics: e.g. ``{"val/acc1": 0.771}``, shown in config.json and the card.
        class_names: one label per output, stored as ``label_names`` (default: ``model.config.class_names``).
        train_config: the configuration that trained the model (JSON-able), shown in the card.
        source: where the weights come from (trained here with config X, converted from release Y).
        repo_id: the Hub repo the card's usage snippet names.
        license, datasets: model card front matter.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise AttnzooError(f"{str(directory)!r} exists and is not a directory.")
    check_writable(directory, "the weights directory", folder=True)
    remove_stale(directory)  # what a killed export or convert left is not the user's
    if directory.is_dir() and any(directory.iterdir()) and not overwrite:
        raise AttnzooError(f"{str(directory)!r} already exists and is not empty; choose another directory or pass "
                           "overwrite=True (--overwrite) to replace its weights.")
    cfg = build_config(model, metrics=metrics, class_names=class_names, train_config=train_config, source=source)
    card = render_card(cfg, repo_id=repo_id, license=license, datasets=datasets)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise cannot_write(directory, err) from None
    write_files(directory, {WEIGHTS_NAME: lambda path: write_weights(model, path),
                            CONFIG_NAME: lambda path: path.write_text(config_text(cfg), encoding="utf-8"),
                            CARD_NAME: lambda path: path.write_text(card, encoding="utf-8")})
    return directory


def config_text(cfg: dict) -> str:
    return json.dumps(cfg, indent=2) + "\n"


def write_files(directory: Path, writers: dict) -> None:
    """Write each ``name: writer(path)`` in a staging folder beside its target and move them all into place, so
    an interrupted or failed write (a kill, a full disk) leaves every file whole: its old content or its new one."""
    with staging_folder(directory) as tmp:
        for name, writer in writers.items():
            with reporting_write_errors(directory / name):
                writer(tmp / name)
        move_into(tmp, directory, writers)


@dataclass
class ResolvedWeights:
    """Where a source's two files are, and what to check them against."""
    config_path: Path
    weights_path: Path
    label: str  # how error messages name the source
    record: WeightRecord | None = None
    cached: bool = False  # from the Hub cache: evict on a checksum mismatch


def _local(source: str) -> ResolvedWeights:
    path = Path(source).expanduser()
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            found = listing(p.name for p in path.iterdir()) or "nothing"
            raise AttnzooError(f"directory {source!r} has no {WEIGHTS_NAME} (found: {found}); attnzoo weights are "
                               f"{WEIGHTS_NAME} + {CONFIG_NAME}, written by save_pretrained or `attnzoo export`.")
        return ResolvedWeights(path / CONFIG_NAME, weights, source)
    if path.suffix == ".safetensors":
        return ResolvedWeights(path.parent / CONFIG_NAME, path, source)
    if path.suffix in (".ckpt", ".pth", ".pt", ".bin", ".tar"):
        raise AttnzooError(f"{source!r} is a pickle checkpoint; attnzoo.load reads safetensors only. Turn a "
                           f"Lightning checkpoint into weights with `attnzoo export {source} --out DIR`, or an "
                           "official release with `attnzoo convert`.")
    raise AttnzooError(f"{source!r} is neither a directory nor a .safetensors file.")


def _from_hub(repo_id: str, revision: str | None, record: WeightRecord | None = None) -> ResolvedWeights:
    config = hub.download(repo_id, CONFIG_NAME, revision)
    # Take the weights from the very commit the config came from, even if a branch moves in between.
    commit = hub.commit_of(config) or revision
    weights = hub.download(repo_id, record.filename if record else WEIGHTS_NAME, commit)
    return ResolvedWeights(config, weights, f"hf-hub:{repo_id}@{commit}" if commit else f"hf-hub:{repo_id}",
                           record=record, cached=True)


def _no_weights_yet(name: str, records: dict[str, WeightRecord]) -> AttnzooError:
    canonical = get_spec(name).name
    published = ", ".join(sorted(records)) or "none yet"
    train = (f"train with `attnzoo fit --config configs/X.yaml --model.model {canonical}`, then "
             f"`attnzoo push CKPT --repo ORG/NAME` and load with attnzoo.load('hf-hub:ORG/NAME')")
    released = release_of(canonical)
    if released is None:
        how = (f"To produce them: {train}; or start from plain ImageNet weights with "
               f"attnzoo.create_model({canonical!r}, backbone_weights=...).")
    else:
        # An official release is minutes away (one download, one command); training is days: say it first.
        release, file = released
        head = " (a detection backbone: its classifier must be trained)" if release in BACKBONE_ONLY else ""
        how = (f"The official release converts in one step{head}: download {file} (docs/weights.md links it), "
               f"then `attnzoo convert --from {release} {file} --model {canonical} --out DIR` and "
               f"attnzoo.load('DIR'). Or {train}.")
    return AttnzooError(f"no published weights for {canonical!r} in the zoo's index (published: {published}). {how}")


def resolve(source: str, revision: str | None = None) -> ResolvedWeights:
    """Find the config.json and model.safetensors of a source (downloading them when it names the Hub)."""
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise AttnzooError(f"a weights source must be a non-empty string, got {source!r}.")
    source = str(source).strip()
    if source.startswith("hf-hub:"):
        repo_id, rev = hub.parse_hub_source(source, revision)
        return _from_hub(repo_id, rev)
    if Path(source).expanduser().exists():
        if revision:
            raise AttnzooError(f"revision={revision!r} applies to Hub sources only, not the local path {source!r}.")
        return _local(source)
    records = load_index()
    if source in records:
        record = records[source]
        if revision and revision != record.revision:
            hub.check_names(record.repo_id, revision=revision)  # the message below suggests it
            raise AttnzooError(f"{source!r} is pinned to revision {record.revision} by the zoo's index; for another "
                               f"revision load 'hf-hub:{record.repo_id}@{revision}' (unverified).")
        return _from_hub(record.repo_id, record.revision, record)
    try:
        get_spec(source)
    except AttnzooError:
        pass
    else:
        raise _no_weights_yet(source, records)
    if _ORG_NAME.match(source) and _hub_source_ok("hf-hub:" + source):
        raise AttnzooError(f"{source!r} is not a local path; for a Hub repo write 'hf-hub:{source}'.")
    if "/" in source or "\\" in source or source.endswith(".safetensors"):
        raise AttnzooError(f"no such file or directory: {source!r}.")
    raise unknown("weights", source, list(records) + list(MODELS),
                  accepted="a name from the zoo's index, hf-hub:ORG/NAME[@REVISION], or a local directory or "
                  ".safetensors file")


def _hub_source_ok(source: str) -> bool:
    """Whether ``source`` is an hf-hub: source attnzoo accepts (a message suggests only what is accepted)."""
    try:
        hub.parse_hub_source(source)
    except AttnzooError:
        return False
    return True


def _refuse_if_changed(resolved: ResolvedWeights, path: Path, expected: str, what: str) -> None:
    record = resolved.record
    actual = sha256_file(path)
    if actual != expected:
        if resolved.cached:
            hub.evict(path)
        raise AttnzooError(
            f"refusing the {what} of {record.name!r} from {resolved.label}: sha256 {actual} differs from "
            f"{expected} in the zoo's index ({record.index}). The file was removed from the local cache; "
            "the copy on the Hub (or the mirror in HF_ENDPOINT) does not match what the zoo published — report it.")


def verify(resolved: ResolvedWeights) -> None:
    """Refuse a model.safetensors or config.json whose sha256 is not the index's, and make sure the cache never
    serves it again. A changed config.json is refused like changed weights: label names in another order or
    another mean would give wrong answers from the right tensors."""
    record = resolved.record
    if record is None:
        return
    _refuse_if_changed(resolved, resolved.weights_path, record.sha256, "weights")
    if record.config_sha256 is not None:
        _refuse_if_changed(resolved, resolved.config_path, record.config_sha256, "config.json")
    else:
        log.warning("the zoo's index record %r (%s) pins model.safetensors only: its config.json (label names, "
                    "preprocessing) is not verified; `attnzoo push` prints records with config_sha256.",
                    record.name, record.index)


def load(source: str, num_classes: int | None = None, revision: str | None = None, device: str | torch.device = "cpu",
         strict: bool = True, features_only: bool = False, **features) -> nn.Module:
    """Load attnzoo weights and return the model, in eval mode, on ``device``.

    Args:
        source: a name from the zoo's index (``checkpoints/index.json``), ``hf-hub:ORG/NAME[@REVISION]``,
            a local directory with model.safetensors + config.json, or a .safetensors file with a config.json
            beside it.
        num_classes: a different number of classes resets the classifier (it then needs training).
        revision: a branch, tag or commit of a Hub repo (same as ``@REVISION``).
        device: where the model goes.
        strict: with ``False``, missing or unexpected keys are logged instead of refused.
        features_only: return the multi-scale features network of the loaded model (its head dropped, and
            said so in a warning); it takes ``out_indices``, ``frozen_stages``, ``norm_eval``, ``frozen_bn``
            as ``attnzoo.create_model`` does.

    The model carries its :class:`~attnzoo.registry.ModelConfig` as ``model.config``, with the
    ``preprocessing`` (input size, interpolation, crop fraction, mean, std) and ``class_names`` (config.json's
    ``label_names``) the weights were trained with.
    """
    options = feature_options(features_only, features)  # what remains in features is not an option of load
    if features:
        raise AttnzooError(f"load() has no option {', '.join(map(repr, features))}; with features_only it takes "
                           f"{', '.join(FEATURE_OPTIONS)}.")
    resolved = resolve(source, revision)
    verify(resolved)
    cfg = read_config(resolved.config_path, resolved.label)
    if resolved.record is not None and cfg["architecture"] != resolved.record.architecture:
        raise AttnzooError(f"{resolved.label}: config.json names architecture {cfg['architecture']!r} but the zoo's "
                           f"index records {resolved.record.architecture!r} for {resolved.record.name!r}.")
    state_dict = read_weights(resolved.weights_path)
    model = build_model(cfg, state_dict, num_classes=num_classes, strict=strict, what=f"the weights of {resolved.label}")
    if features_only:
        from attnzoo.backbones.features import features_of

        model = features_of(model, **options)
    return model.to(device).eval()


def load_state_dict(source: str, revision: str | None = None) -> tuple[dict | None, dict[str, torch.Tensor]]:
    """(config.json or None, state dict) of an attnzoo weights source; the retrofit path uses it."""
    resolved = resolve(source, revision)
    verify(resolved)
    cfg = read_config(resolved.config_path, resolved.label) if resolved.config_path.is_file() else None
    return cfg, read_weights(resolved.weights_path)
