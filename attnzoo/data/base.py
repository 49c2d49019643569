"""What every attnzoo data module shares.

A data module knows its classes (``num_classes``, ``class_names``) and its ``preprocessing`` (a
:class:`~attnzoo.preprocessing.Preprocessing`: input size, interpolation, crop fraction, mean, std) as soon as
it is constructed, so the command line can hand them to the model (``link_arguments``) and the checkpoint
carries them: configs never repeat them.

Datasets yield uint8 images; the model normalises them on its device with ``preprocessing``'s mean and std
(a quarter of the bytes through pinned memory, and normalisation costs nothing on an accelerator).
Predict batches are ``(images, ids)`` where an id says which image it was (a path, or a sample index), or
``(images, ids, readable)`` from image files, where ``readable`` is False for a file that could not be decoded.

Training batches come from a :class:`attnzoo.data.sampling.ResumableSampler`: the order and the augmentation
follow from the run's seed, and the position inside an epoch is saved in checkpoints (:meth:`state_dict`), so
a run resumed from a mid-epoch checkpoint sees exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, Dataset

from attnzoo.data.image_folder import ImageFiles, ImageFolder
from attnzoo.data.sampling import ResumableSampler
from attnzoo.data.transforms import eval_transform
from attnzoo.errors import AttnzooError
from attnzoo.preprocessing import Preprocessing


class LabelledSamples(Dataset):
    """The first ``count`` samples of a labelled data set as predict samples ``(image, "split[i] (true: name)")``."""

    def __init__(self, dataset: Dataset, count: int, split: str, class_names: list[str]):
        self.dataset, self.count, self.split, self.class_names = dataset, min(count, len(dataset)), split, class_names

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        image, label = self.dataset[index]
        return image, f"{self.split}[{index}] (true: {self._truth(label)})"

    def _truth(self, label) -> str:
        """The true label as ``predict`` prints it."""
        return self.class_names[label]


class ClassificationDataModule(L.LightningDataModule):
    """Base class: batch size and loader options; subclasses build ``train_set``, ``val_set``, ``test_set``
    and ``predict_set`` in :meth:`setup`.

    Args:
        batch_size: images per batch and per device (the global batch is ``batch_size x devices x nodes``).
        num_workers: loader processes per device; 0 loads in the main process.
        pin_memory: page-locked host memory for faster copies to an accelerator.
        persistent_workers: keep the workers alive between epochs (needs ``num_workers > 0``).
        predict_path: image files or folders to predict on; when not set, the module's own default
            (a few validation images).
    """

    # How samples become a batch: None stacks them (torch's default); detection's targets differ in size per image.
    collate_fn = None
    # What ``attnzoo predict`` shows without ``predict_path``: this many validation samples, labelled by this class
    # (a module with a ``predict_samples`` option sets its own count).
    predict_samples = 16
    labelled_class: type[LabelledSamples] = LabelledSamples

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = True,
        persistent_workers: bool = True,
        predict_path: str | list[str] | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise AttnzooError(f"batch_size must be at least 1, got {batch_size}.")
        if num_workers < 0:
            raise AttnzooError(f"num_workers must be 0 or more, got {num_workers}.")
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.predict_path = [predict_path] if isinstance(predict_path, (str, os.PathLike)) else predict_path
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.predict_set: Dataset | None = None
        self._train_sampler: ResumableSampler | None = None
        self._resume_state: dict | None = None

    # What the model needs to know; subclasses set these in __init__.
    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self._class_names)

    @property
    def preprocessing(self) -> Preprocessing:
        return self._preprocessing

    def predict_files(self) -> Dataset | None:
        """The user's ``predict_path`` images with the evaluation transform, or None when not given."""
        if not self.predict_path:
            return None
        return ImageFiles(self.predict_path, eval_transform(self._preprocessing))

    def _predict_set(self, val_set: Dataset | Callable[[], Dataset], split: str) -> Dataset:
        """The user's ``predict_path`` images, or else the first ``predict_samples`` of ``val_set`` (the split
        named ``split``) with their true labels; ``val_set`` may be a function that builds it, called only then."""
        if files := self.predict_files():
            return files
        dataset = val_set() if callable(val_set) else val_set
        return self.labelled_class(dataset, self.predict_samples, split, self._class_names)

    def _loader(self, dataset: Dataset | None, name: str, train: bool = False) -> DataLoader:
        if dataset is None:
            raise AttnzooError(f"{type(self).__name__} has no {name} data.")
        sampler = None
        if train:
            trainer = self.trainer
            world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
            sampler = self._train_sampler = ResumableSampler(dataset, num_replicas=world, rank=rank)
            if self._resume_state is not None:  # kept: a loader rebuilt later in the run resumes the same way
                sampler.resume(self._resume_state)
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            # Every training batch has the same shape: no recompiles with torch.compile, no tiny last batch
            # for BatchNorm.
            drop_last=train and len(dataset) >= self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers,
            collate_fn=self.collate_fn,
            # Its own generator (worker seeds): loading data never draws from the global RNG, which dropout and
            # mixing use, so a resumed run's global RNG continues exactly where the checkpoint left it.
            generator=torch.Generator().manual_seed(0),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, "training", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, "validation")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, "test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, "predict")

    # ---- resuming ----------------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """The training order's position, saved in every checkpoint by Lightning."""
        trainer, sampler = self.trainer, self._train_sampler
        if trainer is None or sampler is None or trainer.state.fn != "fit":
            return {}
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        complete = done >= trainer.num_training_batches
        return {"sampler": sampler.state(done, self.batch_size, complete)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Called by Lightning before the training loader is built when a run resumes."""
        self._resume_state = state_dict.get("sampler")
        if self._resume_state is not None:
            say_resume_is_exact(self._resume_state)
        # Lightning may have built the training loader already (to count the steps of the schedule).
        if self._resume_state is not None and self._train_sampler is not None:
            self._train_sampler.resume(self._resume_state)

    def teardown(self, stage: str) -> None:
        """Report the images that could not be read during this stage (one line, with a count)."""
        for name in ("train_set", "val_set", "test_set"):
            dataset = getattr(self, name)
            if isinstance(dataset, ImageFolder) and (skipped := dataset.skipped()):
                shown = ", ".join(skipped[:5]) + (", ..." if len(skipped) > 5 else "")
                rank_zero_warn(f"{len(skipped)} unreadable image(s) skipped in {dataset.root}: {shown}")


# Lightning sees a loader without state_dict() and warns that a mid-epoch resume "can cause unreliable results";
# the position lives in the data module's state instead (ResumableSampler), and the resume is exact.
LIGHTNING_NOT_RESUMABLE = r"You're resuming from a checkpoint that ended before the epoch ended"


def say_resume_is_exact(sampler_state: dict) -> None:
    """Replace Lightning's warning about a mid-epoch resume by one line that says what is true."""
    warnings.filterwarnings("ignore", message=LIGHTNING_NOT_RESUMABLE)
    where = (f"epoch {sampler_state['epoch']}, sample {sampler_state['position']} of its order"
             if sampler_state.get("position") else f"the start of epoch {sampler_state['epoch']}")
    rank_zero_info(f"attnzoo: resuming at {where}: the data order, optimizer, schedule and random generators "
                   "continue exactly as in an uninterrupted run.")

