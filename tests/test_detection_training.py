"""Detection training from the `attnzoo` command line: the COCO and shapes data modules, the Detector module, the
quickstart end to end (fit, validate, predict, resume), and that every recipe in configs/detection/ parses.

The data tests need no torchvision and run in every venv; the detector's need it (`peers`, CI's second venv)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnzoo.detection.data import CocoDataModule, ShapesDetectionDataModule, collate_detection, flip_horizontally
from attnzoo.errors import AttnzooError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "detection" / "quickstart.yaml"
RECIPES = sorted(p for p in (REPO / "configs" / "detection").glob("*.yaml") if p != QUICKSTART)
ATTNZOO = Path(sys.executable).parent / "attnzoo"
# Recipes that differ from another only in a value (the GC ratio, SyncBN): parsed, not built again (CI time).
BUILT_BY_A_SIBLING = {"mask_rcnn_r50_fpn_syncbn_1x", "mask_rcnn_gc_r50_c3c5_r16_syncbn"}


def write_coco(root: Path, images=None, annotations=None, categories=None, missing: str | None = None) -> Path:
    """A COCO-format folder: ``root/images/*.png`` and ``root/annotations.json``; ``missing`` is listed, not written."""
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                                                {"id": 2, "file_name": "b.png", "width": 40, "height": 30}]
    annotations = annotations if annotations is not None else [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [4, 5, 10, 8], "iscrowd": 0,
         "segmentation": [[4, 5, 14, 5, 14, 13, 4, 13]]},
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [20, 10, 6, 4], "iscrowd": 0,
         # uncompressed RLE, column-major: 40x30 image, the 4 rows 10..13 of the 6 columns 20..25
         "segmentation": {"size": [30, 40], "counts": [20 * 30 + 10] + [4, 26] * 5 + [4, 30 * 40 - 20 * 30 - 10 - 6 * 30 + 26]}},
        {"id": 12, "image_id": 2, "category_id": 2, "bbox": [0, 0, 40, 30], "iscrowd": 1,
         "segmentation": [[0, 0, 40, 0, 40, 30]]},
    ]
    categories = categories if categories is not None else [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]
    (root / "images").mkdir(parents=True, exist_ok=True)
    for image in images:
        if image["file_name"] != missing:
            Image.fromarray(np.full((image["height"], image["width"], 3), 128, np.uint8)).save(root / "images" / image["file_name"])
    path = root / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def coco_module(root: Path, **options) -> CocoDataModule:
    ann = root / "annotations.json"
    return CocoDataModule(str(ann), str(root / "images"), str(ann), str(root / "images"), num_workers=0, **options)


def test_coco_targets_boxes_masks_and_flip(tmp_path):
    write_coco(tmp_path)
    data = coco_module(tmp_path)
    assert data.num_classes == 2 and data.class_names == ["cat", "dog"]
    data.setup("fit")
    image, target = data.val_set[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 30, 40)
    assert target["boxes"].tolist() == [[4, 5, 14, 13], [20, 10, 26, 14]] and target["labels"].tolist() == [1, 2]
    masks = target["masks"]
    assert masks.shape == (2, 30, 40)
    assert masks[1].nonzero().min(0).values.tolist() == [10, 20] and masks[1].sum() == 24  # the RLE's 4x6 block
    assert masks[0][5:13, 4:14].all() and masks[0].sum() <= 11 * 9
    assert data.val_set[1][1]["boxes"].shape == (0, 4)  # the crowd region is no object to detect
    flipped, flipped_target = flip_horizontally(image, target)
    assert flipped_target["boxes"][0].tolist() == [26, 5, 36, 13]
    assert torch.equal(flipped_target["masks"], masks.flip(-1))
    images, targets = collate_detection([data.val_set[0], data.val_set[1]])
    assert isinstance(images, list) and len(targets) == 2


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_file", "annotation file '{root}/nothing.json' does not exist"),
        ("outside", "annotation 10 of '{root}/annotations.json': box [x, y, w, h] = [30, 5, 20, 8] lies outside its "
                    "40x30 image 'a.png'"),
        ("zero_area", "annotation 10 of '{root}/annotations.json': box [x, y, w, h] = [4, 5, 0, 8] has zero area"),
        ("missing_image", "image 'b.png' (id 2) of '{root}/annotations.json' is not in '{root}/images'"),
        ("category", "annotation 10 of '{root}/annotations.json': category_id 3 is beyond num_classes 2"),
        ("no_images", "annotation file '{root}/annotations.json' lists no images"),
    ],
)
def test_coco_mistakes_are_one_line(tmp_path, case, message):
    box = {"outside": [30, 5, 20, 8], "zero_area": [4, 5, 0, 8]}.get(case, [4, 5, 10, 8])
    annotations = [{"id": 10, "image_id": 1, "category_id": 3 if case == "category" else 1, "bbox": box}]
    write_coco(tmp_path, annotations=annotations, images=[] if case == "no_images" else None,
               missing="b.png" if case == "missing_image" else None)
    ann = tmp_path / ("nothing.json" if case == "no_file" else "annotations.json")
    with pytest.raises(AttnzooError) as err:
        CocoDataModule(str(ann), str(tmp_path / "images"), str(ann), str(tmp_path / "images"),
                       num_classes=2 if case == "category" else None)
    text = str(err.value)
    assert "\n" not in text and message.format(root=tmp_path) in text


def test_shapes_detection_set_is_seeded_and_consistent():
    data = ShapesDetectionDataModule(num_train=6, num_val=4, image_size=64, num_classes=3)
    assert data.class_names == ["disk", "ring", "square"]
    data.setup("fit")
    again = ShapesDetectionDataModule(num_train=6, num_val=4, image_size=64, num_classes=3)
    again.setup("fit")
    assert torch.equal(data.train_set.images, again.train_set.images)
    for image, target in (data.val_set[i] for i in range(4)):
        assert image.shape == (3, 64, 64) and 1 <= len(target["labels"]) <= 3
        assert target["labels"].min() >= 1 and target["labels"].max() <= 3
        for box, mask in zip(target["boxes"], target["masks"]):  # each box is its mask's tight bounds
            ys, xs = mask.nonzero(as_tuple=True)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    with pytest.raises(AttnzooError, match="image_size must be an image side in pixels from 48 to 4096, got 32"):
        ShapesDetectionDataModule(image_size=32)
    with pytest.raises(AttnzooError, match="from 48 to 4096, got 1000000"):  # refused before anything is made
        ShapesDetectionDataModule(image_size=1000000)


def test_unknown_detector_lists_the_accepted_ones():
    from attnzoo.detection.module import Detector

    with pytest.raises(AttnzooError) as err:
        Detector("r18", "mask_rnn", num_classes=3)
    assert str(err.value) == ("unknown detector 'mask_rnn'. Did you mean: mask_rcnn, faster_rcnn? Accepted: faster_rcnn, mask_rcnn, "
                              "retinanet, fcos.")


def test_a_bad_optimizer_is_refused_when_the_detector_is_built():
    from functools import partial

    from attnzoo.detection.module import Detector

    with pytest.raises(AttnzooError) as err:  # before the backbone is built (and without torchvision)
        Detector("r18", "faster_rcnn", num_classes=3, optimizer=partial(torch.optim.SGD, lr=-0.02))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("--model.optimizer SGD refuses its init_args: Invalid learning rate: -0.02")


# ---- with torchvision ------------------------------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn", "retinanet", "fcos"])
def test_each_detector_trains_and_evaluates(detector):
    pytest.importorskip("torchvision")
    pytest.importorskip("pycocotools")
    from attnzoo.detection.module import Detector

    data = ShapesDetectionDataModule(num_train=2, num_val=2, image_size=48, num_classes=2)
    data.setup("fit")
    rcnn = "rcnn" in detector
    small = {"rpn_pre_nms_top_n_train": 100, "rpn_post_nms_top_n_train": 50, "rpn_pre_nms_top_n_test": 100,
             "rpn_post_nms_top_n_test": 50, "box_batch_size_per_image": 16} if rcnn else {}
    model = Detector("r18", detector, num_classes=2, min_size=48, max_size=48,
                     model_args={"norm": "bn", "out_channels": 32}, detector_args=small,
                     anchor_sizes=[8, 16, 32, 64, 128] if rcnn else None, box_head_size=64, mask_head_layers=[16],
                     preprocessing=data.preprocessing.to_dict())
    batch = collate_detection([data.train_set[0], data.train_set[1]])
    loss = model.training_step(batch, 0)
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        model._evaluate(collate_detection([data.val_set[0], data.val_set[1]]), "val")
    results = model.val_map.compute()
    assert ("segm_map" in results) == (detector == "mask_rcnn")


@pytest.mark.peers
@pytest.mark.parametrize("detector", ["faster_rcnn", "mask_rcnn"])
def test_targets_carry_masks_only_for_a_detector_with_a_mask_head(detector, tmp_path):
    pytest.importorskip("torchvision")
    import lightning as L

    from attnzoo.detection.module import Detector

    seen = []

    class Batches(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            seen.extend(batch[1])

    data = ShapesDetectionDataModule(num_train=2, num_val=2, image_size=48, num_classes=2, batch_size=2)
    model = Detector("r18", detector, num_classes=2, min_size=48, max_size=48,
                     model_args={"norm": "bn", "out_channels": 32}, anchor_sizes=[8, 16, 32, 64, 128],
                     box_head_size=64, mask_head_layers=[16], preprocessing=data.preprocessing.to_dict())
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[Batches()],
                        default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    assert len(seen) == 2 and all(("masks" in t) == (detector == "mask_rcnn") for t in seen)


def test_coco_targets_leave_masks_out_when_told(tmp_path):
    write_coco(tmp_path)
    data = coco_module(tmp_path)
    data.setup("fit")
    data.use_masks(False)
    assert "masks" not in data.train_set[0][1] and "masks" not in data.val_set[0][1]
    assert data.val_set[0][1]["boxes"].tolist() == [[4, 5, 14, 13], [20, 10, 26, 14]]


def attnzoo(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(ATTNZOO), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


TINY = ["--data.num_train", "8", "--data.num_val", "4", "--data.batch_size", "4", "--data.image_size", "48",
        "--model.min_size", "48", "--model.max_size", "48", "--model.anchor_sizes", "[8, 16, 32, 64, 128]",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


@pytest.mark.peers
@pytest.mark.slow
def test_quickstart_fit_validate_predict_resume(tmp_path):
    pytest.importorskip("torchvision")
    pytest.importorskip("pycocotools")
    fit = attnzoo("fit", "--config", str(QUICKSTART), *TINY, "--trainer.max_epochs", "1", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    folder = tmp_path / "runs" / "detection-quickstart"
    last = folder / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2  # 8 images / batch 4
    assert list(last.parent.glob("best-epoch000-map*.ckpt"))
    header = (folder / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"val/map", "val/map_50", "val/mask_map", "val/mask_map_50"} <= set(header)

    validate = attnzoo("validate", "--config", str(QUICKSTART), *TINY, "--ckpt_path", str(last), cwd=tmp_path)
    assert validate.returncode == 0, validate.stderr[-3000:]
    assert "val/map" in validate.stdout and "val/mask_map" in validate.stdout

    predict = attnzoo("predict", "--config", str(QUICKSTART), *TINY, "--ckpt_path", str(last),
                      "--model.score_threshold", "0", "--predictions.output_file", "p.jsonl", cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["input"].startswith("val[0] (true: ")
    assert all(len(row["boxes"]) == len(row["classes"]) == len(row["probabilities"]) for row in rows)

    resume = attnzoo("fit", "--config", str(QUICKSTART), *TINY, "--trainer.max_epochs", "2", "--ckpt_path", "last",
                     cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 4  # continued, not restarted

    wrong = attnzoo("fit", "--config", str(QUICKSTART), "--model.detector", "mask_rnn", cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert [line for line in wrong.stderr.splitlines() if "error" in line] == [
        "attnzoo: error: unknown detector 'mask_rnn'. Did you mean: mask_rcnn, faster_rcnn? Accepted: faster_rcnn, mask_rcnn, "
        "retinanet, fcos."]


@pytest.mark.peers
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_parse_and_build(recipe, capsys):
    """Each paper recipe parses through the CLI's own parser, and its detector builds (no data, no training)."""
    pytest.importorskip("torchvision")
    import yaml

    from attnzoo.detection.module import Detector
    from attnzoo.training.cli import make_cli

    with pytest.raises(SystemExit) as exit_:
        make_cli(["fit", "--config", str(recipe), "--print_config"])
    assert exit_.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == "attnzoo.detection.Detector"
    options = dict(printed["model"]["init_args"])
    options.pop("optimizer"), options.pop("lr_scheduler")
    assert options["model_args"].pop("backbone_weights").startswith("weights/")  # ImageNet weights, not here
    if recipe.stem in BUILT_BY_A_SIBLING:
        return
    model = Detector(**options, num_classes=90)
    assert model.model.backbone.out_channels == 256


@pytest.mark.peers
@pytest.mark.slow
def test_ddp_on_two_cpu_processes_trains_and_gathers_the_map(tmp_path):
    pytest.importorskip("torchvision")
    pytest.importorskip("pycocotools")
    fit = attnzoo("fit", "--config", str(QUICKSTART), *TINY, "--trainer.max_epochs", "1",
                  "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    folder = tmp_path / "runs" / "detection-quickstart"
    # 8 images over 2 ranks x batch 4: one step; the mAP of all 4 validation images, gathered from both ranks.
    assert torch.load(folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 1
    header, *rows = (folder / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert "val/map" in header.split(",") and rows
    assert len(list((folder / "logs").iterdir())) == 1  # rank 0 alone logs
