"""Publishing a weights directory on the Hub, and the zoo's index record that pins it (``attnzoo push``).

The directory is checked before anything is uploaded: config.json must pass the format's strict reading, and
model.safetensors must load into the architecture it names with every key and shape matching. One commit
then adds model.safetensors, config.json (the very bytes hashed) and a model card rendered from config.json
for this repo. The record carries the commit and the sha256 of both files, so ``attnzoo.load(NAME)`` refuses
other weights and also the same weights with another config.json (label names reordered, another mean).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from attnzoo.errors import AttnzooError
from attnzoo.weights import hub
from attnzoo.weights.card import render_card
from attnzoo.weights.format import (
    CARD_NAME,
    CONFIG_NAME,
    WEIGHTS_NAME,
    build_model,
    listing,
    parse_config,
    read_weights,
    sha256_file,
)
from attnzoo.weights.index import index_entry

_NAME = re.compile(r"^[\w][\w.-]*$")


@dataclass(frozen=True)
class Published:
    commit: str
    url: str
    record: dict  # {name: record}, to paste under "weights" in an index file
    config: dict  # the config.json that was pushed


def check_repo_id(repo_id: str, revision: str | None = None) -> None:
    """--repo and --revision as the Hub accepts them, before any export or request."""
    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise AttnzooError(f"--repo must be ORG/NAME, got {repo_id!r}.")
    hub.check_names(repo_id, revision=revision)


def verify_directory(directory: str | Path) -> tuple[dict, bytes]:
    """(config.json, its bytes) of a weights directory whose weights load strictly into its architecture."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AttnzooError(f"{str(directory)!r} is not a weights directory.")
    missing = [name for name in (WEIGHTS_NAME, CONFIG_NAME) if not (directory / name).is_file()]
    if missing:
        found = listing(p.name for p in directory.iterdir()) or "nothing"
        raise AttnzooError(f"{str(directory)!r} has no {' or '.join(missing)} (found: {found}); push takes a directory "
                           "written by `attnzoo convert` or `attnzoo export` (safetensors), or a Lightning checkpoint.")
    config_bytes = (directory / CONFIG_NAME).read_bytes()
    cfg = parse_config(config_bytes, repr(str(directory / CONFIG_NAME)))
    build_model(cfg, read_weights(directory / WEIGHTS_NAME), strict=True, what=f"the weights in {str(directory)!r}")
    return cfg, config_bytes


def push(directory: str | Path, repo_id: str, name: str | None = None, revision: str | None = None,
         private: bool = False, license: str = "apache-2.0", datasets: list[str] | None = None,
         message: str = "Upload attnzoo weights") -> Published:
    """Verify a weights directory, commit it to ``repo_id`` and return the commit and the index record.

    ``name`` is the record's key, the name ``attnzoo.load`` will take (default: the architecture, e.g.
    ``eca_mobilenetv2``; ``eca_mobilenetv2.ecanet`` for a second weight of one model). The model card is
    rendered from config.json for this repo, with ``license`` and ``datasets`` (default: the data set the
    weights were evaluated on); a README.md in the directory is not uploaded.
    """
    check_repo_id(repo_id, revision)
    if name is not None and not (isinstance(name, str) and _NAME.match(name)):
        raise AttnzooError(f"--name must be a registry name or NAME.TAG (letters, digits, _ . -), got {name!r}.")
    directory = Path(directory)
    cfg, config_bytes = verify_directory(directory)
    weights_sha256 = sha256_file(directory / WEIGHTS_NAME)
    card = render_card(cfg, repo_id=repo_id, license=license, datasets=datasets)
    commit, url = hub.upload_files({WEIGHTS_NAME: directory / WEIGHTS_NAME, CONFIG_NAME: config_bytes,
                                    CARD_NAME: card.encode("utf-8")}, repo_id, revision=revision, private=private,
                                   message=message)
    evaluation = cfg.get("evaluation")
    record = index_entry(
        name or cfg["architecture"], cfg["architecture"], repo_id, commit, weights_sha256,
        hashlib.sha256(config_bytes).hexdigest(), cfg["num_classes"],
        source=cfg.get("source") or "not recorded in config.json", metrics=cfg.get("metrics"),
        dataset=evaluation["dataset"] if evaluation else (datasets or [None])[0], evaluation=evaluation)
    return Published(commit, url, record, cfg)
