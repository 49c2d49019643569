"""What attnzoo writes, on a machine that refuses: a full disk, a read-only folder, a file where a folder goes,
/proc. Every output is whole or absent (the old file stays until the new one is complete), a killed writer's
leftovers do not block the rerun, where an output goes is checked before the work, and a refusal is one line.

The full disk and the read-only folder are real where the test may mount a small tmpfs (root in a container
with CAP_SYS_ADMIN); a failure at the write call itself (ENOSPC from ``open(...).write``) covers every writer
on any machine.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnzoo.cli import main
from attnzoo.files import STALE_AFTER_S, CannotWrite
from test_cli import ATTNZOO
from test_cli_trust import SHAPES

TINY_MODEL = {"width_mult": 0.25}


# ---- machines that refuse -----------------------------------------------------------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """``mount(size)``: a fresh tmpfs of ``size`` (e.g. "16k") at a new folder; ``read_only(folder)`` remounts
    it read-only. Skips where this machine does not let the test mount (not root, no CAP_SYS_ADMIN)."""
    mounted = []

    def mount(size: str = "1m") -> Path:
        folder = tmp_path / f"mount{len(mounted)}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); the simulated "
                        "write failures cover the same writers")
        mounted.append(folder)
        return folder

    def read_only(folder: Path) -> Path:
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        return folder

    mount.read_only = read_only
    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def full_disk(monkeypatch):
    """``fill(folder, room=100)``: from now on, a file opened for writing under ``folder`` takes ``room`` bytes,
    then its ``write`` fails with ENOSPC, as on a full disk (the operating system's answer, at the write call)."""
    real_open = builtins.open
    folders: list[str] = []
    room = [100]

    class FullDiskFile:
        def __init__(self, handle):
            self._handle, self._written = handle, 0

        def write(self, data):
            self._written += len(data)
            if self._written > room[0]:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return self._handle.write(data)

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

        def __iter__(self):
            return iter(self._handle)

    def fake_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        writing = any(flag in mode for flag in "wax+")
        # The pre-check's probe file passes: the disk fills under the writer itself, whose atomicity is tested.
        probe = ".attnzoo-probe." in os.path.basename(os.fspath(file)) if isinstance(file, (str, os.PathLike)) else False
        if writing and not probe and isinstance(file, (str, os.PathLike)) and any(
                os.path.abspath(file).startswith(folder) for folder in folders):
            return FullDiskFile(handle)
        return handle

    def fill(folder: Path, bytes_per_file: int = 100) -> None:
        room[0] = bytes_per_file
        folders.append(os.path.abspath(folder) + os.sep)
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)  # pathlib's write_text opens files through io.open

    return fill


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``, hidden ones included, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys_or_result, code: int = 1) -> str:
    if isinstance(capsys_or_result, subprocess.CompletedProcess):
        err, returncode = capsys_or_result.stderr, capsys_or_result.returncode
    else:
        err, returncode = capsys_or_result
    assert returncode == code, (returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("attnzoo: error: ")]
    assert len(errors) == 1, err[-3000:]
    return errors[0]


def run_main(capsys, *args) -> tuple[str, int, str]:
    """(stderr, exit code, stdout) of ``attnzoo ARGS`` run in this process."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    captured = capsys.readouterr()
    return captured.err, exit_info.value.code, captured.out


# ---- every writer: the old file whole, nothing half-written ---------------------------------------------------

def _checkpoint(folder: Path, version: int) -> None:
    from attnzoo.training.checkpointing import atomic_torch_save

    atomic_torch_save({"version": torch.arange(1000) + version}, folder / "last.ckpt")


def _weights(folder: Path, version: int) -> None:
    import attnzoo

    torch.manual_seed(version)
    model = attnzoo.create_model("mobilenetv2", num_classes=3, **TINY_MODEL)
    attnzoo.save_pretrained(model, folder, overwrite=True, metrics={"val/acc1": 0.5 + version / 10})


def _evaluation(folder: Path, version: int) -> None:
    from attnzoo.weights.evaluate import record_evaluation

    if version == 0:
        _weights(folder, 0)
    result = {"top1": 0.5, "top5": 0.9, "images": 10 + version, "classes": 3, "unreadable": 0,
              "class_mapping": "order"}
    record_evaluation(folder, "shapes", "data", result, overwrite=True)


def _bench(folder: Path, version: int) -> None:
    from attnzoo.bench import write

    write({"rows": [{"model": "r18", "compile": "eager", "task": "infer", "error": None}] * (20 + version),
           "version": version}, folder, plot=False)


def _figure(folder: Path, version: int) -> None:
    pytest.importorskip("matplotlib")
    from attnzoo.analysis import figures

    figure = figures._figure(2 + version, 2)
    figure.suptitle(f"version {version}")
    figures.save(figure, folder / "figure.png")


@pytest.mark.parametrize("writer", [_checkpoint, _weights, _evaluation, _bench, _figure],
                         ids=["checkpoint", "weights", "config.json and card", "bench results", "explain figure"])
def test_a_full_disk_keeps_every_old_file_whole_and_leaves_nothing(writer, tmp_path, full_disk):
    folder = tmp_path / "out"
    folder.mkdir()
    writer(folder, 0)
    before = snapshot(folder)
    assert before
    full_disk(folder)
    with pytest.raises(CannotWrite) as refused:
        writer(folder, 1)
    message = str(refused.value)
    assert "no space left on the device" in message and str(folder) in message and "\n" not in message
    assert "nothing was done" not in message  # the writer itself met the full disk, not the pre-check's probe
    assert snapshot(folder) == before  # same names, same bytes: no old file lost, no partial one left


def test_predictions_on_a_full_disk_keep_the_old_file_or_leave_none(tmp_path, full_disk):
    """The predictions writer, as `attnzoo predict` runs it (Lightning calls its hooks)."""
    import lightning as L

    from attnzoo.data import ShapesDataModule
    from attnzoo.training import ImageClassifier
    from attnzoo.training.callbacks import PredictionWriter

    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        Image.new("RGB", (32, 32), (6 * i, 20, 90)).save(images / f"{i}.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.jsonl").write_text("yesterday's predictions\n")
    full_disk(out, bytes_per_file=4096)  # room for the check before predicting, not for 40 predictions
    data = ShapesDataModule(num_train=16, num_val=16, batch_size=4, predict_path=str(images))
    model = ImageClassifier("mobilenetv2", num_classes=data.num_classes, model_args=TINY_MODEL,
                            class_names=data.class_names, preprocessing=data.preprocessing)
    for name, overwrite in (("old.jsonl", True), ("new.jsonl", False)):
        trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                            callbacks=[PredictionWriter(str(out / name), overwrite=overwrite, print_limit=0)])
        with pytest.raises(CannotWrite, match=f"cannot write '{out / name}': no space left"):
            trainer.predict(model, datamodule=data)
        assert snapshot(out) == {"old.jsonl": b"yesterday's predictions\n"}  # and no 0-byte new.jsonl


# ---- a real full disk and a real read-only folder, through the command line ------------------------------------

def attnzoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([str(ATTNZOO), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_predict_on_a_real_full_disk_keeps_yesterdays_predictions(tmp_path, tmpfs, tiny_checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        Image.new("RGB", (32, 32), (6 * i, 20, 90)).save(images / f"image_with_a_long_name_{i:03d}.png")
    disk = tmpfs("16k")  # four pages: yesterday's predictions take three, and today's need as many
    yesterday = disk / "predictions.jsonl"
    yesterday.write_text(json.dumps({"input": "x" * 9000}) + "\n")
    kept = yesterday.read_bytes()
    args = ["predict", *SHAPES, "--model.model", "eca_mobilenetv2", "--data.predict_path", str(images),
            "--ckpt_path", str(tiny_checkpoint), "--predictions.print_limit", "0"]

    result = attnzoo(*args, "--predictions.output_file", str(yesterday), "--predictions.overwrite", "true",
                     cwd=tmp_path)
    line = one_line(result)
    assert f"cannot write '{yesterday}': no space left on the device" in line
    assert snapshot(disk) == {"predictions.jsonl": kept}

    (disk / "filler").write_bytes(b"\0" * 4096)  # now not even a page is free: refused before predicting
    result = attnzoo(*args, "--predictions.output_file", str(disk / "today.jsonl"), cwd=tmp_path)
    line = one_line(result)
    assert f"cannot write --predictions.output_file '{disk / 'today.jsonl'}': no space left" in line
    assert sorted(snapshot(disk)) == ["filler", "predictions.jsonl"]  # no 0-byte today.jsonl to block a rerun


def test_fit_that_fills_a_real_disk_ends_in_one_line_and_leaves_no_partial_checkpoint(tmp_path, tmpfs, capsys):
    disk = tmpfs("64k")  # room for the check before training and config.yaml, not for a checkpoint
    err, code, _ = run_main(capsys, "fit", *SHAPES, "--model.model", "mobilenetv2", "--model.model_args",
                         json.dumps(TINY_MODEL), "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1",
                         "--trainer.default_root_dir", str(disk))
    line = one_line((err, code))
    assert "no space left on the device" in line and str(disk) in line, line
    assert not [p for p in disk.rglob("*") if p.name.endswith(".partial") or p.suffix == ".ckpt"]


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    import attnzoo

    folder = tmp_path_factory.mktemp("weights") / "weights"
    model = attnzoo.create_model("mobilenetv2", num_classes=3, **TINY_MODEL)
    attnzoo.save_pretrained(model, folder, class_names=["a", "b", "c"])
    return folder


def _outputs(kind: str, tmp_path: Path, tmpfs) -> Path:
    """A folder no output can go to: a read-only file system, a path below a file, or /proc."""
    if kind == "read-only":
        return tmpfs.read_only(tmpfs("64k"))
    if kind == "a file in the way":
        (tmp_path / "a-file").write_text("")
        return tmp_path / "a-file" / "sub"
    return Path("/proc/attnzoo-test")


CAUSES = {"read-only": "the file system is read-only", "a file in the way": "is a file, not a folder",
          "/proc": "/proc"}


@pytest.mark.parametrize("kind", list(CAUSES))
@pytest.mark.parametrize("command", ["fit", "predict", "export", "export-pt2", "convert", "bench", "explain"])
def test_an_output_that_cannot_be_written_is_one_line_before_the_work(command, kind, tmp_path, tmpfs, capsys,
                                                                      tiny_checkpoint, weights_dir):
    target = _outputs(kind, tmp_path, tmpfs)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(images / "a.png")
    release = tmp_path / "release.pth"
    torch.save({}, release)
    lightning = [*SHAPES, "--model.model", "eca_mobilenetv2", "--model.model_args", json.dumps(TINY_MODEL)]
    args = {
        "fit": ["fit", *lightning, "--trainer.max_steps", "1", "--trainer.default_root_dir", str(target)],
        "predict": ["predict", *lightning, "--data.predict_path", str(images), "--ckpt_path", str(tiny_checkpoint),
                    "--predictions.output_file", str(target / "predictions.jsonl")],
        "export": ["export", str(tiny_checkpoint), "--out", str(target / "weights")],
        "export-pt2": ["export", str(weights_dir), "--format", "pt2", "--out", str(target / "model.pt2")],
        "convert": ["convert", str(release), "--from", "torchvision", "--model", "r18", "--out", str(target / "r18")],
        "bench": ["bench", "--models", "mobilenetv2", "--model_args", json.dumps(TINY_MODEL), "--resolutions", "32",
                  "--batch_sizes", "1", "--compile", "eager", "--repeats", "1", "--warmup", "0", "--min_time", "0",
                  "--graph_breaks", "false", "--out_dir", str(target)],
        "explain": ["explain", str(weights_dir), "--images", str(images), "--out", str(target / "explained")],
    }[command]
    err, code, out = run_main(capsys, *args)
    line = one_line((err, code))
    assert "cannot write" in line and str(target) in line and CAUSES[kind] in line, line
    assert "warmed" not in err + out and "predictions written" not in err + out  # refused before the work


def test_evaluate_into_a_read_only_weights_folder_is_refused_before_evaluating(tmp_path, tmpfs, capsys, weights_dir):
    import shutil

    disk = tmpfs("4m")
    shutil.copytree(weights_dir, disk / "weights")
    tmpfs.read_only(disk)
    data = tmp_path / "data"
    for name in ("a", "b", "c"):
        (data / name).mkdir(parents=True)
        Image.new("RGB", (32, 32), (200, 30, 30)).save(data / name / "x.png")
    err, code, _ = run_main(capsys, "evaluate", str(disk / "weights"), "--data", str(data), "--dataset", "shapes",
                         "--num_workers", "0")
    line = one_line((err, code))
    assert f"'{disk / 'weights'}'" in line and "the file system is read-only" in line
    assert "top-1" not in capsys.readouterr().out


# ---- a killed writer ------------------------------------------------------------------------------------------

def test_a_killed_export_or_convert_does_not_block_the_rerun(tmp_path, capsys, tiny_checkpoint):
    out = tmp_path / "weights"
    out.mkdir()
    # A writer killed (SIGKILL: nothing of it runs after) halfway through writing the weights directory.
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import os, signal
        from attnzoo.files import staging_folder
        with staging_folder({str(out)!r}) as folder:
            (folder / "model.safetensors").write_bytes(b"half of the weights")
            os.kill(os.getpid(), signal.SIGKILL)
        """)], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert killed.returncode == -signal.SIGKILL
    leftovers = [p.name for p in out.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".attnzoo-")
    # A temporary folder of an earlier attnzoo (named by tempfile, no writer in the name), long abandoned.
    old = out / ".attnzoo-tmp-k2j4h1"
    old.mkdir()
    (old / "config.json").write_text("{")
    stale = time.time() - STALE_AFTER_S - 60
    os.utime(old, (stale, stale))

    main(["export", str(tiny_checkpoint), "--out", str(out)])
    assert "wrote eca_mobilenetv2" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]


def test_a_live_writers_temporary_files_are_left_alone(tmp_path):
    from attnzoo.files import partial_path, remove_stale, staging_folder

    mine = partial_path(tmp_path / "a.json")
    mine.write_text("being written")
    with staging_folder(tmp_path) as folder:
        assert remove_stale(tmp_path) == [] and folder.is_dir() and mine.exists()
    assert not folder.exists()


# ---- a benchmark that is killed keeps what it measured ---------------------------------------------------------

@pytest.mark.slow
def test_a_killed_benchmark_keeps_the_rows_it_finished(tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    bench = subprocess.Popen(
        [str(ATTNZOO), "bench", "--models", "mobilenetv2", "--model_args", json.dumps(TINY_MODEL), "--tasks", "infer",
         "--resolutions", "32", "48", "--batch_sizes", "1", "--compile", "eager", "--repeats", "1", "--warmup", "0", "--min_time", "0",
         "--graph_breaks", "false", "--memory", "false", "--threads", "1", "--out_dir", str(out)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    try:
        for line in bench.stdout:
            seen.append(line)
            if "[2/2]" in line:  # the first setting is measured, and written before this line
                bench.kill()
                break
    finally:
        bench.kill()
        bench.wait(timeout=60)
    assert any("[1/2]" in line for line in seen), "".join(seen)[-2000:]
    results = json.loads((out / "bench.json").read_text())
    assert results["complete"] is False
    assert [(row["model"], row["resolution"]) for row in results["rows"]] == [("mobilenetv2", 32)]
    assert (out / "bench.csv").read_text().count("\n") == 2  # the header and the finished row
    assert sorted(p.name for p in out.iterdir()) == ["bench.csv", "bench.json"]
