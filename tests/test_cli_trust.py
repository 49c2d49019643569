"""What `attnzoo` does with what it is given: checkpoints that may not import, download or override; no silent
untrained model; one line for every mistake; last.ckpt and the learning rate of a finished run; predictions
that never overwrite a file. The console script runs in a subprocess, as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from test_cli import QUICKSTART, TINY, attnzoo

# A run without a config file: the model comes from the checkpoint (or the flags of each test).
SHAPES = [
    "--data", "attnzoo.data.ShapesDataModule", "--data.num_train", "32", "--data.num_val", "16",
    "--data.batch_size", "16", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
    "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
]


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("attnzoo: error: "), result.stderr[-3000:]
    return errors[0]


def variant(source: Path, folder: Path, **hparams) -> Path:
    checkpoint = torch.load(source, weights_only=True)
    for key, value in hparams.items():
        if isinstance(value, dict) and isinstance(checkpoint["hyper_parameters"].get(key), dict):
            value = {**checkpoint["hyper_parameters"][key], **value}
        checkpoint["hyper_parameters"][key] = value
    path = folder / "variant.ckpt"
    torch.save(checkpoint, path)
    return path


# ---- what a checkpoint may change ----------------------------------------------------------------------------


def test_a_checkpoint_cannot_import_a_class(tmp_path, tiny_checkpoint):
    evil = variant(tiny_checkpoint, tmp_path, optimizer={"class_path": "this.Zen"})
    result = attnzoo("validate", *SHAPES, "--ckpt_path", str(evil), cwd=tmp_path)
    line = one_error_line(result)
    assert "'this.Zen'" in line and "optimizer" in line and "refused" in line
    assert "Beautiful is better than ugly" not in result.stdout + result.stderr  # `import this` never ran


def test_a_checkpoint_cannot_start_a_download(tmp_path, tiny_checkpoint, hub):
    evil = variant(tiny_checkpoint, tmp_path, model_args={"backbone_weights": "hf-hub:evil-org/x"})
    result = attnzoo("validate", *SHAPES, "--ckpt_path", str(evil), cwd=tmp_path)  # HF_ENDPOINT: the test Hub
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.state.requests == []  # the Hub was never contacted
    assert "ignored the checkpoint's model_args.backbone_weights" in result.stderr
    assert "val/acc1" in result.stdout


def test_what_the_user_typed_wins_over_the_checkpoint(tmp_path, tiny_checkpoint):
    conflict = attnzoo("validate", *SHAPES, "--model.model", "se_mobilenetv2", "--model.label_smoothing", "0.3",
                       "--ckpt_path", str(tiny_checkpoint), cwd=tmp_path)
    line = one_error_line(conflict)
    assert "'se_mobilenetv2'" in line and "'eca_mobilenetv2'" in line

    other_shapes = attnzoo("validate", *SHAPES, "--model.model_args", "{width_mult: 0.5}", "--ckpt_path",
                           str(tiny_checkpoint), cwd=tmp_path)
    assert "does not fit the model built here" in one_error_line(other_shapes)

    resumed = attnzoo("fit", *SHAPES, "--model.label_smoothing", "0.3", "--trainer.max_epochs", "2",
                      "--trainer.default_root_dir", str(tmp_path / "run"), "--ckpt_path", str(tiny_checkpoint),
                      cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    hparams = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["label_smoothing"] == 0.3  # the flag, not the checkpoint's 0.0
    assert (hparams["model"], hparams["model_args"]) == ("eca_mobilenetv2", {"width_mult": 0.25})  # filled in


def test_checkpoint_files_that_are_not_checkpoints_are_one_line(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("hello, this is not a checkpoint\n")
    line = one_error_line(attnzoo("validate", *SHAPES, "--ckpt_path", str(text), cwd=tmp_path))
    assert "notes.ckpt' is not a PyTorch checkpoint" in line
    # Text whose first byte is no pickle opcode reaches torch's weights-only unpickler, which must not make it
    # a checkpoint "refused for needing code".
    markdown = tmp_path / "README.md"
    markdown.write_text("# attnzoo\n\nnot a checkpoint either\n")
    line = one_error_line(attnzoo("validate", *SHAPES, "--ckpt_path", str(markdown), cwd=tmp_path))
    assert "README.md' is not a PyTorch checkpoint" in line and "not a pickle" in line, line

    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(model="eca_r18")}, pickled)
    line = one_error_line(attnzoo("validate", *SHAPES, "--ckpt_path", str(pickled), cwd=tmp_path))
    assert "refused to load" in line and "argparse.Namespace" in line and "weights_only=True" in line

    plain = tmp_path / "weights.pth"
    torch.save({"conv.weight": torch.zeros(1)}, plain)
    line = one_error_line(attnzoo("validate", *SHAPES, "--ckpt_path", str(plain), cwd=tmp_path))
    assert "is not a Lightning checkpoint" in line


# ---- no silent untrained model -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "test", "predict"])
def test_evaluating_needs_weights_unless_random_ones_are_asked_for(tmp_path, command):
    line = one_error_line(attnzoo(command, "--config", str(QUICKSTART), *TINY, cwd=tmp_path))
    assert f"attnzoo {command} needs trained weights" in line and "--ckpt_path" in line and "--random_weights" in line
    if command == "predict":
        ok = attnzoo(command, "--config", str(QUICKSTART), *TINY, "--random_weights", cwd=tmp_path)
        assert ok.returncode == 0 and "val[0]" in ok.stdout, ok.stderr[-3000:]


# ---- one line, never a traceback -----------------------------------------------------------------------------


def test_config_files_that_are_not_yaml_are_named(tmp_path):
    broken = tmp_path / "recipe.yaml"
    broken.write_text("model:\n  model: [eca_r18\n")
    line = one_error_line(attnzoo("fit", "--config", str(broken), cwd=tmp_path))
    assert f"--config '{broken}' is not valid YAML" in line and "line" in line
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)))
    assert f"'{binary}'" in one_error_line(attnzoo("fit", "--config", str(binary), cwd=tmp_path))
    prose = tmp_path / "notes.yaml"
    prose.write_text("just some words\n")
    assert "is not a YAML mapping" in one_error_line(attnzoo("fit", "--config", str(prose), cwd=tmp_path))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer.strategy", "nonsense"], "--trainer.strategy 'nonsense' is not a strategy. Accepted: auto, ddp,"),
        (["--trainer.accelerator", "gpu"], "--trainer.accelerator gpu: this machine has no GPU"),
        (["--trainer.accelerator", "quantum"], "--trainer.accelerator 'quantum' is not an accelerator"),
        # A known accelerator that is not here: the same one line, named by the preflight.
        (["--trainer.accelerator", "tpu"], "--trainer.accelerator tpu: this machine has no tpu device"),
        (["--checkpoint.save_last", "true"], "--checkpoint.save_last"),
    ],
)
def test_trainer_mistakes_are_one_line(tmp_path, args, message):
    if "gpu" in args and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    line = one_error_line(attnzoo("fit", "--config", str(QUICKSTART), *TINY, *args, cwd=tmp_path))
    assert message in line
    if "gpu" in args or "tpu" in args:
        assert "Available here: cpu" in line
    assert not (tmp_path / "runs").exists()


# ---- a finished run, and predictions -------------------------------------------------------------------------


@pytest.mark.slow
def test_last_ckpt_is_the_final_state_and_the_learning_rate_is_logged(tmp_path):
    # "step" as the monitored value, minimised: the best checkpoint is epoch 0's and never improves after it.
    result = attnzoo("fit", "--config", str(QUICKSTART), *TINY, "--trainer.max_epochs", "2",
                     "--trainer.log_every_n_steps", "1", "--checkpoint.monitor", "step", "--checkpoint.mode", "min",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "runs" / "quickstart"
    last = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (1, 8)  # the end of the run, not the best epoch
    best = [p.name for p in (folder / "checkpoints").glob("best-*.ckpt")]
    assert len(best) == 1 and best[0].startswith("best-epoch000-")
    header = (folder / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert any(name.startswith("lr-AdamW") for name in header), header


@pytest.mark.slow
def test_predict_never_overwrites_and_gives_unreadable_images_no_prediction(tmp_path, tiny_checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 40), (200, 30, 30)).save(images / "a.png")
    (images / "b.jpg").write_bytes(b"not a jpeg at all")
    out = tmp_path / "preds.jsonl"
    out.write_text("yesterday's predictions\n")
    args = ["predict", *SHAPES, "--data.predict_path", str(images), "--ckpt_path", str(tiny_checkpoint),
            "--predictions.output_file", str(out)]
    line = one_error_line(attnzoo(*args, cwd=tmp_path))
    assert f"'{out}' exists" in line and "--predictions.overwrite true" in line
    assert out.read_text() == "yesterday's predictions\n"

    result = attnzoo(*args, "--predictions.overwrite", "true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {Path(row["input"]).name: row for row in map(json.loads, out.read_text().splitlines())}
    assert rows["b.jpg"] == {"input": str(images / "b.jpg"), "error": "unreadable image"}
    assert len(rows["a.png"]["classes"]) == 5 and "error" not in rows["a.png"]
    assert f"{images / 'b.jpg'}: no prediction (unreadable image)" in result.stdout
    assert os.path.getsize(out) > 0
