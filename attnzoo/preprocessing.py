"""What a model expects of its input images: :class:`Preprocessing`, one typed record for the whole package.

The data modules build one for their data, the model's :class:`attnzoo.registry.ModelConfig` carries one, the
training module normalises batches with its mean and std, and config.json and checkpoints store it as a plain
dict of five keys (``input_size``, ``interpolation``, ``crop_pct``, ``mean``, ``std``). It sits at the bottom of
the package (it imports nothing but the errors), so the data layer and the model layer share it without
knowing each other. Defaults are ImageNet's, as torchvision's and timm's ImageNet weights expect.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from attnzoo.errors import AttnzooError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The resampling filters of Pillow that the transforms accept by name (attnzoo.data.transforms maps them).
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


# The largest image side a model is given. Activations grow with its square: ResNet-50's forward pass at 4096
# pixels a side already needs tens of GB per image, and a mistyped 1000000 would ask for hundreds of TiB.
MAX_IMAGE_SIDE = 4096


def check_image_side(value, name: str, low: int = 1) -> int:
    """``value`` as an image side in pixels, ``low`` to :data:`MAX_IMAGE_SIDE`; otherwise one line naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_IMAGE_SIDE:
        raise AttnzooError(f"{name} must be an image side in pixels from {low} to {MAX_IMAGE_SIDE}, got {value!r}.")
    return int(value)


@dataclass(frozen=True)
class Preprocessing:
    """How images are prepared for a model.

    Args:
        input_size: channels, height, width of the crop the model sees (square crops only).
        interpolation: the resampling filter of the resize, one of ``INTERPOLATIONS``.
        crop_pct: evaluation center-crop fraction: the shorter side is resized to ``size / crop_pct`` first
            (0.875: 256 -> 224); 1.0 resizes straight to the crop.
        mean, std: per-channel normalisation of pixel values scaled to [0, 1].
    """

    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __post_init__(self) -> None:
        size = _ints(self.input_size, "input_size")
        if len(size) != 3 or size[1] != size[2] or min(size) < 1:
            raise AttnzooError("input_size must be three positive integers [channels, height, width] with height == "
                               f"width (square crops), e.g. [3, 224, 224]; got {list(self.input_size)!r}.")
        check_image_side(size[1], "input_size's height and width")
        if self.interpolation not in INTERPOLATIONS:
            raise AttnzooError(f"unknown interpolation {self.interpolation!r}. Accepted: {', '.join(INTERPOLATIONS)}.")
        if isinstance(self.crop_pct, bool) or not isinstance(self.crop_pct, (int, float)) or not 0 < self.crop_pct <= 1:
            raise AttnzooError(f"crop_pct must be in (0, 1], got {self.crop_pct!r}.")
        mean, std = _floats(self.mean, "mean"), _floats(self.std, "std")
        if not len(mean) == len(std) == size[0]:
            raise AttnzooError(f"mean and std need one value per input channel ({size[0]}), got {list(mean)} and "
                               f"{list(std)}.")
        if not all(s > 0 for s in std):
            raise AttnzooError(f"std must be positive, got {list(std)}.")
        for name, value in (("input_size", size), ("crop_pct", float(self.crop_pct)), ("mean", mean), ("std", std)):
            object.__setattr__(self, name, value)

    @property
    def crop_size(self) -> int:
        """The side of the square crop (224 for input_size (3, 224, 224))."""
        return self.input_size[-1]

    def normalize(self, images):
        """A uint8 batch (N, C, H, W) or image (C, H, W) of pixels 0-255 -> ``(pixel / 255 - mean) / std`` as
        float32 on the same device; a float input is taken as pixels scaled to 0-1 already."""
        x = images.float() / 255 if not images.is_floating_point() else images.float()
        shape = (-1, 1, 1)
        return (x - x.new_tensor(self.mean).view(shape)) / x.new_tensor(self.std).view(shape)

    def to_dict(self) -> dict:
        """The five keys as config.json and checkpoints store them (lists, not tuples)."""
        return {"input_size": list(self.input_size), "interpolation": self.interpolation, "crop_pct": self.crop_pct,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, values: Mapping | Preprocessing | None, base: Preprocessing | None = None) -> Preprocessing:
        """A Preprocessing from a dict of some or all of the five keys; the others come from ``base``
        (default: ImageNet's). Unknown keys are refused by name."""
        base = base or cls()
        if values is None:
            return base
        if isinstance(values, Preprocessing):
            return values
        if not isinstance(values, Mapping):
            raise AttnzooError(f"preprocessing must be a mapping of {', '.join(FIELDS)}, got {values!r}.")
        unknown = sorted(set(map(str, values)) - set(FIELDS))
        if unknown:
            raise AttnzooError(f"preprocessing has no field {', '.join(map(repr, unknown))}. Accepted: "
                               f"{', '.join(FIELDS)}.")
        return dataclasses.replace(base, **values)


FIELDS = tuple(f.name for f in dataclasses.fields(Preprocessing))


def _ints(values, name: str) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise AttnzooError(f"{name} must be a list of integers, got {values!r}.")
    return tuple(int(v) for v in values)


def _floats(values, name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise AttnzooError(f"{name} must be a list of numbers, got {values!r}.")
    return tuple(float(v) for v in values)
