"""Checkpoints a run can trust: atomic writes, a ``last.ckpt`` that is always the latest state, exact resumption.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file *in the target directory*, flushes it to
  disk (``fsync``), and renames it over the target (``os.replace``, atomic on POSIX filesystems), then syncs the
  directory. A kill at any moment leaves the previous complete file or the new complete file. Lightning's own
  writer goes through fsspec, whose local "transaction" writes the temporary file in ``$TMPDIR`` and *moves* it:
  with ``$TMPDIR`` on another filesystem (``/dev/shm``, a node-local disk) that move is a copy, and a kill during
  it leaves a truncated checkpoint. It also loads checkpoints with ``weights_only=True`` only.
- :class:`LastCheckpoint` writes ``last.ckpt`` at the end of every epoch, whatever the monitored metric did, and
  in the middle of long epochs every ``train_time_interval`` (and/or every ``every_n_train_steps``).
- :class:`RandomState` keeps the random generators' states (torch, CUDA, Python, NumPy; per rank) in the
  checkpoint, so dropout and mixing continue exactly as they would have without the interruption. The data
  order and augmentation are restored by the data module (:mod:`attnzoo.data.sampling`).
"""

from __future__ import annotations

import os
import random
import re
import time
from datetime import timedelta

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from attnzoo.errors import AttnzooError
from attnzoo.files import remove_stale as remove_stale_partials
from attnzoo.files import removed_leftover
from attnzoo.files import write_atomically


def _is_remote(path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` such that ``path`` is always either its old complete content or the new one."""
    def save(partial):
        # Through a Python file: a full disk is then an OSError naming the file (torch's own writer, given a
        # path, reports it as a RuntimeError).
        with open(partial, "wb") as handle:
            torch.save(obj, handle)

    write_atomically(path, save)


def describe_load_error(path, err: BaseException) -> AttnzooError:
    """One line for a file ``torch.load(weights_only=True)`` could not read."""
    text = " ".join(str(err).split())
    # A byte that is no pickle opcode at all (text, an image...) makes no refused checkpoint but no checkpoint:
    # torch reports both through its weights-only unpickler.
    opcode = re.search(r"Unsupported operand (\S+)", text)
    if opcode:
        reason = f"its bytes are not a pickle: byte {opcode[1]} where an opcode should be"
    elif "Unsupported global" in text or "weights_only" in text.lower() or "WeightsUnpickler" in text:
        what = text.split("Unsupported global:", 1)[1].split(" was not")[0].strip() if "Unsupported global:" in text else ""
        named = f" ({what})" if what else ""
        return AttnzooError(
            f"refused to load {str(path)!r}: it needs Python objects unpickled{named}, which could run any code; "
            "attnzoo reads checkpoints with torch.load(weights_only=True) only (tensors, numbers, strings, "
            "containers). A checkpoint written by `attnzoo fit` never needs more.")
    else:
        reason = f"{type(err).__name__}: {text[:200]}"
    return AttnzooError(f"{str(path)!r} is not a PyTorch checkpoint ({reason}); give a "
                        "file written by `attnzoo fit` (e.g. <default_root_dir>/checkpoints/last.ckpt).")


def read_checkpoint(path, map_location="cpu") -> dict:
    """A checkpoint file, read with ``weights_only=True``; anything else is one :class:`AttnzooError`."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise AttnzooError(f"no such checkpoint: {str(path)!r}.") from None
    except Exception as err:  # noqa: BLE001 - every failure here means "not a checkpoint we load"
        raise describe_load_error(path, err) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        keys = ", ".join(map(str, list(checkpoint)[:6])) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise AttnzooError(f"{str(path)!r} is not a Lightning checkpoint (no state_dict; found {keys or 'nothing'}); "
                           "give a file written by `attnzoo fit`.")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic local writes (see the module docstring) and weights-only loading.
    Remote URLs (``s3://`` ...) keep Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}.")
        if _is_remote(path):
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, str(path).removeprefix("file://"))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        if _is_remote(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return read_checkpoint(path, map_location=map_location or (lambda storage, loc: storage))


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the state after every completed epoch, and during long epochs every
    ``train_time_interval`` (a time, e.g. ``0:30:00``) and/or every ``every_n_train_steps`` optimizer steps, and
    after the step during which the process received SIGTERM (how clusters announce a pre-emption).

    Lightning's ``save_last`` rewrites ``last.ckpt`` only when a top-k checkpoint is written, i.e. when the
    monitored metric improved; this one does not depend on any metric. Saving is decided on rank 0's clock and
    broadcast, so every rank takes part in the same saves.

    Args:
        dirpath: the checkpoint folder (the command line sets ``<default_root_dir>/checkpoints``).
        train_time_interval: also save when this much training time passed since the last save; None: off.
        every_n_train_steps: also save every this many optimizer steps; 0: off.
    """

    CHECKPOINT_NAME_LAST = "last"

    def __init__(self, dirpath: str | None = None, train_time_interval: timedelta | None = None,
                 every_n_train_steps: int = 0):
        if every_n_train_steps < 0:
            raise AttnzooError(f"every_n_train_steps must be >= 0, got {every_n_train_steps}.")
        if train_time_interval is not None and train_time_interval.total_seconds() <= 0:
            raise AttnzooError(f"train_time_interval must be positive or null, got {train_time_interval}.")
        super().__init__(dirpath=dirpath, monitor=None, save_top_k=0, save_last=True, save_on_train_epoch_end=True)
        # Lightning takes one trigger only; this callback does its own timing and counting.
        self.time_interval = train_time_interval
        self.step_interval = every_n_train_steps
        self._last_save_time: float | None = None
        self._last_epoch_saved = -1

    @property
    def state_key(self) -> str:
        # Independent of the intervals: a run resumed with other intervals still finds its state (and keeps
        # writing last.ckpt rather than last-v1.ckpt).
        return "LastCheckpoint"

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and not _is_remote(self.dirpath):
            for path in remove_stale_partials(self.dirpath):
                rank_zero_info(removed_leftover(path))

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_save_time = time.monotonic()

    def _save(self, trainer) -> None:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_save_time = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return
        due = self.step_interval > 0 and trainer.global_step % self.step_interval == 0
        if self.time_interval is not None:
            due = due or time.monotonic() - (self._last_save_time or 0.0) >= self.time_interval.total_seconds()
        # SIGTERM (pre-emption, scancel): keep this step before the scheduler's SIGKILL follows.
        due = due or bool(getattr(trainer, "received_sigterm", False))
        if trainer.world_size > 1:
            due = trainer.strategy.broadcast(due)  # rank 0's clock and signals decide, for all ranks
        if due:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Also when a mid-epoch save happened at this very step: the epoch-end state differs (epoch counters,
        # the data position, the best score of this epoch's validation).
        if bool(trainer.fast_dev_run) or trainer.sanity_checking or self._last_epoch_saved == trainer.current_epoch:
            return
        self._save(trainer)
        self._last_epoch_saved = trainer.current_epoch

    def on_validation_end(self, trainer, pl_module) -> None:
        pass  # epoch ends are handled in on_train_epoch_end, after validation

    def on_exception(self, trainer, pl_module, exception) -> None:
        pass  # a crash is no reason to overwrite the last good state with an unknown one

    def on_train_end(self, trainer, pl_module) -> None:
        pass  # the last epoch end already wrote last.ckpt

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # A checkpoint of attnzoo 0.1, whose one ModelCheckpoint wrote last.ckpt: keep writing that file (not
        # last-v1.ckpt next to it).
        states = checkpoint.get("callbacks") or {}
        if self.state_key not in states:
            for state in states.values():
                last = state.get("last_model_path") if isinstance(state, dict) else None
                if last and state.get("dirpath") == self.dirpath:
                    self.last_model_path = last

    def state_dict(self) -> dict:
        return {**super().state_dict(), "last_epoch_saved": self._last_epoch_saved}

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self._last_epoch_saved = int(state_dict.get("last_epoch_saved", -1))


# ---- random generators ------------------------------------------------------------------------------------------


def _python_state_tensor() -> torch.Tensor:
    version, internal, gauss = random.getstate()
    return torch.tensor([version, *internal, 0 if gauss is None else 1], dtype=torch.int64), gauss


def _numpy_state():
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)


class RandomState(L.Callback):
    """Saves the random generators of every rank in the checkpoint and restores them when a run resumes.

    Data loading draws from none of them (:mod:`attnzoo.data.sampling`); the model's dropout, the mixing of
    Mixup/CutMix and anything else in the training step does, and continues from exactly where it was.
    """

    def state_dict(self) -> dict:
        python, gauss = _python_state_tensor()
        keys, pos, has_gauss, cached = _numpy_state()
        state = {
            "torch": torch.get_rng_state(),
            "python": python,
            "python_gauss": torch.tensor(0.0 if gauss is None else gauss, dtype=torch.float64),
            "numpy": keys,
            "numpy_extra": torch.tensor([pos, has_gauss], dtype=torch.int64),
            "numpy_gauss": torch.tensor(cached, dtype=torch.float64),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            # Every rank's own states, gathered (identical shapes on every rank): rank r restores row r.
            state = {k: trainer.strategy.all_gather(v.to(trainer.strategy.root_device)).cpu() for k, v in state.items()}
            state["world_size"] = trainer.world_size
        return state

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer = trainer

    def load_state_dict(self, state_dict: dict) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.state.fn != "fit":
            return  # validate/test/predict draw no random numbers: the saved generators (of any world size) are moot
        world = trainer.world_size if trainer is not None else 1
        saved_world = int(state_dict.get("world_size", 1))
        if saved_world != world:
            rank_zero_warn(f"the checkpoint's random states are of {saved_world} process(es), this run has {world}: "
                           "dropout and mixing continue from fresh states.")
            return
        rank = trainer.global_rank if trainer is not None and world > 1 else None
        pick = (lambda v: v[rank]) if rank is not None else (lambda v: v)
        torch.set_rng_state(pick(state_dict["torch"]).to(torch.uint8))
        python = pick(state_dict["python"]).tolist()
        gauss = float(pick(state_dict["python_gauss"])) if python[-1] else None
        random.setstate((python[0], tuple(python[1:-1]), gauss))
        extra = pick(state_dict["numpy_extra"]).tolist()
        np.random.set_state(("MT19937", pick(state_dict["numpy"]).numpy().astype(np.uint32), extra[0], extra[1],
                             float(pick(state_dict["numpy_gauss"]))))
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state(pick(state_dict["cuda"]).to(torch.uint8))
