"""``attnzoo.bench.run``: time, size and graph-check a set of models, each against its plain backbone.

For every backbone among the models and every setting (task x dtype x memory format x batch x resolution),
all (model, compile mode) pairs are built and warmed up (compile time = first call minus a steady call), then
timed interleaved with the reference — the plain backbone in the first compile mode listed (see
:mod:`attnzoo.bench.timing`) — then their peak memory is measured (see :mod:`attnzoo.bench.memory`).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import traceback

import torch

from attnzoo.bench import graph_breaks as graph_break_check
from attnzoo.bench import memory
from attnzoo.bench.machine import describe
from attnzoo.bench.selection import Entry, select
from attnzoo.bench.timing import Contestant, interleave, summary, warm_up
from attnzoo.bench.workload import COMPILE_MODES, DTYPES, EAGER, ONNXRUNTIME, TASKS, Setting, applies, make_workload
from attnzoo.errors import AttnzooError


def _check_choice(option: str, values, accepted) -> list:
    values = list(values)
    if not values:
        raise AttnzooError(f"{option} needs at least one value. Accepted: {', '.join(map(str, accepted))}.")
    bad = [v for v in values if v not in accepted]
    if bad:
        raise AttnzooError(f"{option}: unknown {', '.join(map(repr, bad))}. Accepted: {', '.join(map(str, accepted))}.")
    return list(dict.fromkeys(values))


def _check_positive(option: str, values) -> list[int]:
    values = list(values)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise AttnzooError(f"{option} must be a list of positive integers, got {values!r}.")
    return list(dict.fromkeys(values))


def _resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AttnzooError(f"device {device!r} asked for, but this torch sees no CUDA device. Accepted here: cpu, auto.")
        return device
    if device != "cpu":
        raise AttnzooError(f"unknown device {device!r}. Accepted: cpu, cuda, cuda:N, auto.")
    return device


@contextlib.contextmanager
def _dynamo_room(models: int):
    """Every model shares the backbone's forward code objects; let dynamo keep one entry per model and mode."""
    import torch._dynamo.config as dynamo_config

    limit = max(64, 4 * models)
    with dynamo_config.patch(recompile_limit=limit, accumulated_recompile_limit=max(256, 8 * limit)):
        yield


def _row(entry: Entry, mode: str, setting: Setting) -> dict:
    return {
        "model": entry.label,
        "backbone": entry.backbone,
        "attention": entry.attention,
        "compile": mode,
        "device": setting.device,
        "dtype": setting.dtype,
        "channels_last": setting.channels_last,
        "freezing": setting.freezing,
        "task": setting.task,
        "batch": setting.batch,
        "resolution": setting.resolution,
        "error": None,
    }


def _add_times(row: dict, contestant: Contestant) -> None:
    times = summary(contestant.times)
    row.update(
        iterations_per_timing=contestant.iterations,
        timings=len(contestant.times),
        latency_s=times,
        # the fastest timing is the highest throughput
        images_per_s={"median": row["batch"] / times["median"], "min": row["batch"] / times["max"],
                      "max": row["batch"] / times["min"]},
        first_call_s=contestant.first_call_s,
        compile_s=None if row["compile"] == EAGER else max(0.0, contestant.first_call_s - times["median"]),
    )


def _ratio_rows(rows: dict, contestants: dict, entries: list[Entry], modes: list[str]) -> list[dict]:
    """Fill ratio_to_plain per row; return the compile-mode speedups (same model, vs the first mode)."""
    plain = entries[0]
    speedups = []
    for (label, mode), contestant in contestants.items():
        if contestant is None:
            continue
        reference = contestants.get((plain.label, mode))
        if reference is None:
            continue
        ratios = [a / p for a, p in zip(contestant.ratios, reference.ratios)]
        rows[(label, mode)]["ratio_to_plain"] = summary(ratios)
        first = contestants.get((label, modes[0]))
        if mode != modes[0] and first is not None:
            per_round = [f / c for f, c in zip(first.ratios, contestant.ratios)]
            speedups.append({**{k: rows[(label, mode)][k] for k in ("model", "task", "device", "dtype", "channels_last",
                                                                 "batch", "resolution")},
                             "baseline_mode": modes[0], "mode": mode, "speedup": summary(per_round)})
    return speedups


def _memory_ratios(rows: dict, entries: list[Entry]) -> None:
    plain = entries[0].label
    for (label, mode), row in rows.items():
        reference = rows.get((plain, mode), {}).get("peak_memory_bytes")
        if row.get("peak_memory_bytes") and reference:
            row["memory_ratio_to_plain"] = row["peak_memory_bytes"] / reference


def run(
    models: list[str] | str = ("r50", "*_r50"),
    tasks: list[str] = ("infer", "train"),
    compile: list[str] = ("default",),
    batch_sizes: list[int] = (8,),
    resolutions: list[int] = (224,),
    dtypes: list[str] = ("fp32",),
    channels_last: list[bool] = (False,),
    device: str = "cpu",
    freezing: bool = False,
    warmup: int = 1,
    repeats: int = 5,
    min_time: float = 0.3,
    measure_memory: bool = True,
    graph_breaks: bool = True,
    num_classes: int = 1000,
    model_args: dict | None = None,
    threads: int | None = None,
    log=print,
) -> dict:
    """Benchmark ``models`` (each attention model against its plain backbone); returns the results as a dict.

    See :func:`attnzoo.bench.command.bench_command` for the meaning of each option.
    """
    groups = select(models)
    tasks = _check_choice("tasks", tasks, TASKS)
    modes = _check_choice("compile", compile, (EAGER, *COMPILE_MODES, ONNXRUNTIME))
    dtypes = _check_choice("dtypes", dtypes, tuple(DTYPES))
    layouts = _check_choice("channels_last", channels_last, (False, True))
    batch_sizes = _check_positive("batch_sizes", batch_sizes)
    resolutions = _check_positive("resolutions", resolutions)
    if not isinstance(repeats, int) or repeats < 1 or not isinstance(warmup, int) or warmup < 0:
        raise AttnzooError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats!r}, warmup={warmup!r}.")
    device = _resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    model_args = dict(model_args or {})
    log = log or (lambda *_: None)

    result = {
        "machine": describe(device),
        "config": {
            "models": list(models) if not isinstance(models, str) else [models], "tasks": tasks, "compile": modes,
            "batch_sizes": batch_sizes, "resolutions": resolutions, "dtypes": dtypes, "channels_last": layouts,
            "device": device, "freezing": freezing, "warmup": warmup, "repeats": repeats, "min_time": min_time,
            "num_classes": num_classes, "model_args": model_args,
        },
        "memory_method": memory.method(device) if measure_memory else None,
        "graph_breaks": {},
        "rows": [],
        "speedups": [],
    }
    all_entries = [e for entries in groups.values() for e in entries]

    if graph_breaks:  # first: explain() resets dynamo, which would drop the compiled models
        for entry in all_entries:
            if entry.attention == "timm":
                continue
            try:
                counts = graph_break_check.count(entry, num_classes, model_args, device=device)
            except Exception as err:  # noqa: BLE001 - reported per model, the run goes on
                counts = {"eval": None, "train": None, "reasons": [f"{type(err).__name__}: {err}"]}
            result["graph_breaks"][entry.label] = counts
            log(f"graph breaks  {entry.label:<28} eval {counts['eval']}  train {counts['train']}")

    with _dynamo_room(len(all_entries) * len(modes)):
        for backbone, entries in groups.items():
            for task, dtype, layout, batch, resolution in itertools.product(tasks, dtypes, layouts, batch_sizes, resolutions):
                setting = Setting(device, dtype, layout, task, batch, resolution, freezing and task == "infer")
                result_rows, speedups = _measure_setting(entries, modes, setting, num_classes, model_args,
                                                         warmup, repeats, min_time, measure_memory, log)
                result["rows"] += result_rows
                result["speedups"] += speedups
    return result


def _measure_setting(entries, modes, setting, num_classes, model_args, warmup, repeats, min_time, measure_memory, log):
    log(f"-- {entries[0].backbone}: {setting.describe()}")
    torch._dynamo.reset()
    workloads, contestants, rows = {}, {}, {}
    modes = [mode for mode in modes if applies(mode, setting)]  # onnxruntime: CPU fp32 inference only
    if not modes:
        return [], []
    for entry, mode in itertools.product(entries, modes):
        key = (entry.label, mode)
        rows[key] = _row(entry, mode, setting)
        try:
            workload = make_workload(entry, mode, setting, num_classes, model_args)
            contestant = Contestant(key, workload.run)
            warm_up(contestant, setting.device, warmup, min_time)
        except Exception as err:  # noqa: BLE001 - one model failing (e.g. a graph break) is reported, not fatal
            rows[key]["error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log(f"   {entry.label} [{mode}] failed: {rows[key]['error']}")
            log("".join(traceback.format_exception_only(type(err), err)).strip()[:2000])
            contestants[key] = None
            continue
        workloads[key], contestants[key] = workload, contestant
        log(f"   warmed {entry.label:<28} [{mode}] first call {contestant.first_call_s:7.2f}s, x{contestant.iterations}/timing")
    reference_key = (entries[0].label, modes[0])
    reference = contestants.get(reference_key)
    if reference is None:
        for key in rows:
            rows[key]["error"] = rows[key]["error"] or f"reference {reference_key[0]} [{reference_key[1]}] failed"
        return list(rows.values()), []
    subjects = [c for k, c in contestants.items() if c is not None and k != reference_key]
    interleave(reference, subjects, setting.device, repeats)
    for key, contestant in contestants.items():
        if contestant is not None:
            _add_times(rows[key], contestant)
    speedups = _ratio_rows(rows, contestants, entries, modes)
    if measure_memory:
        for key, workload in workloads.items():
            if not workload.measures_memory:
                continue
            try:
                rows[key]["peak_memory_bytes"] = memory.peak_bytes(workload, setting.device)
            except Exception as err:  # noqa: BLE001
                rows[key]["peak_memory_bytes"] = None
                rows[key]["error"] = f"memory: {type(err).__name__}: {err}"
        _memory_ratios(rows, entries)
    for key, row in rows.items():
        if row.get("ratio_to_plain"):
            r = row["ratio_to_plain"]
            mem = row.get("memory_ratio_to_plain")
            log(f"   {key[0]:<28} [{key[1]}] {1e3 * row['latency_s']['median']:9.1f} ms  x{r['median']:.3f} plain"
                f" [{r['min']:.3f}-{r['max']:.3f}]" + (f"  mem x{mem:.3f}" if mem else ""))
    del workloads, contestants
    gc.collect()
    return list(rows.values()), speedups
