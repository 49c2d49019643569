"""Measure weights on an image folder and record what was measured: ``attnzoo evaluate DIR --data FOLDER``.

The folder is in ImageNet layout, ``FOLDER/<class>/<images>`` (ImageNet's validation split sorted into its
1000 WordNet-id folders, or any class folders). Folders map to the model's outputs as attnzoo's data modules
map them: the class folders sorted by name are outputs 0, 1, 2, ... (ImageNet's wnids in sorted order are the
class indices every ImageNet release uses). When the weights have label names and every folder is one of them,
folders map by name instead, so a folder with only some of the classes is measured correctly too. Otherwise,
folders named by class index (ImageNet-V2's ``0`` ... ``999``) map by their number: sorted as text, ``10``
would come before ``2`` and every output after the first ten would be scored against the wrong class.

Images get the evaluation transform of the weights' own preprocessing (resize to ``size / crop_pct``, center
crop, the weights' mean and std). An image that cannot be decoded is skipped and counted, never replaced by
another one (that would count some image twice). The result is written into config.json (``metrics``
``val/acc1`` and ``val/acc5``, and ``evaluation``: data set, folder, number of images, date ...) and the model
card, so ``attnzoo push`` puts the measured top-1 into the zoo's index record.
"""

from __future__ import annotations

import datetime
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from attnzoo.errors import AttnzooError
from attnzoo.registry import ModelConfig

TOP_K = 5
SPLIT_PREFIX = {"validation": "val", "test": "test"}


def class_indices(folders: list[str], config: ModelConfig, data: str) -> tuple[list[int], str]:
    """The model output of each class folder, and how they were matched (recorded beside the metrics)."""
    names = config.class_names
    if names is not None:
        known = [f for f in folders if f in names]
        if len(known) == len(folders):
            index = {name: i for i, name in enumerate(names)}
            return [index[f] for f in folders], "label_names"
        if known:
            strangers = [f for f in folders if f not in names]
            listed = ", ".join(strangers[:5]) + (" ..." if len(strangers) > 5 else "")
            raise AttnzooError(f"{data!r}: class folders {listed} are not label names of the weights, while "
                               f"{len(known)} others are; every folder must be a label name, or none (then sorted "
                               "folders are outputs 0, 1, ...).")
    numbers = [int(f) for f in folders if f.isdecimal() and f.isascii()]
    if len(numbers) == len(folders) and len(set(numbers)) == len(numbers) and max(numbers) < config.num_classes:
        return numbers, "folder names as class indices"
    if len(folders) != config.num_classes:
        raise AttnzooError(f"{data!r} has {len(folders)} class folders but the weights have {config.num_classes} "
                           "classes: with folders that are not the weights' label names, the sorted folders are "
                           f"outputs 0..{config.num_classes - 1}, so there must be one folder per class.")
    return list(range(len(folders))), "sorted folder names"


class _Images(Dataset):
    """``(image, target, readable)``; an unreadable image gives a blank one with ``readable=False``."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable):
        self.samples, self.transform = samples, transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from attnzoo.data.image_folder import DECODE_ERRORS, UnreadableImageWarning, open_image

        path, target = self.samples[index]
        try:
            with open_image(path) as img:
                return self.transform(img), target, True
        except DECODE_ERRORS as err:
            warnings.warn(f"skipping unreadable image {path!r} ({type(err).__name__}: {err}): it is not counted.",
                          UnreadableImageWarning, stacklevel=2)
            size = self.transform.size
            return torch.zeros(3, size, size, dtype=torch.uint8), target, False


def evaluate_folder(model: torch.nn.Module, data: str | os.PathLike, batch_size: int = 64, num_workers: int = 4,
                    device: str | torch.device = "cpu", echo: Callable[[str], None] | None = None) -> dict:
    """Top-1 and top-5 accuracy of ``model`` (from ``attnzoo.load``) on an image folder in ImageNet layout.

    Returns ``{"images", "unreadable", "classes", "class_mapping", "top1", "top5"}``; top-5 is top-k with
    k = min(5, num_classes).
    """
    from attnzoo.data.image_folder import find_classes, list_images
    from attnzoo.data.transforms import eval_transform

    root = Path(data)
    if not root.is_dir():
        raise AttnzooError(f"--data {str(data)!r} is not a folder: expected {data}/<class>/<images>, e.g. ImageNet's "
                           "validation images sorted into their 1000 wnid folders.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttnzooError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise AttnzooError(f"num_workers must be 0 (decode in this process) or more, got {num_workers!r}.")
    config = model.config
    folders = find_classes(root)
    targets, mapping = class_indices(folders, config, str(data))
    samples = [(path, targets[folder]) for path, folder in list_images(root, folders)]
    loader = DataLoader(_Images(samples, eval_transform(config.preprocessing)), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False, pin_memory=torch.device(device).type == "cuda")
    if echo is not None:
        echo(f"evaluating {config.architecture} on {len(samples)} images in {data} ({len(folders)} class folders "
             f"mapped by {mapping}, {torch.device(device)})")
    k = min(TOP_K, config.num_classes)
    correct1 = correct5 = seen = unreadable = 0
    model = model.to(device).eval()
    step = max(1, len(loader) // 10)
    with torch.inference_mode():
        for batch, (images, target, readable) in enumerate(loader, 1):
            keep = readable.bool()
            unreadable += int((~keep).sum())
            if keep.any():
                x = config.preprocessing.normalize(images[keep].to(device))
                top = model(x).topk(k, dim=1).indices.cpu()
                hits = top == target[keep].unsqueeze(1)
                correct1 += int(hits[:, 0].sum())
                correct5 += int(hits.any(dim=1).sum())
                seen += int(keep.sum())
            if echo is not None and (batch % step == 0 or batch == len(loader)):
                echo(f"  {seen + unreadable}/{len(samples)} images, top-1 so far {correct1 / max(seen, 1):.4f}")
    if not seen:
        raise AttnzooError(f"no image under {str(data)!r} could be read ({unreadable} tried): nothing to measure.")
    return {"images": seen, "unreadable": unreadable, "classes": len(folders), "class_mapping": mapping,
            "top1": correct1 / seen, "top5": correct5 / seen}


def _metric_names(split: str) -> dict[str, str]:
    prefix = SPLIT_PREFIX[split]
    return {"top1": f"{prefix}/acc1", "top5": f"{prefix}/acc5"}


def refuse_to_replace(cfg: dict, where: str, split: str = "validation", overwrite: bool = False) -> None:
    """Refuse (before any work) to replace an evaluation or metrics of the same names without ``overwrite``."""
    metrics = cfg.get("metrics") or {}
    existing = {k: metrics[k] for k in _metric_names(split).values() if k in metrics}
    if cfg.get("evaluation"):
        existing["evaluation"] = f"{cfg['evaluation'].get('dataset')} on {cfg['evaluation'].get('date')}"
    if existing and not overwrite:
        raise AttnzooError(f"{where} already records {existing}; pass --overwrite to replace it with a new "
                           "measurement (nothing was measured or written).")


def record_evaluation(directory: str | os.PathLike, dataset: str, data: str, result: dict, split: str = "validation",
                      overwrite: bool = False) -> dict:
    """Put a measurement into a weights directory's config.json (metrics and ``evaluation``) and model card.

    An existing evaluation, or metrics of the same names (``val/acc1`` from training), is replaced only with
    ``overwrite=True``. Both files are replaced atomically. Returns the new config.json.
    """
    from attnzoo.weights.api import config_text, write_files
    from attnzoo.weights.card import card_front_matter, render_card
    from attnzoo.weights.format import CARD_NAME, CONFIG_NAME, check_evaluation, read_config

    directory = Path(directory)
    cfg = read_config(directory / CONFIG_NAME)
    refuse_to_replace(cfg, repr(str(directory / CONFIG_NAME)), split, overwrite)
    evaluation = {"dataset": dataset, "data": str(data), "split": split, **result,
                  "date": datetime.date.today().isoformat()}
    check_evaluation(evaluation, "the evaluation")
    names = _metric_names(split)
    metrics = {**(cfg.get("metrics") or {}), names["top1"]: result["top1"], names["top5"]: result["top5"]}
    items = [(key, value) for key, value in cfg.items() if key != "evaluation"]
    keys = [key for key, _ in items]
    at = keys.index("metrics") + 1 if "metrics" in keys else len(keys)  # the evaluation beside the metrics
    cfg = {**dict(items[:at]), "metrics": metrics, "evaluation": evaluation, **dict(items[at:])}
    card_path = directory / CARD_NAME
    card = render_card(cfg, **card_front_matter(card_path))
    write_files(directory, {CONFIG_NAME: lambda path: path.write_text(config_text(cfg), encoding="utf-8"),
                            CARD_NAME: lambda path: path.write_text(card, encoding="utf-8")})
    return cfg


def echo_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
