"""Running a study's fits: each (model, seed) an ordinary ``attnzoo fit`` in its own process.

A separate process per run (``python -m attnzoo fit``, the interpreter and attnzoo that run this) keeps runs
apart (no state leaks from one model into the next), lets a run be killed and resumed on its own, and is what a
SLURM task does too. A run folder is locked (``flock``) for as long as its fit lives: the lock's file descriptor
is handed to the fit, so it stays held even when this process is killed, and a second ``attnzoo compare`` on
the same folder (another shell, another array task, ``--parallel``) leaves a running fit alone.

Every fit starts with ``--ckpt_path last``: the first time from scratch, after an interruption from the run's
``last.ckpt``, which continues exactly (see :mod:`attnzoo.training.checkpointing`).
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from attnzoo.compare.results import read_result
from attnzoo.compare.study import Run, Study, write_json

LOG_TAIL_CHARS = 2000
# A fit ended by a signal (SIGTERM saves its step first; SIGINT, SIGKILL) was stopped, not failed: continue it.
STOPPED = {128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL}


def fit_command(study: Study, run: Run) -> list[str]:
    """The ``attnzoo fit`` of ``run``: the study's recipe, in which only the model and the seed change (and where
    it writes: the run's folder, logged as CSV so that the study can read every epoch's validation)."""
    return [
        sys.executable, "-m", "attnzoo", "fit", "--config", str(study.recipe.resolve()),
        "--model.model", run.model,
        "--seed_everything", str(run.seed),
        "--trainer.default_root_dir", str(run.folder.resolve()),
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(run.folder.resolve()),
        "--trainer.logger.name", "logs",
        "--ckpt_path", "last",
    ]


def _lock(run: Run) -> int | None:
    """A held lock on the run's folder (its file descriptor), or None when a live fit holds it."""
    run.folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(run.folder / ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def is_running(run: Run) -> bool:
    """A fit holds the run's lock right now (on this machine's view of the file system)."""
    if not (run.folder / ".lock").exists():
        return False
    fd = _lock(run)
    if fd is None:
        return True
    os.close(fd)
    return False


def state(run: Run) -> str:
    """pending, running, interrupted (a fit started and died without finishing), finished or failed."""
    recorded = run.status().get("state", "pending")
    if recorded == "running" and not is_running(run):
        return "interrupted"
    return recorded


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_TAIL_CHARS))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _error_line(log_tail: str) -> str:
    """The line that says what went wrong: attnzoo's own one-line error, else the last line of a traceback.
    (A progress bar redraws with carriage returns: those end lines too.)"""
    lines = [line.strip() for line in re.split(r"[\r\n]+", log_tail) if line.strip()]
    for line in reversed(lines):
        if "attnzoo: error:" in line:
            return line[line.index("attnzoo: error:"):]
    return lines[-1] if lines else "no output"


@dataclass
class Started:
    run: Run
    process: subprocess.Popen
    lock_fd: int
    started: float
    resumed: bool
    earlier_seconds: float = 0.0  # the run's parts before this one whose end was recorded


@dataclass
class Progress:
    """What the progress lines count. Finished and failed runs are counted in the study folder at each line,
    since other processes (a second shell, array tasks) finish runs too; durations are this process's own."""

    runs: list[Run]
    durations: list[float] = field(default_factory=list)
    log: object = print

    def line(self, text: str) -> None:
        if self.log:
            self.log(text, flush=True) if self.log is print else self.log(text)

    def counts(self) -> tuple[int, int]:
        states = [state(run) for run in self.runs]
        return states.count("finished"), states.count("failed")


def start(study: Study, run: Run, env: dict | None = None) -> Started | None:
    """Start the fit of ``run`` unless a live fit holds its folder or it has finished. Its output goes to ``fit.log`` (appended:
    a resumed run keeps the log of its first part)."""
    lock_fd = _lock(run)
    if lock_fd is None:
        return None
    if run.status().get("state") == "finished":  # by another process, since this one made its list
        os.close(lock_fd)
        return None
    resumed = run.last_checkpoint.exists()
    before = run.status()
    # A part killed outright (SIGKILL, a lost node) recorded no end, so its time is missing from the total.
    earlier = float(before.get("total_seconds", before.get("seconds", 0.0))) if resumed else 0.0
    log = open(run.folder / "fit.log", "ab")
    try:
        process = subprocess.Popen(fit_command(study, run), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env=env, pass_fds=(lock_fd,))
    finally:
        log.close()
    write_json(run.folder / "status.json", {"state": "running", "pid": process.pid, "host": socket.gethostname(),
                                             "started": time.time(), "resumed": resumed, "total_seconds": earlier})
    return Started(run, process, lock_fd, time.monotonic(), resumed, earlier)


def finish(started: Started, returncode: int) -> dict:
    """Record how the fit ended: finished (with its result) or failed (with the line that says why)."""
    run, elapsed = started.run, time.monotonic() - started.started
    status = {"state": "failed", "returncode": returncode, "seconds": elapsed, "resumed": started.resumed,
              "total_seconds": started.earlier_seconds + elapsed}
    if returncode == 0:
        result = read_result(run.folder)
        if result is None:
            status["error"] = "the fit ended without a validation result in its logs"
        else:
            write_json(run.folder / "result.json", result)
            status["state"] = "finished"
    elif returncode in STOPPED:
        status["state"] = "interrupted"
    else:
        status["error"] = _error_line(_tail(run.folder / "fit.log"))
    write_json(run.folder / "status.json", status)
    os.close(started.lock_fd)
    return status


def _child_env(parallel: int) -> dict:
    """With several fits at once, each gets its share of the cores (unless the user set OMP_NUM_THREADS)."""
    env = dict(os.environ)
    if parallel > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def run_local(study: Study, parallel: int = 1, log=print) -> dict[str, int]:
    """Run every run of ``study`` that has not finished, ``parallel`` at a time, with a progress line as each
    starts and ends. A run that failed before is tried again (resuming from its ``last.ckpt``); one that
    another process is running is left to it. Returns the count of runs in each state at the end.

    SIGTERM or Ctrl-C stops the fits (each saves its current step to ``last.ckpt``); the next call continues.
    """
    runs = study.runs()
    progress = Progress(runs, log=log)
    todo = []
    for run in runs:
        current = state(run)
        if current == "finished":
            continue
        if current == "running":
            progress.line(f"[{run.label}] running in another process (pid {run.status().get('pid')}); left to it")
        else:
            todo.append(run)
    progress.line(f"study {study.folder}: {len(runs)} runs ({len(study.models)} models x {study.seeds} seeds), "
                  f"{progress.counts()[0]} finished, {len(todo)} to run, {parallel} at a time")
    env = _child_env(parallel)
    live: list[Started] = []
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)
        for item in live:
            if item.process.poll() is None:
                item.process.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while (todo and not stopping) or live:
            while todo and not stopping and len(live) < parallel:
                run = todo.pop(0)
                started = start(study, run, env)
                if started is None:
                    if state(run) == "finished":
                        progress.line(f"[{run.label}] finished by another process")
                    else:
                        progress.line(f"[{run.label}] running in another process; left to it")
                    continue
                live.append(started)
                how = "resuming from last.ckpt" if started.resumed else "starting"
                progress.line(f"[run {runs.index(run) + 1}/{len(runs)}] {run.label}: {how} "
                              f"(log: {run.folder / 'fit.log'})")
            time.sleep(0.2)
            for item in [item for item in live if item.process.poll() is not None]:
                live.remove(item)
                _report_end(item, finish(item, item.process.returncode), progress, parallel, len(todo) + len(live))
    except KeyboardInterrupt:  # Ctrl-C reached the fits too (same terminal): each saves its step and ends
        stop(signal.SIGINT, None)
        for item in live:
            finish(item, item.process.wait())
    finally:
        signal.signal(signal.SIGTERM, previous)
    if stopping:
        progress.line("stopped: each interrupted fit saved its step to last.ckpt; run the same command to continue")
        raise SystemExit(128 + stopping[0])
    return {name: sum(state(run) == name for run in runs)
            for name in ("finished", "failed", "interrupted", "running", "pending")}


def _report_end(item: Started, status: dict, progress: Progress, parallel: int, remaining: int) -> None:
    elapsed = _duration(status["seconds"])
    if status["state"] == "finished":
        progress.durations.append(status["seconds"])
        result = item.run.result() or {}
        top1 = result.get("final", {}).get("top1")
        what = f"finished in {elapsed}" + (f", final val top-1 {100 * top1:.2f}%" if top1 is not None else "")
    elif status["state"] == "interrupted":
        what = f"stopped after {elapsed}; last.ckpt holds its last step"
    else:
        what = f"FAILED after {elapsed} (exit {status['returncode']}): {status.get('error', '')}"
    eta = ""
    if progress.durations and remaining:
        mean = sum(progress.durations) / len(progress.durations)
        eta = f", about {_duration(mean * remaining / parallel)} to go"
    finished, failed = progress.counts()
    progress.line(f"[{item.run.label}] {what} | study: {finished}/{len(progress.runs)} finished, {failed} failed{eta}")


def run_task(study: Study, index: int, log=print) -> int:
    """One run of the study by its index in :meth:`Study.runs` (a SLURM array task's ``SLURM_ARRAY_TASK_ID``).

    In a task with several ranks (``srun`` with ``--ntasks-per-node`` GPUs, the multi-GPU path of
    docs/training.md), every rank runs the same fit, as Lightning expects, and rank 0 keeps the run's records.
    Returns the fit's exit code (0 for a run already finished or running elsewhere).
    """
    runs = study.runs()
    if not 0 <= index < len(runs):
        from attnzoo.errors import AttnzooError

        raise AttnzooError(f"--task {index}: the study has runs 0..{len(runs) - 1} "
                           f"({len(study.models)} models x {study.seeds} seeds).")
    run = runs[index]
    if state(run) == "finished":
        log(f"[{run.label}] already finished")
        return 0
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and os.environ.get("SLURM_PROCID", "0") != "0":
        return subprocess.call(fit_command(study, run), stdin=subprocess.DEVNULL)
    started = start(study, run)
    if started is None:
        log(f"[{run.label}] {'already finished' if state(run) == 'finished' else 'running in another process; left to it'}")
        return 0
    log(f"[task {index}] {run.label}: {'resuming from last.ckpt' if started.resumed else 'starting'}")
    status = finish(started, started.process.wait())
    progress = Progress(runs, log=log)
    _report_end(started, status, progress, 1, 0)
    return 0 if status["state"] == "finished" else status["returncode"] or 1
