"""Generate docs/benchmarks.md from the bench.json files of a run (see benchmarks/cpu_focused.sh).

    python benchmarks/make_docs.py bench-out/cpu docs     # writes docs/benchmarks.md and docs/benchmarks/*.png
    python benchmarks/make_docs.py --peers bench-out/peers docs   # only the page's peer section

Every number in the page comes from the JSON; the goals of issue 5 are checked here, not by hand. The page
ends with a hand-written part (one-off design measurements, below :data:`KEEP_MARKER`), which is kept as it is.
The peer section (timm and torchvision beside the zoo models they equal) comes from a run in another venv,
since they cannot be installed beside the zoo's CPU torch: ``--peers`` rewrites only that section, and a
full regeneration from runs without peers keeps the section the page already has.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import sys
from pathlib import Path

# attention -> allowed time ratio to the plain backbone (issue 5); None: reported only.
TIME_GOALS = {"eca": 1.05, "se": 1.05, "gc": 1.05, "gct": 1.10, "cbam": 1.10, "gam": None}
MEMORY_GOAL = 1.10
SPEEDUP_GOAL = 1.3
KEEP_MARKER = "<!-- hand-written from here on: benchmarks/make_docs.py keeps this part when it regenerates the page -->"
PEERS_START, PEERS_END = "<!-- peers:start -->", "<!-- peers:end -->"


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
        return "(no budget)"
    return "yes" if value <= limit else "**no**"


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


def budgets(runs: list[tuple[str, dict]]) -> list[str]:
    lines = ["| budget | model | measured: median (min-max over rounds) | within budget |", "|---|---|---:|---|"]
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


@functools.cache
def _peer_catalogue() -> dict:
    """benchmarks/peers.py's catalogue (beside this script), for the peers' notes; empty without attnzoo."""
    try:
        spec = importlib.util.spec_from_file_location("attnzoo_benchmark_peers", Path(__file__).with_name("peers.py"))
        catalogue = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(catalogue)
    except ImportError:  # the page can be rendered without attnzoo installed
        return {}
    return catalogue.PEERS


def _peer_note(label: str) -> str:
    peer = _peer_catalogue().get(label)
    return peer.note if peer else ""


def peer_section(runs: list[tuple[str, dict]]) -> list[str]:
    """The peers of every run that has some: their time and memory over the zoo model they equal."""
    out = []
    for name, results in runs:
        rows = [r for r in results["rows"] if r.get("peer_of")]
        if not rows:
            continue
        m, config = results["machine"], results["config"]
        versions = ", ".join(f"{lib} {v}" for lib, v in sorted(results.get("peer_versions", {}).items()))
        by_key = {(r["model"], r["compile"], r["task"], r["batch"], r["resolution"]): r for r in results["rows"]}
        out += [
            f"## Peers: timm and torchvision ({name})",
            "",
            f"`{m['command']}`",
            "",
            f"Run {m['date']}{', commit ' + m['git_commit'] if m.get('git_commit') else ''}, in a venv with torch "
            f"{m['torch']}, {versions} (the peers cannot be installed beside the zoo's CPU torch). {m['cpu']}, "
            f"{m['cpu_cores']} shared cores, torch threads {m['torch_threads']}; dtypes {config['dtypes']}, batch "
            f"{config['batch_sizes']}, resolution {config['resolutions']}, {config['repeats']} interleaved rounds.",
            "",
            "Each peer is timed in the same rounds as the attnzoo model it equals; `peer / attnzoo` is the ratio of "
            "their times per round (median, min-max), memory likewise. Below 1.000 the peer is faster. "
            "torchvision's and timm's plain ResNets and torchvision's MobileNetV2 compute the same function as "
            "attnzoo's plain networks (bitwise, tests/test_peers.py): how far their ratios are from 1.000 is "
            "this run's noise, and smaller differences elsewhere cannot be told apart from it.",
            "",
            "| peer | attnzoo model | task | mode | peer ms | attnzoo ms | peer / attnzoo time | peer / attnzoo memory | how the peer differs |",
            "|---|---|---|---|---:|---:|---:|---:|---|",
        ]
        for row in rows:
            zoo = by_key.get((row["peer_of"], row["compile"], row["task"], row["batch"], row["resolution"]), {})
            ms = lambda r: "-" if not r.get("latency_s") else f"{1e3 * r['latency_s']['median']:.1f}"  # noqa: E731
            mem = row.get("memory_ratio_to_equivalent")
            error = row.get("error")
            out.append(
                f"| `{row['model']}` | `{row['peer_of']}` | {row['task']} | {row['compile']} | {ms(row)} | {ms(zoo)} | "
                f"{ratio(row.get('ratio_to_equivalent'))} | {'-' if mem is None else f'{mem:.3f}'} | "
                f"{_peer_note(row['model']) or '-'} |" + (f" error: {error}" if error else ""))
        out.append("")
    return [PEERS_START, *out, PEERS_END] if out else []


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
        "## What each attention costs over its plain backbone",
        "",
        "Each attention model against its plain backbone, beside the budget the zoo holds it to: an attention should cost at most this much over the network without it (GAM, by design a heavier module, has none; its figures are reported).",
        "",
        *budgets(runs),
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
            f"Run {m['date']}{', commit ' + m['git_commit'] if m.get('git_commit') else ''}."
            # A run killed or timed out keeps the settings it finished (bench.json says "complete": false).
            + (" **Incomplete**: the run stopped before its last setting; the rows below are those it finished."
               if results.get("complete") is False else ""),
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
    out += peer_section(runs)
    pngs = [p for p in sorted(Path(root).glob("*/bench.png")) if p.stat().st_size < 200_000]
    if pngs:
        out += ["## Plots", ""]
        out += [f"![{p.parent.name}](benchmarks/{p.parent.name}.png)" for p in pngs]
        out.append("")
    return "\n".join(out)


def _region(page: str) -> str | None:
    if PEERS_START in page and PEERS_END in page:
        return page[page.index(PEERS_START): page.index(PEERS_END) + len(PEERS_END)]
    return None


def write_peers(root: str, docs: str) -> None:
    """Replace (or add) only the peer section of docs/benchmarks.md."""
    section = "\n".join(peer_section(load(Path(root))))
    if not section:
        raise SystemExit(f"no run under {root} has timm or torchvision peers")
    page_path = Path(docs) / "benchmarks.md"
    page = page_path.read_text() if page_path.is_file() else "# Benchmarks\n"
    old = _region(page)
    if old is not None:
        page = page.replace(old, section)
    elif "\n## Plots" in page:
        page = page.replace("\n## Plots", f"\n{section}\n\n## Plots", 1)
    else:
        page = page.rstrip("\n") + "\n\n" + section + "\n"
    page_path.write_text(page)


def main(root: str, docs: str) -> None:
    docs_dir = Path(docs)
    target = docs_dir / "benchmarks.md"
    previous = target.read_text() if target.exists() else ""
    page = render(root)
    peers = _region(previous)
    if peers is not None and _region(page) is None:  # the peers came from another venv's run: keep them
        page = page.replace("\n## Plots", f"\n{peers}\n\n## Plots", 1) if "\n## Plots" in page else page + "\n" + peers
    (docs_dir / "benchmarks").mkdir(parents=True, exist_ok=True)
    for png in sorted(Path(root).glob("*/bench.png")):
        if png.stat().st_size < 200_000:  # the repository keeps small pictures only
            shutil.copyfile(png, docs_dir / "benchmarks" / f"{png.parent.name}.png")
    kept = previous[previous.index(KEEP_MARKER):] if KEEP_MARKER in previous else ""
    target.write_text(page + "\n" + (f"\n{kept}" if kept else ""))


if __name__ == "__main__":
    args = sys.argv[1:]
    peers_only = args[:1] == ["--peers"]
    if peers_only:
        args = args[1:]
    if len(args) != 2:
        raise SystemExit("usage: python benchmarks/make_docs.py [--peers] RUN_DIR DOCS_DIR")
    (write_peers if peers_only else main)(*args)
