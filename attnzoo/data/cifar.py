"""CIFAR-10 and CIFAR-100 from the official "python version" archives.

The archives hold Python pickles of dicts of NumPy arrays. A pickle can run arbitrary code, so they are read with
an unpickler that resolves only the globals a NumPy array needs (``_reconstruct``, ``ndarray``, ``dtype``, and ``codecs.encode`` for bytes)
and refuses everything else; the loaded arrays are then checked for shape and type.

``data_dir`` may hold the extracted folder (``cifar-10-batches-py/`` or ``cifar-100-python/``) or the archive
(``cifar-10-python.tar.gz``, ``cifar-100-python.tar.gz``); with ``download=True`` a missing archive is fetched
from the official site and checked against its published MD5 before anything is extracted.
"""

from __future__ import annotations

import codecs
import hashlib
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from attnzoo.data.sampling import unpack
from attnzoo.errors import AttnzooError

try:  # NumPy 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import _reconstruct

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100_CLASSES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can "
    "castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin "
    "elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster "
    "man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck "
    "pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk "
    "skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger "
    "tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm"
).split()

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class CifarArchive:
    url: str
    md5: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    classes: tuple[str, ...]

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


ARCHIVES = {
    "cifar10": CifarArchive(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        classes=CIFAR10_CLASSES,
    ),
    "cifar100": CifarArchive(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        classes=tuple(CIFAR100_CLASSES),
    ),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only what NumPy arrays need; any other global (os.system, builtins.eval, ...) is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # Protocol-2 pickles written by Python 3 rebuild bytes with codecs.encode(str, "latin1"): no side effects.
        ("_codecs", "encode"): codecs.encode,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed") from None


def load_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n,3,32,32], labels int64 [n]) from one CIFAR batch file."""
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise AttnzooError(f"{str(path)!r} is not a CIFAR batch file: {err}.") from None
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        raise AttnzooError(f"{str(path)!r} is not a CIFAR batch file: expected a dict with 'data' and {label_key!r}.")
    data, labels = entry["data"], np.asarray(entry[label_key])
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise AttnzooError(f"{str(path)!r}: 'data' must be a uint8 array of shape [n, 3072].")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise AttnzooError(f"{str(path)!r}: {label_key!r} must hold one integer label per image.")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive: CifarArchive, tarball: Path, data_dir: Path) -> None:
    """Write only the expected batch files (no paths from the archive are trusted)."""
    found = md5sum(tarball)
    if found != archive.md5:
        raise AttnzooError(
            f"{str(tarball)!r} has MD5 {found}, expected {archive.md5}: the archive is damaged or not the official "
            f"one; delete it and download it again from {archive.url}."
        )
    wanted = {f"{archive.folder}/{name}" for name in (*archive.train_files, *archive.test_files)}
    out_dir = data_dir / archive.folder
    out_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.isfile() and member.name in wanted:
                target = out_dir / Path(member.name).name
                with tar.extractfile(member) as src:
                    tmp = target.with_suffix(".part")
                    tmp.write_bytes(src.read())
                    tmp.replace(target)


def prepare_cifar(variant: str, data_dir: str | Path, download: bool) -> Path:
    """The folder with the batch files of ``variant``: extracted already, extracted from a local archive, or
    downloaded (with ``download=True``) and extracted."""
    archive = ARCHIVES[variant]
    data_dir = Path(data_dir)
    folder = data_dir / archive.folder
    if all((folder / name).is_file() for name in (*archive.train_files, *archive.test_files)):
        return folder
    tarball = data_dir / archive.filename
    if not tarball.is_file():
        if not download:
            raise AttnzooError(
                f"{variant} not found in {str(data_dir)!r}: expected {folder}/ or {tarball}. "
                f"Pass --data.download true, or download {archive.url} there yourself."
            )
        _download(archive, tarball)
    _extract(archive, tarball, data_dir)
    return folder


def _download(archive: CifarArchive, tarball: Path) -> None:
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".part")
    try:
        with urllib.request.urlopen(archive.url, timeout=60) as response, open(partial, "wb") as out:
            while block := response.read(1 << 20):
                out.write(block)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise AttnzooError(
            f"could not download {archive.url} ({err}). Without network, download it elsewhere and copy it to "
            f"{tarball}."
        ) from None
    partial.replace(tarball)


class CifarDataset(Dataset):
    """CIFAR images as uint8 tensors [3,32,32] with labels; ``train=True`` adds the standard augmentation
    (random 32x32 crop of the image padded by 4 with zeros, horizontal flip)."""

    takes_sample_keys = True  # __getitem__ accepts an attnzoo.data.sampling.Sample (index + augmentation seed)

    def __init__(self, folder: Path, variant: str, split: str, augment: bool = False):
        archive = ARCHIVES[variant]
        files = archive.train_files if split == "train" else archive.test_files
        parts = [load_batch(Path(folder) / name, archive.label_key) for name in files]
        self.images = torch.from_numpy(np.concatenate([p[0] for p in parts]))
        self.labels = torch.from_numpy(np.concatenate([p[1] for p in parts]))
        if self.labels.min() < 0 or self.labels.max() >= len(archive.classes):
            raise AttnzooError(f"{variant} labels must lie in 0..{len(archive.classes) - 1}; the files in {folder} do not.")
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, rng = unpack(key)
        image = self.images[index]
        if self.augment:
            padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
            if rng is not None:
                top, left, flip = rng.randint(0, 8), rng.randint(0, 8), rng.random() < 0.5
            else:
                (top, left), flip = torch.randint(0, 9, (2,)).tolist(), torch.rand(()).item() < 0.5
            image = padded[:, top : top + 32, left : left + 32]
            if flip:
                image = image.flip(-1)
        return image, int(self.labels[index])


def write_batch(path: Path, images: np.ndarray, labels: list[int], label_key: str = "labels") -> None:
    """Write a batch file in the official format (for tests and for packing your own small CIFAR-like sets)."""
    with open(path, "wb") as f:
        pickle.dump({"data": images.reshape(len(images), -1), label_key: list(labels)}, f)


__all__ = ["ARCHIVES", "CIFAR_MEAN", "CIFAR_STD", "CifarDataset", "load_batch", "prepare_cifar", "write_batch"]
