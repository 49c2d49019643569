"""Image folders in ImageNet layout: ``root/<class name>/<image>``, classes sorted by name.

An image that cannot be read (corrupt, truncated, not an image) never ends a run: the sample is replaced by the
next readable one (so every batch keeps its size and DDP ranks stay in step), a warning names the file once, and
:meth:`ImageFolder.skipped` lists every skipped file so the data module can report a count at the end. The record
of skipped files lives in shared memory, so it sees the failures of every DataLoader worker process.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from attnzoo.errors import AttnzooError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# How many neighbours to try before deciding the folder is broken rather than one file.
MAX_SUBSTITUTES = 64


class UnreadableImageWarning(UserWarning):
    """An image file could not be decoded and was skipped."""


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def find_classes(root: Path) -> list[str]:
    """Sorted names of the class folders under ``root``."""
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise AttnzooError(f"no class folders in {str(root)!r}: expected {root}/<class name>/<image files>.")
    return classes


def list_images(root: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) for every image file under ``root/<class>/`` (recursively), in a stable order."""
    samples = []
    for index, name in enumerate(classes):
        class_dir = root / name
        if not class_dir.is_dir():
            raise AttnzooError(f"class folder {str(class_dir)!r} is missing: every split needs the same class folders.")
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames.sort()
            samples.extend((os.path.join(dirpath, f), index) for f in sorted(filenames) if is_image_file(f))
    if not samples:
        raise AttnzooError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {str(root)!r}.")
    return samples


class ImageFolder(Dataset):
    """Samples ``(transform(image), class index)`` from ``root/<class>/<image>``.

    Args:
        root: the split folder (e.g. ``imagenet/train``).
        transform: maps a lazily opened Pillow image to a tensor.
        classes: class folder names to use (default: every folder under ``root``, sorted); pass the training
            split's classes to the validation split so indices agree.
    """

    def __init__(self, root: str | os.PathLike, transform: Callable, classes: list[str] | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise AttnzooError(f"image folder {str(self.root)!r} does not exist: expected {self.root}/<class name>/<image files>.")
        self.classes = list(classes) if classes is not None else find_classes(self.root)
        self.samples = list_images(self.root, self.classes)
        self.transform = transform
        # One byte per sample in shared memory: 1 = known unreadable. Shared with forked and spawned workers.
        self._unreadable = torch.zeros(len(self.samples), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> torch.Tensor:
        path, _ = self.samples[index]
        with Image.open(path) as img:
            return self.transform(img)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        for offset in range(MAX_SUBSTITUTES):
            candidate = (index + offset) % len(self.samples)
            if self._unreadable[candidate]:
                continue
            try:
                return self.load(candidate), self.samples[candidate][1]
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                self._mark_unreadable(candidate, err)
        raise AttnzooError(
            f"{MAX_SUBSTITUTES} images in a row could not be read near {self.samples[index][0]!r}: "
            "the folder looks broken, not just one file."
        )

    def _mark_unreadable(self, index: int, err: Exception) -> None:
        if not self._unreadable[index]:
            self._unreadable[index] = 1
            path = self.samples[index][0]
            warnings.warn(
                f"skipping unreadable image {path!r} ({type(err).__name__}: {err}); a readable one takes its place.",
                UnreadableImageWarning,
                stacklevel=2,
            )

    def skipped(self) -> list[str]:
        """Paths of the images found unreadable so far (by any worker)."""
        return [self.samples[i][0] for i in torch.nonzero(self._unreadable).flatten().tolist()]


def find_image_files(paths: list[str | os.PathLike]) -> list[str]:
    """Each file given, and every image file under each folder given (recursively, sorted)."""
    files: list[str] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
                dirnames.sort()
                files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f))
        elif path.is_file():
            files.append(str(path))
        else:
            raise AttnzooError(f"no such image file or folder: {str(path)!r}.")
    if not files:
        raise AttnzooError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {[str(p) for p in paths]}.")
    return files


class ImageFiles(Dataset):
    """Images to predict on: one file, or every image under a folder (recursively, sorted). Samples are
    ``(transform(image), path)``; an unreadable file gives a zero image and the path marked unreadable."""

    def __init__(self, paths: list[str | os.PathLike], transform: Callable):
        self.files = find_image_files(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        path = self.files[index]
        try:
            with Image.open(path) as img:
                return self.transform(img), path
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
            warnings.warn(f"skipping unreadable image {path!r} ({type(err).__name__}: {err}).", UnreadableImageWarning)
            size = self.transform.size
            return torch.zeros(3, size, size, dtype=torch.uint8), f"{path} (unreadable)"
