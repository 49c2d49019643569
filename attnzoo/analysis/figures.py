"""The pictures of ``attnzoo explain``, drawn with matplotlib (the ``viz`` extra).

Figures are built with ``matplotlib.figure.Figure`` and the Agg canvas directly, never through pyplot, so
drawing them changes no global backend or state in the caller's session (a notebook keeps its own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from attnzoo.extras import require
from attnzoo.files import write_atomically

DISPLAY_SIDE = 160  # pixels: small images (32x32 shapes) are shown enlarged, large ones at this size
STAGE_COLORS = ("#7f7f7f", "#1f77b4", "#2ca02c", "#9467bd", "#d62728", "#8c564b", "#e377c2", "#bcbd22", "#17becf")


def _figure(width: float, height: float, dpi: int = 80):
    require("viz", "drawing figures")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def save(figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path``, atomically (:func:`attnzoo.files.write_atomically`)."""
    if getattr(figure, "fixed_layout", False):
        options = {}
    else:
        options = {"bbox_inches": "tight", "pad_inches": 0.05}  # titles are never cut off
    return write_atomically(path, lambda partial: figure.savefig(partial, format="png", **options))


def display_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 [3, H, W] -> float [3, H', W'] in [0, 1], enlarged (nearest) so a small image is not a few dots."""
    scale = max(1, DISPLAY_SIDE // max(image.shape[-2:]))
    shown = image.float()[None] / 255
    if scale > 1:
        shown = torch.nn.functional.interpolate(shown, scale_factor=scale, mode="nearest")
    return shown[0]


def upsample(map2d: torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """A [h, w] map bilinearly resized to ``size`` (H, W), as float32 numpy."""
    resized = torch.nn.functional.interpolate(map2d[None, None].float(), size=tuple(size), mode="bilinear",
                                              align_corners=False)
    return resized[0, 0].numpy()


def _fit_title(text: str, width_inches: float, fontsize: float, max_lines: int = 3) -> str:
    """A panel title wrapped to its panel's width (a long file name or class name would run over the next panel
    and past the figure's edge), in at most the ``max_lines`` the fixed layout leaves room for."""
    import textwrap

    # DejaVu Sans averages about 0.6 em per character.
    chars = max(8, int(width_inches * 72 / (0.6 * fontsize)))
    first, *rest = text.split("\n")
    if rest and len(first) > chars:  # a name (the image's file): its end tells files apart, keep that
        first = "..." + first[-(chars - 3):]
    lines = [first, *(part for line in rest for part in (textwrap.wrap(line, chars) or [""]))]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines - 1], textwrap.shorten(" ".join(lines[max_lines - 1:]), chars, placeholder="...")]
    return "\n".join(lines)


def image_figure(image: torch.Tensor, title: str, panels: list[tuple[str, np.ndarray | None]], columns: int = 6):
    """The image, then each (title, map [H, W]) overlaid on it; a None map is an empty panel with its title.

    Each map is shown on its own min-max range (the panel title says the range): small differences matter
    (GC's softmax weights are ~1/(H·W) everywhere but where the context is).
    """
    rgb = image.permute(1, 2, 0).numpy()
    count = 1 + len(panels)
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    side = 2.1
    figure = _figure(columns * side, rows * (side + 0.5))
    extent = (0, rgb.shape[1], rgb.shape[0], 0)
    for index in range(rows * columns):
        ax = figure.add_subplot(rows, columns, index + 1)
        ax.set_axis_off()
        if index >= count:
            continue
        name, overlay = panels[index - 1] if index else (title, None)
        if index and overlay is None:
            ax.text(0.5, 0.5, name, ha="center", va="center", fontsize=7, transform=ax.transAxes)
            continue
        ax.imshow(rgb, extent=extent, interpolation="antialiased")
        if overlay is not None:
            lo, hi = float(overlay.min()), float(overlay.max())
            if hi - lo <= 1e-6 * max(abs(hi), 1e-12):  # a 1x1 map, or a gate that does not vary: nothing to colour
                name = f"{name}\nconstant {lo:.3g}"
            else:
                ax.imshow(overlay, cmap="jet", alpha=0.5, extent=extent, vmin=lo, vmax=hi)
                name = f"{name}\n[{lo:.3g}, {hi:.3g}]"
        ax.set_title(_fit_title(name, side, 7 if index == 0 else 6), fontsize=7 if index == 0 else 6)
    # Fixed margins (room for three title lines above each row): tight_layout would double the drawing time.
    title_room = 0.5 / (side + 0.5)
    figure.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - title_room / rows, wspace=0.04,
                           hspace=title_room / (1 - title_room))
    figure.fixed_layout = True
    return figure


def _box(stats: dict) -> dict:
    p = stats["percentiles"]
    return {"med": p["p50"], "q1": p["p25"], "q3": p["p75"], "whislo": p["p5"], "whishi": p["p95"], "fliers": []}


def channel_gate_figure(model_name: str, modules: list[dict], tap: str, detail: list[dict]):
    """Per-model figure of one channel tap: its distribution in every module (box: quartiles, whiskers 5-95%),
    shallow to deep and coloured by stage, then each channel's mean gate (± std over images) at a few depths.

    ``modules``: dicts with path, stage and summary (a TapStatistics summary); ``detail``: dicts with path,
    stage, mean and std (per channel, numpy).
    """
    rows = 1 + len(detail)
    figure = _figure(max(8.0, 0.18 * len(modules) + 2), 2.6 + 1.5 * len(detail))
    grid = figure.add_gridspec(rows, 1, height_ratios=[2.2] + [1.0] * len(detail))
    ax = figure.add_subplot(grid[0])
    boxes = [_box(m["summary"]) for m in modules]
    artists = ax.bxp(boxes, positions=range(len(boxes)), showfliers=False, patch_artist=True, widths=0.7)
    for patch, m in zip(artists["boxes"], modules):
        patch.set_facecolor(STAGE_COLORS[(m["stage"] or 0) % len(STAGE_COLORS)])
    ax.plot(range(len(boxes)), [m["summary"]["mean"] for m in modules], "k.", markersize=3, label="mean")
    ax.set_xticks(range(len(boxes)))
    ax.set_xticklabels([m["path"] for m in modules], rotation=90, fontsize=5)
    images = modules[0]["summary"]["images"] if modules else 0
    ax.set_title(f"{model_name}: {tap} over channels and {images} image(s), shallow to deep "
                 "(box: quartiles, whiskers: 5-95%, colour: stage)", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    for row, entry in enumerate(detail, start=1):
        axd = figure.add_subplot(grid[row])
        channels = np.arange(len(entry["mean"]))
        color = STAGE_COLORS[(entry["stage"] or 0) % len(STAGE_COLORS)]
        axd.fill_between(channels, entry["mean"] - entry["std"], entry["mean"] + entry["std"], color=color, alpha=0.25,
                         linewidth=0)
        axd.plot(channels, entry["mean"], color=color, linewidth=0.8)
        axd.set_xlim(0, max(len(channels) - 1, 1))
        axd.set_ylabel(f"{entry['path']}\n(stage {entry['stage']})", fontsize=6)
        axd.tick_params(labelsize=6)
        axd.grid(alpha=0.3)
    if detail:
        figure.axes[-1].set_xlabel("channel (mean over images; band: ± std over images)", fontsize=7)
    figure.tight_layout(pad=0.4)
    return figure


def per_class_figure(model_name: str, tap: str, depths: list[dict], class_names: list[str]):
    """SE Fig. 6: at each depth, the mean gate of every channel for each class, and over all images.

    ``depths``: dicts with path, stage, class_means ([K, C] numpy, rows in class_names order), overall (numpy
    [C]) and specificity.
    """
    figure = _figure(8.0, 1.7 * len(depths) + 0.6)
    colors = [f"C{i % 10}" for i in range(len(class_names))]
    for row, entry in enumerate(depths):
        ax = figure.add_subplot(len(depths), 1, row + 1)
        channels = np.arange(entry["overall"].shape[0])
        for k, name in enumerate(class_names):
            ax.plot(channels, entry["class_means"][k], color=colors[k], linewidth=0.6, label=name)
        ax.plot(channels, entry["overall"], color="black", linewidth=1.0, linestyle="--", label="all")
        spec = entry["specificity"]
        ax.set_title(f"{entry['path']} (stage {entry['stage']}): between-class / within-class std = "
                     f"{spec:.2f}" if spec is not None else f"{entry['path']} (stage {entry['stage']})", fontsize=7)
        ax.set_xlim(0, max(len(channels) - 1, 1))
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    handles, labels = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), fontsize=6, frameon=False)
    figure.axes[-1].set_xlabel(f"channel: mean {tap} per class", fontsize=7)
    figure.suptitle(f"{model_name}", fontsize=8, x=0.02, ha="left")
    figure.tight_layout(pad=0.4, rect=(0, 0, 1, 0.93))
    return figure


def distribution_by_layer_figure(model_name: str, tap: str, layers: list[dict]):
    """The GCT paper's question for any channel tap: the distribution of its gates in each layer, shallow to deep
    (violins over channels and images), with the std over channels of each channel's mean gate beneath.

    ``layers``: dicts with path, stage, values (1-D numpy sample) and summary.
    """
    figure = _figure(max(8.0, 0.16 * len(layers) + 2), 4.6)
    grid = figure.add_gridspec(2, 1, height_ratios=[3, 1.2])
    ax = figure.add_subplot(grid[0])
    positions = list(range(len(layers)))
    data = [entry["values"] if entry["values"].size else np.zeros(1) for entry in layers]
    parts = ax.violinplot(data, positions=positions, widths=0.8, showextrema=False)
    for body, entry in zip(parts["bodies"], layers):
        body.set_facecolor(STAGE_COLORS[(entry["stage"] or 0) % len(STAGE_COLORS)])
        body.set_alpha(0.7)
    ax.plot(positions, [entry["summary"]["mean"] for entry in layers], "k.", markersize=3)
    ax.set_title(f"{model_name}: distribution of {tap} by layer, over channels and images (colour: stage)", fontsize=8)
    ax.set_xticks([])
    ax.tick_params(labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    axs = figure.add_subplot(grid[1], sharex=ax)
    axs.bar(positions, [entry["summary"].get("std_over_channels", 0.0) for entry in layers],
            color=[STAGE_COLORS[(entry["stage"] or 0) % len(STAGE_COLORS)] for entry in layers])
    axs.set_ylabel("std over\nchannels", fontsize=6)
    axs.set_xticks(positions)
    axs.set_xticklabels([entry["path"] for entry in layers], rotation=90, fontsize=4.5)
    axs.tick_params(axis="y", labelsize=6)
    ax.tick_params(axis="x", labelbottom=False)  # the shared ticks are labelled once, under the bars
    figure.tight_layout(pad=0.4)
    return figure
