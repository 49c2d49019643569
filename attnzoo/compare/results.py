"""A finished run's result, read from the validation rows of its CSV logs.

A resumed run has one ``logs/version_N/metrics.csv`` per start; an epoch validated in a later start replaces
the same epoch of an earlier one. Two results per run, both on the validation set:

- ``final``: the last epoch's top-1 and top-5 (what the run ends with);
- ``best``: the epoch with the highest top-1 (what ``best-*.ckpt`` holds), and that epoch's top-5. Chosen on the
  validation set itself, so it is optimistic; the report labels it so.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

_TOP_K = re.compile(r"val/acc(\d+)$")


def _version(path: Path) -> int:
    match = re.search(r"version_(\d+)$", path.parent.name)
    return int(match[1]) if match else -1


def validation_epochs(run_folder: Path) -> dict[int, dict[str, float]]:
    """``{epoch: {"top1": ..., "top5": ...}}`` from every start's metrics.csv, later starts winning."""
    epochs: dict[int, dict[str, float]] = {}
    for path in sorted((run_folder / "logs").glob("version_*/metrics.csv"), key=_version):
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if not row.get("val/acc1") or row.get("epoch") in (None, ""):
                    continue
                values = {"top1": float(row["val/acc1"])}
                ks = [int(m[1]) for key in row if (m := _TOP_K.match(key)) and int(m[1]) > 1 and row[key]]
                if ks:
                    values["top5"] = float(row[f"val/acc{max(ks)}"])
                    values["top_k"] = max(ks)  # 5, or the number of classes when there are fewer
                epochs[int(float(row["epoch"]))] = values
    return epochs


def read_result(run_folder: Path) -> dict | None:
    epochs = validation_epochs(run_folder)
    if not epochs:
        return None
    last = max(epochs)
    best = max(epochs, key=lambda epoch: (epochs[epoch]["top1"], -epoch))  # the first epoch of the highest top-1
    return {"epochs": last + 1, "final": {"epoch": last, **epochs[last]}, "best": {"epoch": best, **epochs[best]}}
