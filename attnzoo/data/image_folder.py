"""Image folders in ImageNet layout: ``root/<class name>/<image>``, classes sorted by name.

Folders are walked recursively. Symlinked files and symlinked folders are followed, except a folder link that
leads back to one of its own parent folders (or to a folder already walked): following it would loop, or list
images a second time under the wrong class; it is skipped with a warning naming it. A class folder with no
readable image is an error that names it, not a class that can never be learned.

An image that cannot be read (corrupt, truncated, not an image) never ends a run: the sample is replaced by the
next readable one (so every batch keeps its size and DDP ranks stay in step), a warning names the file once, and
:meth:`ImageFolder.skipped` lists every skipped file so the data module can report a count at the end. The record
of skipped files lives in shared memory, so it sees the failures of every DataLoader worker process.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import stat
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from attnzoo.data.sampling import unpack
from attnzoo.errors import AttnzooError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# How many neighbours to try before deciding the folder is broken rather than one file.
MAX_SUBSTITUTES = 64


class UnreadableImageWarning(UserWarning):
    """An image file could not be decoded and was skipped."""


class SymlinkLoopWarning(UserWarning):
    """A folder symlink that leads back into its own parents (or a folder already walked) was not followed."""


DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def walk_images(top: str | os.PathLike) -> list[str]:
    """Image files under ``top``, recursively and sorted, following symlinks but never into a loop.

    A folder (through a symlink or not) whose real path was walked already, or is a parent of where the link
    sits, is skipped with a :class:`SymlinkLoopWarning`.
    """
    files: list[str] = []
    seen = {os.path.realpath(top)}
    for dirpath, dirnames, filenames in os.walk(top, followlinks=True):
        real_parent = os.path.realpath(dirpath)
        keep = []
        for name in sorted(dirnames):
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if real in seen or real_parent == real or real_parent.startswith(real + os.sep):
                warnings.warn(f"not following folder symlink {path!r} -> {real!r}: it leads back to a folder "
                              "already walked (a loop, or the same images twice).", SymlinkLoopWarning, stacklevel=2)
                continue
            seen.add(real)
            keep.append(name)
        dirnames[:] = keep
        files.extend(os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f))
    return files


@contextlib.contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """``Image.open`` for a regular file only: every image attnzoo reads is opened here.

    Opening a FIFO named ``pipe.jpg`` waits for a writer that never comes, and a device (``/dev/zero``) never
    ends: the file is opened without blocking and anything but a regular file raises :class:`OSError`, which
    callers treat as any unreadable image (skipped with a warning naming it).
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                    stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}.get(stat.S_IFMT(mode), "special")
            raise OSError(f"not a regular file ({kind})")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle, Image.open(handle) as img:
        yield img


def first_readable(paths: list[str]) -> tuple[str | None, str | None]:
    """(the first path that decodes, None) or (None, why the first one did not)."""
    reason = None
    for path in paths:
        try:
            with open_image(path) as img:
                img.draft("RGB", (16, 16))  # JPEG: decode at 1/8 scale, enough to know it decodes
                img.load()
            return path, None
        except DECODE_ERRORS as err:
            reason = reason or f"{os.path.basename(path)}: {type(err).__name__}: {err}"
    return None, reason


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def find_classes(root: Path) -> list[str]:
    """Sorted names of the class folders under ``root`` (a folder symlink back to ``root`` or above is not one)."""
    real_root = os.path.realpath(root)
    classes = []
    for entry in os.scandir(root):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        real = os.path.realpath(entry.path)
        if real == real_root or real_root.startswith(real + os.sep):
            warnings.warn(f"not using folder symlink {entry.path!r} -> {real!r} as a class: it leads back to the "
                          "data folder itself (a loop).", SymlinkLoopWarning, stacklevel=2)
            continue
        classes.append(entry.name)
    classes.sort()
    if not classes:
        raise AttnzooError(f"no class folders in {str(root)!r}: expected {root}/<class name>/<image files>.")
    return classes


def list_images(root: Path, classes: list[str], check_readable: bool = False) -> list[tuple[str, int]]:
    """(path, class index) for every image file under ``root/<class>/`` (recursively), in a stable order.

    ``check_readable``: every class folder must hold at least one image that decodes (an error names the first
    that does not); used for the split the classes come from.
    """
    samples = []
    for index, name in enumerate(classes):
        class_dir = root / name
        if not class_dir.is_dir():
            raise AttnzooError(f"class folder {str(class_dir)!r} is missing: every split needs the same class folders.")
        files = walk_images(class_dir)
        if check_readable:
            if not files:
                raise AttnzooError(f"class folder {str(class_dir)!r} has no image files ({', '.join(IMAGE_EXTENSIONS)}): "
                                   "add its images or remove the folder.")
            found, reason = first_readable(files)
            if found is None:
                raise AttnzooError(f"class folder {str(class_dir)!r} has no readable image ({len(files)} file(s), none "
                                   f"decodes; first: {reason}).")
        samples.extend((path, index) for path in files)
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
        check_classes: require a readable image in every class folder (default: when ``classes`` is not given,
            i.e. for the split that defines the classes).
    """

    takes_sample_keys = True  # __getitem__ accepts an attnzoo.data.sampling.Sample (index + augmentation seed)

    def __init__(self, root: str | os.PathLike, transform: Callable, classes: list[str] | None = None,
                 check_classes: bool | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise AttnzooError(f"image folder {str(self.root)!r} does not exist: expected {self.root}/<class name>/<image files>.")
        self.classes = list(classes) if classes is not None else find_classes(self.root)
        self.samples = list_images(self.root, self.classes, check_readable=classes is None if check_classes is None else check_classes)
        self.transform = transform
        self._transform_takes_rng = _takes_rng(transform)
        # One byte per sample in shared memory: 1 = known unreadable. Shared with forked and spawned workers.
        self._unreadable = torch.zeros(len(self.samples), dtype=torch.uint8).share_memory_()

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int, rng=None) -> torch.Tensor:
        path, _ = self.samples[index]
        with open_image(path) as img:
            if rng is not None and self._transform_takes_rng:
                return self.transform(img, rng=rng)
            return self.transform(img)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        """``key``: an index, or a :class:`attnzoo.data.sampling.Sample` (index and augmentation seed)."""
        index, rng = unpack(key)
        for offset in range(MAX_SUBSTITUTES):
            candidate = (index + offset) % len(self.samples)
            if self._unreadable[candidate]:
                continue
            try:
                return self.load(candidate, rng), self.samples[candidate][1]
            except DECODE_ERRORS as err:
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


def _takes_rng(transform) -> bool:
    try:
        return "rng" in inspect.signature(transform).parameters
    except (TypeError, ValueError):
        return False


def find_image_files(paths: list[str | os.PathLike]) -> list[str]:
    """Each file given, and every image file under each folder given (recursively, sorted, without following
    a folder link into a loop)."""
    files: list[str] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files.extend(walk_images(path))
        elif path.exists():  # a FIFO or a device too: open_image refuses it when read, with a warning
            files.append(str(path))
        else:
            raise AttnzooError(f"no such image file or folder: {str(path)!r}.")
    if not files:
        raise AttnzooError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {[str(p) for p in paths]}.")
    return files


class ImageFiles(Dataset):
    """Images to predict on: one file, or every image under a folder (recursively, sorted). Samples are
    ``(transform(image), path, readable)``; a file that cannot be decoded gives a zero image with
    ``readable=False`` (and a warning naming it), so that it gets no prediction."""

    def __init__(self, paths: list[str | os.PathLike], transform: Callable):
        self.files = find_image_files(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str, bool]:
        path = self.files[index]
        try:
            with open_image(path) as img:
                return self.transform(img), path, True
        except DECODE_ERRORS as err:
            warnings.warn(f"unreadable image {path!r} ({type(err).__name__}: {err}): no prediction for it.",
                          UnreadableImageWarning)
            size = self.transform.size
            return torch.zeros(3, size, size, dtype=torch.uint8), path, False
