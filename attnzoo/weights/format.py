"""The on-disk format of one published weight, and building a model back from it.

A weight is a directory with three files:

- ``model.safetensors``: the state dict with clean keys (no ``module.``, no ``_orig_mod.``);
- ``config.json``: the model's :class:`~attnzoo.registry.ModelConfig` (architecture, num_classes, model_args,
  preprocessing, label_names), then metrics, the training config, the source and the attnzoo version;
- ``README.md``: the model card (see :mod:`attnzoo.weights.card`).

safetensors holds tensors only, so reading a weight never runs code: that is the point of the format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from attnzoo._version import __version__
from attnzoo.errors import AttnzooError, listing
from attnzoo.registry import ModelConfig, build, config_of

log = logging.getLogger("attnzoo.weights")

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
FORMAT_VERSION = 1

# Prefixes that wrappers add to every key: DataParallel/DDP (`module.`) and torch.compile (`_orig_mod.`).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def clean_key(key: str) -> str:
    """Strip wrapper prefixes wherever they stack at the start of a key (`module._orig_mod.conv1.weight`)."""
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key.replace("._orig_mod.", ".")


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new = clean_key(key)
        if new in cleaned:
            raise AttnzooError(f"two entries of the state dict map to the same key {new!r} once wrapper prefixes "
                               f"({', '.join(WRAPPER_PREFIXES)}) are stripped.")
        cleaned[new] = value
    return cleaned


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _jsonable(value, what: str):
    """Plain JSON values only: a config.json that cannot be read back is worse than an early error."""
    def convert(v):
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {str(k): convert(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, Path):
            return str(v)
        raise AttnzooError(f"{what} must hold plain values (numbers, strings, lists, dicts); got {type(v).__name__} "
                           f"{v!r}.")
    return convert(value)


def model_config(model: nn.Module) -> ModelConfig:
    """The :class:`ModelConfig` a model carries; refused for a model that does not come from attnzoo."""
    config = config_of(model)
    if config is None:
        raise AttnzooError("save_pretrained needs a model built by attnzoo.create_model or attnzoo.load (it carries "
                           "`config`, the ModelConfig that rebuilds it); this model has none.")
    return config


def build_config(model: nn.Module, metrics=None, class_names=None, train_config=None, source=None) -> dict:
    """The config.json of ``model``: its :class:`ModelConfig` (with ``class_names``, when given, as its
    label names) plus what the weights record beside it."""
    config = model_config(model)
    if class_names is not None:
        config = config.replace(class_names=class_names)
    return {
        **config.to_dict(),
        "metrics": _jsonable(dict(metrics or {}), "metrics"),
        "train_config": _jsonable(train_config, "train_config") if train_config is not None else None,
        "source": _jsonable(source, "source") if source is not None else None,
        "attnzoo_version": __version__,
        "format_version": FORMAT_VERSION,
    }


def write_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import save

    # Clones make every tensor own its storage: safetensors refuses tensors that share memory.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in clean_state_dict(model.state_dict()).items()}
    # One metadata entry only: safetensors writes a metadata map in no fixed order, and the same weights
    # must give the same bytes (the sha256 in the index is computed on export and checked on load).
    data = save(tensors, metadata={"format": "pt"})
    # Written by Python, not by safetensors' own file writer: a full disk is then an OSError naming the file,
    # which the atomic writer turns into one line, rather than a Rust error string.
    with open(path, "wb") as handle:
        handle.write(data)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise AttnzooError(f"cannot read weights {str(path)!r}: not a valid safetensors file ({err}).") from None


# config.json: the model's keys (ModelConfig.to_dict), then what the weights record beside the model.
MODEL_KEYS = ("architecture", "num_classes", "model_args", "preprocessing", "label_names")
RECORD_KEYS = ("metrics", "train_config", "source", "evaluation", "attnzoo_version", "format_version")
# The measured accuracy `attnzoo evaluate` records: field -> (accepted types, what the error says is accepted).
EVALUATION_FIELDS = {
    "dataset": ((str,), "the data set's name, e.g. imagenet-1k"),
    "data": ((str,), "the folder evaluated"),
    "split": ((str,), "validation or test"),
    "images": ((int,), "the number of images evaluated, a positive integer"),
    "unreadable": ((int,), "the number of images skipped, an integer >= 0"),
    "classes": ((int,), "the number of class folders, a positive integer"),
    "class_mapping": ((str,), "how folders map to outputs"),
    "top1": ((int, float), "a fraction in [0, 1]"),
    "top5": ((int, float), "a fraction in [0, 1]"),
    "date": ((str,), "an ISO date, YYYY-MM-DD"),
}
EVALUATION_REQUIRED = ("dataset", "images", "top1", "top5", "date")


def _plain_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_evaluation(evaluation, where: str) -> None:
    if not isinstance(evaluation, Mapping):
        raise AttnzooError(f"{where}: evaluation must be an object ({', '.join(EVALUATION_FIELDS)}), got "
                           f"{evaluation!r}.")
    unknown = sorted(set(evaluation) - set(EVALUATION_FIELDS))
    missing = [k for k in EVALUATION_REQUIRED if k not in evaluation]
    if unknown or missing:
        what = f"unknown field(s) {', '.join(unknown)}" if unknown else f"lacks {', '.join(missing)}"
        raise AttnzooError(f"{where}: evaluation {what} (accepted: {', '.join(EVALUATION_FIELDS)}; required: "
                           f"{', '.join(EVALUATION_REQUIRED)}).")
    for key, value in evaluation.items():
        types, accepted = EVALUATION_FIELDS[key]
        ok = isinstance(value, types) and not isinstance(value, bool)
        if ok and key in ("top1", "top5"):
            ok = 0 <= value <= 1
        elif ok and key in ("images", "classes"):
            ok = value > 0
        elif ok and key == "unreadable":
            ok = value >= 0
        if not ok:
            raise AttnzooError(f"{where}: evaluation.{key} must be {accepted}, got {value!r}.")


def check_config(cfg, where: str = "config.json") -> dict:
    """Refuse a config.json that is not exactly what this attnzoo writes, with one line naming the field, its
    value and what is accepted. Nothing in it is ever imported or executed; this makes sure nothing is
    silently misread either (a label list of the wrong length, a number as a string, a newer format)."""
    if not isinstance(cfg, dict):
        raise AttnzooError(f"{where} must be a JSON object, got {type(cfg).__name__}: it is not an attnzoo "
                           "config.json.")
    missing = [k for k in ("architecture", "num_classes") if k not in cfg]
    if missing:
        raise AttnzooError(f"{where} lacks {', '.join(missing)}: it is not an attnzoo config.json.")
    version = cfg.get("format_version")
    if version is None or isinstance(version, bool) or version != FORMAT_VERSION:
        raise AttnzooError(f"{where}: format_version {version!r} is not one this attnzoo {__version__} reads "
                           f"(accepted: {FORMAT_VERSION}); weights of another format need the attnzoo that wrote "
                           "them.")
    unknown = sorted(set(cfg) - set(MODEL_KEYS) - set(RECORD_KEYS))
    if unknown:
        raise AttnzooError(f"{where} has unknown field(s) {', '.join(unknown)} (accepted: "
                           f"{', '.join(MODEL_KEYS + RECORD_KEYS)}).")
    metrics = cfg.get("metrics")
    if metrics is not None and (not isinstance(metrics, dict) or not all(
            v is None or _plain_number(v) for v in metrics.values())):
        raise AttnzooError(f"{where}: metrics must be an object of metric name -> number (or null), got {metrics!r}.")
    source = cfg.get("source")
    if source is not None and not isinstance(source, (str, dict)):
        raise AttnzooError(f"{where}: source must be an object or a string (or null), got {source!r}.")
    if cfg.get("evaluation") is not None:
        check_evaluation(cfg["evaluation"], where)
    if cfg.get("attnzoo_version") is not None and not isinstance(cfg["attnzoo_version"], str):
        raise AttnzooError(f"{where}: attnzoo_version must be a string, got {cfg['attnzoo_version']!r}.")
    try:
        ModelConfig.from_dict(cfg)
    except AttnzooError as err:
        raise AttnzooError(f"{where}: {err}") from None
    return cfg


# config.json nests a few levels (model_args, preprocessing, train_config); deeper is not one attnzoo wrote, and
# Python's json and everything after it recurse: a file of 100,000 brackets must be one line, not a RecursionError.
MAX_CONFIG_DEPTH = 32


def _depth_exceeds(value, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return False


def parse_config(data: bytes, where: str) -> dict:
    """A config.json's bytes, parsed and checked (:func:`check_config`)."""
    try:
        cfg = json.loads(data.decode("utf-8"))
        too_deep = _depth_exceeds(cfg, MAX_CONFIG_DEPTH)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AttnzooError(f"{where} is not valid JSON: {err}.") from None
    except RecursionError:
        too_deep = True
    if too_deep:
        raise AttnzooError(f"{where} nests deeper than {MAX_CONFIG_DEPTH} levels: it is not an attnzoo config.json.")
    return check_config(cfg, where)


def read_config(path: str | Path, label: str | None = None) -> dict:
    """config.json, parsed and checked; ``label`` names its source in errors (default: the path)."""
    path = Path(path)
    if not path.is_file():
        raise AttnzooError(f"no {CONFIG_NAME} at {str(path)!r}: attnzoo weights are a directory with "
                           f"{WEIGHTS_NAME} and {CONFIG_NAME} (write one with attnzoo.save_pretrained or "
                           f"`attnzoo export`).")
    return parse_config(path.read_bytes(), f"{CONFIG_NAME} of {label}" if label else repr(str(path)))


def state_dict_problems(
    own: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    fits=lambda value, target: value.shape == target.shape,
    missing_label: str = "missing keys",
    unexpected_label: str = "unexpected keys",
    own_label: str = "model",
) -> tuple[list[str], bool]:
    """What keeps ``given`` from loading into a model whose state dict is ``own``, in words, and whether
    any tensor has the wrong shape (which no ``strict=False`` can excuse)."""
    missing = set(own) - set(given)
    unexpected = set(given) - set(own)
    mis_shaped = [f"{k} {list(given[k].shape)} ({own_label}: {list(own[k].shape)})"
                  for k in sorted(set(own) & set(given)) if not fits(given[k], own[k])]
    problems = []
    if mis_shaped:
        problems.append(f"shapes differ for {listing(mis_shaped, 5)}")
    if missing:
        problems.append(f"{missing_label}: {listing(missing)}")
    if unexpected:
        problems.append(f"{unexpected_label}: {listing(unexpected)}")
    return problems, bool(mis_shaped)


def dtype_problems(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """(tensors refused, tensors converted), in words. A floating tensor of the network must come as a floating
    tensor (an int8 cast of the weights loads into float32 as garbage, and evaluates to chance); an integer
    buffer (BatchNorm's num_batches_tracked) as an integer one. Another floating type is converted: exactly from
    float16 and bfloat16 (every such value is a float32), rounded from float64."""
    refused, converted = [], []
    for key in sorted(set(own) & set(given)):
        mine, theirs = own[key].dtype, given[key].dtype
        if mine == theirs:
            continue
        if mine.is_floating_point != theirs.is_floating_point or theirs.is_complex or theirs == torch.bool:
            refused.append(f"{key} ({str(theirs).removeprefix('torch.')}; the network's is "
                           f"{str(mine).removeprefix('torch.')})")
        elif mine.is_floating_point:
            exact = torch.finfo(theirs).bits < torch.finfo(mine).bits
            converted.append(f"{str(theirs).removeprefix('torch.')} -> {str(mine).removeprefix('torch.')}"
                             f"{' (exact)' if exact else ' (rounded)'}")
    return refused, sorted(set(converted))


def check_fits(own: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], architecture: str,
               strict: bool = True, what: str = "the weights") -> tuple[list[str], list[str]]:
    """Refuse ``given`` (a cleaned state dict) for a network whose state dict is ``own`` when a tensor has the
    wrong shape or a type the network cannot use, or (``strict``) when keys are missing or unexpected; returns
    (key problems to log, type conversions to log). ``own`` may be on the meta device: only shapes and dtypes
    are read."""
    problems, mis_shaped = state_dict_problems(own, given)
    refused, converted = dtype_problems(own, given)
    if refused:
        raise AttnzooError(f"{what} are not weights {architecture} can use: {listing(refused, 3)} "
                           f"({len(refused)} tensor(s) of a non-floating type where the network has floating ones, "
                           "or the reverse). Accepted: float32, float16, bfloat16 or float64 weights; integer "
                           "buffers such as num_batches_tracked as integers.")
    if mis_shaped or (problems and strict):
        hint = "" if mis_shaped else " Pass strict=False to load the matching keys anyway."
        raise AttnzooError(f"{what} do not fit {architecture} ({'; '.join(problems)}).{hint}")
    return problems, converted


def apply_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
                     what: str = "the weights") -> None:
    """``load_state_dict`` with errors a user can act on: missing, unexpected, mis-shaped and mistyped keys are
    named."""
    state_dict = clean_state_dict(state_dict)
    fit = check_fits(model.state_dict(), state_dict, model.config.architecture, strict, what)
    _load_checked(model, state_dict, fit, what)


def _load_checked(model: nn.Module, state_dict: Mapping[str, torch.Tensor], fit: tuple[list, list],
                  what: str) -> None:
    """Load a cleaned ``state_dict`` that :func:`check_fits` has passed (``fit``: its problems and conversions,
    said here as warnings); entries the model does not have were refused or reported there."""
    problems, converted = fit
    if problems:
        log.warning("loading %s with strict=False: %s", what, "; ".join(problems))
    if converted:
        log.warning("%s are stored as %s and converted on loading: %s.", what,
                    ", ".join(sorted({c.split(' ->')[0] for c in converted})), "; ".join(converted))
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)


def build_fitting(config: ModelConfig, state_dict: Mapping[str, torch.Tensor], strict: bool = True,
                  what: str = "the weights") -> nn.Module:
    """``build(config)`` with ``state_dict`` loaded. The config's sizes (num_classes, widths) are compared with
    the weights' shapes on the meta device first, where building costs no memory: a config.json that says
    ``num_classes: 1000000000`` is refused in a moment instead of allocating terabytes for the classifier.
    That one check is the load's: the real model has the skeleton's keys, shapes and dtypes."""
    state_dict = clean_state_dict(state_dict)
    with torch.device("meta"):
        skeleton = build(config)
    fit = check_fits(skeleton.state_dict(), state_dict, config.architecture, strict, what)
    model = build(config)
    _load_checked(model, state_dict, fit, what)
    return model


def build_model(cfg: Mapping, state_dict: Mapping[str, torch.Tensor], num_classes: int | None = None,
                strict: bool = True, what: str = "the weights") -> nn.Module:
    """Rebuild the model of a config.json, load its weights, and reset the head for a new ``num_classes``."""
    model = build_fitting(ModelConfig.from_dict(cfg), state_dict, strict=strict, what=what)
    if num_classes is not None and int(num_classes) != model.num_classes:
        log.warning("%s were trained for %d classes; the classifier (%s) is reset to %d classes and needs training.",
                    what, model.num_classes, model.classifier_name, num_classes)
        model.reset_classifier(int(num_classes))  # model.config follows: the new count, no class names
    return model
