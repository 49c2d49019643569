"""Two "nodes" on one machine (gloo on the CPU): started by hand with MASTER_ADDR/MASTER_PORT/NODE_RANK, by
torchrun, and as the tasks of a (simulated) SLURM allocation; and a hung rank ends the run within
--collective_timeout instead of Lightning's 30 minutes. Every process runs under a timeout."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_cli import ATTNZOO, QUICKSTART

PAUSABLE = Path(__file__).with_name("pausable_attnzoo.py")
# 64 images over 2 ranks x batch 16: 2 optimizer steps per epoch (one process alone would take 4).
RUN = [
    "fit", "--config", str(QUICKSTART),
    "--data.init_args.num_train", "64", "--data.init_args.num_val", "32", "--data.init_args.batch_size", "16",
    "--model.model", "eca_mobilenetv2", "--model.model_args", "{width_mult: 0.25}",
    "--trainer.accelerator", "cpu", "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp",
    "--trainer.max_epochs", "1",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]
TIMEOUT = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", **extra}


def start_nodes(tmp_path: Path, commands: list[list[str]], envs: list[dict]) -> list[subprocess.Popen]:
    procs = []
    for rank, (command, env) in enumerate(zip(commands, envs)):
        cwd = tmp_path / f"node{rank}"
        cwd.mkdir()
        procs.append(subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))
    return procs


def finish(procs: list[subprocess.Popen], timeout: float = TIMEOUT) -> list[tuple[int, str]]:
    out = []
    try:
        for proc in procs:
            text, _ = proc.communicate(timeout=timeout)
            out.append((proc.returncode, text))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return out


def assert_trained_on_two_nodes(tmp_path: Path, results) -> None:
    for rank, (code, text) in enumerate(results):
        assert code == 0, f"node {rank}:\n{text[-3000:]}"
    last = tmp_path / "node0" / "runs" / "quickstart" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 2
    assert not (tmp_path / "node1" / "runs").exists()  # only global rank 0 writes checkpoints and logs


@pytest.mark.slow
def test_two_nodes_by_environment_variables(tmp_path):
    port = free_port()
    envs = [base_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank)) for rank in (0, 1)]
    procs = start_nodes(tmp_path, [[str(ATTNZOO), *RUN]] * 2, envs)
    assert_trained_on_two_nodes(tmp_path, finish(procs))


@pytest.mark.slow
def test_two_nodes_by_torchrun(tmp_path):
    port = free_port()
    commands = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                 "--node-rank", str(rank), "--master-addr", "127.0.0.1", "--master-port", str(port),
                 str(ATTNZOO), *RUN] for rank in (0, 1)]
    procs = start_nodes(tmp_path, commands, [base_env(), base_env()])
    assert_trained_on_two_nodes(tmp_path, finish(procs))


@pytest.mark.slow
def test_two_nodes_in_a_slurm_allocation(tmp_path):
    # What srun gives each task of `sbatch --nodes=2 --ntasks-per-node=1`; the master address comes from
    # SLURM_NODELIST, as on a cluster (Lightning's SLURMEnvironment).
    port = free_port()
    envs = [base_env(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="2", SLURM_NODEID=str(rank),
                     SLURM_PROCID=str(rank), SLURM_LOCALID="0", SLURM_JOB_NAME="attnzoo-fit", SLURM_JOB_ID="4242",
                     SLURM_NODELIST="127.0.0.1", MASTER_PORT=str(port)) for rank in (0, 1)]
    procs = start_nodes(tmp_path, [[str(ATTNZOO), *RUN]] * 2, envs)
    # No MASTER_ADDR and no NODE_RANK: had Lightning not read the SLURM variables, both would be rank 0.
    assert_trained_on_two_nodes(tmp_path, finish(procs))


@pytest.mark.slow
def test_a_hung_rank_ends_the_run_within_the_collective_timeout(tmp_path):
    port = free_port()
    marker = tmp_path / "paused"
    envs = [base_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NODE_RANK=str(rank)) for rank in (0, 1)]
    envs[1].update(ATTNZOO_TEST_PAUSE="batch:3", ATTNZOO_TEST_MARKER=str(marker))
    run = [*RUN, "--trainer.max_epochs", "3", "--collective_timeout", "0:00:15"]
    procs = start_nodes(tmp_path, [[str(ATTNZOO), *run], [sys.executable, str(PAUSABLE), *run]], envs)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not marker.exists():
            assert procs[1].poll() is None and time.monotonic() < deadline, "node 1 never reached its third batch"
            time.sleep(0.1)
        os.kill(int(marker.read_text()), signal.SIGSTOP)  # node 1 hangs in the middle of its third batch
        stopped = time.monotonic()
        text, _ = procs[0].communicate(timeout=15 + 90)
        waited = time.monotonic() - stopped
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert procs[0].returncode != 0
    assert waited < 15 + 60, waited  # Lightning's default would wait 30 minutes
    errors = [line for line in text.splitlines() if line.startswith("attnzoo: error:")]
    assert len(errors) == 1 and "--collective_timeout" in errors[0] and "0:00:15" in errors[0], text[-3000:]
    assert "Traceback" not in text
