"""Callbacks of the command line."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from attnzoo.errors import AttnzooError
from attnzoo.files import check_writable, write_atomically


class PredictionWriter(L.Callback):
    """Shows what ``attnzoo predict`` found: one line per image with the top classes and probabilities
    (at most ``print_limit`` lines), and, with ``output_file``, every prediction as a JSON line. An image that
    could not be read gets a line saying so (``{"input": ..., "error": "unreadable image"}``), not a prediction.

    Args:
        output_file: a ``.jsonl`` file for all predictions (one per rank under DDP: ``name.rank1.jsonl`` ...).
        overwrite: replace an existing ``output_file``; without it an existing file is an error, raised before
            anything is predicted.
        print_limit: lines printed at most; 0 prints none.
        print_top: classes shown per line.
    """

    def __init__(self, output_file: str | None = None, overwrite: bool = False, print_limit: int = 50,
                 print_top: int = 3):
        self.output_file = output_file
        self.overwrite = overwrite
        self.print_limit = print_limit
        self.print_top = print_top
        self._rows: list[dict] = []

    def output_path(self, trainer: L.Trainer) -> Path | None:
        if not self.output_file:
            return None
        path = Path(self.output_file)
        if trainer.world_size > 1 and trainer.global_rank > 0:
            path = path.with_suffix(f".rank{trainer.global_rank}{path.suffix}")
        return path

    def check_output(self, path: Path | None) -> None:
        """Before anything is predicted: the file is not there (or may be replaced) and its folder takes files."""
        if path is None:
            return
        if path.is_dir():
            raise AttnzooError(f"--predictions.output_file {str(path)!r} is a folder; give a file, e.g. "
                               f"{str(path / 'predictions.jsonl')!r}.")
        if path.exists() and not self.overwrite:
            raise AttnzooError(f"--predictions.output_file {str(path)!r} exists; pass --predictions.overwrite true to "
                               "replace it, or choose another file.")
        check_writable(path, "--predictions.output_file")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "predict":
            self.check_output(self.output_path(trainer))

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, list):
            self._rows.extend(row for row in outputs if isinstance(row, dict))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # After every callback's on_predict_end: the progress bar is closed and the lines stay clean.
        if stage != "predict":
            return
        path = self.output_path(trainer)
        if path is not None:
            def write(partial: Path) -> None:
                with open(partial, "w") as f:
                    for row in self._rows:
                        f.write(json.dumps(row) + "\n")

            write_atomically(path, write)  # a full disk leaves the old file whole, or no file: never a part
            rank_zero_info(f"predictions written to {path}")
        lines = [self.format(row) for row in self._rows[: self.print_limit]]
        if len(self._rows) > self.print_limit > 0:
            lines.append(f"... {len(self._rows) - self.print_limit} more (--predictions.output_file to keep them all)")
        if lines and trainer.is_global_zero:
            print("\n".join(lines), flush=True)

    def format(self, row: dict) -> str:
        if "error" in row:
            return f"{row['input']}: no prediction ({row['error']})"
        shown = zip(row["classes"][: self.print_top], row["probabilities"][: self.print_top])
        return f"{row['input']}: " + ", ".join(f"{name} {prob:.1%}" for name, prob in shown)
