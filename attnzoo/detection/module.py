"""``Detector``: the LightningModule that trains, evaluates and predicts with torchvision's detectors on a zoo backbone.

``attnzoo fit --config configs/detection/quickstart.yaml`` selects it by class path (``model: class_path:
attnzoo.detection.Detector``); everything else of the command line is classification's: checkpoints, exact
resume, the trust rules of ``--ckpt_path``, DDP. The optimizer and schedule are callables declared on the module,
as :class:`attnzoo.training.ImageClassifier`'s, with the same parameter groups (``no_weight_decay``) and the same
epoch schedules (detection's 1x is :class:`attnzoo.training.WarmupMultiStepLR`).

Images arrive as uint8 lists; the detector scales them to [0, 1], and its own transform normalises them with the
data's mean and std and resizes them to ``min_size`` / ``max_size``. Validation and test report COCO's box mAP
(and mask mAP for Mask R-CNN) from torchmetrics' ``MeanAveragePrecision`` on its COCO backend (pycocotools, or
faster-coco-eval), as ``val/map``, ``val/map_50``, ``val/map_75``, ``val/mask_map`` ...
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from attnzoo.detection.data import DetectionDataModule
from attnzoo.errors import AttnzooError, unknown
from attnzoo.extras import require
from attnzoo.training.module import check_optimizer, optimizers_config, unsaved_factories
from attnzoo.training.param_groups import NoWeightDecay, check_no_weight_decay, parameter_groups

DETECTORS = ("faster_rcnn", "mask_rcnn", "retinanet", "fcos")
# torchvision's one-stage detectors read P3-P7 (P6 and P7 from P5), the R-CNNs P2-P5 and a max-pooled P6.
_ONE_STAGE = ("retinanet", "fcos")
# COCO's summary as logged (box, and mask as mask_*); the first two also in the progress bar.
_SHOWN = ("map", "map_50")
_LOGGED = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
DEFAULT_BOX_HEAD, DEFAULT_MASK_HEAD = 1024, [256, 256, 256, 256]  # torchvision's


def detection_sgd(params) -> torch.optim.Optimizer:
    """The papers' detection recipe at 16 images per step: SGD lr 0.02, momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)


def build_detector(detector: str, backbone: nn.Module, num_classes: int, **options) -> nn.Module:
    """torchvision's ``detector`` around ``backbone`` for ``num_classes`` object classes (+ background)."""
    from torchvision.models import detection as tv

    classes = {"faster_rcnn": tv.FasterRCNN, "mask_rcnn": tv.MaskRCNN, "retinanet": tv.RetinaNet, "fcos": tv.FCOS}
    try:
        given = "box_predictor" in options  # then the predictors hold the classes
        return classes[detector](backbone, num_classes=None if given else num_classes + 1, **options)
    except TypeError as err:
        raise AttnzooError(f"detector_args of {detector}: {err}") from None


def fpn_backbone(name: str, detector: str, model_args: dict) -> nn.Module:
    """A zoo network's feature pyramid, shaped as ``detector`` reads it."""
    from attnzoo import detection

    options = dict(model_args)
    if detector in _ONE_STAGE:
        from torchvision.ops.feature_pyramid_network import LastLevelP6P7

        options.setdefault("returned_layers", [2, 3, 4])
        width = options.get("out_channels", 256)
        options.setdefault("extra_blocks", LastLevelP6P7(width, width))
    if "weights" in options:
        raise AttnzooError("model_args takes the backbone's weights as backbone_weights (as the classifier's does), "
                           "not weights.")
    if "backbone_weights" in options:
        options["weights"] = options.pop("backbone_weights")
    return detection.fpn_backbone(name, **options)


def _heads(detector: str, out_channels: int, num_classes: int, box_head_size: int, mask_head_layers: list[int]) -> dict:
    """Smaller box and mask heads than torchvision's (1024-wide MLP, four 256-channel convolutions), for small
    images on a CPU; the defaults build torchvision's own."""
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    heads = {}
    custom_mask = detector == "mask_rcnn" and list(mask_head_layers) != DEFAULT_MASK_HEAD
    # torchvision takes num_classes or the predictors; with a mask predictor, the box predictor is given too.
    if detector in ("faster_rcnn", "mask_rcnn") and (box_head_size != DEFAULT_BOX_HEAD or custom_mask):
        heads["box_head"] = TwoMLPHead(out_channels * 7 * 7, box_head_size)
        heads["box_predictor"] = FastRCNNPredictor(box_head_size, num_classes + 1)
    if custom_mask:
        heads["mask_head"] = MaskRCNNHeads(out_channels, list(mask_head_layers), 1)
        heads["mask_predictor"] = MaskRCNNPredictor(mask_head_layers[-1], mask_head_layers[-1], num_classes + 1)
    return heads


class Detector(L.LightningModule):
    """Object detection (and instance segmentation) with a torchvision detector on a zoo backbone.

    Args:
        model: the backbone, a registry name (``"r50"``, ``"gc_r50"``, see ``attnzoo list``).
        detector: faster_rcnn, mask_rcnn, retinanet or fcos.
        num_classes: object classes without the background (given by the data module on the command line).
        model_args: the backbone's options, for :func:`attnzoo.detection.fpn_backbone` (``backbone_weights``,
            ``trainable_layers``, ``frozen_bn``, ``attention_stages``, ``attention_kwargs`` ...).
        detector_args: further options of torchvision's detector class (``box_detections_per_img``,
            ``rpn_batch_size_per_image`` ...).
        min_size, max_size: the detector resizes each image so its short side is ``min_size`` and its long side
            at most ``max_size`` (COCO: 800 and 1333).
        anchor_sizes: Faster / Mask R-CNN's anchor size on each pyramid level (torchvision's: 32, 64, 128, 256,
            512 for P2-P6), three aspect ratios each; smaller for small images.
        box_head_size, mask_head_layers: the width of the R-CNN box head's two layers, the channels of the mask
            head's convolutions; torchvision's (1024; 256 x 4) by default, smaller for a CPU.
        class_names: names of the classes 1..num_classes (given by the data module).
        preprocessing: the data's mean and std, which the detector normalises with (given by the data module).
        optimizer: builds the optimizer from parameter groups; default SGD lr 0.02, momentum 0.9, wd 1e-4.
        lr_scheduler: builds the schedule from the optimizer (``WarmupMultiStepLR`` for the 1x schedule).
        no_weight_decay: "gct_beta", "norm_bias_gate" or "none" (:mod:`attnzoo.training.param_groups`).
        score_threshold: ``predict`` shows detections scoring at least this.
        top_k: ``predict`` shows at most this many detections per image.
    """

    def __init__(
        self,
        model: str = "r50",
        detector: str = "mask_rcnn",
        num_classes: int | None = None,
        model_args: dict | None = None,
        detector_args: dict | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        anchor_sizes: list[int] | None = None,
        box_head_size: int = DEFAULT_BOX_HEAD,
        mask_head_layers: list[int] = DEFAULT_MASK_HEAD,
        class_names: list[str] | None = None,
        preprocessing: dict | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        no_weight_decay: NoWeightDecay = "gct_beta",
        score_threshold: float = 0.5,
        top_k: int = 10,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=unsaved_factories(optimizer, lr_scheduler))
        if detector not in DETECTORS:
            raise unknown("detector", detector, DETECTORS, accepted=", ".join(DETECTORS))
        check_no_weight_decay(no_weight_decay)
        check_optimizer(optimizer)
        if not num_classes or num_classes < 1:
            raise AttnzooError(f"num_classes must be at least 1 (object classes, without the background), got {num_classes}.")
        if min_size < 1 or max_size < min_size:
            raise AttnzooError(f"min_size and max_size must satisfy 1 <= min_size <= max_size, got {min_size} and {max_size}.")
        if not 0 <= score_threshold <= 1 or top_k < 1:
            raise AttnzooError(f"score_threshold must be in [0, 1] and top_k >= 1, got {score_threshold} and {top_k}.")
        require("detection", f"the {detector} detector", only=("torchvision",))
        self.num_classes, self.detector_name = int(num_classes), detector
        if class_names is not None and len(class_names) != self.num_classes:
            raise AttnzooError(f"{len(class_names)} class names given for {self.num_classes} classes.")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(1, num_classes + 1)]
        norm = {} if preprocessing is None else {k: list(preprocessing[k]) for k in ("mean", "std") if k in preprocessing}
        options = {"min_size": min_size, "max_size": max_size, **{f"image_{k}": v for k, v in norm.items()},
                   **(detector_args or {})}
        if box_head_size < 1 or not mask_head_layers or min(mask_head_layers) < 1:
            raise AttnzooError(f"box_head_size and mask_head_layers must be positive, got {box_head_size} and "
                               f"{list(mask_head_layers)}.")
        backbone = fpn_backbone(model, detector, model_args or {})
        if anchor_sizes is not None:
            if detector in _ONE_STAGE or len(anchor_sizes) != 5:
                raise AttnzooError(f"anchor_sizes are Faster and Mask R-CNN's, five of them (P2-P6); got "
                                   f"{list(anchor_sizes)} for {detector}.")
            from torchvision.models.detection.anchor_utils import AnchorGenerator

            options["rpn_anchor_generator"] = AnchorGenerator(tuple((int(s),) for s in anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
        options.update(_heads(detector, backbone.out_channels, self.num_classes, box_head_size, mask_head_layers))
        self.model = build_detector(detector, backbone, self.num_classes, **options)
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.no_weight_decay, self.score_threshold, self.top_k = no_weight_decay, score_threshold, top_k
        self.val_map = self._metric()
        self.test_map = self._metric()

    @property
    def masks(self) -> bool:
        return self.detector_name == "mask_rcnn"

    def setup(self, stage: str) -> None:
        # Lightning sets the data module up first; its datasets build targets lazily, so none has masks yet.
        data = self._trainer.datamodule if self._trainer is not None else None
        if isinstance(data, DetectionDataModule):
            data.use_masks(self.masks)

    def _metric(self):
        from importlib.util import find_spec

        from torchmetrics.detection import MeanAveragePrecision

        backend = next((name for name in ("pycocotools", "faster_coco_eval") if find_spec(name)), None)
        if backend is None:
            require("detection", "mean average precision (torchmetrics' COCO backend)", only=("pycocotools",))
        return MeanAveragePrecision(iou_type=("bbox", "segm") if self.masks else "bbox", backend=backend)

    # ---- optimisation ---------------------------------------------------------------------------------------

    def configure_optimizers(self):
        groups = parameter_groups(self.model, self.no_weight_decay)
        groups = [g for g in ({**g, "params": [p for p in g["params"] if p.requires_grad]} for g in groups) if g["params"]]
        return optimizers_config(groups, self.optimizer_factory, self.lr_scheduler_factory, self.trainer, detection_sgd)

    # ---- steps ------------------------------------------------------------------------------------------------

    @staticmethod
    def _images(images) -> list[torch.Tensor]:
        return [image.float() / 255 if image.dtype == torch.uint8 else image for image in images]

    def forward(self, images) -> list[dict]:
        return self.model(self._images(images))

    def training_step(self, batch, batch_idx):
        images, targets = batch
        targets = [{k: v for k, v in t.items() if k != "image_id"} for t in targets]
        self._check_masks(targets)
        losses = self.model(self._images(images), targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise AttnzooError(f"the detection loss is {loss.item()} at step {self.global_step} "
                               f"({', '.join(f'{k} {v.item():.3g}' for k, v in losses.items())}): lower the learning "
                               "rate or lengthen the warm-up.")
        batch_size = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=batch_size)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True, on_epoch=False,
                      batch_size=batch_size)
        return loss

    def _check_masks(self, targets: list[dict]) -> None:
        if self.masks and any("masks" not in t for t in targets):
            raise AttnzooError("mask_rcnn trains and evaluates on instance masks, and this data has none (COCO: "
                               "'segmentation' in every annotation); use faster_rcnn for boxes alone.")

    def _evaluate(self, batch, stage: str) -> None:
        images, targets = batch
        self._check_masks(targets)
        outputs = self(images)
        metric = getattr(self, f"{stage}_map")
        preds, truths = [], []
        for output, target in zip(outputs, targets):
            pred = {k: output[k] for k in ("boxes", "scores", "labels")}
            truth = {k: target[k] for k in ("boxes", "labels")}
            if self.masks:
                pred["masks"] = output["masks"][:, 0] >= 0.5
                truth["masks"] = target["masks"].bool()
            preds.append(pred)
            truths.append(truth)
        metric.update(preds, truths)

    def _log_map(self, stage: str) -> None:
        metric = getattr(self, f"{stage}_map")
        results = metric.compute()
        metric.reset()
        for key, value in results.items():
            name = key.removeprefix("segm_").removeprefix("bbox_")
            if name in _LOGGED:
                prefix = "mask_" if key.startswith("segm_") else ""
                self.log(f"{stage}/{prefix}{name}", value.float(), prog_bar=name in _SHOWN)

    def validation_step(self, batch, batch_idx) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_map("val")

    def test_step(self, batch, batch_idx) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_map("test")

    def predict_step(self, batch, batch_idx) -> list[dict]:
        """Per image: its id and its detections above ``score_threshold`` (at most ``top_k``), best first:
        ``classes`` and ``probabilities`` (scores) as ``attnzoo predict`` prints them, ``boxes`` (x1 y1 x2 y2 in
        the image's pixels) and ``labels``; an image marked unreadable gets ``"error"`` instead."""
        images, ids, *rest = batch
        readable = [bool(r) for r in rest[0]] if rest else [True] * len(images)
        rows = []
        for output, ident, ok in zip(self(images), ids, readable):
            if not ok:
                rows.append({"input": str(ident), "error": "unreadable image"})
                continue
            keep = (output["scores"] >= self.score_threshold).nonzero().flatten()[: self.top_k]
            labels = output["labels"][keep].tolist()
            rows.append({
                "input": str(ident),
                "classes": [self.class_names[i - 1] for i in labels],
                "probabilities": [round(p, 6) for p in output["scores"][keep].tolist()],
                "boxes": [[round(c, 2) for c in box] for box in output["boxes"][keep].tolist()],
                "labels": labels,
            })
        return rows
