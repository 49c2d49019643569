"""Images per second of the ImageFolder training and evaluation pipelines (decode + crop + resize + collate).

Generates a folder of JPEG photos-sized images (default 500x375, about ImageNet's average) in a temporary
directory, then times full passes of the DataLoader. A benchmark, not a test:

    python benchmarks/data_pipeline.py --images 512 --workers 2
    python benchmarks/data_pipeline.py --size 1200x900 --no-draft     # large photos, without draft decoding
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from attnzoo.data.image_folder import ImageFolder
from attnzoo.data.transforms import eval_transform, train_transform
from attnzoo.preprocessing import Preprocessing

PREPROCESSING = Preprocessing()  # ImageNet's: 224 crops, bilinear, crop_pct 0.875


def make_folder(root: Path, images: int, width: int, height: int, classes: int = 10) -> None:
    rng = np.random.default_rng(0)
    # Smooth random images (upsampled noise) compress like photos, unlike white noise.
    for i in range(images):
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        folder = root / f"class{i % classes:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{i:05d}.JPEG", quality=90)


def images_per_second(dataset, workers: int, batch_size: int, passes: int) -> float:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, persistent_workers=workers > 0)
    for _ in loader:  # warm-up pass: worker start-up and page cache
        pass
    start, count = time.perf_counter(), 0
    for _ in range(passes):
        for images, _labels in loader:
            count += len(images)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--size", default="500x375", help="WIDTHxHEIGHT of the generated JPEGs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--no-draft", action="store_true", help="decode JPEGs at full size")
    args = parser.parse_args()
    width, height = map(int, args.size.lower().split("x"))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_folder(root, args.images, width, height)
        draft = not args.no_draft
        for name, transform in (
            ("train (RandomResizedCrop 224 + flip)", train_transform(PREPROCESSING, draft=draft)),
            ("eval (resize 256 + center crop 224)", eval_transform(PREPROCESSING, draft=draft)),
        ):
            rate = images_per_second(ImageFolder(root, transform), args.workers, args.batch_size, args.passes)
            print(f"{name}: {rate:.0f} images/s  ({args.workers} workers, {width}x{height} JPEG, draft={draft})")


if __name__ == "__main__":
    main()
