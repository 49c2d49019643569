"""``attnzoo compare``: the command line over :mod:`attnzoo.compare` (a study, its runs, its report)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from attnzoo.compare import runner
from attnzoo.compare.study import DEFAULT_SEEDS, add_seeds, check_seeds, create_or_continue, open_study
from attnzoo.errors import AttnzooError


def compare_command(
    study: str | None = None,
    *,
    models: list[str] | None = None,
    recipe: str | None = None,
    seeds: int | None = None,
    out: str | None = None,
    parallel: int = 1,
    launcher: Literal["local", "slurm"] = "local",
    submit: bool = False,
    sbatch: list[str] | None = None,
    report: bool = False,
    bench: bool = True,
    task: int | None = None,
) -> None:
    """Train several models under one recipe over several seeds; report means, intervals and costs side by side.

    Every (model, seed) is an ordinary `attnzoo fit` of the recipe in which only the model and the seed change,
    in DIR/runs/<model>/seed<k>/. Run the same command again to continue a stopped study: finished runs are kept,
    an interrupted one resumes from its last.ckpt. The report (report.md, report.csv, report.json, report.png)
    is written into the study folder when the runs end, or by `attnzoo compare DIR --report` from whatever has
    finished.

    Args:
        study: an existing study folder: continue its runs (or, with --report, only report).
        models: the models to compare, e.g. r18 se_r18 eca_r18; the plain backbone among them is the one the
            others are compared with, seed by seed.
        recipe: the training recipe (--config FILE), e.g. configs/quickstart.yaml; its own model and seed are
            replaced by each run's.
        seeds: runs per model, seeds 0..N-1 (at least 2: an interval needs them); 3 for a new study. Given with a
            study folder: more seeds for it (seeds are added, never removed).
        out: the study folder to create (or to continue, with the same recipe and models).
        parallel: local fits at once (each gets its share of the CPU threads).
        launcher: local runs the fits here; slurm writes DIR/slurm/compare.sbatch, a job array with one task per run.
        submit: with --launcher slurm, also submit the array with sbatch.
        sbatch: extra #SBATCH options for the array script, e.g. gpus-per-task=1 time=4:00:00.
        report: only write the report of the runs that have finished.
        bench: measure training throughput and peak memory of each model on this machine for the report.
        task: run one run of the study by its number (what each SLURM array task does).
    """
    if study is not None and (models or recipe or out):
        raise AttnzooError("give either a study folder to continue (attnzoo compare DIR) or --models, --config and "
                           "--out to start one, not both.")
    if study is not None:
        opened = open_study(study)
    elif models or recipe or out:
        missing = [flag for flag, value in (("--models", models), ("--config", recipe), ("--out", out)) if not value]
        if missing:
            raise AttnzooError(f"attnzoo compare needs {', '.join(missing)} to start a study (or a study folder "
                               "to continue); see attnzoo compare --help.")
        opened = None
    else:
        raise AttnzooError("attnzoo compare needs --models, --config and --out (or a study folder); see "
                           "attnzoo compare --help.")
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise AttnzooError(f"--parallel {parallel!r}: give the number of fits to run at once, 1 or more.")
    if submit and launcher != "slurm":
        raise AttnzooError("--submit submits a SLURM job array: add --launcher slurm.")
    if report and (task is not None or submit):
        raise AttnzooError("--report only writes the report; give it without --task or --submit.")
    if seeds is not None:
        check_seeds(seeds)  # the user's own mistake first, before what this machine lacks
    if task is None and (report or launcher == "local"):
        from attnzoo.extras import require

        require("stats", "attnzoo compare's report (t-intervals)")  # before hours of training, not after
    if opened is None:
        opened = create_or_continue(out, recipe, models, DEFAULT_SEEDS if seeds is None else seeds)
    elif seeds is not None:
        opened = add_seeds(opened, seeds)

    if task is not None:
        raise SystemExit(runner.run_task(opened, task))
    if report:
        _write_report(opened, bench)
        return
    if launcher == "slurm":
        from attnzoo.compare.slurm import submit_array, write_array

        script = write_array(opened, sbatch or [])
        print(f"wrote {script}: {len(opened.runs())} array tasks, one per (model, seed); "
              f"collect with attnzoo compare {opened.folder} --report")
        if submit:
            print(submit_array(script))
        return
    counts = runner.run_local(opened, parallel=parallel)
    _write_report(opened, bench)
    if counts["failed"]:
        print(f"attnzoo: {counts['failed']} run(s) failed; see their fit.log; the same command tries them again.",
              file=sys.stderr)
        raise SystemExit(1)


def _write_report(study, bench: bool) -> None:
    from attnzoo.compare.report import write_report

    paths = write_report(study, bench=bench)
    print(Path(paths["md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))


# `--config` names the recipe, as for `attnzoo fit` (the parameter cannot be called config: jsonargparse's own);
# `--models r18 se_r18 eca_r18` takes several words.
compare_command.cli_optional_positional = "study"  # `attnzoo compare DIR`
compare_command.cli_config_help = "the training recipe, e.g. configs/quickstart.yaml (--recipe is the same)"
compare_command.cli_aliases = {"--config": "--recipe", "--submit": "--submit=true", "--report": "--report=true"}
compare_command.cli_lists = ("--models", "--sbatch")
