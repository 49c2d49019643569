"""The results as a terminal table, JSON, CSV and a PNG plot."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

from attnzoo.files import check_writable, write_atomically, write_text

CSV_FIELDS = [
    "model", "backbone", "attention", "peer_of", "compile", "device", "dtype", "channels_last", "freezing", "task", "batch",
    "resolution", "latency_s_median", "latency_s_min", "latency_s_max", "images_per_s_median", "images_per_s_min",
    "images_per_s_max", "ratio_to_plain_median", "ratio_to_plain_min", "ratio_to_plain_max", "ratio_to_equivalent_median",
    "ratio_to_equivalent_min", "ratio_to_equivalent_max", "compile_s", "first_call_s", "peak_memory_mb",
    "memory_ratio_to_plain", "memory_ratio_to_equivalent", "timings", "iterations_per_timing", "error",
]


def flat(row: dict) -> dict:
    out = {k: row.get(k) for k in CSV_FIELDS if k in row}
    for key in ("latency_s", "images_per_s", "ratio_to_plain", "ratio_to_equivalent"):
        for stat in ("median", "min", "max"):
            out[f"{key}_{stat}"] = (row.get(key) or {}).get(stat)
    memory = row.get("peak_memory_bytes")
    out["peak_memory_mb"] = None if memory is None else memory / 2**20
    return out


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def table(results: dict) -> str:
    """A fixed-width table: one line per model and setting; ratios are time (or memory) over the plain backbone."""
    header = (f"{'model':<26} {'mode':<11} {'task':<5} {'dtype':<4} {'cl':<2} {'batch':>5} {'res':>4} "
              f"{'ms/batch':>9} {'img/s':>8} {'x plain (min-max)':>21} {'compile s':>9} {'peak MB':>8} {'x mem':>6}")
    lines = [header, "-" * len(header)]
    for row in results["rows"]:
        f = flat(row)
        if row.get("error") and f.get("latency_s_median") is None:
            lines.append(f"{row['model']:<26} {row['compile']:<11} {row['task']:<5} ERROR {row['error']}")
            continue
        ratio = "-"
        if f.get("ratio_to_plain_median") is not None:
            ratio = f"{f['ratio_to_plain_median']:.3f} ({f['ratio_to_plain_min']:.2f}-{f['ratio_to_plain_max']:.2f})"
        lines.append(
            f"{row['model']:<26} {row['compile']:<11} {row['task']:<5} {row['dtype']:<4} "
            f"{'y' if row['channels_last'] else 'n':<2} {row['batch']:>5} {row['resolution']:>4} "
            f"{_fmt(f['latency_s_median'] and 1e3 * f['latency_s_median'], '9.1f'):>9} "
            f"{_fmt(f['images_per_s_median'], '8.1f'):>8} {ratio:>21} {_fmt(f.get('compile_s'), '9.1f'):>9} "
            f"{_fmt(f['peak_memory_mb'], '8.0f'):>8} {_fmt(f.get('memory_ratio_to_plain'), '6.3f'):>6}"
        )
    peer_rows = [row for row in results["rows"] if row.get("ratio_to_equivalent")]
    if peer_rows:
        lines += ["", "peers (time / time of the zoo equivalent, interleaved in the same rounds; memory likewise):"]
        for row in peer_rows:
            r, mem = row["ratio_to_equivalent"], row.get("memory_ratio_to_equivalent")
            lines.append(f"  {row['model']:<26} {row['compile']:<8} {row['task']:<5} {r['median']:.3f}x "
                         f"{row['peer_of']} ({r['min']:.2f}-{r['max']:.2f})" + (f", memory {mem:.3f}x" if mem else ""))
    if results.get("speedups"):
        lines += ["", "compile-mode speedups (same model, interleaved, time in baseline mode / time in mode):"]
        for s in results["speedups"]:
            sp = s["speedup"]
            lines.append(f"  {s['model']:<26} {s['task']:<5} {s['mode']} vs {s['baseline_mode']}: "
                         f"{sp['median']:.2f}x ({sp['min']:.2f}-{sp['max']:.2f})")
    if results.get("graph_breaks"):
        lines += ["", "graph breaks (torch._dynamo.explain, eval / train):"]
        for label, counts in results["graph_breaks"].items():
            lines.append(f"  {label:<26} {counts['eval']} / {counts['train']}" +
                         (f"  {counts['reasons'][:2]}" if counts.get("reasons") else ""))
    if results.get("data_pipeline"):
        d = results["data_pipeline"]
        lines += ["", f"data pipeline: {d}"]
    return "\n".join(lines)


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """Refuse, before anything is measured, an ``out_dir`` that cannot take bench.json/csv/png."""
    return check_writable(out_dir, "--out_dir", folder=True)


def write_numbers(results: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """Write bench.json and bench.csv under ``out_dir``, each atomically: a benchmark killed while they are
    rewritten after a setting leaves the previous complete pair."""
    out = Path(out_dir)
    paths = {"json": str(out / "bench.json"), "csv": str(out / "bench.csv")}
    write_text(paths["json"], json.dumps(results, indent=1))

    def write_csv(partial: Path) -> None:
        with open(partial, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            writer.writeheader()
            for row in results["rows"]:
                writer.writerow(flat(row))

    write_atomically(paths["csv"], write_csv)
    return paths


def write(results: dict, out_dir: str | os.PathLike, plot: bool = True) -> dict[str, str]:
    """Write bench.json, bench.csv and (unless ``plot=False``) bench.png under ``out_dir``; return their paths.

    bench.png needs matplotlib (the ``viz`` extra); without it the picture is skipped with a one-line note on
    stderr and the numbers are written all the same."""
    out = check_out_dir(out_dir)
    paths = write_numbers(results, out)
    if plot:
        paths.update(write_plot(results, out))
    return paths


def write_plot(results: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """bench.png under ``out_dir`` ({"png": path}); {} with a one-line note on stderr without matplotlib."""
    from attnzoo.extras import missing

    if missing("viz", only=("matplotlib",)):
        # The measurements are the point of the run; the picture is a convenience.
        print("bench.png skipped: matplotlib is not installed (pip install 'attnzoo[viz]')", file=sys.stderr)
        return {}
    from attnzoo.bench.plot import draw

    figure = draw(results)
    return {"png": str(write_atomically(Path(out_dir) / "bench.png",
                                        lambda partial: figure.savefig(partial, format="png")))}
