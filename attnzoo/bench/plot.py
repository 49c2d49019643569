"""The PNG: overhead per attention (time ratio to the plain backbone, median with min-max whiskers) and cost
per image against batch size or resolution when the run swept one.

Drawn with matplotlib, the ``viz`` extra (``pip install 'attnzoo[viz]'``); without it the bench still measures
and writes bench.json and bench.csv, and :func:`attnzoo.bench.report.write` skips bench.png with a one-line
note. The figure is built without pyplot, so no global matplotlib state changes.
"""

from __future__ import annotations

COLORS = {
    None: "#3c3c3c", "se": "#1f77b4", "eca": "#2ca02c", "gct": "#9467bd", "gc": "#ff7f0e",
    "cbam": "#d62728", "gam": "#8c564b", "timm": "#7f7f7f",
    "torchvision": "#bcbd22",
}
CLIP = 8.0  # a heavy module (GAM) would squash everything else; its bar is clipped and labelled


def _setting(row: dict) -> str:
    parts = [row["task"], row["compile"], row["dtype"]]
    if row["channels_last"]:
        parts.append("cl")
    return " ".join(parts)


def _overhead_rows(results: dict) -> list[dict]:
    config = results["config"]
    batch, resolution = config["batch_sizes"][0], config["resolutions"][0]
    return [r for r in results["rows"] if r.get("ratio_to_plain") and r.get("attention")
            and r["batch"] == batch and r["resolution"] == resolution]


def _sweep(results: dict) -> tuple[str, list[dict]] | None:
    config = results["config"]
    if len(config["batch_sizes"]) > 1:
        axis, fixed = "batch", ("resolution", config["resolutions"][0])
    elif len(config["resolutions"]) > 1:
        axis, fixed = "resolution", ("batch", config["batch_sizes"][0])
    else:
        return None
    rows = [r for r in results["rows"] if r.get("latency_s") and r[fixed[0]] == fixed[1]]
    return axis, rows


def _draw_overhead(ax, rows: list[dict]) -> None:
    labels = [f"{r['model']}  {_setting(r)}  b{r['batch']} {r['resolution']}px" for r in rows]
    medians = [r["ratio_to_plain"]["median"] for r in rows]
    lo = min([0.9] + [r["ratio_to_plain"]["min"] for r in rows])
    hi = min(max([1.2] + [r["ratio_to_plain"]["max"] for r in rows]), CLIP)
    y = list(range(len(rows)))[::-1]
    ax.barh(y, [min(m, hi) - lo for m in medians], left=lo, height=0.75,
            color=[COLORS.get(r["attention"], "#000000") for r in rows])
    for yi, r in zip(y, rows):
        ratio = r["ratio_to_plain"]
        ax.plot([min(ratio["min"], hi), min(ratio["max"], hi)], [yi, yi], color="black", linewidth=0.8)
        label = f"{ratio['median']:.3f}" + (" (clipped)" if ratio["median"] > hi else "")
        ax.text(min(ratio["median"], hi) + 0.005 * (hi - lo), yi, label, va="center", fontsize=7)
    for mark, color in ((1.0, "black"), (1.05, "#96c896"), (1.10, "#e6b478")):
        if lo <= mark <= hi:
            ax.axvline(mark, color=color, linewidth=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlim(lo, hi * 1.04)
    ax.set_xlabel("time ratio to the plain backbone (1.0 = free); median, whiskers min-max over rounds", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)


def _draw_sweep(ax, axis: str, rows: list[dict]) -> None:
    series: dict[str, list[tuple[int, float]]] = {}
    attention_of = {}
    for row in rows:
        key = f"{row['model']} {_setting(row)}"
        series.setdefault(key, []).append((row[axis], 1e3 * row["latency_s"]["median"] / row["batch"]))
        attention_of[key] = row["attention"]
    for key, points in sorted(series.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.2, color=COLORS.get(attention_of[key], "#000000"),
                label=key)
    xs = sorted({x for points in series.values() for x, _ in points})
    ax.set_xticks(xs)
    ax.set_xlabel(axis, fontsize=8)
    ax.set_ylabel("ms per image (median)", fontsize=8)
    ax.set_ylim(bottom=0)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def draw(results: dict):
    """The bench figure (a matplotlib ``Figure``); ``figure.savefig(path)`` writes it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _overhead_rows(results)
    sweep = _sweep(results)
    overhead_height = 0.8 + 0.22 * max(len(rows), 1)
    sweep_height = 3.6 if sweep else 0.0
    figure = Figure(figsize=(12, overhead_height + sweep_height + 0.4), dpi=80)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2 if sweep else 1, 1, height_ratios=[overhead_height, sweep_height] if sweep else [1])
    machine = results.get("machine", {})
    figure.suptitle(f"attnzoo bench - {machine.get('cpu', '?')} ({machine.get('device', '?')}), "
                    f"torch {machine.get('torch', '?')}", fontsize=9, x=0.01, ha="left")
    ax = figure.add_subplot(grid[0])
    if rows:
        _draw_overhead(ax, rows)
    else:
        ax.set_axis_off()
        ax.text(0, 0.5, "no attention model measured: no overhead to show", fontsize=8)
    if sweep:
        _draw_sweep(figure.add_subplot(grid[1]), *sweep)
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    return figure
