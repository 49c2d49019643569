"""What a checkpoint given with ``--ckpt_path`` may change in a command's configuration.

LightningCLI merges a checkpoint's stored hyper-parameters into the configuration, over what the user typed.
A checkpoint is data, possibly from someone else, so here it may only fill in what the user did not give:

- Options the user gave (a command-line flag or a ``--config`` file) win, always.
- Classes it names (optimizer, schedule) must belong to attnzoo, torch or lightning; any other name is refused
  before anything is imported.
- It never starts a download: ``model_args.backbone_weights`` is dropped (the weights are in the checkpoint).
- Values must have the shape of the option (a name, a mapping, a plain value); anything else is refused.
- An explicit ``--model.model`` that names another architecture than the checkpoint's is one error naming both.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from pathlib import Path

import yaml

from attnzoo.config_files import load_yaml, option_values
from attnzoo.errors import AttnzooError

TRUSTED_PACKAGES = ("attnzoo", "torch", "lightning")
# Filled in by the data module on the command line (link_arguments), never by the checkpoint.
LINKED = ("num_classes", "class_names", "preprocessing")
CLASS_OPTIONS = ("optimizer", "lr_scheduler")
NEVER_FROM_CHECKPOINT = {"backbone_weights": "the checkpoint's own weights replace them; loading them would mean a download"}


def _model_section(config) -> Mapping:
    """The ``model`` options of a parsed config (``init_args`` unwrapped); {} when there are none."""
    if not isinstance(config, Mapping):
        return {}
    model = config.get("model")
    if isinstance(model, Mapping) and isinstance(model.get("init_args"), Mapping):
        return {**model["init_args"], **({"model": model["model"]} if "model" in model else {})}
    return model if isinstance(model, Mapping) else {}


def _load_yaml_value(value: str, flag: str):
    """What ``flag value`` holds (a YAML file or inline YAML), within load_yaml's bounds; None when unreadable."""
    path = Path(value)
    try:
        text = path.read_text() if path.is_file() else value
        return load_yaml(text, f"{flag} {value!r}")
    except (OSError, yaml.YAMLError):
        return None


def explicit_model_options(argv: list[str], subcommands: tuple[str, ...]) -> set[str]:
    """Names of the ``model`` options the user gave on the command line or in a ``--config`` file."""
    explicit: set[str] = set()
    for arg in argv:
        flag = arg.partition("=")[0]
        if flag.startswith("--model."):
            parts = flag[len("--model."):].split(".")
            if parts[0] == "init_args" and len(parts) > 1:
                parts = parts[1:]
            explicit.add(parts[0])
    for value in option_values(argv, ("--model",)):
        loaded = _load_yaml_value(value, "--model")
        explicit.update(_model_section({"model": loaded}))
    for value in option_values(argv, ("--config", "-c")):
        loaded = _load_yaml_value(value, "--config")
        explicit.update(_model_section(loaded))
        for sub in subcommands:  # a top-level config with a section per subcommand
            if isinstance(loaded, Mapping):
                explicit.update(_model_section(loaded.get(sub)))
    return explicit


def _named_classes(value, where: str) -> Iterator[tuple[str, str]]:
    """(class path, where) for every ``class_path`` inside ``value``."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "class_path":
                yield str(item), where
            else:
                yield from _named_classes(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _named_classes(item, f"{where}[{i}]")


def _plain(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _trusted(class_path: str) -> bool:
    return class_path.split(".")[0] in TRUSTED_PACKAGES


def model_options_from_checkpoint(hparams: Mapping, accepted: set[str], explicit: set[str],
                                  path: str) -> tuple[dict, list[str]]:
    """The options a checkpoint's ``hyper_parameters`` may fill in, and notes on what was left out.

    Raises :class:`AttnzooError` for a hyper-parameter that names an untrusted class or has a value of the
    wrong shape.
    """
    def refuse(why: str) -> AttnzooError:
        return AttnzooError(f"refused the hyper_parameters of checkpoint {path!r}: {why}. A checkpoint may name "
                            f"classes of {', '.join(TRUSTED_PACKAGES)} only and holds plain values otherwise.")

    options, notes = {}, []
    for key, value in hparams.items():
        if key.startswith("_") or key in LINKED or key not in accepted or key in explicit:
            continue
        for class_path, where in _named_classes(value, key):
            if not _trusted(class_path):
                raise refuse(f"its {where} names the class {class_path!r}, outside {', '.join(TRUSTED_PACKAGES)} "
                             f"(give --model.{key} yourself to choose it)")
        if key == "model":
            if not isinstance(value, str):
                raise refuse(f"model is {type(value).__name__}, not a registry name")
        elif key.endswith("_args") and key != "model_args":  # a detector's detector_args: plain options
            if value is not None and not (isinstance(value, Mapping) and all(map(_plain, value.values()))):
                raise refuse(f"{key} is not a mapping of plain values")
        elif key == "model_args":
            if value is None:
                pass
            elif not isinstance(value, Mapping):
                raise refuse(f"model_args is {type(value).__name__}, not a mapping")
            else:
                value = dict(value)
                for name, why in NEVER_FROM_CHECKPOINT.items():
                    if value.pop(name, None) is not None:
                        notes.append(f"ignored the checkpoint's model_args.{name}: {why}")
        elif key in CLASS_OPTIONS:
            if value is not None and not (isinstance(value, Mapping) and isinstance(value.get("class_path"), str)):
                raise refuse(f"{key} is {type(value).__name__}, not a class_path mapping")
        elif not _plain(value):
            raise refuse(f"{key} is {type(value).__name__}, not a plain value")
        options[key] = value
    return options, notes


def accepted_options(cls) -> set[str]:
    return {name for name in inspect.signature(cls.__init__).parameters if name != "self"}


def canonical_model_name(name: str) -> str:
    from attnzoo.registry import get_spec

    try:
        return get_spec(name).name
    except Exception:  # noqa: BLE001 - an unknown name is reported when the model is built
        return name


def check_architecture(checkpoint_model, explicit_model, path: str, source: str) -> None:
    """One error when the user's model and the checkpoint's differ."""
    if not isinstance(checkpoint_model, str) or not isinstance(explicit_model, str):
        return
    if canonical_model_name(checkpoint_model) != canonical_model_name(explicit_model):
        raise AttnzooError(
            f"{source} gives model {explicit_model!r}, but checkpoint {path!r} holds {checkpoint_model!r}: its weights "
            f"cannot load into another architecture. Drop the model option to use {checkpoint_model!r}, or give a "
            f"checkpoint of {explicit_model!r}.")


def check_state_fits(model_state: Mapping, checkpoint_state: Mapping, path: str, built: str) -> None:
    """One error when the checkpoint's weights do not fit the model that was built (keys or shapes)."""
    from attnzoo.weights.format import state_dict_problems

    problems, _ = state_dict_problems(model_state, checkpoint_state, missing_label="missing from the checkpoint",
                                      unexpected_label="not in the model")
    if problems:
        raise AttnzooError(f"checkpoint {path!r} does not fit the model built here ({built}): {'; '.join(problems)}. "
                           "Give the options the checkpoint was trained with, or drop those that differ.")
