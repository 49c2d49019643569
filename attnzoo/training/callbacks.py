"""Callbacks of the command line."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


class PredictionWriter(L.Callback):
    """Shows what ``attnzoo predict`` found: one line per image with the top classes and probabilities
    (at most ``print_limit`` lines), and, with ``output_file``, every prediction as a JSON line.

    Args:
        output_file: a ``.jsonl`` file for all predictions (one per rank under DDP: ``name.rank1.jsonl`` ...).
        print_limit: lines printed at most; 0 prints none.
        print_top: classes shown per line.
    """

    def __init__(self, output_file: str | None = None, print_limit: int = 50, print_top: int = 3):
        self.output_file = output_file
        self.print_limit = print_limit
        self.print_top = print_top
        self._rows: list[dict] = []

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if isinstance(outputs, list):
            self._rows.extend(row for row in outputs if isinstance(row, dict))

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # After every callback's on_predict_end: the progress bar is closed and the lines stay clean.
        if stage != "predict":
            return
        if self.output_file:
            path = Path(self.output_file)
            if trainer.world_size > 1 and trainer.global_rank > 0:
                path = path.with_suffix(f".rank{trainer.global_rank}{path.suffix}")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w") as f:
                for row in self._rows:
                    f.write(json.dumps(row) + "\n")
            rank_zero_info(f"predictions written to {path}")
        lines = [self.format(row) for row in self._rows[: self.print_limit]]
        if len(self._rows) > self.print_limit > 0:
            lines.append(f"... {len(self._rows) - self.print_limit} more (--predictions.output_file to keep them all)")
        if lines and trainer.is_global_zero:
            print("\n".join(lines), flush=True)

    def format(self, row: dict) -> str:
        shown = zip(row["classes"][: self.print_top], row["probabilities"][: self.print_top])
        return f"{row['input']}: " + ", ".join(f"{name} {prob:.1%}" for name, prob in shown)
