"""The data modules: image folders (ImageNet layout), CIFAR-10/100, and the embedded shapes data set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset

from attnzoo.data.base import ClassificationDataModule
from attnzoo.data.cifar import ARCHIVES, CIFAR_MEAN, CIFAR_STD, CifarDataset, prepare_cifar
from attnzoo.data.image_folder import ImageFolder, find_classes, walk_images
from attnzoo.data.synthetic import MIN_SIZE, SHAPE_CLASSES, ShapesDataset
from attnzoo.data.transforms import eval_transform, train_transform
from attnzoo.errors import AttnzooError, listing
from attnzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing, check_image_side


def _check_fits_memory(nbytes: int, what: str) -> None:
    """Refuse a data set generated in memory that this machine's memory cannot hold, before generating it."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if nbytes > total:
        raise AttnzooError(f"{what} need {nbytes / 2**30:,.1f} GiB in memory, more than this machine's "
                           f"{total / 2**30:,.1f} GiB: lower image_size, num_train or num_val.")


class ImageFolderDataModule(ClassificationDataModule):
    """Image folders in ImageNet layout: ``data_dir/train/<class>/*.JPEG`` and ``data_dir/val/<class>/*.JPEG``.

    Training images get RandomResizedCrop (scale 0.08-1) and a horizontal flip; evaluation images are resized
    to ``input_size / crop_pct`` and center-cropped to ``input_size``. Classes are the training folders, sorted.

    Args:
        data_dir: the root holding the split folders.
        train_dir, val_dir: split folder names under ``data_dir``.
        test_dir: split for ``attnzoo test`` (default: the validation split).
        input_size: crop size (224).
        crop_pct: evaluation center-crop fraction (0.875: resize to 256, crop 224).
        interpolation: bilinear, bicubic, ...
        mean, std: normalisation (ImageNet's by default).
    """

    def __init__(
        self,
        data_dir: str,
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str | None = None,
        input_size: int = 224,
        crop_pct: float = 0.875,
        interpolation: str = "bilinear",
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        batch_size: int = 64,
        num_workers: int = 8,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_path: str | list[str] | None = None,
    ):
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, predict_path)
        self.data_dir = Path(data_dir)
        layout = f"{self.data_dir}/{train_dir}/<class name>/<images> and {self.data_dir}/{val_dir}/<class name>/<images>"
        if not self.data_dir.is_dir():
            raise AttnzooError(f"data directory {str(self.data_dir)!r} does not exist: expected {layout}.")
        self.split_dirs = {"train": train_dir, "val": val_dir, "test": test_dir or val_dir}
        for split in ("train", "val"):
            if not (self.data_dir / self.split_dirs[split]).is_dir():
                raise AttnzooError(
                    f"{str(self.data_dir / self.split_dirs[split])!r} does not exist: expected {layout}."
                )
        # Checked now (a bad interpolation name, crop_pct...), not in a loader worker.
        self._preprocessing = Preprocessing((3, input_size, input_size), interpolation, crop_pct, mean, std)
        self._class_names = find_classes(self.data_dir / train_dir)
        if len(self._class_names) < 2:
            raise AttnzooError(f"{str(self.data_dir / train_dir)!r} has {len(self._class_names)} class folder "
                               f"({', '.join(self._class_names)}): a classifier needs 2 or more, one folder per class.")

    def _split(self, split: str, train: bool) -> ImageFolder:
        transform = train_transform(self._preprocessing) if train else eval_transform(self._preprocessing)
        if not train:
            self._check_no_unknown_classes(self.data_dir / self.split_dirs[split])
        # The training split defines the classes: each of its class folders must hold a readable image.
        return ImageFolder(self.data_dir / self.split_dirs[split], transform, classes=self._class_names,
                           check_classes=split == "train")

    def _check_no_unknown_classes(self, folder: Path) -> None:
        """A class folder of an evaluation split that training does not have: its images could never be scored
        (class indices come from the training folders), so an accuracy without them would silently be over
        another set of images. Refused when it holds images; an empty one is only mentioned."""
        known = set(self._class_names)
        unknown = [name for name in find_classes(folder) if name not in known]
        with_images = [name for name in unknown if walk_images(folder / name)]
        if with_images:
            raise AttnzooError(f"{str(folder)!r} has class folder(s) the training split "
                               f"{str(self.data_dir / self.split_dirs['train'])!r} does not: "
                               f"{listing(with_images, 5)}. Their images cannot be scored (classes come from the "
                               "training folders): add the class to training, or move the folder out.")
        if unknown:
            rank_zero_warn(f"{str(folder)!r}: class folder(s) without images and not in the training split are "
                           f"ignored: {listing(unknown, 5)}.")

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self._split("train", train=True)
        if stage in ("fit", "validate") and self.val_set is None:
            self.val_set = self._split("val", train=False)
        if stage == "test" and self.test_set is None:
            self.test_set = self._split("test", train=False)
        if stage == "predict" and self.predict_set is None:
            # The validation folder is scanned only when there is no predict_path.
            self.predict_set = self._predict_set(lambda: self._split("val", train=False), self.split_dirs["val"])


class CIFARDataModule(ClassificationDataModule):
    """CIFAR-10 or CIFAR-100 (the official python archives). Validation and test use the 10,000 test images
    (CIFAR has no separate validation split). Training adds a random crop with 4 pixels of padding and a flip.

    Args:
        data_dir: holds ``cifar-10-batches-py/`` (``cifar-100-python/``) or the downloaded ``.tar.gz``.
        variant: cifar10 or cifar100.
        download: fetch the archive (MD5-checked) when it is not in ``data_dir``.
    """

    def __init__(
        self,
        data_dir: str = "data",
        variant: Literal["cifar10", "cifar100"] = "cifar10",
        download: bool = False,
        batch_size: int = 128,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_path: str | list[str] | None = None,
    ):
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, predict_path)
        if variant not in ARCHIVES:
            raise AttnzooError(f"unknown CIFAR variant {variant!r}. Accepted: {', '.join(ARCHIVES)}.")
        self.data_dir, self.variant, self.download = Path(data_dir), variant, download
        self._class_names = list(ARCHIVES[variant].classes)
        self._preprocessing = Preprocessing((3, 32, 32), "bilinear", 1.0, CIFAR_MEAN, CIFAR_STD)

    def prepare_data(self) -> None:
        # Lightning runs this once per node (local rank 0): the download and extraction happen once.
        prepare_cifar(self.variant, self.data_dir, self.download)

    def setup(self, stage: str) -> None:
        folder = prepare_cifar(self.variant, self.data_dir, download=False)
        if stage == "fit" and self.train_set is None:
            self.train_set = CifarDataset(folder, self.variant, "train", augment=True)
        if self.val_set is None:
            self.val_set = CifarDataset(folder, self.variant, "test")
        self.test_set = self.val_set
        if stage == "predict" and self.predict_set is None:
            self.predict_set = self._predict_set(self.val_set, "test")


class ShapesDataModule(ClassificationDataModule):
    """The embedded shapes data set (see :mod:`attnzoo.data.synthetic`): generated in memory from ``seed``, no
    files. Training, validation and test sets come from different seeds.

    Args:
        num_train, num_val: images in the training and validation (and test) sets.
        image_size: side of the square images.
        num_classes: use the first ``num_classes`` of the ten shapes.
        seed: the seed of the data (not of the training run).
        predict_samples: validation images shown by ``attnzoo predict`` when no ``predict_path`` is given.
    """

    # What a subclass of the same generated data changes (the detection set: attnzoo.detection.data).
    dataset_class: type[Dataset] = ShapesDataset
    data_name = "shapes data set"
    min_classes = 2
    min_image_size = MIN_SIZE

    def __init__(
        self,
        num_train: int = 10000,
        num_val: int = 2000,
        image_size: int = 32,
        num_classes: int = len(SHAPE_CLASSES),
        seed: int = 0,
        predict_samples: int = 8,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_path: str | list[str] | None = None,
    ):
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, predict_path)
        if not self.min_classes <= num_classes <= len(SHAPE_CLASSES):
            raise AttnzooError(f"the {self.data_name} has {self.min_classes} to {len(SHAPE_CLASSES)} classes, "
                               f"got num_classes={num_classes}.")
        if num_train < 1 or num_val < 1:
            raise AttnzooError(f"num_train and num_val must be positive, got {num_train} and {num_val}.")
        check_image_side(image_size, "image_size", low=self.min_image_size)
        _check_fits_memory((num_train + num_val) * 3 * image_size**2,
                           f"num_train + num_val = {num_train + num_val} images of {image_size}x{image_size}")
        self.num_train, self.num_val, self.image_size = num_train, num_val, image_size
        self.seed, self.predict_samples = seed, predict_samples
        self._class_names = list(SHAPE_CLASSES[:num_classes])
        self._preprocessing = Preprocessing((3, image_size, image_size), "bilinear", 1.0, (0.5,) * 3, (0.25,) * 3)

    def _generate(self, count: int, seed_offset: int, train: bool = False) -> Dataset:
        return self.dataset_class(count, self.image_size, self.seed * 3 + seed_offset, self.num_classes, train=train)

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = self._generate(self.num_train, 0, train=True)
        if stage in ("fit", "validate", "predict") and self.val_set is None:
            self.val_set = self._generate(self.num_val, 1)
        if stage == "test" and self.test_set is None:
            self.test_set = self._generate(self.num_val, 2)
        if stage == "predict" and self.predict_set is None:
            self.predict_set = self._predict_set(self.val_set, "val")
