"""An embedded data set: small images of shapes and textures on clutter, generated from a seed.

No download and no files: the same seed gives the same images on every machine (NumPy's PCG64 generator).
Each image shows one of ten classes — disk, ring, square, triangle, plus, crescent, striped disk, checkered
square, two dots, bar — at a random position, size and rotation, in a random colour on a random background with
a colour gradient, pixel noise and distractor strokes drawn under and over the shape. The classes differ in
shape and texture, not colour, so the task is learnable but not trivial: a network has to look at structure.

Images are drawn at twice the resolution and box-filtered down (anti-aliased edges), vectorised over a chunk of
images at a time: 10,000 32x32 images take about three seconds on one core.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from attnzoo.data.sampling import unpack
from attnzoo.errors import AttnzooError

SHAPE_CLASSES = (
    "disk",
    "ring",
    "square",
    "triangle",
    "plus",
    "crescent",
    "striped_disk",
    "checkered_square",
    "two_dots",
    "bar",
)
MIN_SIZE = 16  # pixels a side: the smallest image the generator draws shapes into

SUPERSAMPLE = 2
CHUNK = 512


def _shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-mask of class ``label`` in shape coordinates (u, v); the shapes fill roughly the unit disk."""
    r2 = u * u + v * v
    au, av = np.abs(u), np.abs(v)
    name = SHAPE_CLASSES[label]
    if name == "disk":
        return r2 < 0.85**2
    if name == "ring":
        return (r2 < 0.95**2) & (r2 > 0.55**2)
    if name == "square":
        return np.maximum(au, av) < 0.7
    if name == "triangle":
        return (v > -0.5) & (v < 1.0 - np.sqrt(3.0) * au)
    if name == "plus":
        return ((au < 0.28) & (av < 0.95)) | ((av < 0.28) & (au < 0.95))
    if name == "crescent":
        return (r2 < 0.9**2) & ((u - 0.45) ** 2 + v * v > 0.72**2)
    if name == "striped_disk":
        return (r2 < 0.95**2) & (np.sin(u * np.pi * 3.2) > 0)
    if name == "checkered_square":
        return (np.maximum(au, av) < 0.8) & (np.sin(u * np.pi * 2.5) * np.sin(v * np.pi * 2.5) > 0)
    if name == "two_dots":
        return ((u - 0.5) ** 2 + v * v < 0.36**2) | ((u + 0.5) ** 2 + v * v < 0.36**2)
    if name == "bar":
        return (au < 0.95) & (av < 0.25)
    raise AssertionError(name)


def _gradient_background(rng: np.random.Generator, n: int, xx: np.ndarray, yy: np.ndarray) -> tuple:
    """``(image float32 [n,3,S,S], colour [n,3,1,1])``: a random colour with a linear gradient in a random
    direction (the detection set's backgrounds too, :mod:`attnzoo.detection.synthetic`)."""
    colour = rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)
    direction = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    ramp = (xx * np.cos(direction) + yy * np.sin(direction)).astype(np.float32)[:, None]
    return colour + rng.uniform(-0.25, 0.25, (n, 3, 1, 1)).astype(np.float32) * ramp, colour


def _strokes(rng: np.random.Generator, n: int, count: int, xx: np.ndarray, yy: np.ndarray,
             width: tuple[float, float] = (0.02, 0.06), float64: bool = False) -> list:
    """``count`` random thin line segments per image: (mask [n,S,S], colour [n,3,1,1]) pairs; ``width`` is the
    range of their half-widths. ``float64`` places them as the detection set always has (its seeded images
    stay the same); the classification set's are placed in float32."""
    out = []
    for _ in range(count):
        px, py = rng.uniform(-1, 1, (2, n, 1, 1))
        angle = rng.uniform(0, np.pi, (n, 1, 1))
        length = rng.uniform(0.2, 0.8, (n, 1, 1))
        half_width = rng.uniform(*width, (n, 1, 1))
        cos, sin = np.cos(angle), np.sin(angle)
        if not float64:
            cos, sin, px, py = (a.astype(np.float32) for a in (cos, sin, px, py))
        dx, dy = xx - px, yy - py
        mask = (np.abs(dx * cos + dy * sin) < length) & (np.abs(dy * cos - dx * sin) < half_width)
        out.append((mask, rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)))
    return out


def render_shapes(labels: np.ndarray, size: int, rng: np.random.Generator, masks: bool = False):
    """uint8 images [n, 3, size, size] of the classes ``labels``; with ``masks``, also the fraction of each pixel
    covered by the visible shape (float32 [n, size, size]; strokes drawn over the shape hide it)."""
    n = len(labels)
    s = size * SUPERSAMPLE
    grid = ((np.arange(s, dtype=np.float32) + 0.5) / s * 2 - 1).astype(np.float32)
    yy, xx = grid[None, :, None], grid[None, None, :]

    # Background: a colour, a linear gradient in a random direction, drawn strokes; noise comes last.
    img, bg = _gradient_background(rng, n, xx, yy)

    # The shape: random centre, scale and rotation; a colour that stands out from the background.
    fg = rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)
    weak = np.abs(fg - bg).sum(axis=1, keepdims=True) < 0.6
    fg = np.where(weak, 1.0 - bg, fg).astype(np.float32)
    scale = rng.uniform(0.5, 0.75, (n, 1, 1))
    cx, cy = rng.uniform(-1, 1, (2, n, 1, 1)) * (0.95 - scale)
    theta = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    cos, sin = (np.cos(theta) / scale).astype(np.float32), (np.sin(theta) / scale).astype(np.float32)
    dx, dy = xx - cx.astype(np.float32), yy - cy.astype(np.float32)
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    shape = np.zeros((n, s, s), dtype=bool)
    for label in np.unique(labels):
        idx = labels == label
        shape[idx] = _shape_mask(int(label), u[idx], v[idx])

    under, over = _strokes(rng, n, 2, xx, yy), _strokes(rng, n, 1, xx, yy)
    for mask, colour in [*under, (shape, fg), *over]:
        np.copyto(img, np.broadcast_to(colour, img.shape), where=mask[:, None])

    img = img.reshape(n, 3, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(3, 5))
    img += rng.normal(0, 0.05, img.shape).astype(np.float32)
    images = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    if not masks:
        return images
    visible = shape & ~np.logical_or.reduce([mask for mask, _ in over])
    return images, visible.reshape(n, size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(2, 4)).astype(np.float32)


def generate(num_samples: int, size: int = 32, seed: int = 0, num_classes: int = len(SHAPE_CLASSES),
             masks: bool = False) -> tuple:
    """``(images uint8 [n,3,size,size], labels int64 [n])``, balanced over the classes, fully determined by
    the arguments; with ``masks``, also each image's shape coverage (float32 [n, size, size], see
    :func:`render_shapes`), the same images either way."""
    if not 2 <= num_classes <= len(SHAPE_CLASSES):
        raise AttnzooError(f"the shapes data set has 2 to {len(SHAPE_CLASSES)} classes, got num_classes={num_classes}.")
    if size < MIN_SIZE:
        raise AttnzooError(f"shapes images need size >= {MIN_SIZE}, got {size}.")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_samples) % num_classes)
    images = np.empty((num_samples, 3, size, size), dtype=np.uint8)
    coverage = np.empty((num_samples, size, size), dtype=np.float32) if masks else None
    for start in range(0, num_samples, CHUNK):
        stop = min(start + CHUNK, num_samples)
        rendered = render_shapes(labels[start:stop], size, rng, masks=masks)
        if masks:
            images[start:stop], coverage[start:stop] = rendered
        else:
            images[start:stop] = rendered
    out = (torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))
    return (*out, torch.from_numpy(coverage)) if masks else out


class ShapesDataset(Dataset):
    """In-memory generated shapes: ``(uint8 image [3,H,W], label)``; ``train=True`` adds random flips."""

    takes_sample_keys = True  # __getitem__ accepts an attnzoo.data.sampling.Sample (index + augmentation seed)

    def __init__(self, num_samples: int, size: int = 32, seed: int = 0, num_classes: int = 10, train: bool = False):
        self.images, self.labels = generate(num_samples, size, seed, num_classes)
        self.train = train

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, rng = unpack(key)
        image = self.images[index]
        if self.train and (rng.random() if rng is not None else torch.rand(()).item()) < 0.5:
            image = image.flip(-1)
        return image, int(self.labels[index])


def write_image_folder(out: str | Path, per_class: int = 4, size: int = 32, seed: int = 1000) -> Path:
    """Shapes as PNG files in ImageNet layout (``out/<class>/NNNN.png``), for what takes image files
    (``attnzoo explain --images``, ``--data.predict_path``). The default seed is none of the quickstart's
    training, validation or test seeds: images the model has not seen. Written into a temporary folder
    beside ``out`` and renamed, so ``out`` is complete or absent; an existing ``out`` is refused."""
    import shutil
    import tempfile

    from PIL import Image

    out = Path(out)
    if out.exists():
        raise AttnzooError(f"{str(out)!r} exists; give a new folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    images, labels = generate(per_class * len(SHAPE_CLASSES), size, seed)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        for number, (image, label) in enumerate(zip(images, labels.tolist())):
            folder = tmp / SHAPE_CLASSES[label]
            folder.mkdir(exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{number:04d}.png")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out

