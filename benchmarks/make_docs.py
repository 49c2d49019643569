"""Generate docs/benchmarks.md from the bench.json files of a run (see benchmarks/cpu_focused.sh).

    python benchmarks/make_docs.py bench-out/cpu docs     # writes docs/benchmarks.md and docs/benchmarks/*.png

Every number in the page comes from the JSON; the goals of issue 5 are checked here, not by hand. The page
ends with a hand-written part (one-off design measurements, below :data:`KEEP_MARKER`), which is kept as it is.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

# attention -> allowed time ratio to the plain backbone (issue 5); None: reported only.
TIME_GOALS = {"eca": 1.05, "se": 1.05, "gc": 1.05, "gct": 1.10, "cbam": 1.10, "gam": None}
MEMORY_GOAL = 1.10
SPEEDUP_GOAL = 1.3
KEEP_MARKER = "<!-- hand-written from here on: benchmarks/make_docs.py keeps this part when it regenerates the page -->"


def load(root: Path) -> list[tuple[str, dict]]:
    runs = sorted(root.glob("*/bench.json"))
    if not runs:
        raise SystemExit(f"no */bench.json under {root}")
    return [(path.parent.name, json.loads(path.read_text())) for path in runs]


def ratio(r: dict | None) -> str:
    if not r:
        return "-"
    return f"{r['median']:.3f} ({r['min']:.3f}-{r['max']:.3f})"


def verdict(value: float | None, limit: float | None) -> str:
    if value is None:
        return "not measured"
    if limit is None:
        return "reported"
    return "met" if value <= limit else "**missed**"


def model_table(results: dict) -> list[str]:
    by_model: dict[str, dict] = {}
    for row in results["rows"]:
        by_model.setdefault(row["model"], {"attention": row["attention"]})[row["task"]] = row
    lines = [
        "| model | infer ms/batch | infer img/s | infer x plain (min-max) | train ms/step | train img/s "
        "| train x plain (min-max) | compile s (infer / train) | peak train MB | train memory x plain |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in by_model.items():
        infer, train = rows.get("infer", {}), rows.get("train", {})

        def cell(row, key, scale=1.0, spec=".1f"):
            value = (row.get(key) or {}).get("median") if isinstance(row.get(key), dict) else row.get(key)
            return "-" if value is None else format(value * scale, spec)

        compile_s = f"{cell(infer, 'compile_s', spec='.0f')} / {cell(train, 'compile_s', spec='.0f')}"
        memory = train.get("peak_memory_bytes")
        error = infer.get("error") or train.get("error")
        lines.append(
            f"| `{name}` | {cell(infer, 'latency_s', 1e3)} | {cell(infer, 'images_per_s')} | "
            f"{ratio(infer.get('ratio_to_plain'))} | {cell(train, 'latency_s', 1e3)} | {cell(train, 'images_per_s')} | "
            f"{ratio(train.get('ratio_to_plain'))} | {compile_s} | {'-' if memory is None else f'{memory / 2**20:.0f}'} | "
            f"{cell(train, 'memory_ratio_to_plain', spec='.3f')} |" + (f" error: {error}" if error else "")
        )
    return lines


def goals(runs: list[tuple[str, dict]]) -> list[str]:
    lines = ["| goal | model | measured: median (min-max over rounds) | verdict |", "|---|---|---:|---|"]
    for _, results in runs:
        for row in results["rows"]:
            attention = row.get("attention")
            if attention not in TIME_GOALS or row["compile"] == "eager" or row["freezing"]:
                continue
            limit = TIME_GOALS[attention]
            spread = row.get("ratio_to_plain") or {}
            value = spread.get("median")
            measured = "-" if value is None else f"{value:.3f}x ({spread['min']:.2f}-{spread['max']:.2f})"
            goal = f"{row['task']} time <= {limit:.2f}x plain" if limit else f"{row['task']} time (reported)"
            lines.append(f"| {goal} | `{row['model']}` | {measured} | {verdict(value, limit)} |")
            if row["task"] == "train":
                mem = row.get("memory_ratio_to_plain")
                limit_mem = None if attention == "gam" else MEMORY_GOAL
                goal = f"train peak memory <= {MEMORY_GOAL:.2f}x plain" if limit_mem else "train peak memory (reported)"
                lines.append(f"| {goal} | `{row['model']}` | {'-' if mem is None else f'{mem:.3f}x'} | {verdict(mem, limit_mem)} |")
        for s in results.get("speedups", []):
            value = s["speedup"]["median"]
            lines.append(
                f"| compiled ({s['mode']}{', freezing' if results['config']['freezing'] else ''}) vs eager "
                f"{s['task']} >= {SPEEDUP_GOAL}x | `{s['model']}` | {value:.2f}x ({s['speedup']['min']:.2f}-"
                f"{s['speedup']['max']:.2f}) | {'met' if value >= SPEEDUP_GOAL else '**missed**'} |"
            )
        for label, counts in results.get("graph_breaks", {}).items():
            ok = counts["eval"] == 0 and counts["train"] == 0
            lines.append(f"| zero graph breaks (eval / train) | `{label}` | {counts['eval']} / {counts['train']} | "
                         f"{'met' if ok else '**missed**'} |")
    return lines


def render(root: str) -> str:
    runs = load(Path(root))
    machine = runs[0][1]["machine"]
    out = [
        "# Benchmarks",
        "",
        "<!-- generated by benchmarks/make_docs.py from the run's bench.json files; edit only the hand-written part "
        "at the end -->",
        "",
        f"Machine: **{machine['cpu']}**, {machine['cpu_cores']} cores (shared with other jobs during the run), "
        f"device `{machine['device']}`{', GPU ' + machine['gpu'] if machine.get('gpu') else ''}; torch "
        f"{machine['torch']}, Python {machine['python']}, {machine['platform']}; {machine['date']}"
        f"{', commit ' + machine['git_commit'] if machine.get('git_commit') else ''}.",
        *([] if any(results["machine"].get("gpu") for _, results in runs)
          else ["No GPU was available for this run: every figure is CPU."]),
        "",
        "Ratios are time (or memory) over the plain backbone, measured in the same process, interleaved "
        "(`plain, A, plain, B, ...`, each ratio against the two plain timings around it), median with min-max over "
        "rounds. Absolute times on a shared machine drift; the ratios are the figures to read.",
        "",
        f"Peak memory: {runs[0][1].get('memory_method')}.",
        "",
        "## Goals (issue 5)",
        "",
        *goals(runs),
        "",
    ]
    for name, results in runs:
        config = results["config"]
        m = results["machine"]
        out += [
            f"## {name}",
            "",
            f"`{m['command']}`",
            "",
            f"Run {m['date']}{', commit ' + m['git_commit'] if m.get('git_commit') else ''}.",
            "",
            f"compile: {', '.join(config['compile'])}{' (inductor freezing)' if config['freezing'] else ''}; "
            f"dtypes {config['dtypes']}, channels_last {config['channels_last']}, batch {config['batch_sizes']}, "
            f"resolution {config['resolutions']}, torch threads {m['torch_threads']}, warm-up {config['warmup']}, "
            f"{config['repeats']} interleaved rounds, each timing >= {config['min_time']} s.",
            "",
            *model_table(results),
            "",
        ]
        if results.get("speedups"):
            out += ["Speedups (same model, interleaved):", ""]
            out += [f"- `{s['model']}` {s['task']}: {s['mode']} vs {s['baseline_mode']} = {s['speedup']['median']:.2f}x "
                    f"({s['speedup']['min']:.2f}-{s['speedup']['max']:.2f})" for s in results["speedups"]]
            out.append("")
    pngs = [p for p in sorted(Path(root).glob("*/bench.png")) if p.stat().st_size < 200_000]
    if pngs:
        out += ["## Plots", ""]
        out += [f"![{p.parent.name}](benchmarks/{p.parent.name}.png)" for p in pngs]
        out.append("")
    return "\n".join(out)


def main(root: str, docs: str) -> None:
    page = render(root)
    docs_dir = Path(docs)
    (docs_dir / "benchmarks").mkdir(parents=True, exist_ok=True)
    for png in sorted(Path(root).glob("*/bench.png")):
        if png.stat().st_size < 200_000:  # the repository keeps small pictures only
            shutil.copyfile(png, docs_dir / "benchmarks" / f"{png.parent.name}.png")
    target = docs_dir / "benchmarks.md"
    previous = target.read_text() if target.exists() else ""
    kept = previous[previous.index(KEEP_MARKER):] if KEEP_MARKER in previous else ""
    target.write_text(page + "\n" + (f"\n{kept}" if kept else ""))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python benchmarks/make_docs.py RUN_DIR DOCS_DIR")
    main(sys.argv[1], sys.argv[2])
