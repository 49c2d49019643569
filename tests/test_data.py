"""Data: transforms, image folders (with unreadable files), CIFAR archives, the embedded shapes data set."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from attnzoo.data import (
    CIFARDataModule,
    ImageFolder,
    ImageFolderDataModule,
    RandomResizedCrop,
    ResizeCenterCrop,
    ShapesDataModule,
    UnreadableImageWarning,
)
from attnzoo.data import cifar
from attnzoo.data.synthetic import SHAPE_CLASSES, generate
from attnzoo.data.transforms import _decode
from attnzoo.errors import AttnzooError


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth random image (compresses like a photo)."""
    small = np.random.default_rng(seed).integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 3, size=(64, 48)) -> Path:
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                photo(*size, seed=c * 100 + i).save(folder / f"{i}.jpg", quality=90)
    return root


# ---- transforms ----------------------------------------------------------------------------------------------


def test_random_resized_crop_boxes_respect_scale_and_ratio():
    crop = RandomResizedCrop(224)
    rng = __import__("random").Random(0)
    for _ in range(500):
        left, top, right, bottom = crop.sample_box(500, 375, rng)
        w, h = right - left, bottom - top
        assert 0 <= left and 0 <= top and right <= 500 and bottom <= 375
        assert 0.08 * 500 * 375 * 0.95 <= w * h <= 500 * 375
    out = crop(photo(500, 375))
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8


def test_center_crop_matches_resize_then_crop():
    img = photo(320, 240)
    ours = ResizeCenterCrop(224, crop_pct=0.875)(img).float()
    resized = img.resize((341, 256), Image.Resampling.BILINEAR)  # shorter side 256
    left, top = round((341 - 224) / 2), (256 - 224) // 2
    ref = torch.from_numpy(np.array(resized.crop((left, top, left + 224, top + 224)))).permute(2, 0, 1).float()
    assert (ours - ref).abs().max() <= 1.0  # the same pixels, up to rounding


def test_jpeg_draft_decodes_smaller_but_alike(tmp_path):
    path = tmp_path / "big.jpg"
    photo(1600, 1200).save(path, quality=92)
    with Image.open(path) as img:
        small, box = _decode(img, (0, 0, 1600, 1200), 224, draft=True)
    assert small.size[0] < 1600 and small.size[0] * 1200 / 1600 >= 224  # reduced, still large enough
    assert box[2] == pytest.approx(small.size[0])
    with Image.open(path) as a, Image.open(path) as b:
        drafted = ResizeCenterCrop(224, draft=True)(a).float()
        full = ResizeCenterCrop(224, draft=False)(b).float()
    assert (drafted - full).abs().mean() < 3.0


# ---- image folders ---------------------------------------------------------------------------------------------


def test_image_folder_datamodule_classes_and_batches(tmp_path):
    root = make_image_folder(tmp_path)
    dm = ImageFolderDataModule(str(root), input_size=32, batch_size=2, num_workers=0)
    assert dm.num_classes == 2 and dm.class_names == ["cat", "dog"]
    assert dm.preprocessing.input_size == (3, 32, 32)
    dm.setup("fit")
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and images.dtype == torch.uint8
    assert sorted(dm.val_set[i][1] for i in range(len(dm.val_set))) == [0, 0, 0, 1, 1, 1]


def test_missing_data_dir_names_path_and_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(AttnzooError, match="nowhere.*does not exist.*train/<class name>"):
        ImageFolderDataModule(str(missing))
    (missing / "train" / "a").mkdir(parents=True)
    with pytest.raises(AttnzooError, match="val"):
        ImageFolderDataModule(str(missing))


def test_unreadable_images_are_skipped_with_one_warning_each(tmp_path):
    root = make_image_folder(tmp_path, per_class=3)
    bad = root / "train" / "cat" / "1_corrupt.jpg"
    bad.write_bytes(b"this is not a jpeg")
    good = (root / "train" / "dog" / "0.jpg").read_bytes()
    truncated = root / "train" / "dog" / "0_truncated.jpg"
    truncated.write_bytes(good[: len(good) // 2])

    dataset = ImageFolder(root / "train", ResizeCenterCrop(16, crop_pct=1.0))
    assert len(dataset) == 8
    # Two workers: the record of skipped files is shared with the parent.
    loader = DataLoader(dataset, batch_size=4, num_workers=2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        batches = [labels for _, labels in loader] + [labels for _, labels in loader]  # two epochs
    assert [len(b) for b in batches] == [4, 4, 4, 4]  # every batch keeps its size
    assert sorted(dataset.skipped()) == sorted([str(bad), str(truncated)])

    # In the main process: exactly one warning per file, naming it.
    fresh = ImageFolder(root / "train", ResizeCenterCrop(16, crop_pct=1.0))
    with pytest.warns(UnreadableImageWarning) as record:
        for _ in range(2):
            for i in range(len(fresh)):
                fresh[i]
    messages = [str(w.message) for w in record if issubclass(w.category, UnreadableImageWarning)]
    assert len(messages) == 2 and any("1_corrupt.jpg" in m for m in messages)


def test_predict_files_from_a_folder_mark_unreadable_ones(tmp_path):
    root = make_image_folder(tmp_path)
    (root / "val" / "cat" / "9_broken.jpg").write_bytes(b"not an image")
    dm = ImageFolderDataModule(str(root), input_size=32, batch_size=8, num_workers=0, predict_path=str(root / "val"))
    dm.setup("predict")
    with pytest.warns(UnreadableImageWarning, match="9_broken.jpg.*no prediction"):
        images, ids, readable = next(iter(dm.predict_dataloader()))
    assert images.shape == (7, 3, 32, 32) and ids[0].endswith("0.jpg")
    assert [ident for ident, ok in zip(ids, readable.tolist()) if not ok] == [str(root / "val" / "cat" / "9_broken.jpg")]


def test_16_bit_images_are_scaled_by_their_range_not_clipped(tmp_path):
    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")  # Pillow hands 16-bit greyscale PNGs over as 16/32-bit integers
        out = ResizeCenterCrop(32, crop_pct=1.0, interpolation="nearest")(img)
    expected = torch.from_numpy(np.rint(ramp / 257.0).astype(np.uint8))
    assert (out[0].int() - expected.int()).abs().max() <= 1 and torch.equal(out[0], out[2])
    assert (out == 255).float().mean() < 0.01  # Pillow's convert("RGB") clips 99.6% of these pixels to 255
    Image.fromarray(np.full((8, 8), 0.5, np.float32), mode="F").save(tmp_path / "float.tif")
    with Image.open(tmp_path / "float.tif") as img:
        assert ResizeCenterCrop(8, crop_pct=1.0)(img).unique().tolist() == [128]


def test_a_class_folder_without_a_readable_image_is_an_error_naming_it(tmp_path):
    root = make_image_folder(tmp_path)
    (root / "train" / "empty").mkdir()
    (root / "val" / "empty").mkdir()
    dm = ImageFolderDataModule(str(root), input_size=32, batch_size=2, num_workers=0)
    with pytest.raises(AttnzooError, match=r"class folder '.*train/empty' has no image files"):
        dm.setup("fit")
    (root / "train" / "empty" / "a.jpg").write_bytes(b"broken")
    (root / "train" / "empty" / "b.png").write_bytes(b"broken too")
    with pytest.raises(AttnzooError, match=r"class folder '.*train/empty' has no readable image \(2 file"):
        ImageFolderDataModule(str(root), input_size=32, batch_size=2, num_workers=0).setup("fit")


def test_a_looping_folder_symlink_is_not_followed_but_symlinks_work(tmp_path):
    root = make_image_folder(tmp_path / "data")
    train = root / "train"
    (train / "cat" / "loop").symlink_to(train)  # inside a class, a link back to the split: a loop
    outside = tmp_path / "more_dogs"
    outside.mkdir()
    photo(64, 48, seed=7).save(outside / "x.jpg")
    (train / "dog" / "more").symlink_to(outside)  # a folder link that does not loop: followed
    (train / "dog" / "linked.jpg").symlink_to(outside / "x.jpg")  # a file link: followed
    with pytest.warns(UserWarning, match="not following folder symlink") as record:
        dataset = ImageFolder(train, ResizeCenterCrop(16, crop_pct=1.0))
    assert dataset.classes == ["cat", "dog"]
    paths = sorted(os.path.relpath(p, train) for p, _ in dataset.samples)
    assert paths == ["cat/0.jpg", "cat/1.jpg", "cat/2.jpg", "dog/0.jpg", "dog/1.jpg", "dog/2.jpg", "dog/linked.jpg",
                     "dog/more/x.jpg"]
    assert [label for _, label in dataset.samples].count(0) == 3  # no dog relabelled as a cat
    assert any(str(train / "cat" / "loop") in str(w.message) for w in record)


def test_a_class_folder_linking_back_to_the_split_is_not_a_class(tmp_path):
    train = make_image_folder(tmp_path / "data") / "train"
    (train / "everything").symlink_to(".", target_is_directory=True)
    with pytest.warns(UserWarning, match="not using folder symlink .*everything"):
        dataset = ImageFolder(train, ResizeCenterCrop(16, crop_pct=1.0))
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 6


def test_resumable_sampler_order_shards_and_position():
    from attnzoo.data.sampling import ResumableSampler, Sample

    class Ten(list):
        takes_sample_keys = True

    assert sorted(ResumableSampler(list(range(10)), seed=3)) == list(range(10))  # other datasets get plain indices
    data = Ten(range(10))
    one = ResumableSampler(data, seed=3)
    one.set_epoch(1)
    epoch1 = [s.index for s in one]
    assert sorted(epoch1) == data and epoch1 == [s.index for s in one]  # a permutation, the same every time
    one.set_epoch(2)
    assert [s.index for s in one] != epoch1
    # Two ranks: disjoint halves of the same order (10 = 2 x 5, no padding), one augmentation seed per sample.
    ranks = [ResumableSampler(data, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(1)
    shards = [list(sampler) for sampler in ranks]
    assert sorted(s.index for shard in shards for s in shard) == data
    one.set_epoch(1)
    assert {s.index: s.seed for shard in shards for s in shard} == {s.index: s.seed for s in one}  # any world size
    # Resume after one batch of 2 per rank: the rest of the epoch, in order, then the next epoch from its start.
    state = ranks[0].state(batches_done=1, batch_size=2, epoch_complete=False)
    resumed = ResumableSampler(data, num_replicas=2, rank=0)
    resumed.resume(state)
    resumed.set_epoch(1)  # Lightning sets the epoch again at its start: the position stays
    assert list(resumed) == shards[0][2:]
    assert [s.index for s in resumed] == [s.index for s in shards[0]]  # a second pass starts from the beginning
    assert isinstance(shards[0][0], Sample)
    done = ranks[0].state(batches_done=3, batch_size=2, epoch_complete=True)
    assert (done["epoch"], done["position"]) == (2, 0)


def test_augmentation_depends_on_the_sample_not_on_the_loading_order(tmp_path):
    from attnzoo.data.sampling import ResumableSampler

    root = make_image_folder(tmp_path, per_class=4)
    dataset = ImageFolder(root / "train", RandomResizedCrop(16))
    sampler = ResumableSampler(dataset, seed=0)
    keys = list(sampler)
    forward = {key.index: dataset[key][0] for key in keys}
    backward = {key.index: dataset[key][0] for key in reversed(keys)}
    assert all(torch.equal(forward[i], backward[i]) for i in forward)
    sampler.set_epoch(1)
    other_epoch = {key.index: dataset[key][0] for key in sampler}
    assert any(not torch.equal(forward[i], other_epoch[i]) for i in forward)


# ---- CIFAR ------------------------------------------------------------------------------------------------------


def write_fake_cifar10(root: Path, per_batch: int = 4) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"):
        cifar.write_batch(folder / name, rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8),
                          rng.integers(0, 10, per_batch).tolist())
    return folder


def test_cifar_datamodule_reads_the_archive_format(tmp_path):
    write_fake_cifar10(tmp_path)
    dm = CIFARDataModule(str(tmp_path), batch_size=4, num_workers=0)
    assert dm.num_classes == 10 and dm.class_names[0] == "airplane"
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 20 and len(dm.val_set) == 4
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.uint8
    assert CIFARDataModule(str(tmp_path), variant="cifar100").num_classes == 100


def test_cifar_refuses_pickles_that_are_not_arrays(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo hacked > " + str(tmp_path / "hacked"),))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}))
    with pytest.raises(AttnzooError, match="refusing to load"):
        cifar.load_batch(path, "labels")
    assert not (tmp_path / "hacked").exists()


def test_cifar_missing_without_download_says_what_to_do(tmp_path):
    with pytest.raises(AttnzooError, match=r"cifar10 not found in .*--data.download true"):
        CIFARDataModule(str(tmp_path)).prepare_data()


def test_cifar_download_checks_md5_and_extracts_only_batch_files(tmp_path):
    source = write_fake_cifar10(tmp_path / "src")
    tarball = tmp_path / "src" / "cifar-10-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(source, arcname="cifar-10-batches-py")
        evil = tarfile.TarInfo("../evil.txt")
        evil.size = 4
        tar.addfile(evil, io.BytesIO(b"evil"))
    md5 = hashlib.md5(tarball.read_bytes()).hexdigest()
    archive = dataclasses.replace(cifar.ARCHIVES["cifar10"], url=tarball.as_uri(), md5=md5)

    target = tmp_path / "data"
    cifar._download(archive, target / archive.filename)
    cifar._extract(archive, target / archive.filename, target)
    assert len(list((target / "cifar-10-batches-py").iterdir())) == 6
    assert not (tmp_path / "evil.txt").exists()

    bad = dataclasses.replace(archive, md5="0" * 32)
    with pytest.raises(AttnzooError, match="MD5"):
        cifar._extract(bad, target / archive.filename, target)


# ---- the embedded shapes data set ---------------------------------------------------------------------------


def test_shapes_are_deterministic_balanced_and_seed_dependent():
    a_images, a_labels = generate(200, 32, seed=3)
    b_images, b_labels = generate(200, 32, seed=3)
    c_images, _ = generate(200, 32, seed=4)
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    assert not torch.equal(a_images, c_images)
    assert a_images.shape == (200, 3, 32, 32) and a_images.dtype == torch.uint8
    assert torch.bincount(a_labels).tolist() == [20] * len(SHAPE_CLASSES)
    assert a_images.float().std() > 30  # not blank


def test_shapes_masks_come_with_the_same_images():
    images, labels = generate(40, 32, seed=3)
    masked_images, masked_labels, masks = generate(40, 32, seed=3, masks=True)
    assert torch.equal(images, masked_images) and torch.equal(labels, masked_labels)
    assert masks.shape == (40, 32, 32) and masks.min() >= 0 and masks.max() <= 1
    area = masks.mean((1, 2))
    assert area.min() > 0.02 and area.max() < 0.6  # every image shows its shape, none is all shape
    # Inside the shape the colour is the shape's: flat, apart from the pixel noise.
    inside = masks[0] == 1
    assert images[0].float()[:, inside].std(1).max() < 25


def test_shapes_datamodule_splits_differ():
    dm = ShapesDataModule(num_train=64, num_val=32, batch_size=16)
    assert dm.num_classes == 10 and dm.class_names == list(SHAPE_CLASSES)
    dm.setup("fit")
    dm.setup("test")
    assert not torch.equal(dm.train_set.images[:32], dm.val_set.images)
    assert not torch.equal(dm.val_set.images, dm.test_set.images)
    dm.setup("predict")
    image, ident = dm.predict_set[0]
    assert ident.startswith("val[0] (true: ")
    with pytest.raises(AttnzooError, match="2 to 10 classes"):
        ShapesDataModule(num_classes=11)


@pytest.mark.parametrize("kwargs, words", [
    ({"image_size": 8}, "image_size must be an image side in pixels from 16 to 4096, got 8."),
    ({"num_val": 0}, "num_train and num_val must be positive"),
])
def test_shapes_data_module_refuses_bad_sizes_when_built(kwargs, words):
    from attnzoo.data import ShapesDataModule

    with pytest.raises(AttnzooError) as err:
        ShapesDataModule(**kwargs)  # at construction: before a Trainer, a log folder or a checkpoint exists
    assert words in str(err.value)
