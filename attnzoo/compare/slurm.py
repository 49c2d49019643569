"""A study as a SLURM job array: one array task per (model, seed), all writing into the same study folder.

Task ``i`` runs ``attnzoo compare DIR --task i``, that is run ``i`` of :meth:`Study.runs` (seed by seed, model
by model): an ordinary ``attnzoo fit`` with ``--ckpt_path last``, so a requeued or resubmitted task resumes its
run and a finished one is skipped. A task may use several GPUs (the multi-GPU path of docs/training.md): give
``--sbatch ntasks-per-node=G gpus-per-node=G`` and ``--trainer.devices G`` in the recipe; every rank then
runs under ``srun``, as Lightning expects. ``attnzoo compare DIR --report`` collects whatever has finished.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from attnzoo.compare.study import Study
from attnzoo.errors import AttnzooError
from attnzoo.files import write_text

SCRIPT = "compare.sbatch"


def _option(line: str) -> str:
    line = line.strip()
    return line if line.startswith("--") else f"--{line}"


def array_script(study: Study, sbatch: list[str]) -> str:
    folder = study.folder.resolve()
    runs = study.runs()
    options = [
        f"--job-name=attnzoo-compare-{folder.name}",
        f"--array=0-{len(runs) - 1}",
        "--ntasks-per-node=1",
        "--requeue",
        "--open-mode=append",
        f"--output={folder / 'slurm' / '%A_%a.out'}",
    ]
    given = [_option(line) for line in sbatch]
    names = {line.split("=", 1)[0] for line in given}
    options = [line for line in options if line.split("=", 1)[0] not in names] + given
    table = "\n".join(f"#   {i:>3}  {run.model} seed {run.seed}" for i, run in enumerate(runs))
    command = shlex.join([sys.executable, "-m", "attnzoo", "compare", str(folder), "--task"])
    return "\n".join([
        "#!/bin/bash",
        *(f"#SBATCH {line}" for line in options),
        "",
        f"# attnzoo compare: {len(study.models)} models x {study.seeds} seeds of {study.recipe_source}, one run per",
        "# array task. A requeued or resubmitted task resumes its run from last.ckpt; a finished run is skipped.",
        "# Collect the report when you like: attnzoo compare " + shlex.quote(str(folder)) + " --report",
        "# task  run",
        table,
        "",
        f'srun {command} "$SLURM_ARRAY_TASK_ID"',
        "",
    ])


def write_array(study: Study, sbatch: list[str]) -> Path:
    """Write DIR/slurm/compare.sbatch (its output files go to DIR/slurm/ as well); returns its path."""
    bad = [line for line in sbatch if not isinstance(line, str) or "\n" in line or not line.strip()]
    if bad:
        raise AttnzooError(f"--sbatch {bad[0]!r}: give #SBATCH options such as gpus-per-task=1 or time=4:00:00, "
                           "one per word.")
    path = study.folder / "slurm" / SCRIPT
    write_text(path, array_script(study, sbatch))
    path.chmod(0o755)
    return path


def submit_array(script: Path) -> str:
    """Submit with sbatch; its answer ("Submitted batch job N")."""
    if shutil.which("sbatch") is None:
        raise AttnzooError(f"--submit: sbatch is not on this machine's PATH; {script} is written, submit it where "
                           "SLURM runs: sbatch " + shlex.quote(str(script)))
    done = subprocess.run(["sbatch", str(script)], capture_output=True, text=True)
    if done.returncode != 0:
        raise AttnzooError(f"sbatch {script} failed: {' '.join(done.stderr.split()) or done.returncode}")
    return done.stdout.strip()
