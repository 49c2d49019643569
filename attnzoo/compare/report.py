"""The study's report: report.json (everything), report.csv (a row per model), report.md (for people) and
report.png (accuracy against cost, with intervals), all in the study folder.

Only finished runs are averaged. A failed run is listed as failed, with the line that says why; a run still
to do or interrupted is counted as such. Accuracies are on the validation set:

- *final*: the last epoch of each run, the number to compare;
- *best epoch*: the epoch of highest validation top-1 of each run, selected on the same data it is measured on,
  so biased upwards; shown because papers often report it.
"""

from __future__ import annotations

import csv
import io
import json
import sys

from attnzoo.compare import statistics as stats
from attnzoo.compare.costs import costs
from attnzoo.compare.runner import state
from attnzoo.compare.study import Study
from attnzoo.files import write_atomically, write_text
from attnzoo.registry import get_spec

METRICS = (("final", "top1"), ("final", "top5"), ("best", "top1"), ("best", "top5"))
ACCURACY_BOUNDS = (0.0, 100.0)


def _per_seed(results: dict[tuple[str, int], dict], model: str, which: str, metric: str) -> dict[int, float]:
    """``{seed: value in %}`` of ``model``'s finished runs (``results``: the finished runs' result.json)."""
    out = {}
    for (run_model, seed), result in results.items():
        value = (result.get(which) or {}).get(metric)
        if run_model == model and value is not None:
            out[seed] = 100 * value
    return out


def reference_of(model: str, models: list[str]) -> str | None:
    """The plain backbone the model is compared with, when it is in the study (and the model is not it)."""
    backbone = get_spec(model).backbone
    return backbone if backbone != model and backbone in models else None


def build(study: Study, bench: bool = True, log=print) -> dict:
    """The report as a dict (what report.json holds)."""
    runs = study.runs()
    states = {(run.model, run.seed): state(run) for run in runs}
    failures = [{"model": run.model, "seed": run.seed, "error": run.status().get("error", "")}
                for run in runs if states[(run.model, run.seed)] == "failed"]
    # Each finished run's result.json, read once: every column and sentence below is made from these.
    results = {(run.model, run.seed): run.result() or {} for run in runs
               if states[(run.model, run.seed)] == "finished"}
    per_model_costs, setting, measured = costs(study, bench=bench, log=log)
    rows = []
    for model in study.models:
        spec = get_spec(model)
        counts = {name: sum(1 for (m, _), s in states.items() if m == model and s == name)
                  for name in ("finished", "failed", "interrupted", "running", "pending")}
        row = {"model": model, "backbone": spec.backbone, "attention": spec.attention, "runs": counts,
               "seeds": sorted(_per_seed(results, model, "final", "top1"))}
        for which, metric in METRICS:
            row[f"{which}_{metric}"] = stats.summarize(list(_per_seed(results, model, which, metric).values()),
                                                       bounds=ACCURACY_BOUNDS)
        reference = reference_of(model, study.models)
        row["reference"] = reference
        if reference is not None:
            for which in ("final", "best"):
                row[f"{which}_top1_vs_reference"] = stats.paired_difference(
                    _per_seed(results, model, which, "top1"), _per_seed(results, reference, which, "top1"))
        row["cost"] = per_model_costs.get(model, {})
        rows.append(row)
    return {
        "study": study.to_dict(),
        "metric": "validation accuracy in percent; final = last epoch, best = epoch of highest validation top-1",
        "confidence": stats.CONFIDENCE,
        "setting": setting,
        "bench": None if measured is None else {k: measured[k] for k in ("machine", "memory_method", "config")},
        "runs": {"finished": len(results), "total": len(runs)},
        "models": rows,
        "failed_runs": failures,
        "sentences": sentences(results, rows),
    }


def _fmt_difference(d: dict) -> str:
    if d["ci_low"] is None:
        return f"{d['mean']:+.2f} points (one seed, no interval)"
    return f"{d['mean']:+.2f} points, 95% interval {d['ci_low']:+.2f} to {d['ci_high']:+.2f}"


def sentences(results: dict[tuple[str, int], dict], rows: list[dict]) -> list[str]:
    """Plain sentences: which models cannot be told apart from seed noise, and which can."""
    out = []
    finals = {row["model"]: _per_seed(results, row["model"], "final", "top1") for row in rows}
    for row in rows:
        d = row.get("final_top1_vs_reference")
        if d is None:
            continue
        verdict = stats.distinguishable(d)
        seeds = len(d["seeds"])
        if verdict is None:
            out.append(f"{row['model']} against {row['reference']}: {_fmt_difference(d)}; too few paired seeds "
                       "to tell it from seed noise.")
        elif verdict:
            side = "above" if d["mean"] > 0 else "below"
            out.append(f"{row['model']} is {side} {row['reference']} by more than seed noise over {seeds} seeds "
                       f"(final top-1 {_fmt_difference(d)}).")
        else:
            out.append(f"{row['model']} and {row['reference']} cannot be told apart from seed noise over {seeds} "
                       f"seeds (final top-1 {_fmt_difference(d)}).")
    attention_models = [row["model"] for row in rows if row["attention"]]
    alike, apart = [], []
    for i, a in enumerate(attention_models):
        for b in attention_models[i + 1:]:
            verdict = stats.distinguishable(stats.paired_difference(finals[a], finals[b]))
            if verdict is not None:
                (apart if verdict else alike).append(f"{a} / {b}")
    if alike:
        out.append("Among the attention models, these pairs cannot be told apart from seed noise (the 95% interval "
                   f"of their paired final top-1 difference contains 0): {', '.join(alike)}.")
    if apart:
        tested = len(alike) + len(apart)
        out.append(f"Among the attention models, these pairs differ by more than seed noise: {', '.join(apart)}. "
                   f"Of {tested} pairs each tested at 95%, about {tested / 20:.1f} would look so by chance alone: "
                   "a pair that matters deserves more seeds.")
    finished = list(results.values())
    if finished and all((r.get("best") or {}).get("epoch") == (r.get("final") or {}).get("epoch") for r in finished):
        out.append("In every finished run the best epoch was the last one, so the best-epoch columns equal the final "
                   "ones.")
    return out


def _interval(s: dict) -> str:
    if s["mean"] is None:
        return "-"
    if s["std"] is None:
        return f"{s['mean']:.2f} (1 run)"
    mark = "†" if s.get("clipped") else ""
    return f"{s['mean']:.2f} ± {s['std']:.2f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]{mark}"


def _any_clipped(report: dict) -> bool:
    return any(row[f"{which}_{metric}"].get("clipped") for row in report["models"] for which, metric in METRICS)


def _runs_cell(counts: dict) -> str:
    parts = [str(counts["finished"])]
    for name in ("failed", "interrupted", "running", "pending"):
        if counts[name]:
            parts.append(f"{counts[name]} {name}")
    return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"


def markdown(report: dict) -> str:
    study, setting = report["study"], report["setting"] or {}
    size = "x".join(map(str, (setting.get("input_size") or [0, 0, 0])[1:]))
    flops = [row["cost"]["flops"] for row in report["models"] if row["cost"].get("flops")]
    unit, scale = ("GFLOPs", 1e9) if flops and max(flops) >= 1e9 else ("MFLOPs", 1e6)
    lines = [
        f"Recipe `{study['recipe_source']}` (sha256 {study['recipe_sha256'][:12]}), {study['seeds']} seeds per model "
        "(0 to {}). Validation top-1 / top-5 in %: mean ± standard deviation over the finished runs "
        "[95% t-interval of the mean]. *final*: the last epoch; *best epoch*: each run's epoch of highest "
        "validation top-1 (chosen on the data it is measured on, so optimistic).".format(study["seeds"] - 1)
        + (" An interval marked † reached past 100% (or below 0) and is cut there: the t-interval does not know "
           "that an accuracy is bounded." if _any_clipped(report) else ""),
        "",
        "| model | runs | final top-1 | final top-5 | best-epoch top-1 | best-epoch top-5 | final top-1 − plain, "
        f"paired | params | {unit} @{size} | train img/s | peak train MB |",
        "|---|---|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in report["models"]:
        d = row.get("final_top1_vs_reference")
        if d is None:
            diff = "(reference)" if row["attention"] is None else "-"
        elif d["ci_low"] is None:
            diff = f"{d['mean']:+.2f} (1 seed)"
        else:
            diff = f"{d['mean']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"
        cost = row["cost"]
        cells = [
            "-" if cost.get("params") is None else f"{cost['params'] / 1e6:.2f}M",
            "-" if cost.get("flops") is None else f"{cost['flops'] / scale:.{3 if scale == 1e9 else 1}f}",
            "-" if cost.get("train_images_per_s") is None else f"{cost['train_images_per_s']:.0f}",
            "-" if cost.get("peak_train_memory_bytes") is None else f"{cost['peak_train_memory_bytes'] / 2**20:.0f}",
        ]
        lines.append(
            f"| `{row['model']}` | {_runs_cell(row['runs'])} | {_interval(row['final_top1'])} | "
            f"{_interval(row['final_top5'])} | {_interval(row['best_top1'])} | {_interval(row['best_top5'])} | {diff} | "
            + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {s}" for s in report["sentences"]]
    if report["failed_runs"]:
        lines += ["", "Failed runs (not averaged in; `attnzoo compare DIR` tries them again):", ""]
        lines += [f"- `{f['model']}` seed {f['seed']}: {f['error']}" for f in report["failed_runs"]]
    lines.append("")
    lines.append("The paired difference is taken seed by seed against the plain backbone of the same seed. Params and "
                 "FLOPs (2 per multiply-add, one image) from attnzoo.model_info.")
    if report["bench"]:
        machine, config = report["bench"]["machine"], report["bench"]["config"]
        lines.append(f"Throughput and peak memory: one training step (forward, backward, SGD) at batch "
                     f"{config['batch_sizes'][0]}, {config['compile'][0]}, measured by attnzoo bench on "
                     f"{machine['cpu'] if machine['device'] == 'cpu' else machine.get('gpu')} ({machine['device']}, "
                     f"{machine['torch_threads']} torch thread(s), torch {machine['torch']}, {machine['date']}"
                     + (f", load average {machine['load_average'][0]:.1f}" if machine.get("load_average") else "")
                     + f"); memory: {report['bench']['memory_method']}.")
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["model", "backbone", "attention", "reference", "finished", "failed", "not_finished"] + [
    f"{which}_{metric}_{field}" for which, metric in METRICS for field in ("mean", "std", "ci_low", "ci_high")
] + ["final_top1_vs_reference_mean", "final_top1_vs_reference_ci_low", "final_top1_vs_reference_ci_high",
     "params", "flops", "train_images_per_s", "peak_train_memory_bytes"]


def csv_text(report: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in report["models"]:
        flat = {"model": row["model"], "backbone": row["backbone"], "attention": row["attention"] or "",
                "reference": row["reference"] or "", "finished": row["runs"]["finished"],
                "failed": row["runs"]["failed"],
                "not_finished": sum(row["runs"][k] for k in ("interrupted", "running", "pending"))}
        for which, metric in METRICS:
            for field in ("mean", "std", "ci_low", "ci_high"):
                flat[f"{which}_{metric}_{field}"] = row[f"{which}_{metric}"][field]
        d = row.get("final_top1_vs_reference") or {}
        for field in ("mean", "ci_low", "ci_high"):
            flat[f"final_top1_vs_reference_{field}"] = d.get(field)
        for field in ("params", "flops", "train_images_per_s", "peak_train_memory_bytes"):
            flat[field] = row["cost"].get(field)
        writer.writerow(flat)
    return out.getvalue()


def write_report(study: Study, bench: bool = True, plot: bool = True, log=print) -> dict[str, str]:
    """Write report.json, report.csv, report.md and (with matplotlib) report.png into the study folder."""
    report = build(study, bench=bench, log=log)
    paths = {}
    for key, name, text in (("json", "report.json", json.dumps(report, indent=1) + "\n"),
                            ("csv", "report.csv", csv_text(report)), ("md", "report.md", markdown(report))):
        write_text(study.folder / name, text)
        paths[key] = str(study.folder / name)
    if plot:
        from attnzoo.extras import missing

        if missing("viz", only=("matplotlib",)):
            print("report.png skipped: matplotlib is not installed (pip install 'attnzoo[viz]')", file=sys.stderr)
        else:
            from attnzoo.compare.plot import draw

            figure = draw(report)
            write_atomically(study.folder / "report.png", lambda partial: figure.savefig(partial, format="png"))
            paths["png"] = str(study.folder / "report.png")
    return paths
