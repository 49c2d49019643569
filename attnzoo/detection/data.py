"""Detection data: COCO-format files (an annotation JSON and an image folder, what users have) and the embedded
shapes set (:mod:`attnzoo.detection.synthetic`).

Samples are ``(uint8 image [3, H, W], target)`` with ``target`` = {``boxes`` float32 [k, 4] x1 y1 x2 y2 in pixels,
``labels`` int64 [k] (1..num_classes; 0 is the detectors' background), ``masks`` uint8 [k, H, W] when the data
has them and the detector has a mask head, ``image_id`` int}; batches are lists (images differ in size; the
detector resizes and pads them).
Training flips images horizontally with probability 0.5 (the papers' only augmentation), drawing from the
sample's own generator so a resumed run sees the same flips.

The COCO JSON is read here, without pycocotools, and checked whole before training starts: a missing file, an
image listed but not in the folder, a box outside its image or with no area, a category id beyond
``num_classes`` and an empty image set are each one line naming the file and the entry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

from attnzoo.data.base import ClassificationDataModule, LabelledSamples
from attnzoo.data.image_folder import ImageFiles, open_image
from attnzoo.data.modules import ShapesDataModule
from attnzoo.data.sampling import unpack
from attnzoo.data.transforms import to_rgb, to_uint8_tensor
from attnzoo.detection.synthetic import MIN_IMAGE_SIZE, generate_detection
from attnzoo.errors import AttnzooError
from attnzoo.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

# Annotation tools round box corners; a box may overhang its image by this many pixels before it is an error.
BOX_TOLERANCE = 1.0


def collate_detection(batch: list) -> tuple:
    """``[(image, target), ...]`` -> ``(images, targets)`` as lists (torchvision's detectors take lists)."""
    return tuple(list(items) for items in zip(*batch))


def flip_horizontally(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


class _Flipping(Dataset):
    """Flip at random for training, from the sample's seed (:class:`attnzoo.data.sampling.Sample`)."""

    takes_sample_keys = True
    train = False
    # Off when the detector has no mask head (DetectionDataModule.use_masks): a COCO target's full-size masks
    # are most of its cost, and flipping and resizing them would be work thrown away.
    masks = True

    def load(self, index: int) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def __getitem__(self, key) -> tuple[torch.Tensor, dict]:
        index, rng = unpack(key)
        image, target = self.load(index)
        if self.train and (rng.random() if rng is not None else torch.rand(()).item()) < 0.5:
            image, target = flip_horizontally(image, target)
        return image, target


class ShapesDetection(_Flipping):
    """In-memory generated shapes with boxes and masks (:func:`generate_detection`)."""

    def __init__(self, num_images: int, size: int = 96, seed: int = 0, num_classes: int = 4, train: bool = False):
        self.images, self.targets = generate_detection(num_images, size, seed, num_classes)
        self.train = train

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, index: int) -> tuple[torch.Tensor, dict]:
        target = {k: v for k, v in self.targets[index].items() if self.masks or k != "masks"}
        return self.images[index], {**target, "image_id": index}


# ---- COCO ------------------------------------------------------------------------------------------------------


def _polygons_mask(polygons: list, height: int, width: int) -> np.ndarray:
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if len(polygon) >= 6:
            draw.polygon([(float(x), float(y)) for x, y in zip(polygon[0::2], polygon[1::2])], fill=1)
    return np.asarray(canvas, dtype=np.uint8)


def _rle_mask(rle: dict, height: int, width: int) -> np.ndarray:
    counts = rle["counts"]
    if isinstance(counts, str):  # compressed RLE: pycocotools' own encoding
        from pycocotools import mask as mask_utils

        return mask_utils.decode({"size": rle["size"], "counts": counts.encode()}).astype(np.uint8)
    flat = np.zeros(height * width, np.uint8)
    position, value = 0, 0
    for count in counts:
        flat[position:position + count] = value
        position, value = position + count, 1 - value
    return flat.reshape(width, height).T  # COCO's RLE runs down the columns


class CocoAnnotations:
    """A COCO annotation file, read and checked: images, their objects, the categories.

    Crowd annotations (``iscrowd: 1``) are left out of the targets, as torchvision's references do.
    """

    def __init__(self, annotation_file: str | Path, image_dir: str | Path, num_classes: int | None = None):
        self.file, self.image_dir = Path(annotation_file), Path(image_dir)
        if not self.file.is_file():
            raise AttnzooError(f"annotation file {str(self.file)!r} does not exist: expected a COCO-format JSON "
                               "(images, annotations, categories).")
        if not self.image_dir.is_dir():
            raise AttnzooError(f"image folder {str(self.image_dir)!r} does not exist (the images of {str(self.file)!r}).")
        try:
            data = json.loads(self.file.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AttnzooError(f"annotation file {str(self.file)!r} is not JSON: {err}.") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise AttnzooError(f"annotation file {str(self.file)!r} is not COCO format: it needs an 'images' list "
                               "(and 'annotations', 'categories').")
        categories = {int(c["id"]): str(c.get("name", c["id"])) for c in data.get("categories") or []}
        self.num_classes = int(num_classes) if num_classes is not None else max(categories, default=0)
        if self.num_classes < 1:
            raise AttnzooError(f"annotation file {str(self.file)!r} has no categories; give num_classes.")
        self.class_names = [categories.get(i, str(i)) for i in range(1, self.num_classes + 1)]
        self.images = list(data["images"])
        if not self.images:
            raise AttnzooError(f"annotation file {str(self.file)!r} lists no images: nothing to train or evaluate on.")
        by_id = {}
        for image in self.images:
            path = self.image_dir / image["file_name"]
            if not path.is_file():
                raise AttnzooError(f"image {image['file_name']!r} (id {image['id']}) of {str(self.file)!r} is not in "
                                   f"{str(self.image_dir)!r}.")
            by_id[image["id"]] = image
        self.objects: dict = {image["id"]: [] for image in self.images}
        for ann in data.get("annotations") or []:
            self.objects.setdefault(ann.get("image_id"), []).append(self._checked(ann, by_id))
        annotations = [a for objects in self.objects.values() for a in objects]
        self.has_masks = bool(annotations) and all("segmentation" in a for a in annotations)

    def _checked(self, ann: dict, images: dict) -> dict:
        where = f"annotation {ann.get('id')} of {str(self.file)!r}"
        image = images.get(ann.get("image_id"))
        if image is None:
            raise AttnzooError(f"{where} is of image id {ann.get('image_id')}, which the file does not list.")
        category = int(ann.get("category_id", -1))
        if not 1 <= category <= self.num_classes:
            raise AttnzooError(f"{where}: category_id {category} is beyond num_classes {self.num_classes} (ids must be "
                               f"1..{self.num_classes}; give num_classes to change it).")
        x, y, w, h = (float(v) for v in ann["bbox"])
        if not all(map(math.isfinite, (x, y, w, h))) or w <= 0 or h <= 0:
            raise AttnzooError(f"{where}: box [x, y, w, h] = {ann['bbox']} has zero area.")
        width, height, t = image["width"], image["height"], BOX_TOLERANCE
        if x < -t or y < -t or x + w > width + t or y + h > height + t:
            raise AttnzooError(f"{where}: box [x, y, w, h] = {ann['bbox']} lies outside its {width}x{height} image "
                               f"{image['file_name']!r}.")
        return ann

    def target(self, index: int, masks: bool = True) -> dict:
        """The target of image ``index`` (boxes clipped to the image; with ``masks``, masks when the file has
        segmentations)."""
        image = self.images[index]
        width, height = image["width"], image["height"]
        objects = [a for a in self.objects[image["id"]] if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in objects], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        target = {"boxes": boxes, "labels": torch.tensor([int(a["category_id"]) for a in objects], dtype=torch.int64),
                  "image_id": int(image["id"])}
        if masks and self.has_masks:
            drawn = [_polygons_mask(a["segmentation"], height, width) if isinstance(a["segmentation"], list)
                     else _rle_mask(a["segmentation"], height, width) for a in objects]
            target["masks"] = torch.from_numpy(np.stack(drawn) if drawn else np.zeros((0, height, width), np.uint8))
        return target

    def drop_images_without_objects(self) -> None:
        """Keep only the images with an object that is not a crowd (for training, as mmdetection and
        torchvision's references do: an image with nothing to find teaches the detectors little)."""
        self.images = [image for image in self.images
                       if any(not a.get("iscrowd", 0) for a in self.objects[image["id"]])]
        if not self.images:
            raise AttnzooError(f"annotation file {str(self.file)!r} has no image with an object (crowd regions do not "
                               "count): nothing to train on.")


class CocoDetection(_Flipping):
    """Images and targets of a :class:`CocoAnnotations`; images are decoded when loaded."""

    def __init__(self, annotations: CocoAnnotations, train: bool = False):
        self.annotations, self.train = annotations, train

    def __len__(self) -> int:
        return len(self.annotations.images)

    def load(self, index: int) -> tuple[torch.Tensor, dict]:
        image = self.annotations.images[index]
        with open_image(self.annotations.image_dir / image["file_name"]) as file:  # a regular file only
            pixels = WholeImage()(file)
        return pixels, self.annotations.target(index, masks=self.masks)


class LabelledImages(LabelledSamples):
    """The first ``count`` images of a detection set for ``predict``: ``(image, "split[i] (true: names)")``."""

    def _truth(self, target: dict) -> str:
        return ", ".join(self.class_names[i - 1] for i in target["labels"].tolist()) or "nothing"


class DetectionDataModule(ClassificationDataModule):
    """Base of the detection data modules: list batches, classes 1..num_classes (0 is background)."""

    collate_fn = staticmethod(collate_detection)
    labelled_class = LabelledImages

    def use_masks(self, masks: bool) -> None:
        """Whether targets carry instance masks; the :class:`~attnzoo.detection.Detector` says so in its
        ``setup`` (after this module's), before any sample is loaded."""
        for dataset in (self.train_set, self.val_set, self.test_set):
            if isinstance(dataset, _Flipping):
                dataset.masks = masks

    def predict_files(self) -> Dataset | None:
        """The user's ``predict_path`` images at their own size (the detector resizes them)."""
        return ImageFiles(self.predict_path, WholeImage()) if self.predict_path else None


class WholeImage:
    """A decoded file as a uint8 tensor, uncropped; ``size`` is the placeholder's for an unreadable file."""

    size = 1

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return to_uint8_tensor(to_rgb(image))


class CocoDataModule(DetectionDataModule):
    """COCO-format data: ``train_annotations`` / ``val_annotations`` JSON files and their image folders.

    Category ids are the labels (1..num_classes), as torchvision's COCO detectors count them; ``num_classes``
    defaults to the largest category id of the training file, and class names come from its categories.

    Args:
        train_annotations, train_images: the training JSON and its image folder.
        val_annotations, val_images: the validation JSON and its folder (also ``attnzoo test``'s unless
            ``test_annotations`` is given).
        test_annotations, test_images: the test split.
        num_classes: object classes (without background); ids above it are an error.
        skip_empty_train: leave training images without any (non-crowd) object out.
        mean, std: normalisation, applied by the detector (ImageNet's by default).
        predict_samples: validation images shown by ``attnzoo predict`` without ``predict_path``.
    """

    def __init__(
        self,
        train_annotations: str,
        train_images: str,
        val_annotations: str,
        val_images: str,
        test_annotations: str | None = None,
        test_images: str | None = None,
        num_classes: int | None = None,
        skip_empty_train: bool = True,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        predict_samples: int = 8,
        batch_size: int = 2,
        num_workers: int = 4,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_path: str | list[str] | None = None,
    ):
        super().__init__(batch_size, num_workers, pin_memory, persistent_workers, predict_path)
        # Read and checked now: a mistake is found before a model is built, let alone trained.
        self.splits = {"train": CocoAnnotations(train_annotations, train_images, num_classes)}
        num_classes = self.splits["train"].num_classes
        if skip_empty_train:
            self.splits["train"].drop_images_without_objects()
        self.splits["val"] = CocoAnnotations(val_annotations, val_images, num_classes)
        if test_annotations is not None:
            self.splits["test"] = CocoAnnotations(test_annotations, test_images or val_images, num_classes)
        self._class_names = self.splits["train"].class_names
        self._preprocessing = Preprocessing((3, 800, 800), "bilinear", 1.0, mean, std)
        self.predict_samples = predict_samples

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.train_set is None:
            self.train_set = CocoDetection(self.splits["train"], train=True)
        if self.val_set is None:
            self.val_set = CocoDetection(self.splits["val"])
        if stage == "test" and self.test_set is None:
            self.test_set = CocoDetection(self.splits.get("test", self.splits["val"]))
        if stage == "predict" and self.predict_set is None:
            self.predict_set = self._predict_set(self.val_set, "val")


class ShapesDetectionDataModule(DetectionDataModule, ShapesDataModule):
    """The embedded shapes detection set (:mod:`attnzoo.detection.synthetic`), generated in memory from ``seed``;
    the classification shapes module's splits and checks, with boxes and masks.

    Args:
        num_train, num_val: images in the training and validation (and test) sets.
        image_size: side of the square images (at least 48).
        num_classes: the first ``num_classes`` of the ten shapes.
        seed: the seed of the data (not of the training run).
        predict_samples: validation images shown by ``attnzoo predict`` without ``predict_path``.
    """

    dataset_class = ShapesDetection
    data_name = "shapes detection set"
    min_classes = 1
    min_image_size = MIN_IMAGE_SIZE

    def __init__(
        self,
        num_train: int = 256,
        num_val: int = 64,
        image_size: int = 96,
        num_classes: int = 4,
        seed: int = 0,
        predict_samples: int = 8,
        batch_size: int = 8,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_path: str | list[str] | None = None,
    ):
        # Its own signature: these defaults are what LightningCLI shows and fills in.
        super().__init__(num_train, num_val, image_size, num_classes, seed, predict_samples, batch_size, num_workers,
                         pin_memory, persistent_workers, predict_path)
