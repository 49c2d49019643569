"""``attnzoo fit | validate | test | predict``: LightningCLI over :class:`ImageClassifier` and the data modules.

- The data module's number of classes, class names and preprocessing flow into the model (``link_arguments``),
  so configs never repeat them.
- Checkpoints: best (by ``val/acc1``) and ``last.ckpt`` in ``<trainer.default_root_dir>/checkpoints/``, so
  ``--ckpt_path last`` resumes and predict has a path to point at; options under ``--checkpoint.*``.
- Predictions are printed (class names and probabilities) and optionally written as JSON lines
  (``--predictions.output_file``).
- Logs: TensorBoard when installed, CSV otherwise (Lightning's default logger), under ``default_root_dir``.
"""

from __future__ import annotations

import os

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from attnzoo.data.base import ClassificationDataModule
from attnzoo.training.callbacks import PredictionWriter
from attnzoo.training.module import ImageClassifier

# Import the concrete data modules so `class_path: ShapesDataModule` resolves by its short name too.
import attnzoo.data.modules  # noqa: E402,F401  isort: skip


class AttnzooCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("num_classes", "class_names", "preprocessing"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-epoch{epoch:03d}-acc{val/acc1:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "predictions")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.checkpoint.dirpath is None:
            root = config.trainer.default_root_dir or os.getcwd()
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")


def run_lightning_cli(argv: list[str]) -> AttnzooCLI:
    """Run a Lightning subcommand (fit, validate, test, predict) with ``argv`` (without the program name)."""
    return AttnzooCLI(
        ImageClassifier,
        ClassificationDataModule,
        subclass_mode_data=True,
        args=argv,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        trainer_defaults={"default_root_dir": "runs/default"},
        parser_kwargs={"prog": "attnzoo"},
    )
