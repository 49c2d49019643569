"""``explain``: what a model's attention modules do on a set of images, as pictures and ``summary.json``.

    >>> from attnzoo.analysis import explain
    >>> summary = explain("runs/quickstart/checkpoints/last.ckpt", ["photos/"], "explained/")

It writes under the output folder:

- ``images/NNNN_<name>.png``: each image, the Grad-CAM of its predicted class (captum's ``LayerGradCam``,
  see :mod:`attnzoo.analysis.gradcam`) and every spatial map the attention applies, upsampled to the image
  (CBAM's and GAM's spatial gates, GC's softmax context mask), each on its own range;
- ``channel_gate.png`` (and ``context_add.png`` for GC): every module's channel gates, shallow to deep, and
  each channel's mean gate at one module per stage;
- ``summary.json``: per module path, its tap statistics (:mod:`attnzoo.analysis.statistics`) and shapes;
  per image, the prediction.

With ``per_class=True`` the one folder given is an ImageFolder tree (``root/<class>/<image>``) and it also
writes the papers' figures: ``per_class_<tap>.png`` (SE Fig. 6: each channel's mean gate per class at a few
depths) and ``distribution_<tap>.png`` (the GCT paper's gate distribution by layer), with the class statistics
in ``summary.json``; only ``pictures_per_class`` images of each class get a picture. There an unreadable image
is skipped (and listed), since one bad file should not end a pass over a data set; without ``per_class`` every
image is checked before anything is written, and a bad one is refused by name.
"""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from attnzoo.analysis.model_meta import model_metadata, stage_of
from attnzoo.analysis.recorder import AttentionRecorder
from attnzoo.analysis.statistics import ClassGateStatistics, TapStatistics
from attnzoo.devices import resolve_device
from attnzoo.errors import AttnzooError
from attnzoo.extras import require
from attnzoo.files import check_writable, remove_stale, reporting_write_errors, write_text

SPATIAL_TAPS = ("spatial_gate", "context_mask")
CHANNEL_TAPS = ("channel_gate", "context_add")
MAX_DEPTHS = 6  # rows of the per-depth figures
MAX_CLASSES_DRAWN = 10
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def load_source(source: str) -> nn.Module:
    """A model from anything :func:`attnzoo.load` accepts, or from a Lightning ``.ckpt`` of attnzoo's trainer."""
    path = Path(str(source)).expanduser()
    if path.suffix == ".ckpt":
        if not path.is_file():
            raise AttnzooError(f"no such checkpoint: {str(source)!r}.")
        from attnzoo.weights.lightning_checkpoint import model_from_lightning_checkpoint

        return model_from_lightning_checkpoint(path).model
    from attnzoo.weights import load

    return load(str(source))


def _list_inputs(images: list[str], per_class: bool) -> tuple[list[tuple[str, int | None]], list[str] | None]:
    """(path, folder class or None) of every image, and the folder's class names with ``per_class``."""
    from attnzoo.data.image_folder import find_classes, find_image_files, list_images

    if isinstance(images, (str, Path)):
        images = [images]
    if not images:
        raise AttnzooError("no images given: pass --images FILE_OR_DIR ...")
    if not per_class:
        return [(path, None) for path in find_image_files(images)], None
    if len(images) != 1 or not Path(images[0]).is_dir():
        raise AttnzooError(f"--per_class takes one folder laid out as ROOT/<class name>/<images>, got {list(images)!r}.")
    root = Path(images[0])
    classes = find_classes(root)
    return list_images(root, classes), classes


def _prepare_out(out: str | Path, overwrite: bool) -> Path:
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise AttnzooError(f"--out {str(out)!r} exists and is not a folder.")
    remove_stale(out)  # the leftovers of a killed explain are not the user's files
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise AttnzooError(f"--out {str(out)!r} is not empty; choose a new folder or pass --overwrite true to write "
                           "over the files of an earlier explain run there.")
    return check_writable(out, "--out", folder=True)


def _read(path: str, transform) -> torch.Tensor:
    from attnzoo.data.image_folder import open_image

    with open_image(path) as img:
        return transform(img)


def _picture_name(index: int, path: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(path).stem)[:60] or "image"
    return f"{index:04d}_{stem}.png"


def _prediction(probs: torch.Tensor, class_names: list[str]) -> dict:
    top = int(probs.argmax())
    return {"index": top, "name": class_names[top] if top < len(class_names) else str(top),
            "probability": round(float(probs[top]), 4)}


def _depths(modules: list[dict]) -> list[dict]:
    """The last module of each stage (the SE paper's choice: SE_2_3, SE_3_4, ...), at most MAX_DEPTHS of them."""
    last: dict = {}
    for entry in modules:
        last[entry["stage"]] = entry
    chosen = list(last.values())
    if len(chosen) > MAX_DEPTHS:
        picks = np.linspace(0, len(chosen) - 1, MAX_DEPTHS).round().astype(int)
        chosen = [chosen[i] for i in sorted(set(picks))]
    return chosen


def explain(source: str | nn.Module, images: list[str], out: str | Path, *, per_class: bool = False,
            gradcam_layer: str = "auto", batch_size: int = 16, device: str = "cpu", pictures_per_class: int = 2,
            overwrite: bool = False, progress: bool = True) -> dict:
    """Record every attention module of a model on ``images`` and write pictures and ``summary.json``.

    Args:
        source: anything :func:`attnzoo.load` accepts, a Lightning ``.ckpt``, or a model.
        images: image files and folders (searched recursively); with ``per_class``, one ImageFolder root.
        out: the output folder; refused when it is not empty, unless ``overwrite``.
        per_class: the class-wise figures of the SE and GCT papers (see the module docstring).
        gradcam_layer: the module whose output Grad-CAM explains; "auto" picks a stage (see gradcam.py).
        batch_size: images per forward pass.
        device: where the model runs.
        pictures_per_class: with ``per_class``, how many images of each class get a picture.
        overwrite: write into a non-empty ``out`` (files of the same name are replaced).
        progress: show a progress bar (on a terminal).

    Returns the summary (also written to ``out/summary.json``).
    """
    require("viz", "attnzoo explain")
    from tqdm import tqdm

    from attnzoo.analysis import figures
    from attnzoo.analysis.gradcam import choose_layer, gradcam
    from attnzoo.data.transforms import eval_transform

    if not isinstance(batch_size, int) or batch_size < 1:
        raise AttnzooError(f"batch_size must be a positive integer, got {batch_size!r}.")
    device = resolve_device(device)
    items, folder_classes = _list_inputs(images, per_class)
    out = _prepare_out(out, overwrite)
    model = source if isinstance(source, nn.Module) else load_source(source)
    try:
        model = model.to(device).eval()
    except (RuntimeError, AssertionError) as err:
        raise AttnzooError(f"cannot use device {device!r}: {str(err).splitlines()[0]}") from None
    meta = model_metadata(model)
    pre = meta.preprocessing
    transform = eval_transform(pre)
    input_size = [len(pre.mean), transform.size, transform.size]
    if not per_class:
        for path, _ in items:  # refuse a bad image before anything is written
            try:
                _read(path, transform)
            except READ_ERRORS as err:
                raise AttnzooError(f"cannot read image {path!r} ({type(err).__name__}: {err}).") from None
    layer, layer_shape = choose_layer(model, input_size, gradcam_layer)
    name = meta.architecture or type(model).__name__
    class_names = meta.class_names or [str(i) for i in range(meta.num_classes or 0)]

    recorder = AttentionRecorder(model)
    paths = list(recorder.modules)
    stats: dict[tuple[str, str], TapStatistics] = {}
    by_class: dict[tuple[str, str], ClassGateStatistics] = {}
    model_index = {cls: i for i, cls in enumerate(class_names)}
    folder_to_model = ({k: model_index[c] for k, c in enumerate(folder_classes) if c in model_index}
                       if folder_classes else {})
    pictured: dict[int | None, int] = defaultdict(int)
    image_rows, skipped, correct, judged = [], [], 0, 0
    with reporting_write_errors(out / "images"):
        (out / "images").mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=len(items), unit="img", desc=f"explain {name}", disable=None if progress else True)
    try:
        for start in range(0, len(items), batch_size):
            batch, tensors = [], []
            for path, label in items[start:start + batch_size]:
                try:
                    tensors.append(_read(path, transform))
                    batch.append((path, label))
                except READ_ERRORS as err:
                    warnings.warn(f"skipping unreadable image {path!r} ({type(err).__name__}: {err}).", stacklevel=2)
                    skipped.append(path)
            bar.update(len(items[start:start + batch_size]))
            if not batch:
                continue
            raw = torch.stack(tensors)
            x = pre.normalize(raw).to(device)
            recorder.clear()  # so a tap this batch does not reach cannot pass off the last batch's gate
            recorder.enabled = True
            with torch.no_grad():
                logits = model(x)
            records = recorder.records
            recorder.enabled = False
            probs = logits.float().softmax(-1).cpu()
            predicted = probs.argmax(-1)
            labels = torch.tensor([label if label is not None else -1 for _, label in batch])
            for path, record in records.items():
                for tap, value in record.taps().items():
                    key = (path, tap)
                    stats.setdefault(key, TapStatistics()).add(value)
                    if per_class and tap in CHANNEL_TAPS:
                        by_class.setdefault(key, ClassGateStatistics(len(folder_classes), value.shape[1])).add(
                            value, labels)
            chosen = []
            for i, (path, label) in enumerate(batch):
                if label in folder_to_model:
                    judged += 1
                    correct += int(predicted[i]) == folder_to_model[label]
                if not per_class or pictured[label] < pictures_per_class:
                    pictured[label] += 1
                    chosen.append(i)
            cams = gradcam(model, layer, x[chosen], predicted[chosen]).cpu() if chosen else None
            for i, (path, label) in enumerate(batch):
                row = {"file": path, "label": None if label is None else folder_classes[label],
                       "predicted": _prediction(probs[i], class_names)}
                if i in chosen:
                    picture = _picture_name(start + i, path)
                    title = f"{Path(path).name}\npredicted: {row['predicted']['name']} " \
                            f"{row['predicted']['probability']:.0%}"
                    if label is not None:
                        title += f" (true: {row['label']})"
                    cam = cams[chosen.index(i)]
                    figure = _picture(raw[i], title, layer, cam, records, i, meta.attention)
                    figures.save(figure, out / "images" / picture)
                    row["picture"] = f"images/{picture}"
                image_rows.append(row)
    finally:
        bar.close()
        recorder.remove()
    if not image_rows:
        raise AttnzooError(f"none of the {len(items)} images could be read (first: {skipped[0]!r}).")

    modules_summary = {}
    entries: dict[str, list[dict]] = defaultdict(list)
    for path in paths:
        module = recorder.modules[path]
        stage = stage_of(model, path)
        taps = {}
        for tap in ("channel_gate", "spatial_gate", "context_mask", "context_add"):
            if (path, tap) not in stats:
                continue
            summary = stats[(path, tap)].summary()
            taps[tap] = summary
            entries[tap].append({"path": path, "stage": stage, "summary": summary, "statistics": stats[(path, tap)]})
        modules_summary[path] = {"module": type(module).__name__, "stage": stage, "channels": module.channels,
                                 "taps": taps}
    for path, record in _last_records_meta(recorder).items():
        for tap, (applied, reduced) in record.items():
            modules_summary[path]["taps"][tap]["applied_shape"] = applied
            if reduced:
                modules_summary[path]["taps"][tap]["kept"] = ("mean over positions" if tap in CHANNEL_TAPS
                                                              else "mean over channels")

    written = ["summary.json"]
    for tap in CHANNEL_TAPS:
        if not entries.get(tap):
            continue
        detail = [{"path": e["path"], "stage": e["stage"], "mean": e["statistics"].channel_mean().numpy(),
                   "std": e["statistics"].channel_std().numpy()} for e in _depths(entries[tap])]
        figures.save(figures.channel_gate_figure(name, entries[tap], tap, detail), out / f"{tap}.png")
        written.append(f"{tap}.png")

    summary = {
        "source": str(source) if not isinstance(source, nn.Module) else type(source).__name__,
        "architecture": meta.architecture,
        "attention": meta.attention,
        "input_size": input_size,
        "gradcam_layer": {"path": layer, "output_shape": layer_shape},
        "attention_modules": len(paths),
        "modules": modules_summary,
        "images": image_rows,
        "skipped": skipped,
    }
    if per_class:
        summary["per_class"] = _per_class(name, folder_classes, entries, by_class, out, written)
        if judged:
            summary["per_class"]["top1_accuracy"] = round(correct / judged, 4)
    summary["files"] = written + sorted(f"images/{p.name}" for p in (out / "images").glob("*.png"))
    write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return summary


def _last_records_meta(recorder: AttentionRecorder) -> dict[str, dict[str, tuple[list[int], bool]]]:
    """Per module and tap: the applied tensor's shape (without the batch) and whether it was reduced."""
    out: dict[str, dict] = {}
    for path, record in recorder.records.items():
        out[path] = {tap: (record.applied_shapes[tap][1:], tap in record.reduced) for tap in record.taps()}
    return out


def _picture(image: torch.Tensor, title: str, layer: str, cam: torch.Tensor, records: dict, i: int,
             attention: str | None):
    """The figure of image ``i`` of the batch: Grad-CAM, then every spatial map of ``records``, upsampled."""
    from attnzoo.analysis import figures

    shown = figures.display_image(image)
    size = shown.shape[-2:]
    panels = [(f"Grad-CAM at {layer}", figures.upsample(cam, size))]
    for module_path, record in records.items():
        for tap in SPATIAL_TAPS:
            value = getattr(record, tap)
            if value is not None:
                h, w = value.shape[-2:]
                panels.append((f"{module_path}\n{tap} {h}x{w}", figures.upsample(value[i, 0], size)))
    if len(panels) == 1:
        panels.append((f"no spatial map:\n{attention or 'this attention'} gates channels only" if records
                       else "no attention modules", None))
    return figures.image_figure(shown, title, panels)


def _per_class(name: str, classes: list[str], entries: dict, by_class: dict, out: Path, written: list[str]) -> dict:
    from attnzoo.analysis import figures

    result: dict = {"classes": classes, "modules": {}}
    counts = None
    for tap in CHANNEL_TAPS:
        if not entries.get(tap):
            continue
        for entry in entries[tap]:
            class_stats = by_class[(entry["path"], tap)]
            counts = class_stats.counts
            result["modules"].setdefault(entry["path"], {})[tap] = class_stats.summary()
        present = by_class[(entries[tap][0]["path"], tap)].present().tolist()
        drawn = present[:MAX_CLASSES_DRAWN]
        depths = []
        for entry in _depths(entries[tap]):
            class_stats = by_class[(entry["path"], tap)]
            means = class_stats.class_means().numpy()
            spec = result["modules"][entry["path"]][tap]["class_specificity"]
            depths.append({"path": entry["path"], "stage": entry["stage"], "class_means": means[drawn],
                           "overall": entry["statistics"].channel_mean().numpy(), "specificity": spec})
            result["modules"][entry["path"]][tap]["class_mean"] = {
                classes[k]: [round(float(v), 4) for v in means[k]] for k in present}
        figures.save(figures.per_class_figure(name, tap, depths, [classes[k] for k in drawn]), out / f"per_class_{tap}.png")
        layers = []
        for entry in entries[tap]:
            values = entry["statistics"].values.ravel()
            if values.size > 20000:
                values = values[np.random.default_rng(0).choice(values.size, 20000, replace=False)]
            layers.append({"path": entry["path"], "stage": entry["stage"], "values": values, "summary": entry["summary"]})
        figures.save(figures.distribution_by_layer_figure(name, tap, layers), out / f"distribution_{tap}.png")
        written += [f"per_class_{tap}.png", f"distribution_{tap}.png"]
    if counts is not None:
        result["images_per_class"] = {classes[k]: int(c) for k, c in enumerate(counts.tolist())}
    return result
