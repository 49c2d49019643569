"""``attnzoo fit | validate | test | predict``: LightningCLI over :class:`ImageClassifier` and the data modules.

- The data module's number of classes, class names and preprocessing flow into the model (``link_arguments``),
  so configs never repeat them.
- Checkpoints: best (by ``val/acc1``) and ``last.ckpt`` in ``<trainer.default_root_dir>/checkpoints/``, so
  ``--ckpt_path last`` resumes and predict has a path to point at; options under ``--checkpoint.*``.
- Predictions are printed (class names and probabilities) and optionally written as JSON lines
  (``--predictions.output_file``).
- Logs: TensorBoard when installed, CSV otherwise, in ``<trainer.default_root_dir>/logs/version_N/``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from jsonargparse import ArgumentError
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from attnzoo.data.base import ClassificationDataModule
from attnzoo.errors import AttnzooError, usage_error
from attnzoo.preprocessing import Preprocessing
from attnzoo.training.callbacks import PredictionWriter
from attnzoo.training.module import ImageClassifier

# Import the concrete data modules so `class_path: ShapesDataModule` resolves by its short name too.
import attnzoo.data.modules  # noqa: E402,F401  isort: skip


class AttnzooCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for name in ("num_classes", "class_names"):
            parser.link_arguments(f"data.{name}", f"model.{name}", apply_on="instantiate")
        # As the plain dict the model's hyper-parameters record (checkpoints are read weights-only).
        parser.link_arguments("data.preprocessing", "model.preprocessing", compute_fn=Preprocessing.to_dict,
                              apply_on="instantiate")
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
        ckpt_path = config.get("ckpt_path")
        # Lightning's own special names (last, best, ...) and remote URLs are its business; a local path that
        # does not exist is the user's typo, caught here before anything is built or written.
        if ckpt_path and ckpt_path not in LIGHTNING_CKPT_NAMES and "://" not in ckpt_path:
            if not os.path.isfile(ckpt_path):
                raise AttnzooError(
                    f"--ckpt_path {ckpt_path!r} is not a file; give a checkpoint written by `attnzoo fit` "
                    f"(e.g. <default_root_dir>/checkpoints/last.ckpt) or one of {', '.join(LIGHTNING_CKPT_NAMES)}."
                )

    def instantiate_trainer(self, **kwargs):
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = default_logger(trainer_config.get("default_root_dir") or os.getcwd())
        return super().instantiate_trainer(**kwargs)


def default_logger(root: str):
    """TensorBoard when it is installed, CSV files otherwise."""
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(root, name="logs")
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(root, name="logs")


def make_cli(args: list[str] | None, run: bool = True) -> AttnzooCLI:
    """The CLI object; with ``run=False`` it parses ``args`` (no subcommand) and instantiates without running."""
    return AttnzooCLI(
        ImageClassifier,
        ClassificationDataModule,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        trainer_defaults={"default_root_dir": "runs/default"},
        parser_kwargs={"prog": "attnzoo", "exit_on_error": False},
    )


def run_lightning_cli(argv: list[str]) -> AttnzooCLI:
    """Run a Lightning subcommand (fit, validate, test, predict) with ``argv`` (without the program name).

    A user mistake ends as :class:`AttnzooError` (one line from ``attnzoo.cli.main``): a bad option or config
    value, an unknown model, a missing data directory. Nothing has been written by then.
    """
    # Parsing sys.argv itself (rather than a copy) keeps Lightning quiet; DDP re-launches sys.argv either way.
    args = None if list(argv) == sys.argv[1:] else list(argv)
    try:
        return make_cli(args)
    except ArgumentError as err:
        raise usage_error(err, next((a for a in argv if a in SUBCOMMANDS), "")) from None
    except Exception as err:
        # jsonargparse wraps errors raised while instantiating a class; surface the user's mistake itself.
        cause = _user_error(err)
        if cause is None:
            raise
        raise cause from None


SUBCOMMANDS = ("fit", "validate", "test", "predict")
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")


def _user_error(err: BaseException) -> AttnzooError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, AttnzooError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
