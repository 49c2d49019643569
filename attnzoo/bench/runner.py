"""``attnzoo.bench.run``: time, size and graph-check a set of models, each against its plain backbone.

For every backbone among the models and every setting (task x dtype x memory format x batch x resolution),
all (model, compile mode) pairs are built and warmed up (compile time = first call minus a steady call), then
timed interleaved with the reference — the plain backbone in the first compile mode listed (see
:mod:`attnzoo.bench.timing`) — then their peak memory is measured (see :mod:`attnzoo.bench.memory`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import traceback

import torch

from attnzoo.bench import graph_breaks as graph_break_check
from attnzoo.bench import memory
from attnzoo.bench.machine import describe
from attnzoo.bench.selection import Entry, select
from attnzoo.bench.settings import BenchSettings
from attnzoo.bench.timing import Contestant, interleave, summary, warm_up
from attnzoo.bench.workload import EAGER, Setting, applies, make_workload
from attnzoo.devices import resolve_device


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
        "peer_of": entry.peer_of,
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
        peer_of = rows[(label, mode)]["peer_of"]
        equivalent = contestants.get((peer_of, mode)) if peer_of else None
        if equivalent is not None:  # both timed against the same plain timings, round by round
            rows[(label, mode)]["ratio_to_equivalent"] = summary(
                [a / e for a, e in zip(contestant.ratios, equivalent.ratios)])
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
        equivalent = rows.get((row["peer_of"], mode), {}).get("peak_memory_bytes") if row["peer_of"] else None
        if row.get("peak_memory_bytes") and equivalent:
            row["memory_ratio_to_equivalent"] = row["peak_memory_bytes"] / equivalent


def run(settings: BenchSettings | None = None, /, *, log=print, on_progress=None, **options) -> dict:
    """Benchmark the models of ``settings`` (each attention model against its plain backbone); returns the
    results as a dict (what bench.json holds).

    ``settings`` is a :class:`~attnzoo.bench.settings.BenchSettings`; ``options`` are its fields, given
    instead or on top: ``run(models=["r18", "eca_r18"], tasks=["infer"])``. ``log`` prints progress (None:
    silent). ``on_progress(results)`` is called after every measured setting with the results so far
    (``results["complete"]`` is False until the last), so a run that is killed or times out keeps what it
    measured: ``attnzoo bench`` rewrites bench.json and bench.csv there.
    """
    settings = BenchSettings(**options) if settings is None else dataclasses.replace(settings, **options)
    groups = select(list(settings.models), peers=settings.peers)
    device = resolve_device(settings.device)
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    log = log or (lambda *_: None)

    result = {
        "machine": describe(device),
        "config": settings.describe(device),
        "memory_method": memory.method(device) if settings.memory else None,
        "graph_breaks": {},
        "rows": [],
        "speedups": [],
        "complete": False,
    }
    all_entries = [e for entries in groups.values() for e in entries]
    peer_entries = [e.label for e in all_entries if e.is_peer]
    result["peer_versions"] = _peer_versions(all_entries)
    if peer_entries:
        log(f"peers (each timed beside its zoo equivalent): {', '.join(peer_entries)}")

    num_classes, model_args = settings.num_classes, settings.model_args
    if settings.graph_breaks:  # first: explain() resets dynamo, which would drop the compiled models
        for entry in all_entries:
            if entry.is_peer:  # the zoo's promise, not the peers'
                continue
            try:
                counts = graph_break_check.count(entry, num_classes, model_args, device=device)
            except Exception as err:  # noqa: BLE001 - reported per model, the run goes on
                counts = {"eval": None, "train": None, "reasons": [f"{type(err).__name__}: {err}"]}
            result["graph_breaks"][entry.label] = counts
            log(f"graph breaks  {entry.label:<28} eval {counts['eval']}  train {counts['train']}")

    if on_progress is not None:
        on_progress(result)
    plan = [(entries, Setting(device, dtype, layout, task, batch, resolution, settings.freezing and task == "infer"))
            for entries in groups.values()
            for task, dtype, layout, batch, resolution in itertools.product(
                settings.tasks, settings.dtypes, settings.channels_last, settings.batch_sizes, settings.resolutions)]
    with _dynamo_room(len(all_entries) * len(settings.compile)):
        for done, (entries, setting) in enumerate(plan):
            log(f"-- [{done + 1}/{len(plan)}] {entries[0].backbone}: {setting.describe()}")
            result_rows, speedups = _measure_setting(entries, setting, settings, log)
            result["rows"] += result_rows
            result["speedups"] += speedups
            result["complete"] = done + 1 == len(plan)
            if on_progress is not None:
                on_progress(result)
    return result


def _peer_versions(entries: list[Entry]) -> dict[str, str]:
    """The versions of the peer libraries in the run (they are imported only when a peer is in it)."""
    import importlib.metadata

    versions = {}
    for library in sorted({e.attention for e in entries if e.is_peer}):
        try:
            versions[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            versions[library] = "unknown"
    return versions


def _measure_setting(entries: list[Entry], setting: Setting, settings: BenchSettings, log) -> tuple[list, list]:
    modes, num_classes, model_args = list(settings.compile), settings.num_classes, settings.model_args
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
            warm_up(contestant, setting.device, settings.warmup, settings.min_time)
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
    interleave(reference, subjects, setting.device, settings.repeats)
    for key, contestant in contestants.items():
        if contestant is not None:
            _add_times(rows[key], contestant)
    speedups = _ratio_rows(rows, contestants, entries, modes)
    if settings.memory:
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
            eq = row.get("ratio_to_equivalent")
            log(f"   {key[0]:<28} [{key[1]}] {1e3 * row['latency_s']['median']:9.1f} ms  x{r['median']:.3f} plain"
                f" [{r['min']:.3f}-{r['max']:.3f}]" + (f"  mem x{mem:.3f}" if mem else "")
                + (f"  x{eq['median']:.3f} {row['peer_of']}" if eq else ""))
    del workloads, contestants
    gc.collect()
    return list(rows.values()), speedups
