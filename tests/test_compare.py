"""`attnzoo compare`: the study folder and its refusals, the statistics, the report, and (slow) a study end to
end: SLURM array tasks in a simulated allocation, a study killed in the middle of a run and continued, and the
same (model, seed) trained twice giving the same weights."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from attnzoo.cli import main
from attnzoo.compare import statistics as stats
from attnzoo.compare.report import write_report
from attnzoo.compare.results import read_result
from attnzoo.compare.study import create_or_continue, open_study, write_json

from test_cli import ATTNZOO

PAUSABLE = Path(__file__).with_name("pausable_attnzoo.py")
# Two epochs of two 16-image batches of 16x16 shapes: a fit is its start-up time (a few seconds) and little else.
TINY_RECIPE = """\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 2
  limit_train_batches: 2
  limit_val_batches: 1
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
model:
  model: eca_r18
  optimizer:
    class_path: torch.optim.AdamW
    init_args: {lr: 0.002}
data:
  class_path: attnzoo.data.ShapesDataModule
  init_args: {num_train: 64, num_val: 16, image_size: 16, batch_size: 16, num_workers: 0}
"""


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_RECIPE)
    return path


def one_line_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *argv])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # The error is one line; before it may stand the recipe's notes ("the --models list wins"), never a traceback.
    assert lines and lines[-1].startswith("attnzoo: error: "), lines
    assert all(line.startswith("attnzoo: ") and "error" not in line for line in lines[:-1]), lines
    return lines[-1]


# ---- bad input: one line, nothing written --------------------------------------------------------------------


def test_unknown_model_is_named_with_suggestions(capsys, tmp_path, recipe):
    err = one_line_error(capsys, "--models", "r18", "se_r1", "--config", str(recipe), "--out", str(tmp_path / "s"))
    assert "'se_r1'" in err and "se_r18" in err
    assert not (tmp_path / "s").exists()


def test_fewer_than_two_seeds_is_refused(capsys, tmp_path, recipe):
    err = one_line_error(capsys, "--models", "r18", "se_r18", "--config", str(recipe), "--seeds", "1",
                         "--out", str(tmp_path / "s"))
    assert "--seeds 1" in err and "interval" in err
    assert not (tmp_path / "s").exists()


def test_the_users_mistake_is_named_before_a_missing_extra(capsys, tmp_path, recipe, monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy", None)  # as where the stats extra is not installed
    args = ["--models", "r18", "se_r18", "--config", str(recipe), "--out", str(tmp_path / "s")]
    assert "pip install 'attnzoo[stats]'" in one_line_error(capsys, *args, "--seeds", "3")
    err = one_line_error(capsys, *args, "--seeds", "1")
    assert "--seeds 1" in err and "stats" not in err
    assert not (tmp_path / "s").exists()


def test_recipe_naming_its_own_model_says_the_list_wins(capsys, tmp_path, recipe):
    create_or_continue(tmp_path / "s", str(recipe), ["r18", "se_r18"], 2)
    err = capsys.readouterr().err
    assert "names model 'eca_r18'; the --models list wins" in err
    assert "sets seed_everything 0; --seeds wins" in err


def test_a_study_of_another_recipe_or_model_list_is_refused_and_left_as_it_was(capsys, tmp_path, recipe):
    folder = tmp_path / "s"
    create_or_continue(folder, str(recipe), ["r18", "se_r18"], 2)
    capsys.readouterr()
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    other = tmp_path / "other.yaml"
    other.write_text(TINY_RECIPE.replace("lr: 0.002", "lr: 0.001"))
    err = one_line_error(capsys, "--models", "r18", "se_r18", "--config", str(other), "--out", str(folder))
    assert "another recipe" in err and "never mixed" in err
    err = one_line_error(capsys, "--models", "r18", "eca_r18", "--config", str(recipe), "--out", str(folder))
    assert "r18, se_r18" in err and "not r18, eca_r18" in err
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before
    # The same study continued: more seeds are allowed, the runs there stay.
    assert create_or_continue(folder, str(recipe), ["se_r18", "r18"], 3).seeds == 3


def test_a_folder_that_is_not_a_study_is_not_written_into(capsys, tmp_path, recipe):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    err = one_line_error(capsys, "--models", "r18", "se_r18", "--config", str(recipe), "--out", str(folder))
    assert "no study.json" in err
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    err = one_line_error(capsys, str(folder), "--report")
    assert "not a study folder" in err


def test_a_run_finished_by_another_process_is_not_started_again(tmp_path, recipe):
    from attnzoo.compare import runner

    study = create_or_continue(tmp_path / "s", str(recipe), ["r18", "se_r18"], 2)
    run = study.runs()[0]
    assert runner.state(run) == "pending"
    # Another `attnzoo compare` (a second shell, an array task) finished it after this one listed its runs.
    write_json(run.folder / "status.json", {"state": "finished", "returncode": 0})
    assert runner.start(study, run) is None
    assert not (run.folder / "fit.log").exists()
    # A run whose fit died without a word (SIGKILL) is interrupted: its lock is free, its status says running.
    write_json(run.folder / "status.json", {"state": "running", "pid": 1})
    assert runner.state(run) == "interrupted"


def test_seeds_are_added_to_a_study_never_removed(capsys, tmp_path, recipe):
    folder = tmp_path / "s"
    create_or_continue(folder, str(recipe), ["r18", "se_r18"], 3)
    err = one_line_error(capsys, str(folder), "--seeds", "2", "--report")
    assert "has 3 seeds" in err and "never removed" in err
    assert open_study(folder).seeds == 3


def test_submit_without_sbatch_keeps_the_script_and_says_where_it_is(capsys, tmp_path, recipe, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    folder = tmp_path / "s"
    err = one_line_error(capsys, "--models", "r18", "se_r18", "--config", str(recipe), "--out", str(folder),
                         "--launcher", "slurm", "--submit")
    assert "sbatch is not on this machine's PATH" in err
    script = folder / "slurm" / "compare.sbatch"
    assert f"sbatch {script}" in err and "#SBATCH --array=0-5" in script.read_text()


# ---- statistics -------------------------------------------------------------------------------------------------


def test_t_interval_of_three_values():
    s = stats.summarize([1.0, 2.0, 3.0])
    # std 1; t(0.975, 2) = 4.3027: half-width 4.3027 / sqrt(3) = 2.4841
    assert s["mean"] == 2.0 and s["std"] == 1.0
    assert s["ci_low"] == pytest.approx(2.0 - 2.4841, abs=1e-4) and s["ci_high"] == pytest.approx(4.4841, abs=1e-4)
    assert stats.summarize([5.0])["ci_low"] is None  # one run: a mean, no interval


def test_an_accuracy_interval_is_cut_at_100_and_says_so():
    values = [99.7, 99.8, 99.5]  # the t-interval of these reaches 100.16
    free, cut = stats.summarize(values), stats.summarize(values, bounds=(0.0, 100.0))
    assert free["ci_high"] > 100 and not free["clipped"]
    assert cut["ci_high"] == 100.0 and cut["ci_low"] == free["ci_low"] and cut["clipped"]
    assert (cut["mean"], cut["std"]) == (free["mean"], free["std"])
    assert not stats.summarize([80.0, 82.0, 81.0], bounds=(0.0, 100.0))["clipped"]


def test_paired_difference_removes_what_the_seeds_share():
    reference = {0: 80.0, 1: 70.0, 2: 90.0}  # a large seed effect ...
    model = {0: 81.0, 1: 71.1, 2: 90.9}  # ... that the model shares, 1 point above it
    d = stats.paired_difference(model, reference)
    assert d["seeds"] == [0, 1, 2] and d["mean"] == pytest.approx(1.0)
    assert stats.distinguishable(d) is True
    unpaired = stats.summarize(list(model.values()))
    assert unpaired["ci_low"] < stats.summarize(list(reference.values()))["mean"]  # apart, it would look like noise
    assert stats.distinguishable(stats.paired_difference({0: 81.0, 1: 69.0}, {0: 80.0, 1: 70.0})) is False


# ---- results and report -------------------------------------------------------------------------------------


def write_metrics(run_folder: Path, version: int, rows: list[tuple[int, float, float]]) -> None:
    path = run_folder / "logs" / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["epoch,step,train/loss,val/acc1,val/acc5"]
    for epoch, top1, top5 in rows:
        lines += [f"{epoch},{epoch * 10 + 5},2.0,,", f"{epoch},{epoch * 10 + 9},,{top1},{top5}"]
    path.write_text("\n".join(lines) + "\n")


def test_a_resumed_runs_result_joins_its_logs():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        write_metrics(run, 0, [(0, 0.5, 0.9), (1, 0.7, 0.95)])
        write_metrics(run, 1, [(2, 0.6, 0.97)])  # the second start validated epoch 2
        result = read_result(run)
    assert result["epochs"] == 3
    assert result["final"] == {"epoch": 2, "top1": 0.6, "top5": 0.97, "top_k": 5}
    assert result["best"] == {"epoch": 1, "top1": 0.7, "top5": 0.95, "top_k": 5}


def test_report_averages_finished_runs_only_and_names_failed_ones(tmp_path, recipe):
    study = create_or_continue(tmp_path / "s", str(recipe), ["r18", "se_r18", "eca_r18"], 3)
    finals = {"r18": [80.0, 70.0, 90.0], "se_r18": [81.0, 71.1, 90.9], "eca_r18": [79.0, 71.0, None]}
    for run in study.runs():
        top1 = finals[run.model][run.seed]
        if top1 is None:
            write_json(run.folder / "status.json", {"state": "failed", "returncode": 1, "error": "RuntimeError: boom"})
            continue
        write_metrics(run.folder, 0, [(0, top1 / 100 - 0.05, 0.9), (1, top1 / 100, 0.99)])
        write_json(run.folder / "result.json", read_result(run.folder))
        write_json(run.folder / "status.json", {"state": "finished", "returncode": 0})
    paths = write_report(study, bench=False)
    report = json.loads(Path(paths["json"]).read_text())
    rows = {row["model"]: row for row in report["models"]}
    assert rows["eca_r18"]["runs"]["failed"] == 1 and rows["eca_r18"]["final_top1"]["n"] == 2
    assert rows["eca_r18"]["final_top1"]["mean"] == pytest.approx(75.0)
    assert rows["se_r18"]["final_top1_vs_reference"]["mean"] == pytest.approx(1.0)
    assert rows["r18"]["reference"] is None and rows["se_r18"]["reference"] == "r18"
    assert rows["r18"]["best_top1"]["mean"] == pytest.approx(80.0)
    assert report["failed_runs"] == [{"model": "eca_r18", "seed": 2, "error": "RuntimeError: boom"}]
    assert report["runs"] == {"finished": 8, "total": 9}
    md = Path(paths["md"]).read_text()
    assert "| `eca_r18` | 2 (1 failed) |" in md
    assert "se_r18 is above r18 by more than seed noise over 3 seeds" in md
    assert "eca_r18 and r18 cannot be told apart from seed noise over 2 seeds" in md
    assert "`eca_r18` seed 2: RuntimeError: boom" in md
    assert "these pairs cannot be told apart from seed noise (the 95% interval of their paired final top-1 difference contains 0): se_r18 / eca_r18." in md
    assert "In every finished run the best epoch was the last one" in md
    csv_rows = Path(paths["csv"]).read_text().splitlines()
    assert csv_rows[0].startswith("model,backbone,attention,reference,finished,failed") and len(csv_rows) == 4
    assert Path(paths["png"]).stat().st_size > 0


def test_the_docs_comparison_is_its_reports_own_table_and_says_when_it_is_partial():
    from attnzoo.compare.report import markdown

    docs = Path(__file__).resolve().parents[1] / "docs"
    report = json.loads((docs / "compare" / "report.json").read_text())
    page = (docs / "compare.md").read_text()
    assert markdown(report).strip() in page, "stale: python docs/make_comparison.py --study STUDY --report"
    finished, total = report["runs"]["finished"], report["runs"]["total"]
    assert (f"Partial: {finished} of {total} runs finished" in page) == (finished < total)
    assert report["study"]["models"] == ["r18", "se_r18", "eca_r18", "gct_r18", "gc_r18", "cbam_r18", "gam_r18"]
    # analysis.md ranks the modules by this study, not by its single-seed runs.
    spec = importlib.util.spec_from_file_location("make_comparison", docs / "make_comparison.py")
    make_comparison = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_comparison)
    analysis = (docs / "analysis.md").read_text()
    assert f"{make_comparison.SEEDS_START}\n{make_comparison.seeds_block(report)}\n{make_comparison.SEEDS_END}" in analysis


def test_the_plot_labels_both_cost_axes_with_numbers():
    """The docs study's throughputs (176 to 621 images/s) span less than a decade: a log axis with ticks only at
    powers of ten drew no number at all under them."""
    pytest.importorskip("matplotlib")
    from attnzoo.compare.plot import draw

    report = json.loads((Path(__file__).resolve().parents[1] / "docs" / "compare" / "report.json").read_text())
    figure = draw(report)
    figure.canvas.draw()
    for ax in figure.axes:
        low, high = sorted(ax.get_xlim())
        shown = [t for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
        assert len(shown) >= 2, (ax.get_xlabel(), [t.get_text() for t in ax.get_xticklabels()])


def test_the_commands_docs_compare_md_shows_use_real_options():
    import inspect

    from attnzoo.compare.command import compare_command

    page = (Path(__file__).resolve().parents[1] / "docs" / "compare.md").read_text().replace("\\\n", " ")
    commands = [line.strip() for line in page.splitlines() if line.strip().startswith("attnzoo compare ")]
    assert len(commands) >= 2
    accepted = {f"--{name}" for name in inspect.signature(compare_command).parameters}
    accepted |= set(compare_command.cli_aliases)
    for line in commands:
        used = set(re.findall(r"(?<![\w-])(--[a-z_]+)", line.split("`")[0]))
        assert used <= accepted, (line, used - accepted)


# ---- end to end ------------------------------------------------------------------------------------------------


def weights(run_folder: Path) -> dict:
    return torch.load(run_folder / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def env_with(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}


def compare(*args, env: dict, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(ATTNZOO), "compare", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_study_as_slurm_tasks_killed_and_continued_gives_the_weights_of_one_uninterrupted_run(tmp_path, recipe):
    study_dir = tmp_path / "study"
    env = env_with(tmp_path)
    # The SLURM array: written, one task per run; tasks 0 and 1 run as an allocation would run them.
    done = compare("--models", "r18", "eca_r18", "--config", str(recipe), "--seeds", "2", "--out", str(study_dir),
                   "--launcher", "slurm", "--sbatch", "time=0:10:00", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    script = (study_dir / "slurm" / "compare.sbatch").read_text()
    assert "#SBATCH --array=0-3" in script and "#SBATCH --time=0:10:00" in script
    assert "#     1  eca_r18 seed 0" in script and "#     2  r18 seed 1" in script
    task_command = shlex.split(re.search(r"^srun (.*)$", script, re.M)[1].replace('"$SLURM_ARRAY_TASK_ID"', ""))
    for task in ("0", "1"):
        slurm = env_with(tmp_path, SLURM_ARRAY_TASK_ID=task, SLURM_ARRAY_JOB_ID="77", SLURM_JOB_ID=f"7{task}",
                         SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0",
                         SLURM_JOB_NAME="attnzoo-compare-study")
        done = subprocess.run([*task_command, os.environ.get("SLURM_ARRAY_TASK_ID", task)], env=slurm, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    study = open_study(study_dir)
    runs = study.runs()
    assert [r.status()["state"] for r in runs] == ["finished", "finished", "pending", "pending"]

    # Locally, the rest: killed (the whole process group, SIGKILL) in epoch 1 of r18 seed 1, after its last.ckpt.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(PAUSABLE.parent)!r})\n"
        "if os.environ.get('ATTNZOO_TEST_PAUSE') and 'fit' in sys.argv:\n"
        "    import pausable_attnzoo\n"
        "    pausable_attnzoo.install(os.environ['ATTNZOO_TEST_PAUSE'])\n")
    marker = tmp_path / "paused"
    paused_env = {**env, "PYTHONPATH": os.pathsep.join([str(hook), env.get("PYTHONPATH", "")]),
                  "ATTNZOO_TEST_PAUSE": "batch:3", "ATTNZOO_TEST_MARKER": str(marker)}
    finished_logs = {r.model + str(r.seed): (r.folder / "fit.log").stat().st_size for r in runs[:2]}
    proc = subprocess.Popen([str(ATTNZOO), "compare", str(study_dir), "--bench", "false"], env=paused_env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the fit never reached its third batch"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(0.5)  # the paused fit dies with its group
    killed = runs[2]
    assert killed.last_checkpoint.exists() and killed.result() is None

    done = compare(str(study_dir), "--bench", "false", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "r18 seed 1: resuming from last.ckpt" in done.stdout
    assert "eca_r18 seed 1: starting" in done.stdout
    assert "r18 seed 0: starting" not in done.stdout  # finished runs are not run again
    resumed = killed.status()  # the killed part recorded no end: the total holds what was recorded, no guess
    assert resumed["resumed"] and resumed["total_seconds"] >= resumed["seconds"] > 0
    assert {r.model + str(r.seed): (r.folder / "fit.log").stat().st_size for r in runs[:2]} == finished_logs
    report = json.loads((study_dir / "report.json").read_text())
    assert [(row["model"], row["final_top1"]["n"]) for row in report["models"]] == [("r18", 2), ("eca_r18", 2)]
    assert (study_dir / "report.md").exists() and (study_dir / "report.csv").exists()

    # The seed fixes everything: r18 seed 1 trained again from scratch, uninterrupted, in another study folder,
    # has the weights of the killed-and-resumed one; another seed does not.
    again = tmp_path / "again"
    done = compare("--models", "r18", "eca_r18", "--config", str(recipe), "--seeds", "2", "--out", str(again),
                   "--task", "2", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert same_weights(weights(again / "runs" / "r18" / "seed1"), weights(killed.folder))
    assert not same_weights(weights(runs[0].folder), weights(killed.folder))
    assert sys.executable  # the fits ran under this interpreter (python -m attnzoo)
