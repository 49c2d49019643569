"""The study folder: one recipe, a list of models, a number of seeds, and one run folder per (model, seed).

    DIR/study.json              the recipe's sha256, the models, the seeds (what a re-run is checked against)
    DIR/recipe.yaml             the recipe as it was when the study began: every run, local or SLURM, reads it
    DIR/runs/<model>/seed<k>/   an ordinary `attnzoo fit` folder (checkpoints/, logs/) plus
        fit.log                 the fit's own output
        status.json             running / finished / failed, with the exit code, the time of its last part
                                (seconds) and of all its parts whose end was recorded (total_seconds)
        result.json             the validation top-1/top-5 of the last epoch and of the best one (once finished)

A study folder never mixes recipes or model lists: opening one with others is refused. The seeds may grow
(``--seeds 5`` after ``--seeds 3`` adds seeds 3 and 4); the runs already there stay.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path

import yaml

from attnzoo.config_files import load_yaml
from attnzoo.errors import AttnzooError, suggest
from attnzoo.files import write_atomically, write_text
from attnzoo.registry import MODELS, get_spec

STUDY_FILE = "study.json"
RECIPE_FILE = "recipe.yaml"
FORMAT = 1
DEFAULT_SEEDS = 3


def write_json(path: Path, value) -> None:
    write_text(path, json.dumps(value, indent=1) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


@dataclasses.dataclass(frozen=True)
class Run:
    """One (model, seed) of a study, and where it lives."""

    model: str
    seed: int
    folder: Path

    @property
    def label(self) -> str:
        return f"{self.model} seed {self.seed}"

    def status(self) -> dict:
        """``{"state": "pending" | "running" | "finished" | "failed", ...}`` as the folder records it."""
        return read_json(self.folder / "status.json") or {"state": "pending"}

    def result(self) -> dict | None:
        return read_json(self.folder / "result.json")

    @property
    def last_checkpoint(self) -> Path:
        return self.folder / "checkpoints" / "last.ckpt"


def canonical_models(names) -> list[str]:
    """The registry's names for ``names``, in order, without repeats; an unknown one ends in one line."""
    names = [names] if isinstance(names, str) else list(names or [])
    if not names:
        raise AttnzooError("--models needs at least two models to compare, e.g. --models r18 se_r18 eca_r18.")
    out = []
    for name in names:
        try:
            canonical = get_spec(name).name
        except AttnzooError:
            raise AttnzooError(f"--models: unknown model {name!r}.{suggest(str(name), MODELS)} "
                               "(`attnzoo list` shows all).") from None
        if canonical not in out:
            out.append(canonical)
    if len(out) < 2:
        raise AttnzooError(f"--models {out[0]}: a comparison needs at least two models, e.g. --models "
                           f"{get_spec(out[0]).backbone} {out[0]}.")
    return out


def check_seeds(seeds) -> int:
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise AttnzooError(f"--seeds {seeds!r}: a confidence interval needs at least 2 seeds per model (3 or more "
                           "for a useful one); give --seeds 3.")
    return seeds


def read_recipe(path: str | os.PathLike) -> tuple[bytes, dict]:
    """The recipe's bytes (what the study's hash is of) and its parsed mapping; one line when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise AttnzooError(f"--config {str(path)!r}: no such file; give a training recipe such as configs/quickstart.yaml.")
    data = path.read_bytes()
    try:
        parsed = load_yaml(data, f"--config {str(path)!r}")
    except yaml.YAMLError as err:
        raise AttnzooError(f"--config {str(path)!r} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(parsed, dict):
        raise AttnzooError(f"--config {str(path)!r} is not a recipe (a YAML mapping with trainer:, model:, data:).")
    return data, parsed


def recipe_notes(recipe: dict, path: str) -> list[str]:
    """What the recipe sets that the study replaces for every run: said once, so nobody wonders which won."""
    notes = []
    model = (recipe.get("model") or {}).get("model") if isinstance(recipe.get("model"), dict) else None
    if model:
        notes.append(f"{path} names model {model!r}; the --models list wins: each run trains its own model.")
    if recipe.get("seed_everything") is not None and not isinstance(recipe["seed_everything"], bool):
        notes.append(f"{path} sets seed_everything {recipe['seed_everything']}; --seeds wins: run k uses seed k.")
    trainer = recipe.get("trainer") if isinstance(recipe.get("trainer"), dict) else {}
    if trainer.get("default_root_dir"):
        notes.append(f"{path} writes to {trainer['default_root_dir']!r}; the study folder wins: runs/<model>/seed<k>/.")
    return notes


@dataclasses.dataclass
class Study:
    """An opened study folder (see the module docstring)."""

    folder: Path
    recipe_sha256: str
    models: list[str]
    seeds: int
    recipe_source: str

    @property
    def recipe(self) -> Path:
        return self.folder / RECIPE_FILE

    def runs(self) -> list[Run]:
        """Every run, seed by seed: a study stopped early has each model at the same number of seeds."""
        return [Run(model, seed, self.folder / "runs" / model / f"seed{seed}")
                for seed in range(self.seeds) for model in self.models]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "recipe_sha256": self.recipe_sha256, "recipe_source": self.recipe_source,
                "models": self.models, "seeds": self.seeds}

    def save(self) -> None:
        write_json(self.folder / STUDY_FILE, self.to_dict())


def open_study(folder: str | os.PathLike) -> Study:
    """A study folder that exists (for ``--report`` and the SLURM tasks)."""
    folder = Path(folder)
    record = read_json(folder / STUDY_FILE) if folder.is_dir() else None
    if record is None:
        raise AttnzooError(f"{str(folder)!r} is not a study folder (no {STUDY_FILE}); start one with attnzoo compare "
                           "--models ... --config RECIPE --out DIR.")
    return Study(folder, record["recipe_sha256"], list(record["models"]), int(record["seeds"]),
                 record.get("recipe_source", ""))


def add_seeds(study: Study, seeds: int) -> Study:
    """The study with ``seeds`` seeds per model: more are added; fewer would drop runs, and are refused."""
    check_seeds(seeds)
    if seeds < study.seeds:
        raise AttnzooError(f"--seeds {seeds}: {study.folder} has {study.seeds} seeds per model; seeds are added to "
                           "a study, never removed (the report uses every finished run).")
    if seeds > study.seeds:
        study = dataclasses.replace(study, seeds=seeds)
        study.save()
    return study


def create_or_continue(folder: str | os.PathLike, recipe_path: str, models, seeds: int) -> Study:
    """The study for these inputs: a new folder, or the same study continued. Checked before anything is written:
    a folder of another recipe or model list, or a folder that is not a study and not empty, is refused."""
    folder = Path(folder)
    models = canonical_models(models)
    seeds = check_seeds(seeds)
    data, recipe = read_recipe(recipe_path)
    sha = hashlib.sha256(data).hexdigest()
    if folder.exists() and not folder.is_dir():
        raise AttnzooError(f"--out {str(folder)!r} is a file; give a folder for the study.")
    record = read_json(folder / STUDY_FILE) if folder.is_dir() else None
    if record is None and folder.is_dir() and any(folder.iterdir()):
        raise AttnzooError(f"--out {str(folder)!r} is a folder that holds other files and no {STUDY_FILE}; give a new "
                           "or empty folder, so nothing there is mixed in or overwritten.")
    if record is not None:
        if record.get("recipe_sha256") != sha:
            raise AttnzooError(f"--out {str(folder)!r} is a study of another recipe ({record.get('recipe_source')}, "
                               f"sha256 {record.get('recipe_sha256', '?')[:12]}, not {sha[:12]} of {recipe_path}); "
                               "results of two recipes are never mixed: give another --out.")
        if sorted(record.get("models", [])) != sorted(models):
            raise AttnzooError(f"--out {str(folder)!r} is a study of the models {', '.join(record['models'])}, not "
                               f"{', '.join(models)}; give another --out (or the same --models).")
    for note in recipe_notes(recipe, recipe_path):
        print(f"attnzoo: {note}", file=sys.stderr)
    if record is not None:
        study = Study(folder, sha, list(record["models"]), max(seeds, int(record["seeds"])),
                      record.get("recipe_source", recipe_path))
        if study.seeds != int(record["seeds"]):
            study.save()
        return study
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / RECIPE_FILE, lambda partial: partial.write_bytes(data))
    study = Study(folder, sha, models, seeds, str(recipe_path))
    study.save()
    return study
