"""``attnzoo fit | validate | test | predict``: LightningCLI over :class:`ImageClassifier` and the data modules.

- The data module's number of classes, class names and preprocessing flow into the model (``link_arguments``),
  so configs never repeat them.
- Checkpoints in ``<trainer.default_root_dir>/checkpoints/``: ``last.ckpt`` after every epoch and every
  ``--last_checkpoint.train_time_interval`` (:class:`~attnzoo.training.checkpointing.LastCheckpoint`), the best
  by ``val/acc1`` (``--checkpoint.*``). Every write is atomic; ``--ckpt_path last`` resumes exactly, also from
  the middle of an epoch (optimizer, schedule, data position, random generators).
- ``--ckpt_path`` is read with ``weights_only=True``; its hyper-parameters fill in only what the user did not
  give, and may not name foreign classes or start downloads (:mod:`attnzoo.training.checkpoint_policy`).
- validate, test and predict refuse to run an untrained network unless ``--random_weights`` asks for it.
- ``--collective_timeout``: how long a DDP collective may wait for a hung or dead rank before the run ends.
- Predictions are printed (class names and probabilities) and optionally written as JSON lines
  (``--predictions.output_file``, never over an existing file without ``--predictions.overwrite true``).
- Logs: TensorBoard when installed, CSV otherwise, in ``<trainer.default_root_dir>/logs/version_N/``, with the
  learning rate (``LearningRateMonitor``).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import signal
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import lightning as L
from jsonargparse import ArgumentError
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

from attnzoo.data.base import ClassificationDataModule
from attnzoo.errors import AttnzooError, suggest, usage_error
from attnzoo.files import check_writable
from attnzoo.preprocessing import Preprocessing
from attnzoo.training import checkpoint_policy as policy
from attnzoo.training.advertisements import hide_advertisements
from attnzoo.training.callbacks import PredictionWriter
from attnzoo.training.checkpointing import AtomicCheckpointIO, LastCheckpoint, RandomState, read_checkpoint
from attnzoo.training.legacy import upgrade_checkpoint
from attnzoo.training.module import ImageClassifier
from attnzoo.training.preflight import preflight

# Import the concrete data modules so `class_path: ShapesDataModule` resolves by its short name too.
import attnzoo.data.modules  # noqa: E402,F401  isort: skip

DEFAULT_MODEL = f"{ImageClassifier.__module__}.{ImageClassifier.__name__}"
SUBCOMMANDS = ("fit", "validate", "test", "predict")
EVALUATING = ("validate", "test", "predict")
LIGHTNING_CKPT_NAMES = ("last", "best", "hpc", "registry")
# Long enough for a rank's checkpoint write, a validation imbalance or compile skew between ranks; short enough
# that a hung rank does not hold a whole allocation for Lightning's default of 30 minutes.
DEFAULT_COLLECTIVE_TIMEOUT = timedelta(minutes=10)
DEFAULT_LAST_CHECKPOINT_INTERVAL = timedelta(minutes=30)


class AttnzooCLI(LightningCLI):
    def __init__(self, *args, argv: list[str] | None = None, **kwargs):
        self.argv = list(sys.argv[1:] if argv is None else argv)
        self.checkpoint: dict | None = None  # the --ckpt_path file, read once, weights only
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The model is chosen by class_path (--model attnzoo.detection.Detector); without one it is ImageClassifier,
        # so classification configs give its options directly (model: {model: eca_r18}).
        parser.set_defaults({"model": {"class_path": DEFAULT_MODEL}})
        for name in ("num_classes", "class_names"):
            parser.link_arguments(f"data.{name}", f"model.init_args.{name}", apply_on="instantiate")
        # As the plain dict the model's hyper-parameters record (checkpoints are read weights-only).
        parser.link_arguments("data.preprocessing", "model.init_args.preprocessing", compute_fn=Preprocessing.to_dict,
                              apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/acc1",
                "checkpoint.mode": "max",
                "checkpoint.save_last": False,  # last.ckpt is LastCheckpoint's (--last_checkpoint.*)
                "checkpoint.filename": "best-epoch{epoch:03d}-acc{val/acc1:.4f}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.train_time_interval": DEFAULT_LAST_CHECKPOINT_INTERVAL})
        parser.add_lightning_class_args(PredictionWriter, "predictions")
        parser.add_argument(
            "--random_weights", type=bool, nargs="?", const=True, default=False,
            help="validate/test/predict: run the network with random (untrained) weights on purpose; without it "
                 "these commands need --ckpt_path or --model.model_args.backbone_weights.")
        parser.add_argument(
            "--collective_timeout", type=timedelta, default=DEFAULT_COLLECTIVE_TIMEOUT,
            help="DDP: how long (H:MM:SS) a collective operation may wait for the other ranks before the run ends "
                 "with an error (a hung or dead rank). Lightning's default is 0:30:00.")

    # ---- before anything is built --------------------------------------------------------------------------

    def _subconfig(self):
        return self.config[self.config.subcommand] if self.config.get("subcommand") else self.config

    def _parse_ckpt_path(self) -> None:
        """Resolve and read ``--ckpt_path``, then let it fill in only what :mod:`checkpoint_policy` allows."""
        if not self.config.get("subcommand"):
            return
        subcommand = self.config.subcommand
        config = self._subconfig()
        if config.checkpoint.dirpath is None:
            root = config.trainer.default_root_dir or os.getcwd()
            config.checkpoint.dirpath = os.path.join(root, "checkpoints")
        if config.last_checkpoint.dirpath is None:
            config.last_checkpoint.dirpath = config.checkpoint.dirpath
        if config.checkpoint.save_last:
            raise AttnzooError("--checkpoint.save_last: last.ckpt is written after every epoch (and every "
                               "--last_checkpoint.train_time_interval) already; remove checkpoint.save_last.")
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in ("last", "best"):
            ckpt_path = config.ckpt_path = self._resolve_named_checkpoint(ckpt_path, config, subcommand)
        if not ckpt_path or ckpt_path in LIGHTNING_CKPT_NAMES or "://" in str(ckpt_path):
            return
        if not os.path.isfile(ckpt_path):
            raise AttnzooError(
                f"--ckpt_path {ckpt_path!r} is not a file; give a checkpoint written by `attnzoo fit` "
                f"(e.g. <default_root_dir>/checkpoints/last.ckpt) or one of last, best.")
        self.checkpoint = upgrade_checkpoint(read_checkpoint(ckpt_path))
        hparams = self.checkpoint.get("hyper_parameters") or {}
        explicit = policy.explicit_model_options(self.argv, SUBCOMMANDS)
        if "model" in explicit:
            policy.check_architecture(hparams.get("model"), config.model.init_args.model, ckpt_path,
                                      "the command line or --config")
        options, notes = policy.model_options_from_checkpoint(
            hparams, policy.accepted_options(_model_class(config)), explicit, ckpt_path)
        for note in notes:
            print(f"attnzoo: {note}", file=sys.stderr)
        if options:
            try:
                model = {"class_path": config.model.class_path, "init_args": options}
                self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)
            except ArgumentError as err:
                raise AttnzooError(f"the hyper_parameters of checkpoint {ckpt_path!r} do not fit this version's "
                                   f"options: {' '.join(str(err).split())}") from None

    @staticmethod
    def _resolve_named_checkpoint(name: str, config, subcommand: str) -> str | None:
        """``last``: the newest last*.ckpt of the checkpoint folder; ``best``: the best path it recorded."""
        folder = Path(config.last_checkpoint.dirpath)
        candidates = sorted(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if name == "last":
            if candidates:
                return str(candidates[-1])
            if subcommand == "fit":
                print(f"attnzoo: no last checkpoint in {str(folder)!r} yet: starting from scratch.", file=sys.stderr)
                return None
            raise AttnzooError(f"--ckpt_path last: no last*.ckpt in {str(folder)!r}; train there first, or give "
                               "a checkpoint's path.")
        best = None
        if candidates:
            for state in (read_checkpoint(candidates[-1]).get("callbacks") or {}).values():
                if isinstance(state, dict) and state.get("monitor") and state.get("best_model_path"):
                    best = state["best_model_path"]
        if best and os.path.isfile(best):
            return best
        raise AttnzooError(f"--ckpt_path best: {str(folder)!r} records no best checkpoint that exists; give a "
                           "checkpoint's path.")

    def before_instantiate_classes(self) -> None:
        config = self._subconfig()
        subcommand = self.config.get("subcommand")
        check_devices(config.trainer)  # a name Lightning does not know: before asking what this machine has
        preflight(subcommand, config)  # everything that does not fit this machine, in one message
        if subcommand == "fit":
            check_outputs(config)
        model_args = config.model.init_args.get("model_args") or {}
        has_weights = bool(config.get("ckpt_path")) or bool(model_args.get("backbone_weights"))
        if subcommand in EVALUATING and not has_weights and config.random_weights:
            print(f"attnzoo: {subcommand} with random weights (--random_weights): the network is untrained.",
                  file=sys.stderr)
        elif subcommand in EVALUATING and not has_weights:
            raise AttnzooError(
                f"attnzoo {subcommand} needs trained weights: pass --ckpt_path (a checkpoint of `attnzoo fit`, or last / "
                "best of this run's folder) or --model.model_args '{backbone_weights: ...}'; --random_weights runs "
                "an untrained network on purpose.")

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self.checkpoint is not None and hasattr(self.model, "num_classes"):
            hparams = self.checkpoint.get("hyper_parameters") or {}
            built = f"{self.model.hparams.get('model', type(self.model.model).__name__)}, {self.model.num_classes} classes"
            saved = f"{hparams.get('model')!r}, {hparams.get('num_classes')} classes"
            policy.check_state_fits(self.model.state_dict(), self.checkpoint["state_dict"],
                                    self._subconfig().ckpt_path, f"{built}; the checkpoint's: {saved}")
        self.checkpoint = None  # the Trainer reads the file again itself; do not keep a second copy in memory

    def instantiate_trainer(self, **kwargs):
        config = self._subconfig()
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") in (None, True) and "logger" not in kwargs:
            kwargs["logger"] = default_logger(trainer_config.get("default_root_dir") or os.getcwd())
        plugins = trainer_config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        extra = [RandomState()]
        if kwargs.get("logger", trainer_config.get("logger")) not in (None, False):
            extra.append(LearningRateMonitor(logging_interval="step"))  # the learning rate in the logs
        callbacks = trainer_config.get("callbacks") or []
        kwargs["callbacks"] = [*(callbacks if isinstance(callbacks, list) else [callbacks]), *extra]
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, TypeError) as err:
            if isinstance(err, TypeError) and not _raised_by_lightning(err):
                raise  # a bug, not a user's value: keep its traceback
            raise AttnzooError(f"trainer: {' '.join(str(err).split())}") from None
        apply_collective_timeout(trainer, config.collective_timeout, trainer_config.get("strategy"))
        return trainer


def _raised_by_lightning(err: BaseException) -> bool:
    """Lightning checks a Trainer argument's value (``devices="x"`` on the CPU) by raising TypeError."""
    tb = err.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and f"{os.sep}lightning{os.sep}" in tb.tb_frame.f_code.co_filename


def check_devices(trainer_config) -> None:
    """One line for a strategy or an accelerator whose name does not exist. Whether this machine has the device
    is the preflight's to say (``attnzoo.training.preflight``), with every other thing that does not fit it."""
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    strategy = trainer_config.get("strategy")
    if isinstance(strategy, str) and strategy not in ("auto", *StrategyRegistry.available_strategies()):
        choices = ", ".join(["auto", *StrategyRegistry.available_strategies()])
        raise AttnzooError(f"--trainer.strategy {strategy!r} is not a strategy. Accepted: {choices} "
                           "(or a class_path of a lightning.pytorch.strategies.Strategy).")
    accelerator = trainer_config.get("accelerator")
    names = sorted(AcceleratorRegistry.available_accelerators())
    if isinstance(accelerator, str) and accelerator not in ("auto", "gpu", *names):
        raise AttnzooError(f"--trainer.accelerator {accelerator!r} is not an accelerator. Accepted: auto, gpu, "
                           f"{', '.join(names)}.")


def check_outputs(config) -> None:
    """Before anything is built: the folders a training run writes (its logs, config.yaml and checkpoints) take
    files. A read-only folder or a full disk is one line now, not a traceback at the first checkpoint."""
    root = config.trainer.get("default_root_dir") or os.getcwd()
    if "://" not in str(root):
        check_writable(root, "--trainer.default_root_dir", folder=True)
    for group in ("checkpoint", "last_checkpoint"):
        dirpath = (config.get(group) or {}).get("dirpath")
        if dirpath and "://" not in str(dirpath):
            check_writable(dirpath, f"--{group}.dirpath", folder=True)


def apply_collective_timeout(trainer, timeout: timedelta | None, strategy_config) -> None:
    """Give a DDP-family strategy chosen by name (or by ``auto``) the ``--collective_timeout``; a strategy
    configured as a class keeps its own ``timeout``."""
    if timeout is None or not isinstance(strategy_config, (str, type(None))):
        return
    if hasattr(trainer.strategy, "_timeout"):
        trainer.strategy._timeout = timeout


def default_logger(root: str):
    """TensorBoard when it is installed, CSV files otherwise."""
    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(root, name="logs")
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(root, name="logs")


def make_cli(args: list[str] | None, run: bool = True) -> AttnzooCLI:
    """The CLI object; with ``run=False`` it parses ``args`` (no subcommand) and instantiates without running."""
    hide_advertisements()  # before the Trainer is built: it prints the first of them
    return AttnzooCLI(
        L.LightningModule,
        ClassificationDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        argv=args,
        run=run,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        trainer_defaults={"default_root_dir": "runs/default"},
        parser_kwargs={"prog": "attnzoo", "exit_on_error": False, "allow_abbrev": False},
    )


def run_lightning_cli(argv: list[str]) -> AttnzooCLI:
    """Run a Lightning subcommand (fit, validate, test, predict) with ``argv`` (without the program name).

    A user mistake ends as :class:`AttnzooError` (one line from ``attnzoo.cli.main``): a bad option or config
    value, an unknown model, a missing data directory, a checkpoint that is not one. Nothing has been written
    by then. The ``--config`` files were checked by ``attnzoo.cli.main`` before Lightning was imported.
    """
    # Lightning's own use of a torch API that torch has deprecated: nothing the user can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)
    # Parsing sys.argv itself (rather than a copy) keeps Lightning quiet; DDP re-launches sys.argv either way.
    args = None if list(argv) == sys.argv[1:] else list(argv)
    try:
        return make_cli(args)
    except SIGTERMException:
        # Lightning stops after the step during which SIGTERM came; LastCheckpoint saved that step. Not a
        # success: a script's next command (`&& attnzoo test`) must not run on an unfinished model.
        print("attnzoo: stopped by SIGTERM; last.ckpt holds the last completed step: resume with --ckpt_path last.",
              file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM) from None
    except ArgumentError as err:
        raise _option_error(err, next((a for a in argv if a in SUBCOMMANDS), "")) from None
    except Exception as err:
        # jsonargparse wraps errors raised while instantiating a class; surface the user's mistake itself.
        cause = _user_error(err) or _collective_timeout(err, argv)
        if cause is None:
            raise
        raise cause from None


def _option_error(err: BaseException, command: str) -> AttnzooError:
    """A parser error as one line; a misspelt --trainer.*, --model.* or --data.* option gets the closest real
    ones ("Did you mean: --trainer.max_epochs?"). argparse's abbreviations are off: a prefix such as
    --trainer.max_epoch is a mistake to point out, not a shorthand to guess at."""
    text = " ".join(str(err).split())
    required = re.match(r"the following arguments are required: (.*)", text)
    if required:
        # Nothing given at all is the usual case (`attnzoo fit`): what is missing is a recipe, not a key.
        missing = ", ".join("--" + name.split(".", 1)[-1] for name in required[1].split(", "))
        return AttnzooError(f"attnzoo {command} needs a recipe: --config FILE (one of configs/*.yaml, e.g. "
                            f"--config configs/quickstart.yaml), or the missing options themselves: {missing} "
                            f"(see: attnzoo {command} --help)")
    unrecognized = re.search(r"unrecognized arguments: --(trainer|model|data)\.(\w+)", text)
    # A data module option jsonargparse reports inside its union of data module classes, several lines deep.
    not_accepted = re.search(r"Problem with given class_path '([\w.]+)': Option '(\w+)' is not accepted", text)
    if not_accepted:
        module = not_accepted[1]
        owners = [cls for cls in _subclasses(ClassificationDataModule) if f"{cls.__module__}.{cls.__name__}" == module
                  or module.endswith(f".{cls.__name__}")]
        text = f"--data.{not_accepted[2]} is not an option of {module}"
        group, name = "data", not_accepted[2]
    elif unrecognized:
        group, name = unrecognized[1], unrecognized[2]
        owners = {"trainer": [Trainer], "model": _attnzoo_models(), "data": _subclasses(ClassificationDataModule)}[group]
    else:
        return usage_error(err, command)
    names = {p for cls in owners for p in inspect.signature(cls.__init__).parameters} - {"self", "args", "kwargs"}
    hint = suggest(name, sorted(names), cutoff=0.7, prefix=f"--{group}.")
    return AttnzooError(f"{text}{'.' + hint if hint else ''} (see: attnzoo {command} --help)")


def _model_class(config) -> type:
    """The LightningModule class the parsed config names (the user's choice, already imported by the parser)."""
    module, _, name = config.model.class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _attnzoo_models() -> list[type]:
    return [cls for cls in _subclasses(L.LightningModule) if cls.__module__.startswith("attnzoo.")]


def _subclasses(cls: type) -> list[type]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def _collective_timeout(err: BaseException, argv: list[str]) -> AttnzooError | None:
    """One line for a DDP collective that gave up waiting (gloo: "Timed out waiting ..."; the store's timeout)."""
    text = " ".join(str(err).split())
    if "Timed out" not in text and "Socket Timeout" not in text and "timed out" not in text:
        return None
    if not isinstance(err, RuntimeError) or not any(word in text for word in ("gloo", "Socket", "store", "recv", "send")):
        return None
    from attnzoo.config_files import option_values

    timeout = next(option_values(argv, ("--collective_timeout",)), str(DEFAULT_COLLECTIVE_TIMEOUT))
    return AttnzooError(f"a distributed operation waited longer than --collective_timeout ({timeout}) for the other "
                        f"ranks: one of them hung or died ({text[:160]}). Once every node is healthy, resume with "
                        "--ckpt_path last.")


def _user_error(err: BaseException) -> AttnzooError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, AttnzooError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None
