"""The PNG: overhead per attention (time ratio to the plain backbone, median with min-max whiskers) and cost
per image against batch size or resolution when the run swept one. Drawn with Pillow, no plotting library."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

WIDTH = 960
COLORS = {
    None: (60, 60, 60), "se": (31, 119, 180), "eca": (44, 160, 44), "gct": (148, 103, 189), "gc": (255, 127, 14),
    "cbam": (214, 39, 40), "gam": (140, 86, 75), "timm": (127, 127, 127),
    "torchvision": (188, 189, 34),
}
BAR_H, GAP = 14, 4


def _font():
    return ImageFont.load_default()


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


def _draw_overhead(draw: ImageDraw.ImageDraw, rows: list[dict], top: int, font) -> int:
    left, right = 330, WIDTH - 30
    lo = min([0.9] + [r["ratio_to_plain"]["min"] for r in rows])
    hi = max([1.2] + [r["ratio_to_plain"]["max"] for r in rows])
    hi = min(hi, 8.0)  # a heavy module (GAM) would squash everything else; its bar is clipped and labelled

    def x_of(v: float) -> float:
        return left + (min(v, hi) - lo) / (hi - lo) * (right - left)

    y = top + 18
    draw.text((10, top), "time ratio to the plain backbone (1.0 = free); median, whiskers min-max over rounds", fill=0, font=font)
    bottom = y + len(rows) * (BAR_H + GAP)
    for mark, shade in ((1.0, (0, 0, 0)), (1.05, (150, 200, 150)), (1.10, (230, 180, 120))):
        if lo <= mark <= hi:
            draw.line([(x_of(mark), y - 2), (x_of(mark), bottom)], fill=shade, width=1)
            draw.text((x_of(mark) - 10, bottom + 2), f"{mark:.2f}", fill=shade, font=font)
    for row in rows:
        r = row["ratio_to_plain"]
        color = COLORS.get(row["attention"], (0, 0, 0))
        draw.text((10, y + 1), f"{row['model']}  {_setting(row)}  b{row['batch']} {row['resolution']}px", fill=0, font=font)
        draw.rectangle([x_of(lo), y, x_of(r["median"]), y + BAR_H], fill=color)
        mid = y + BAR_H // 2
        draw.line([(x_of(r["min"]), mid), (x_of(r["max"]), mid)], fill=(0, 0, 0), width=1)
        label = f"{r['median']:.3f}" + (" (clipped)" if r["median"] > hi else "")
        draw.text((min(x_of(r["median"]) + 4, right - 70), y + 1), label, fill=0, font=font)
        y += BAR_H + GAP
    return bottom + 20


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


def _draw_sweep(draw: ImageDraw.ImageDraw, axis: str, rows: list[dict], top: int, font) -> int:
    left, right, height = 70, WIDTH - 260, 300
    series: dict[str, list[tuple[int, float]]] = {}
    attention_of = {}
    for row in rows:
        key = f"{row['model']} {_setting(row)}"
        series.setdefault(key, []).append((row[axis], 1e3 * row["latency_s"]["median"] / row["batch"]))
        attention_of[key] = row["attention"]
    xs = sorted({x for points in series.values() for x, _ in points})
    ys = [y for points in series.values() for _, y in points]
    y_hi = max(ys) * 1.1
    bottom = top + 20 + height

    def pos(x: int, y: float) -> tuple[float, float]:
        fx = 0.5 if len(xs) == 1 else xs.index(x) / (len(xs) - 1)
        return left + fx * (right - left), bottom - y / y_hi * height

    draw.text((10, top), f"ms per image against {axis} (median)", fill=0, font=font)
    draw.line([(left, bottom), (right, bottom)], fill=0)
    draw.line([(left, top + 20), (left, bottom)], fill=0)
    for x in xs:
        px, _ = pos(x, 0)
        draw.text((px - 8, bottom + 4), str(x), fill=0, font=font)
    for frac in (0.25, 0.5, 0.75, 1.0):
        _, py = pos(xs[0], y_hi * frac / 1.1)
        draw.text((10, py - 6), f"{y_hi * frac / 1.1:.2f}", fill=0, font=font)
    for i, (key, points) in enumerate(sorted(series.items())):
        color = COLORS.get(attention_of[key], (0, 0, 0))
        coords = [pos(x, y) for x, y in sorted(points)]
        if len(coords) > 1:
            draw.line(coords, fill=color, width=2)
        for cx, cy in coords:
            draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=color)
        draw.text((right + 10, top + 20 + 12 * i), key, fill=color, font=font)
    return max(bottom + 24, top + 32 + 12 * len(series))


def draw(results: dict) -> Image.Image:
    font = _font()
    rows = _overhead_rows(results)
    sweep = _sweep(results)
    height = 60 + len(rows) * (BAR_H + GAP) + 60 + (360 + 12 * len(results["rows"]) if sweep else 40)
    image = Image.new("RGB", (WIDTH, height), "white")
    canvas = ImageDraw.Draw(image)
    machine = results.get("machine", {})
    canvas.text((10, 6), f"attnzoo bench - {machine.get('cpu', '?')} ({machine.get('device', '?')}), torch {machine.get('torch', '?')}",
                fill=0, font=font)
    y = 26
    if rows:
        y = _draw_overhead(canvas, rows, y, font)
    else:
        canvas.text((10, y), "no attention model measured: no overhead to show", fill=0, font=font)
        y += 30
    if sweep:
        y = _draw_sweep(canvas, *sweep, y + 10, font)
    else:
        canvas.text((10, y), "one batch size and one resolution: no sweep to plot", fill=0, font=font)
        y += 20
    return image.crop((0, 0, WIDTH, min(height, y + 10)))
