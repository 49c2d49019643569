"""Killed runs resume exactly: SIGKILL a real `attnzoo fit` mid-epoch, right after a checkpoint and during a
checkpoint write, resume with `--ckpt_path last`, and compare with a run that was never interrupted."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
PAUSABLE = Path(__file__).with_name("pausable_attnzoo.py")
QUICKSTART = REPO / "configs" / "quickstart.yaml"
# 96 images / batch 16 = 6 steps per epoch, 2 epochs. last.ckpt is written at steps 4, 6 (epoch end), 8, 12 (end).
# A width-0.25 ECA-MobileNetV2 (250k parameters, dropout 0.2) with AdamW and a per-epoch schedule: the dropout
# draws, the optimizer's moments and the schedule's epoch steps all have to continue exactly.
RUN = [
    "fit", "--config", str(QUICKSTART),
    "--data.init_args.num_train", "96", "--data.init_args.num_val", "32", "--data.init_args.batch_size", "16",
    "--model.model", "eca_mobilenetv2", "--model.model_args", "{width_mult: 0.25}",
    "--model.lr_scheduler", "torch.optim.lr_scheduler.ExponentialLR", "--model.lr_scheduler.gamma", "0.7",
    "--trainer.max_epochs", "2", "--last_checkpoint.every_n_train_steps", "4",
    "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]


@pytest.fixture
def other_fs_tmpdir(tmp_path):
    """TMPDIR on another filesystem than the checkpoints (/dev/shm): a temporary file staged there would have to
    be copied into place, which no kill may interrupt."""
    shm = Path("/dev/shm")
    scratch = Path(tempfile.mkdtemp(prefix="attnzoo-test-tmpdir-", dir=shm if shm.is_dir() else tmp_path))
    yield scratch
    shutil.rmtree(scratch, ignore_errors=True)


def env_for(tmpdir: Path) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TMPDIR": str(tmpdir)}


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def run(cwd: Path, *extra: str, env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(PAUSABLE), *RUN, *extra], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def run_until_killed(cwd: Path, pause: str, env: dict, timeout: float = 240) -> None:
    marker = cwd / "paused"
    proc = subprocess.Popen([sys.executable, str(PAUSABLE), *RUN], cwd=cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**env, "ATTNZOO_TEST_PAUSE": pause, "ATTNZOO_TEST_MARKER": str(marker)})
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended before reaching {pause}: {proc.stderr.read()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the run never reached {pause}")
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def run_until_terminated(cwd: Path, at_batch: int, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PAUSABLE), *RUN], cwd=cwd, capture_output=True, text=True, timeout=240,
                          env={**env, "ATTNZOO_TEST_PAUSE": f"sigterm:{at_batch}"})


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(resumed: dict, reference: dict) -> None:
    assert (resumed["epoch"], resumed["global_step"]) == (reference["epoch"], reference["global_step"])
    for key, value in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert resumed["lr_schedulers"] == reference["lr_schedulers"]
    (a,), (b,) = resumed["optimizer_states"], reference["optimizer_states"]
    assert a["param_groups"] == b["param_groups"]  # learning rates included
    for index, state in b["state"].items():
        for name, value in state.items():
            assert torch.equal(a["state"][index][name], value), (index, name)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    run(cwd, env=env_for(cwd))  # TMPDIR inside the run folder: removed with it
    return load(cwd / "runs" / "quickstart" / "checkpoints" / "last.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("pause", "state_at_kill"),
    [
        ("batch:11", (1, 8)),  # mid-epoch: the step-8 checkpoint is 2 batches into epoch 1
        ("replaced:last.ckpt:2", (0, 6)),  # right after the epoch-0 checkpoint landed
        ("fsync:last.ckpt:3", (0, 6)),  # during the step-8 write: the epoch-0 file must still be whole
    ],
    ids=["mid-epoch", "after-checkpoint", "during-write"],
)
def test_sigkill_then_resume_continues_exactly(tmp_path, other_fs_tmpdir, uninterrupted, pause, state_at_kill):
    env = env_for(other_fs_tmpdir)
    run_until_killed(tmp_path, pause, env)
    folder = tmp_path / "runs" / "quickstart" / "checkpoints"
    last = load(folder / "last.ckpt")  # loads: never truncated, whatever the moment
    assert (last["epoch"], last["global_step"]) == state_at_kill
    assert not files_under(other_fs_tmpdir)  # nothing was staged outside the checkpoint folder

    resumed = run(tmp_path, "--ckpt_path", "last", env=env)
    assert_same_state(load(folder / "last.ckpt"), uninterrupted)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    if pause.startswith("fsync"):
        assert "the temporary file of a write that was killed" in resumed.stdout + resumed.stderr


@pytest.mark.slow
def test_sigterm_saves_the_step_and_resumes_exactly(tmp_path, other_fs_tmpdir, uninterrupted):
    # SIGTERM during batch 3 (no step-based checkpoint is due until step 4): the pre-emption notice of a cluster.
    env = env_for(other_fs_tmpdir)
    stopped = run_until_terminated(tmp_path, 3, env)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    assert "stopped by SIGTERM" in stopped.stderr and "Traceback" not in stopped.stderr
    folder = tmp_path / "runs" / "quickstart" / "checkpoints"
    assert (load(folder / "last.ckpt")["epoch"], load(folder / "last.ckpt")["global_step"]) == (0, 3)
    run(tmp_path, "--ckpt_path", "last", env=env)
    assert_same_state(load(folder / "last.ckpt"), uninterrupted)
