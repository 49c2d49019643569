"""Data for training and evaluation: image folders (ImageNet layout), CIFAR-10/100, and an embedded shapes data
set generated from a seed (no download). Every data module tells the model its classes and preprocessing."""

from attnzoo.data.base import ClassificationDataModule
from attnzoo.data.image_folder import ImageFiles, ImageFolder, UnreadableImageWarning
from attnzoo.data.modules import CIFARDataModule, ImageFolderDataModule, ShapesDataModule
from attnzoo.data.synthetic import SHAPE_CLASSES, ShapesDataset
from attnzoo.data.transforms import RandomResizedCrop, ResizeCenterCrop

__all__ = [
    "CIFARDataModule",
    "ClassificationDataModule",
    "ImageFiles",
    "ImageFolder",
    "ImageFolderDataModule",
    "RandomResizedCrop",
    "ResizeCenterCrop",
    "SHAPE_CLASSES",
    "ShapesDataModule",
    "ShapesDataset",
    "UnreadableImageWarning",
]
