"""ImageNet-style image transforms on Pillow images, without torchvision.

Training: RandomResizedCrop (scale 0.08-1, aspect ratio 3/4-4/3) and a horizontal flip. Evaluation: resize the
shorter side to ``input_size / crop_pct`` (256 for 224 crops) and take the center crop. Both are driven by a
:class:`attnzoo.preprocessing.Preprocessing` (input size, interpolation, crop fraction).

Both transforms decide their crop box from the image's header size *before* decoding, and can then ask a JPEG
for a reduced-size decode (``Image.draft``: libjpeg scales by 1/2, 1/4 or 1/8 while decoding), never smaller than
what the final resize needs. On large photos this skips most of the decoding work. It is on by default for
training and off for evaluation (full decoding keeps evaluation numbers comparable with other code bases).

The transforms return uint8 CHW tensors; normalisation happens on the batch, on the device
(:meth:`attnzoo.training.ImageClassifier.prepare_input`), which sends a quarter of the bytes from the loader
workers to the accelerator.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from attnzoo.errors import AttnzooError
from attnzoo.preprocessing import INTERPOLATIONS, Preprocessing

RESAMPLING = {name: Image.Resampling[name.upper()] for name in INTERPOLATIONS}


def resample_mode(name: str) -> Image.Resampling:
    try:
        return RESAMPLING[name]
    except (KeyError, TypeError):
        raise AttnzooError(f"unknown interpolation {name!r}. Accepted: {', '.join(INTERPOLATIONS)}.") from None


def _crop_size(input_size: int | Sequence[int]) -> int:
    """224 from 224, [224, 224] or [3, 224, 224] (square crops only)."""
    if isinstance(input_size, int):
        return input_size
    size = list(input_size)[-2:]
    if len(size) != 2 or size[0] != size[1]:
        raise AttnzooError(f"input_size must be square, e.g. [3, 224, 224]; got {list(input_size)!r}.")
    return int(size[0])


def _decode(img: Image.Image, box: tuple, out_size: int, draft: bool = True) -> tuple[Image.Image, tuple]:
    """Decode ``img`` (lazily opened) at the smallest JPEG scale that keeps ``box`` at least ``out_size`` wide and
    high; returns the RGB image and the box in its coordinates."""
    width, height = img.size
    left, top, right, bottom = box
    scale = min((right - left) / out_size, (bottom - top) / out_size)
    if draft and scale >= 2 and img.format == "JPEG":
        img.draft("RGB", (math.ceil(width / scale), math.ceil(height / scale)))
    rgb = to_rgb(img)
    fx, fy = rgb.size[0] / width, rgb.size[1] / height
    return rgb, (left * fx, top * fy, right * fx, bottom * fy)


class RandomResizedCrop:
    """Crop a random region of 8-100% of the area with aspect ratio 3/4-4/3, resize it to ``size`` x ``size``,
    and flip it horizontally with probability ``flip_prob``. The sampling follows the Inception recipe
    (ten tries, then a center crop of the closest admissible ratio)."""

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        interpolation: str = "bilinear",
        flip_prob: float = 0.5,
        draft: bool = True,
    ):
        self.size = _crop_size(size)
        self.draft = draft
        self.scale = scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = ratio
        self.resample = resample_mode(interpolation)
        self.flip_prob = flip_prob

    def sample_box(self, width: int, height: int, rng: random.Random = random) -> tuple[int, int, int, int]:
        area = width * height
        for _ in range(10):
            target_area = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(*self.log_ratio))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                left = rng.randint(0, width - w)
                top = rng.randint(0, height - h)
                return left, top, left + w, top + h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            w, h = round(height * self.ratio[1]), height
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        """``rng``: the sample's own generator (see :mod:`attnzoo.data.sampling`); the global one when None."""
        rng = rng or random
        box = self.sample_box(*img.size, rng=rng)
        rgb, box = _decode(img, box, self.size, self.draft)
        out = rgb.resize((self.size, self.size), self.resample, box=box)
        if rng.random() < self.flip_prob:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return to_uint8_tensor(out)


class ResizeCenterCrop:
    """Resize the shorter side to ``round(size / crop_pct)`` and take the central ``size`` x ``size`` crop
    (256 -> 224 for crop_pct 0.875), in a single resampling step."""

    def __init__(self, size: int, crop_pct: float = 0.875, interpolation: str = "bilinear", draft: bool = True):
        self.draft = draft
        if not 0 < crop_pct <= 1:
            raise AttnzooError(f"crop_pct must be in (0, 1], got {crop_pct!r}.")
        self.size = _crop_size(size)
        self.resize_to = int(math.floor(self.size / crop_pct))
        self.resample = resample_mode(interpolation)

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> torch.Tensor:
        width, height = img.size
        # The integer sizes and offsets of "resize the shorter side, then center-crop" (torchvision's rounding),
        # mapped back to the original: resampling that box directly gives the same pixels in one step.
        if width <= height:
            new_w, new_h = self.resize_to, int(self.resize_to * height / width)
        else:
            new_w, new_h = int(self.resize_to * width / height), self.resize_to
        left = int(round((new_w - self.size) / 2.0))
        top = int(round((new_h - self.size) / 2.0))
        fx, fy = width / new_w, height / new_h
        box = (left * fx, top * fy, (left + self.size) * fx, (top + self.size) * fy)
        rgb, box = _decode(img, box, self.size, self.draft)
        return to_uint8_tensor(rgb.resize((self.size, self.size), self.resample, box=box))


# Pillow's modes for more than 8 bits per sample: 16-bit greyscale PNG and TIFF ("I;16*"), 32-bit integers ("I",
# what 16-bit PNGs become after some operations) and floats ("F").
_WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB, with more-than-8-bit images scaled by their value range rather than clipped.

    Pillow's own ``convert("RGB")`` clips 16-bit samples at 255 (a 16-bit PNG turns almost white). Here 16-bit
    integer images map 0..65535 to 0..255 (also 32-bit integer images whose values all fit in 16 bits, which is
    how Pillow hands over some 16-bit files; otherwise their full signed 32-bit range), and float images 0..1
    (values outside are clipped).
    """
    if img.mode not in _WIDE_MODES:
        return img.convert("RGB")
    values = np.asarray(img).astype(np.float64)
    if img.mode == "F":
        low, high = 0.0, 1.0
    elif img.mode.startswith("I;16") or (values.size and values.min() >= 0 and values.max() <= 65535):
        low, high = 0.0, 65535.0
    else:  # genuinely 32-bit signed samples
        low, high = -(2.0**31), 2.0**31 - 1
    scaled = (values - low) * (255.0 / (high - low))
    grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
    return grey.convert("RGB")


def to_uint8_tensor(img: Image.Image) -> torch.Tensor:
    """HWC RGB Pillow image -> uint8 CHW tensor."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def train_transform(preprocessing: Preprocessing, draft: bool = True) -> RandomResizedCrop:
    return RandomResizedCrop(preprocessing.crop_size, interpolation=preprocessing.interpolation, draft=draft)


def eval_transform(preprocessing: Preprocessing, draft: bool = False) -> ResizeCenterCrop:
    """Full-resolution decoding by default: evaluation numbers stay comparable with other code bases."""
    return ResizeCenterCrop(preprocessing.crop_size, crop_pct=preprocessing.crop_pct,
                            interpolation=preprocessing.interpolation, draft=draft)
