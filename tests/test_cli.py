"""The `attnzoo` console script end to end (subprocesses), and every config in configs/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
ATTNZOO = Path(sys.executable).parent / "attnzoo"
QUICKSTART = REPO / "configs" / "quickstart.yaml"
# A few seconds of work instead of minutes: tiny generated data, a handful of steps.
TINY = [
    "--data.init_args.num_train", "64",
    "--data.init_args.num_val", "32",
    "--data.init_args.batch_size", "16",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]


def attnzoo(*args: str, cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [str(ATTNZOO), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def global_step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


@pytest.mark.slow
def test_quickstart_fit_validate_predict_resume(tmp_path):
    fit = attnzoo("fit", "--config", str(QUICKSTART), *TINY, "--trainer.max_epochs", "1", cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    last = tmp_path / "runs" / "quickstart" / "checkpoints" / "last.ckpt"
    assert last.is_file() and global_step(last) == 4  # 64 images / batch 16
    assert list(last.parent.glob("best-epoch000-acc*.ckpt"))
    assert (tmp_path / "runs" / "quickstart" / "logs" / "version_0" / "metrics.csv").is_file()

    validate = attnzoo("validate", "--config", str(QUICKSTART), *TINY, "--ckpt_path", str(last), cwd=tmp_path)
    assert validate.returncode == 0, validate.stderr[-3000:]
    assert "val/acc1" in validate.stdout

    predict = attnzoo("predict", "--config", str(QUICKSTART), *TINY, "--ckpt_path", str(last), cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    lines = [line for line in predict.stdout.splitlines() if line.startswith("val[")]
    assert len(lines) == 8 and "(true: " in lines[0] and "%" in lines[0]
    for run in (fit, validate, predict):  # Lightning's hosted-service advertisements are not shown
        assert "Tip:" not in run.stdout + run.stderr and "litlogger" not in run.stdout + run.stderr

    resume = attnzoo("fit", "--config", str(QUICKSTART), *TINY, "--trainer.max_epochs", "2", "--ckpt_path", "last",
                     cwd=tmp_path)
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert global_step(last) == 8  # continued from step 4, not restarted


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.model", "eca_r19"], "unknown model 'eca_r19'. Did you mean: eca_r18"),
        (["--trainer.max_epohcs", "2"], "--trainer.max_epohcs 2. Did you mean: --trainer.max_epochs"),
        # A prefix is no abbreviation: argparse would have run the option it happens to begin.
        (["--trainer.max_epoch", "1"], "--trainer.max_epoch 1. Did you mean: --trainer.max_epochs"),
        (["--data.batchsize", "8"], "--data.batchsize is not an option of attnzoo.data.ShapesDataModule. "
                                    "Did you mean: --data.batch_size?"),
        (["--data.num_val", "many"], "--data.num_val of attnzoo.data.ShapesDataModule takes an integer, got 'many'"),
        # jsonargparse's union reports (every subtype and why it refused) come out as one short sentence.
        (["--trainer.max_epochs", "many"], "--trainer.max_epochs takes an integer or null, got 'many' (see"),
        (["--model.optimizer.lr", "abc"], "--model.optimizer.lr takes a number, got 'abc' (see"),
        (["--trainer.precision", "17"], "--trainer.precision takes null or one of 64, 32, 16, transformer-engine,"),
        (["--trainer.devices", "x"], "trainer: `devices` selected with `CPUAccelerator` should be an int > 0."),
        (["--model.no_weight_decay", "bias"], "no_weight_decay"),
        (["--data", "attnzoo.data.ImageFolderDataModule", "--data.data_dir", "missing/imagenet"],
         "--data.init_args.data_dir 'missing/imagenet' is not a folder here"),
        (["--ckpt_path", "runs/quickstart/checkpoints/lats.ckpt"], "--ckpt_path 'runs/quickstart/checkpoints/lats.ckpt' is not a file"),
    ],
)
def test_user_errors_end_in_one_line_and_write_nothing(tmp_path, args, message):
    sentinel = tmp_path / "runs" / "quickstart" / "checkpoints" / "last.ckpt"
    sentinel.parent.mkdir(parents=True)
    sentinel.write_bytes(b"previous run")
    result = attnzoo("fit", "--config", str(QUICKSTART), *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("attnzoo: error: ") and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert sentinel.read_bytes() == b"previous run"
    assert sorted(p.name for p in (tmp_path / "runs" / "quickstart").iterdir()) == ["checkpoints"]


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    result = attnzoo(
        "fit", "--config", str(QUICKSTART), *TINY,
        "--trainer.max_epochs", "1",
        "--trainer.accelerator", "cpu",
        "--trainer.devices", "2",
        "--trainer.strategy", "ddp",
        cwd=tmp_path, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    last = tmp_path / "runs" / "quickstart" / "checkpoints" / "last.ckpt"
    assert global_step(last) == 2  # 64 images over 2 ranks x batch 16
    assert len(list((tmp_path / "runs" / "quickstart" / "logs").iterdir())) == 1  # rank 0 alone logs


def make_tiny_imagenet(root: Path) -> Path:
    for split in ("train", "val"):
        for name in ("n01", "n02"):
            (root / split / name).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / split / name / "a.JPEG")
    return root


def test_an_imagenet_recipe_says_everything_that_does_not_fit_the_machine_at_once(tmp_path, monkeypatch, capsys):
    # Before: first "no such device", then, fixed, "data directory does not exist" (not naming the option), then
    # with --trainer.accelerator cpu: 8 processes x 8 workers in bf16 on this machine's cores, without a word.
    import os

    from attnzoo.errors import AttnzooError
    from attnzoo.training.cli import make_cli

    monkeypatch.setattr(sys, "argv", ["attnzoo"])
    monkeypatch.chdir(tmp_path)
    recipe = ["--config", str(REPO / "configs" / "se_r50.yaml")]
    cores = len(os.sched_getaffinity(0))
    with pytest.raises(AttnzooError) as err:
        make_cli(recipe, run=False)
    message = str(err.value)
    assert "--data.init_args.data_dir 'data/imagenet' is not a folder here" in message
    if not torch.cuda.is_available():
        assert "--trainer.accelerator gpu: this machine has no GPU" in message
    if cores < 8:
        assert f"--trainer.devices 8 starts 8 training processes on {cores} CPU core(s)" in message
    cli = make_cli([*recipe, "--trainer.accelerator", "cpu", "--model.model", "r18",
                    "--data.init_args.data_dir", str(make_tiny_imagenet(tmp_path / "imagenet"))], run=False)
    note = capsys.readouterr().err
    assert cli.datamodule.num_workers == 8
    assert "attnzoo: note: this run will be slow here:" in note and "--trainer.precision bf16-mixed on a CPU" in note
    if cores < 8:
        assert "64 data loader workers" in note


def test_the_command_line_hides_lightnings_advertisements(tmp_path, monkeypatch):
    # Lightning's "💡 Tip: try installing litlogger/litmodels" lines say nothing about the run; the CLI drops them
    # (and only them) however attnzoo.training was imported before.
    import logging

    from attnzoo.training.cli import make_cli

    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    monkeypatch.setattr(logger, "filters", [])  # as in a process that never built the CLI before
    monkeypatch.setattr(sys, "argv", ["attnzoo"])

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.lines = []

        def emit(self, record):
            self.lines.append(record.getMessage())

    collect = Collect()
    logger.addHandler(collect)
    monkeypatch.setattr(logger, "level", logging.INFO)
    try:
        make_cli(["--config", str(QUICKSTART), *TINY, "--trainer.default_root_dir", str(tmp_path / "runs")], run=False)
    finally:
        logger.removeHandler(collect)
    assert collect.lines and not [line for line in collect.lines if "Tip:" in line], collect.lines


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_parses_and_instantiates(config, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["attnzoo"])  # parse only `args`
    from attnzoo.training.cli import make_cli
    from attnzoo.training.param_groups import parameter_groups

    text = config.read_text()
    args = ["--config", str(config), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
            "--trainer.strategy", "auto", "--trainer.precision", "32-true",
            "--trainer.default_root_dir", str(tmp_path / "runs")]
    if "data_dir" in text:
        args += ["--data.init_args.data_dir", str(make_tiny_imagenet(tmp_path / "imagenet"))]
    cli = make_cli(args, run=False)
    model, data = cli.model, cli.datamodule
    assert model.num_classes == data.num_classes and model.class_names == data.class_names
    assert model.model.config.architecture in text
    assert model.preprocessing == data.preprocessing == model.model.config.preprocessing
    groups = parameter_groups(model.model, model.no_weight_decay)
    optimizer = model.optimizer_factory(groups)
    if model.lr_scheduler_factory is not None:
        model.lr_scheduler_factory(optimizer)
    if config.name == "gct_r50.yaml":
        assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0  # GCT's beta
    if "last_checkpoint:" in text:  # the ImageNet recipes: last.ckpt every 30 minutes too
        from datetime import timedelta

        assert cli.config.last_checkpoint.train_time_interval == timedelta(minutes=30)
