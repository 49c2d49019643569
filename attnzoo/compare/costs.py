"""What each model of a study costs, under the study's own setting (input size, classes, batch, model options).

The setting is read from a finished run's resolved configuration (``logs/version_*/config.yaml``, written by
LightningCLI), so it is the one the runs used rather than a guess from the recipe. Parameters and FLOPs come
from :func:`attnzoo.model_info`; training throughput and peak training memory from the bench
(:func:`attnzoo.bench.run`, task ``train``), measured here, each model against its plain backbone in one
process, and kept in the study folder (``bench.json``) so that a later ``--report`` does not measure again.
"""

from __future__ import annotations

import sys

import yaml

from attnzoo.compare.study import Study, read_json, write_json


def run_setting(study: Study) -> dict | None:
    """input_size, num_classes, batch_size, model_args and compile mode of the study's runs (from the first run
    that wrote its configuration), or None before any run has."""
    for run in study.runs():
        for path in sorted((run.folder / "logs").glob("version_*/config.yaml")):
            config = yaml.safe_load(path.read_text()) or {}
            model = config.get("model") or {}
            hparams_path = path.with_name("hparams.yaml")
            hparams = yaml.safe_load(hparams_path.read_text()) if hparams_path.exists() else {}
            preprocessing = (hparams or {}).get("preprocessing") or {}
            data = ((config.get("data") or {}).get("init_args")) or {}
            return {
                "input_size": list(preprocessing.get("input_size") or [3, 224, 224]),
                "num_classes": int((hparams or {}).get("num_classes") or 1000),
                "batch_size": data.get("batch_size"),
                "model_args": model.get("model_args") or {},
                "compile": model.get("compile") or False,
            }
    return None


def static_costs(models: list[str], setting: dict) -> dict[str, dict]:
    """Parameters and FLOPs (2 per multiply-add, one image of the study's size) of each model."""
    from attnzoo.info import model_info

    out = {}
    for name in models:
        try:
            info = model_info(name, input_size=tuple(setting["input_size"]), num_classes=setting["num_classes"],
                              **setting["model_args"])
        except Exception as err:  # noqa: BLE001 - a count that fails must not cost the accuracy report
            print(f"attnzoo: no parameter/FLOP count for {name}: {type(err).__name__}: {err}", file=sys.stderr)
            out[name] = {}
            continue
        out[name] = {"params": info["params"], "flops": info["flops"]}
    return out


def measured_costs(study: Study, setting: dict, log=print) -> dict | None:
    """Training images/s and peak training memory per model from the bench (kept in DIR/bench.json), or None
    when the runs' batch size is unknown."""
    from attnzoo.bench import memory

    cached = read_json(study.folder / "bench.json")
    if cached is not None and sorted(cached.get("models", [])) == sorted(study.models) and all(
            (cached["per_model"].get(name) or {}).get("train_images_per_s") for name in study.models) and (
            cached.get("memory_method") in (memory.CPU_METHOD, memory.CUDA_METHOD)):
        # Measured before, every model, as memory is measured now: a model that failed then, or a figure taken
        # by an earlier way of measuring memory, is measured again.
        return cached
    if not setting.get("batch_size"):
        return None
    from attnzoo import bench

    mode = setting["compile"]
    mode = "eager" if mode in (False, None, "none") else ("default" if mode is True else str(mode))
    log(f"measuring training speed and memory of {len(study.models)} models (attnzoo bench, batch "
        f"{setting['batch_size']}, {setting['input_size'][1]} px, {mode}); --bench false skips this")
    results = bench.run(models=list(study.models), tasks=["train"], compile=[mode],
                        batch_sizes=[int(setting["batch_size"])], resolutions=[int(setting["input_size"][1])],
                        num_classes=setting["num_classes"], model_args=setting["model_args"], graph_breaks=False,
                        peers=False, device="auto", log=None)
    per_model = {}
    for row in results["rows"]:
        if row["model"] in study.models:
            per_model[row["model"]] = {
                "train_images_per_s": (row.get("images_per_s") or {}).get("median"),
                "peak_train_memory_bytes": row.get("peak_memory_bytes"),
                "error": row.get("error"),
            }
    measured = {"models": list(study.models), "machine": results["machine"], "memory_method": results["memory_method"],
                "config": results["config"], "per_model": per_model}
    write_json(study.folder / "bench.json", measured)
    return measured


def costs(study: Study, bench: bool = True, log=print) -> tuple[dict, dict | None, dict | None]:
    """(per-model costs, the setting they are for, the bench's record or None)."""
    setting = run_setting(study)
    if setting is None:
        return {}, None, None
    per_model = static_costs(study.models, setting)
    measured = None
    if bench:
        try:
            measured = measured_costs(study, setting, log)
        except Exception as err:  # noqa: BLE001 - the accuracy report stands without the speed columns
            print(f"attnzoo: the bench failed ({type(err).__name__}: {err}); the report has no speed or memory.",
                  file=sys.stderr)
    for name, values in ((measured or {}).get("per_model") or {}).items():
        per_model.setdefault(name, {}).update(values)
    return per_model, setting, measured

