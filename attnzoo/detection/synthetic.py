"""An embedded detection data set: the classification quickstart's shapes, several to an image, with boxes and
instance masks, generated from a seed (no download, no files, the same images on every machine).

Each image is a cluttered background (a colour, a gradient, strokes and pixel noise) cut into a 2x2 grid; one to
three cells hold a shape of :mod:`attnzoo.data.synthetic` at a random size and position inside the cell, so
objects never overlap and every mask is the shape's visible coverage. Boxes are the masks' tight bounds.
"""

from __future__ import annotations

import numpy as np
import torch

from attnzoo.data.synthetic import SHAPE_CLASSES, _gradient_background, _strokes, render_shapes
from attnzoo.errors import AttnzooError

MIN_IMAGE_SIZE = 48  # two cells of 24 px a side: the smallest shape tile the generator draws well
CELLS = 2  # per side
MAX_OBJECTS = 3


def _backgrounds(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """float32 [n, 3, size, size] in [0, 1]: colour, gradient and strokes, as the classification images have."""
    grid = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1).astype(np.float32)
    yy, xx = grid[None, :, None], grid[None, None, :]
    img, _ = _gradient_background(rng, n, xx, yy)
    for mask, colour in _strokes(rng, n, 3, xx, yy, width=(0.01, 0.03), float64=True):
        np.copyto(img, np.broadcast_to(colour, img.shape), where=mask[:, None])
    return img


def generate_detection(num_images: int, size: int = 96, seed: int = 0, num_classes: int = len(SHAPE_CLASSES)):
    """``(images uint8 [n, 3, size, size], targets)``: per image a dict of ``boxes`` (float32 [k, 4], x1 y1 x2 y2
    in pixels), ``labels`` (int64 [k], 1..num_classes: 0 is the detectors' background) and ``masks`` (uint8
    [k, size, size]); fully determined by the arguments."""
    if not 1 <= num_classes <= len(SHAPE_CLASSES):
        raise AttnzooError(f"the shapes detection set has 1 to {len(SHAPE_CLASSES)} classes, got num_classes={num_classes}.")
    if size < MIN_IMAGE_SIZE:
        raise AttnzooError(f"shapes detection images need image_size >= {MIN_IMAGE_SIZE}, got {size}.")
    rng = np.random.default_rng(seed)
    canvas = _backgrounds(num_images, size, rng)
    cell = size // CELLS
    counts = rng.integers(1, MAX_OBJECTS + 1, num_images)
    total = int(counts.sum())
    labels = rng.integers(0, num_classes, total)
    # Tiles are drawn at the largest size and scaled per object by the placement below.
    tile_sizes = rng.integers(max(16, cell * 5 // 8), cell + 1, total)
    tile_images, coverage = {}, {}
    for tile in np.unique(tile_sizes):
        chosen = np.flatnonzero(tile_sizes == tile)
        tile_images[tile], coverage[tile] = render_shapes(labels[chosen], int(tile), rng, masks=True)
        tile_images[tile] = dict(zip(chosen.tolist(), tile_images[tile]))
        coverage[tile] = dict(zip(chosen.tolist(), coverage[tile]))
    targets, k = [], 0
    for i in range(num_images):
        cells = rng.permutation(CELLS * CELLS)[: counts[i]]
        boxes, masks, classes = [], [], []
        for c in cells:
            tile = int(tile_sizes[k])
            alpha = coverage[tile][k]
            top = (c // CELLS) * cell + int(rng.integers(0, cell - tile + 1))
            left = (c % CELLS) * cell + int(rng.integers(0, cell - tile + 1))
            region = canvas[i, :, top:top + tile, left:left + tile]
            region[:] = region * (1 - alpha) + tile_images[tile][k].astype(np.float32) / 255 * alpha
            mask = np.zeros((size, size), np.uint8)
            mask[top:top + tile, left:left + tile] = alpha >= 0.5
            ys, xs = np.nonzero(mask)
            if len(ys):  # a shape hidden by its tile's strokes has no object to find
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                masks.append(mask)
                classes.append(int(labels[k]) + 1)
            k += 1
        targets.append({
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(classes, dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, size, size), np.uint8)),
        })
    canvas += rng.normal(0, 0.04, canvas.shape).astype(np.float32)
    images = torch.from_numpy((np.clip(canvas, 0, 1) * 255 + 0.5).astype(np.uint8))
    return images, targets
