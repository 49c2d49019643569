"""The zoo's index of published weights: ``checkpoints/index.json`` (schema in its README.md).

One record per weight, keyed by the name ``attnzoo.load(name)`` accepts. A record pins the Hub repo to a
commit and gives the sha256 of its safetensors file and of its config.json, so ``load`` can refuse a file that
is not the one the zoo published: other weights, or the same weights with other label names or preprocessing.
Records written before config.json was pinned (no ``config_sha256``) still load, with a warning. The index
ships inside the package (package data), so ``pip install attnzoo`` carries it.

``ATTNZOO_CHECKPOINTS`` (paths to more index files, separated by ``os.pathsep``) adds records, for a lab's
own published weights; their records win over the shipped ones of the same name.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from attnzoo.errors import AttnzooError

# The package data attnzoo/checkpoints/ (a link to the repository's top-level checkpoints/, see pyproject.toml).
INDEX_PATH = Path(__file__).resolve().parents[1] / "checkpoints" / "index.json"
INDEX_ENV = "ATTNZOO_CHECKPOINTS"
INDEX_FORMAT_VERSION = 1

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
REQUIRED = ("architecture", "repo_id", "revision", "sha256", "num_classes", "source")


@dataclass(frozen=True)
class WeightRecord:
    name: str
    architecture: str
    repo_id: str
    revision: str
    sha256: str
    num_classes: int
    source: dict | str
    config_sha256: str | None = None  # of config.json; None in records made before it was pinned
    filename: str = "model.safetensors"
    dataset: str | None = None
    metrics: dict = field(default_factory=dict)
    config: dict | str | None = None
    evaluation: dict | None = None  # how the metrics were measured (config.json's "evaluation")
    index: str = ""  # which index file holds the record, for error messages


def _check(name: str, raw: dict, where: str) -> WeightRecord:
    if not isinstance(raw, dict):
        raise AttnzooError(f"{where}: record {name!r} must be a JSON object.")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise AttnzooError(f"{where}: record {name!r} lacks {', '.join(missing)} (required: {', '.join(REQUIRED)}).")
    if not _SHA256.match(str(raw["sha256"])):
        raise AttnzooError(f"{where}: record {name!r} has sha256 {raw['sha256']!r}; expected 64 lowercase hex digits.")
    if "config_sha256" in raw and not _SHA256.match(str(raw["config_sha256"])):
        raise AttnzooError(f"{where}: record {name!r} has config_sha256 {raw['config_sha256']!r}; expected 64 "
                           "lowercase hex digits (the sha256 of config.json, printed by attnzoo push).")
    if not _COMMIT.match(str(raw["revision"])):
        raise AttnzooError(f"{where}: record {name!r} has revision {raw['revision']!r}; a record pins a commit "
                           "(40 hex digits), never a branch that can move.")
    if not _REPO_ID.match(str(raw["repo_id"])):
        raise AttnzooError(f"{where}: record {name!r} has repo_id {raw['repo_id']!r}; expected 'org/name'.")
    known = {f for f in WeightRecord.__dataclass_fields__ if f not in ("name", "index")}
    extra = sorted(set(raw) - known)
    if extra:
        raise AttnzooError(f"{where}: record {name!r} has unknown fields {', '.join(extra)} "
                           f"(accepted: {', '.join(sorted(known))}).")
    return WeightRecord(name=name, index=where, **raw)


def read_index(path: str | Path) -> dict[str, WeightRecord]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AttnzooError(f"weights index {str(path)!r} does not exist (from {INDEX_ENV} or the package).") from None
    except json.JSONDecodeError as err:
        raise AttnzooError(f"weights index {str(path)!r} is not valid JSON: {err}.") from None
    if not isinstance(data, dict) or data.get("format_version") != INDEX_FORMAT_VERSION or not isinstance(
            data.get("weights"), dict):
        raise AttnzooError(f"weights index {str(path)!r} must be {{\"format_version\": {INDEX_FORMAT_VERSION}, "
                           "\"weights\": {name: record}}.")
    return {name: _check(name, raw, str(path)) for name, raw in data["weights"].items()}


def index_paths() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(INDEX_ENV, "").split(os.pathsep) if p.strip()]
    return [INDEX_PATH, *extra]


def load_index() -> dict[str, WeightRecord]:
    """All records, the package's first, then those of ``ATTNZOO_CHECKPOINTS`` (later files win)."""
    records: dict[str, WeightRecord] = {}
    for path in index_paths():
        records.update(read_index(path))
    return records


def index_entry(name: str, architecture: str, repo_id: str, revision: str, sha256: str, config_sha256: str,
                num_classes: int, source, metrics=None, dataset=None, config=None, evaluation=None) -> dict:
    """The record ``attnzoo push`` prints, ready to paste under ``weights`` in an index file."""
    record = {"architecture": architecture, "repo_id": repo_id, "revision": revision, "sha256": sha256,
              "config_sha256": config_sha256, "num_classes": num_classes, "source": source}
    if metrics:
        record["metrics"] = metrics
    if dataset:
        record["dataset"] = dataset
    if evaluation:
        record["evaluation"] = evaluation
    if config is not None:
        record["config"] = config
    return {name: record}
