"""Make the pictures and numbers of docs/analysis.md from the quickstart recipe's models.

    python docs/make_analysis.py              # train what is missing, explain, write docs/analysis/
    python docs/make_analysis.py --no-train   # only from checkpoints already in runs/

Models: the quickstart model itself (ECA-ResNet-18, ``attnzoo fit --config configs/quickstart.yaml``) and
CBAM-, GC- and GCT-ResNet-18 trained with the very same recipe (``--model.model X``), since ECA has no spatial
map to look at. Each is explained with ``attnzoo.analysis.explain(..., per_class=True)`` on the quickstart's
test split (the 1,000 images the data module makes with seed offset 2, never seen in training), written as an
ImageFolder tree. The pictures in docs/analysis/ are copies of what explain wrote (a few stacked, reduced to a
palette to stay small), and docs/analysis/numbers.json holds what the page quotes, including two measures of
"does the map find the shape" that explain cannot give on arbitrary images because they need the shape's mask:

- correlation: Pearson's r between a map (upsampled to 32x32) and the shape's pixel coverage, mean over images;
- pointing game: how often the map's maximum falls on the shape, against chance (the shape's area fraction).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "runs" / "analysis"
DOCS = ROOT / "docs" / "analysis"
CONFIG = ROOT / "configs" / "quickstart.yaml"
MODELS = {
    "eca_r18": ROOT / "runs" / "quickstart" / "checkpoints" / "last.ckpt",  # the quickstart's own run
    "cbam_r18": RUNS / "cbam_r18" / "checkpoints" / "last.ckpt",
    "gc_r18": RUNS / "gc_r18" / "checkpoints" / "last.ckpt",
    "gct_r18": RUNS / "gct_r18" / "checkpoints" / "last.ckpt",
}
TEST_IMAGES, TEST_SEED = 1000, 2  # ShapesDataModule's test split for the quickstart config (seed 0)
SHOWN_CLASSES = ("disk", "triangle", "two_dots")
# What docs/analysis.md shows of each model (explain writes more: see runs/analysis/explain/<model>/).
PICTURED = ("eca_r18", "cbam_r18", "gc_r18")
FIGURES = {
    "eca_r18": ("channel_gate", "per_class_channel_gate"),
    "cbam_r18": (),
    "gc_r18": ("context_add",),
    "gct_r18": ("distribution_channel_gate", "per_class_channel_gate"),
}


def train(name: str, checkpoint: Path) -> None:
    command = [str(Path(sys.executable).parent / "attnzoo"), "fit", "--config", str(CONFIG)]
    if name != "eca_r18":
        command += ["--model.model", name, "--trainer.default_root_dir", str(checkpoint.parent.parent)]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def write_test_split(folder: Path) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    from attnzoo.data.synthetic import SHAPE_CLASSES, generate

    images, labels, masks = generate(TEST_IMAGES, 32, seed=TEST_SEED, masks=True)
    files = []
    for i, (image, label) in enumerate(zip(images, labels)):
        path = folder / SHAPE_CLASSES[int(label)] / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
        files.append(str(path))
    return files, labels, masks


def map_metrics(checkpoint: Path, files: list[str], masks: torch.Tensor, layer: str) -> dict:
    """Correlation with the shape and pointing-game hits of every spatial map and of Grad-CAM."""
    from attnzoo.analysis import record_attention
    from attnzoo.analysis.explainer import load_source
    from attnzoo.analysis.gradcam import gradcam
    from attnzoo.analysis.model_meta import model_metadata
    model = load_source(str(checkpoint)).eval()
    pre = model_metadata(model).preprocessing
    sums: dict[str, list[float]] = {}
    hits: dict[str, list[float]] = {}
    chance = []
    for start in range(0, len(files), 100):
        batch = [np.asarray(Image.open(f).convert("RGB")) for f in files[start:start + 100]]
        x = pre.normalize(torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2))
        shape = masks[start:start + 100]
        chance += (shape > 0.5).float().mean((1, 2)).tolist()
        with record_attention(model) as recording, torch.no_grad():
            predicted = model(x).argmax(-1)
        maps = {}
        for path, record in recording.records.items():
            for tap in ("spatial_gate", "context_mask"):
                value = getattr(record, tap)
                if value is not None and min(value.shape[-2:]) >= 4:  # a 2x2 or 1x1 map has no place to point
                    maps[f"{path}.{tap}"] = value
        maps[f"grad_cam@{layer}"] = gradcam(model, layer, x, predicted)[:, None]
        for key, value in maps.items():
            up = torch.nn.functional.interpolate(value.float(), size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
            a = up.flatten(1) - up.flatten(1).mean(1, keepdim=True)
            b = shape.flatten(1) - shape.flatten(1).mean(1, keepdim=True)
            r = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)
            sums.setdefault(key, []).extend(r.tolist())
            peak = up.flatten(1).argmax(1)
            hits.setdefault(key, []).extend((shape.flatten(1).gather(1, peak[:, None])[:, 0] > 0.5).float().tolist())
    return {"pointing_chance": round(float(np.mean(chance)), 3),
            "maps": {key: {"correlation": round(float(np.mean(sums[key])), 3),
                           "pointing": round(float(np.mean(hits[key])), 3)} for key in sums}}


def stack(pictures: list[Path], target: Path, colors: int = 160) -> None:
    """Pictures of the same width, one under the other, saved with a palette (the repository keeps small PNGs)."""
    images = [Image.open(p).convert("RGB") for p in pictures]
    width = max(i.width for i in images)
    canvas = Image.new("RGB", (width, sum(i.height for i in images)), "white")
    y = 0
    for image in images:
        canvas.paste(image, (0, y))
        y += image.height
    small(canvas, target, colors)


def small(image: Image.Image, target: Path, colors: int = 160) -> None:
    image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def stage_numbers(summary: dict, tap: str = "channel_gate") -> dict:
    """Per stage: the mean gate, its spread over channels and over images, and its class specificity."""
    per_class = summary["per_class"]["modules"]
    out: dict[str, dict[str, list[float]]] = {}
    for path, entry in summary["modules"].items():
        if tap not in entry["taps"]:
            continue
        stats = entry["taps"][tap]
        row = out.setdefault(str(entry["stage"]), {"mean": [], "std": [], "std_over_channels": [],
                                                   "std_over_images": [], "class_specificity": []})
        for key in ("mean", "std", "std_over_channels", "std_over_images"):
            row[key].append(stats[key])
        row["class_specificity"].append(per_class[path][tap]["class_specificity"] or 0.0)
    return {stage: {key: round(float(np.mean(values)), 4) for key, values in row.items()} for stage, row in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-train", action="store_true", help="use existing checkpoints only")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="a subset, to redo some (numbers.json keeps the others' entries)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    from attnzoo.analysis import explain

    models = {name: MODELS[name] for name in args.models}
    for name, checkpoint in models.items():
        if not checkpoint.is_file():
            if args.no_train:
                raise SystemExit(f"missing {checkpoint}; run without --no-train to train {name}")
            train(name, checkpoint)
    test_dir = RUNS / "shapes-test"
    files, _, masks = write_test_split(test_dir)
    DOCS.mkdir(parents=True, exist_ok=True)
    numbers_file = DOCS / "numbers.json"
    numbers = json.loads(numbers_file.read_text()) if numbers_file.is_file() else {}
    for name, checkpoint in models.items():
        out = RUNS / "explain" / name
        summary = explain(str(checkpoint), [str(test_dir)], out, per_class=True, pictures_per_class=1,
                          batch_size=100, overwrite=True, progress=False)
        layer = summary["gradcam_layer"]["path"]
        entry = {"test_top1": summary["per_class"]["top1_accuracy"], "gradcam_layer": summary["gradcam_layer"],
                 "attention_modules": summary["attention_modules"]}
        for tap in ("channel_gate", "context_add"):
            if any(tap in m["taps"] for m in summary["modules"].values()):
                entry[f"{tap}_by_stage"] = stage_numbers(summary, tap)
        entry["spatial"] = {f"{path}.{tap}": {k: stats[k] for k in ("shape", "mean", "std", "min", "max")}
                            for path, m in summary["modules"].items() for tap, stats in m["taps"].items()
                            if tap in ("spatial_gate", "context_mask")}
        entry["map_metrics"] = map_metrics(checkpoint, files, masks, layer)
        numbers[name] = entry
        pictures = {row["label"]: out / row["picture"] for row in summary["images"] if "picture" in row}
        if name in PICTURED:
            stack([pictures[c] for c in SHOWN_CLASSES], DOCS / f"{name}_pictures.png")
        for figure in FIGURES[name]:
            small(Image.open(out / f"{figure}.png"), DOCS / f"{name}_{figure}.png")
        print(name, json.dumps({k: entry[k] for k in ("test_top1", "map_metrics")}), flush=True)
    numbers_file.write_text(json.dumps({name: numbers[name] for name in MODELS if name in numbers}, indent=1) + "\n")
    print(f"wrote {DOCS}")


if __name__ == "__main__":
    main()
