"""report.png: each model's final validation top-1 (mean, 95% interval as a bar) against its cost: FLOPs, and
the measured training throughput where the bench ran. Drawn without pyplot (no global matplotlib state), in the
bench's colours per attention; needs matplotlib (the ``viz`` extra)."""

from __future__ import annotations

from attnzoo.bench.plot import COLORS


def _panel(ax, rows: list[dict], cost_of, xlabel: str) -> None:
    costs = [cost_of(row) for row in rows if cost_of(row) and row["final_top1"]["mean"] is not None]
    if costs and max(costs) > 3 * min(costs):
        from matplotlib.ticker import LogLocator, NullFormatter, NullLocator, ScalarFormatter

        ax.set_xscale("log")  # GAM costs several times the others: a linear axis would stack them in one spot
        # Labelled ticks at 1, 2, 3, 5 and 7 times powers of ten: a range of less than a decade (176 to 621
        # images/s) holds no power of ten, and the log axis would show no number at all.
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    for row in rows:
        summary, cost = row["final_top1"], cost_of(row)
        if summary["mean"] is None or cost is None:
            continue
        color = COLORS.get(row["attention"], "#000000")
        if summary["ci_low"] is not None:
            ax.errorbar([cost], [summary["mean"]], yerr=[[summary["mean"] - summary["ci_low"]],
                                                        [summary["ci_high"] - summary["mean"]]],
                        fmt="o", color=color, capsize=3, markersize=5)
        else:
            ax.plot([cost], [summary["mean"]], "o", color=color, markerfacecolor="none", markersize=5)
        for value in summary["values"]:
            ax.plot([cost], [value], ".", color=color, alpha=0.35, markersize=4)
        ax.annotate(row["model"], (cost, summary["mean"]), textcoords="offset points", xytext=(6, 2), fontsize=7)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel("final validation top-1 (%)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def draw(report: dict):
    """The figure (a matplotlib ``Figure``); ``figure.savefig(path)`` writes it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = report["models"]
    measured = any(row["cost"].get("train_images_per_s") for row in rows)
    figure = Figure(figsize=(11 if measured else 6, 4.2), dpi=90)
    FigureCanvasAgg(figure)
    size = "x".join(map(str, ((report.get("setting") or {}).get("input_size") or [0, 0, 0])[1:]))
    axes = figure.subplots(1, 2 if measured else 1, squeeze=False)[0]
    _panel(axes[0], rows, lambda r: r["cost"]["flops"] / 1e6 if r["cost"].get("flops") else None,
           f"MFLOPs per {size} image (attnzoo.model_info), costlier to the right")
    if measured:
        _panel(axes[1], rows, lambda r: r["cost"].get("train_images_per_s"),
               "training images/s (attnzoo bench), axis reversed: slower to the right")
        axes[1].invert_xaxis()  # costlier to the right in both panels
    study = report["study"]
    finished, total = report["runs"]["finished"], report["runs"]["total"]
    status = "" if finished == total else f" - PARTIAL: {finished} of {total} runs finished"
    figure.suptitle(f"{study['recipe_source']}: mean and 95% t-interval over up to {study['seeds']} seeds "
                    f"(dots: single runs; hollow: one run, no interval){status}", fontsize=9, x=0.01, ha="left")
    figure.tight_layout(rect=(0, 0, 1, 0.94))
    return figure
