"""``ImageClassifier``: the LightningModule that trains, evaluates and predicts with any zoo model.

The optimizer and learning-rate schedule are callables declared on the module, so a YAML config chooses them,
and they survive DDP and reloading from a checkpoint (the command line saves their config in the checkpoint).
Images may arrive as uint8 (the data modules send them that way): they are normalised here, on the device,
with the preprocessing's mean and std.

A checkpoint carries, beside the weights, ``checkpoint["attnzoo"]`` = {attnzoo_config, preprocessing,
class_names, ema} (the network's ``model.config`` in plain values): enough to rebuild the network from the
``.ckpt`` alone (:func:`attnzoo.training.checkpoint.load_checkpoint_model`).

Cross-cutting features are callbacks, which the module adds itself (``configure_callbacks``) so the options stay
where recipes set them: ``ema_decay`` is Lightning's ``EMAWeightAveraging`` (:class:`attnzoo.training.EMA`; the
averaged weights are the checkpoint's ``state_dict``, the trained ones its ``current_model_state``) and
``freeze_backbone_epochs`` is :class:`attnzoo.training.BackboneFreeze`. Checkpoints of earlier versions,
which kept the average as ``ema.module.*`` inside the module, are converted when they are loaded
(:func:`attnzoo.training.legacy.upgrade_checkpoint`).
"""

from __future__ import annotations

import pickle

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from attnzoo.compiling import COMPILE_MODES, CompileMode, compile_kwargs
from attnzoo.errors import AttnzooError
from attnzoo.preprocessing import Preprocessing
from attnzoo.registry import config_of, create_model
from attnzoo.training.legacy import upgrade_checkpoint
from attnzoo.training.mixing import MixupCutmix
from attnzoo.training.param_groups import NoWeightDecay, check_no_weight_decay, parameter_groups
from attnzoo.training.schedules import scheduler_config
from attnzoo.weights.retrofit import load_backbone_weights


def paper_sgd(params) -> torch.optim.Optimizer:
    """The ResNet recipe of the SE, ECA, GCT and CBAM papers: SGD, lr 0.1, momentum 0.9, weight decay 1e-4."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4)


def _picklable(value) -> bool:
    try:
        pickle.dumps(value)
        return True
    except Exception:
        return False


def unsaved_factories(optimizer, lr_scheduler) -> list[str]:
    """The factory arguments that cannot go into the checkpoint's hyper-parameters (a lambda, a local function):
    ``save_hyperparameters`` ignores them rather than fail."""
    return [name for name, value in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler)) if not _picklable(value)]


def check_optimizer(optimizer: OptimizerCallable | None) -> None:
    """The optimizer's own range checks (torch refuses lr < 0, momentum < 0, betas outside [0, 1) ...), run
    now on one throw-away parameter rather than after the data is set up."""
    if optimizer is None:
        return
    try:
        optimizer([{"params": [nn.Parameter(torch.zeros(1))]}])
    except (ValueError, TypeError) as err:
        # jsonargparse hands a partial whose arguments hold the class; a plain function names itself.
        cls = next((a for a in (getattr(optimizer, "func", None), *getattr(optimizer, "args", ()))
                    if isinstance(a, type)), optimizer)
        raise AttnzooError(f"--model.optimizer {getattr(cls, '__name__', 'callable')} refuses its init_args: {err} "
                           "(accepted: lr, weight_decay, momentum and eps 0 or more, betas in [0, 1)).") from None


def optimizers_config(groups: list[dict], optimizer: OptimizerCallable | None, lr_scheduler: LRSchedulerCallable | None,
                      trainer, default: OptimizerCallable = paper_sgd):
    """What ``configure_optimizers`` returns: the optimizer over ``groups`` (``default`` when none is given), and
    its schedule stepped as :func:`attnzoo.training.schedules.scheduler_config` says."""
    built = (optimizer or default)(groups)
    if lr_scheduler is None:
        return built
    return {"optimizer": built, "lr_scheduler": scheduler_config(lr_scheduler(built), trainer)}


class ImageClassifier(L.LightningModule):
    """Image classification with a zoo model (or any ``nn.Module`` that maps images to logits).

    Args:
        model: a registry name (``"gct_r50"``, see ``attnzoo list``) or a module.
        num_classes: classifier outputs (given by the data module on the command line).
        model_args: overrides for :func:`attnzoo.create_model` (``drop_rate``, ``attention_kwargs``,
            ``backbone_weights`` ...).
        class_names: names of the classes, index order (given by the data module).
        preprocessing: input size, interpolation, crop fraction, mean and std the data was prepared with (given
            by the data module; a :class:`~attnzoo.preprocessing.Preprocessing` or a dict of some of its keys,
            on top of the network's own); stored in the network's ``config`` and in checkpoints.
        optimizer: builds the optimizer from parameter groups; default SGD lr 0.1, momentum 0.9, wd 1e-4.
        lr_scheduler: builds the schedule from the optimizer (StepLR, ExponentialLR, WarmupCosineLR ...);
            attnzoo's epoch schedules (WarmupStepLR, WarmupCosineLR) are stepped every optimizer step, others
            (torch's StepLR, ExponentialLR ...) every epoch.
        no_weight_decay: "gct_beta" (paper default), "norm_bias_gate" or "none"; see
            :mod:`attnzoo.training.param_groups`.
        label_smoothing: label smoothing of the cross-entropy loss.
        mixup_alpha, cutmix_alpha: Beta-distribution parameters; 0 turns each off.
        ema_decay: keep an exponential moving average of the weights with this decay (e.g. 0.9998), use it for
            validation, testing and prediction, and store it in checkpoints (Lightning's EMAWeightAveraging,
            see :class:`attnzoo.training.EMA`). None: off.
        compile: False, True / "default", "reduce-overhead", "max-autotune" or "max-autotune-no-cudagraphs":
            ``torch.compile`` the inner network in place (checkpoint keys stay clean).
        channels_last: NHWC memory format for the network and its inputs (faster convolutions on recent GPUs).
        freeze_backbone_epochs: for the first N epochs, train only the attention modules (GCT's retrofit
            recipe: insert attention into a pretrained network, train it, then fine-tune everything); see
            :class:`attnzoo.training.BackboneFreeze`.
        train_head_while_frozen: also train the classifier while the backbone is frozen (needed when the head
            is new, e.g. fine-tuning to other classes).
        top_k: how many classes ``predict`` returns per image.
    """

    def __init__(
        self,
        model: str | nn.Module = "eca_r50",
        num_classes: int | None = None,
        model_args: dict | None = None,
        class_names: list[str] | None = None,
        preprocessing: dict | None = None,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        no_weight_decay: NoWeightDecay = "gct_beta",
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        ema_decay: float | None = None,
        compile: bool | CompileMode = False,
        channels_last: bool = False,
        freeze_backbone_epochs: int = 0,
        train_head_while_frozen: bool = False,
        top_k: int = 5,
    ):
        super().__init__()
        if isinstance(preprocessing, Preprocessing):
            # Hyper-parameters go into checkpoints, which are read weights-only: plain values, never a class.
            # save_hyperparameters reads the arguments from this frame, so the dict is what it records.
            preprocessing = preprocessing.to_dict()
        ignore = ["model"] if isinstance(model, nn.Module) else []
        self.save_hyperparameters(ignore=ignore + unsaved_factories(optimizer, lr_scheduler))
        self._check_options(no_weight_decay, label_smoothing, ema_decay, freeze_backbone_epochs, top_k, compile)
        check_optimizer(optimizer)

        self.model = self._build_model(model, num_classes, model_args or {})
        self.num_classes = int(self.model.num_classes) if hasattr(self.model, "num_classes") else int(num_classes or 0)
        if self.num_classes < 1:
            raise AttnzooError("num_classes is required when the model does not tell its number of classes.")
        if class_names is not None and len(class_names) != self.num_classes:
            raise AttnzooError(f"{len(class_names)} class names given for a model with {self.num_classes} classes.")
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        # A zoo network carries its identity in model.config; the data's classes and preprocessing go there, so
        # that checkpoints and exported weights say what the network was trained on. Any other module keeps
        # them here only.
        config = config_of(self.model)
        self.preprocessing = Preprocessing.from_dict(preprocessing, base=getattr(config, "preprocessing", None))
        if config is not None:
            self.model.config = config.replace(class_names=self.class_names, preprocessing=self.preprocessing)
        mean, std = self.preprocessing.mean, self.preprocessing.std
        self.register_buffer("input_mean", torch.tensor(mean).view(1, -1, 1, 1) * 255, persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, -1, 1, 1) * 255, persistent=False)

        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.mixing = MixupCutmix(self.num_classes, mixup_alpha, cutmix_alpha, label_smoothing=label_smoothing)
        self.label_smoothing = label_smoothing
        self.compile_mode = compile
        self.channels_last = channels_last
        self.freeze_backbone_epochs = freeze_backbone_epochs
        self.train_head_while_frozen = train_head_while_frozen
        self.ema_decay = ema_decay
        self.no_weight_decay = no_weight_decay
        self.top_k = min(top_k, self.num_classes)
        self._compiled = False

        k5 = min(5, self.num_classes)
        for stage in ("train", "val", "test"):
            metrics = MetricCollection(
                {
                    "acc1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro"),
                    f"acc{k5}": MulticlassAccuracy(self.num_classes, top_k=k5, average="micro"),
                },
                prefix=f"{stage}/",
            )
            setattr(self, f"{stage}_metrics", metrics)
            setattr(self, f"{stage}_loss", MeanMetric())

    # ---- construction -------------------------------------------------------------------------------------

    @staticmethod
    def _check_options(no_weight_decay, label_smoothing, ema_decay, freeze_backbone_epochs, top_k, compile) -> None:
        check_no_weight_decay(no_weight_decay)
        if not 0 <= label_smoothing < 1:
            raise AttnzooError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        if ema_decay is not None and not 0 < ema_decay < 1:
            raise AttnzooError(f"ema_decay must be in (0, 1) or null, got {ema_decay}.")
        if freeze_backbone_epochs < 0 or top_k < 1:
            raise AttnzooError(f"freeze_backbone_epochs must be >= 0 and top_k >= 1, got {freeze_backbone_epochs}, {top_k}.")
        if compile not in (True, False, *COMPILE_MODES):
            raise AttnzooError(f"unknown compile mode {compile!r}. Accepted: false, true, {', '.join(COMPILE_MODES)}.")

    @staticmethod
    def _build_model(model: str | nn.Module, num_classes: int | None, model_args: dict) -> nn.Module:
        if isinstance(model, nn.Module):
            if model_args:
                raise AttnzooError("model_args apply to a model given by name, not to a module.")
            current = getattr(model, "num_classes", None)
            if num_classes is not None and current is not None and current != num_classes:
                if not hasattr(model, "reset_classifier"):
                    raise AttnzooError(f"the model has {current} classes, the data {num_classes}.")
                model.reset_classifier(num_classes)  # a zoo network's config follows
            return model
        # As attnzoo.create_model does: build, then retrofit plain backbone weights when they are named.
        options = dict(model_args)
        backbone_weights = options.pop("backbone_weights", None)
        net = create_model(model, num_classes=1000 if num_classes is None else num_classes, **options)
        if backbone_weights is not None:
            load_backbone_weights(net, backbone_weights)
        return net

    def configure_model(self) -> None:
        """Compile the inner network in place (keys stay ``model.*``) before DDP wraps the module."""
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.compile_mode and not self._compiled:
            mode = None if self.compile_mode is True else self.compile_mode
            # Still on the CPU here when training on a GPU: the strategy moves the model after this hook.
            device = self._trainer.strategy.root_device if self._trainer is not None else self.device
            self.model.compile(**compile_kwargs(mode, device))
            self._compiled = True

    # ---- optimisation ---------------------------------------------------------------------------------------

    def configure_optimizers(self):
        groups = parameter_groups(self.model, self.no_weight_decay)
        return optimizers_config(groups, self.optimizer_factory, self.lr_scheduler_factory, self.trainer)

    def configure_callbacks(self) -> list[L.Callback]:
        """EMA and backbone freezing, when their options are set (they replace callbacks of the same type)."""
        from attnzoo.training.ema import EMA
        from attnzoo.training.freezing import BackboneFreeze

        callbacks: list[L.Callback] = []
        if self.ema_decay is not None:
            callbacks.append(EMA(decay=self.ema_decay))
        if self.freeze_backbone_epochs:
            callbacks.append(BackboneFreeze(self.freeze_backbone_epochs, train_head=self.train_head_while_frozen))
        return callbacks

    # ---- steps ------------------------------------------------------------------------------------------------

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> normalised floats; float images are taken as already normalised."""
        if images.dtype == torch.uint8:
            images = (images.float() - self.input_mean) / self.input_std
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self.prepare_input(images))

    def training_step(self, batch, batch_idx):
        images, labels = batch
        images = self.prepare_input(images)
        if self.mixing.active:
            images, targets = self.mixing(images, labels)
            logits = self.model(images)
            loss = F.cross_entropy(logits, targets)
        else:
            logits = self.model(images)
            loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        self.train_loss.update(loss.detach())
        self.train_metrics.update(logits.detach(), labels)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/loss_epoch", self.train_loss, on_step=False, on_epoch=True)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        images, labels = batch
        logits = self.model(self.prepare_input(images))
        loss = F.cross_entropy(logits, labels)
        getattr(self, f"{stage}_loss").update(loss, weight=len(labels))
        getattr(self, f"{stage}_metrics").update(logits, labels)
        self.log(f"{stage}/loss", getattr(self, f"{stage}_loss"), on_step=False, on_epoch=True, prog_bar=True)
        self.log_dict(getattr(self, f"{stage}_metrics"), on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx) -> list[dict]:
        """Per image: its id, the top-k class indices, class names and probabilities; for an image marked
        unreadable (batches ``(images, ids, readable)``), its id and ``"error"`` instead of a prediction."""
        images, ids, *rest = batch if isinstance(batch, (list, tuple)) else (batch, None)
        readable = [bool(r) for r in rest[0]] if rest else [True] * len(images)
        probs = self.model(self.prepare_input(images)).float().softmax(dim=-1)
        top_probs, top_indices = probs.topk(self.top_k, dim=-1)
        if ids is None:
            ids = [f"{batch_idx}:{i}" for i in range(len(images))]
        elif isinstance(ids, torch.Tensor):
            ids = [str(i) for i in ids.tolist()]
        return [
            {
                "input": str(ident),
                "indices": indices,
                "classes": [self.class_names[i] for i in indices],
                "probabilities": [round(p, 6) for p in ps],
            }
            if ok else {"input": str(ident), "error": "unreadable image"}
            for ident, indices, ps, ok in zip(ids, top_indices.tolist(), top_probs.tolist(), readable)
        ]

    # ---- checkpoints --------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The layout attnzoo.weights.lightning_checkpoint reads; the model's config in three plain parts.
        config = config_of(self.model)
        saved = None if config is None else config.to_dict()
        checkpoint["attnzoo"] = {
            "attnzoo_config": None if saved is None else {k: saved[k] for k in ("architecture", "num_classes",
                                                                                "model_args")},
            "preprocessing": self.preprocessing.to_dict(),
            "class_names": self.class_names,
            # False: no ema.module.* copy in this module's state (EMA now lives in the checkpoint's state_dict).
            "ema": False,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        upgrade_checkpoint(checkpoint)
