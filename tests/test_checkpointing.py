"""The parts under the trusted checkpoints, in-process: atomic writes, cleanup of killed writers' temporary
files, what a checkpoint's hyper-parameters may fill in, and which options count as the user's."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from attnzoo.errors import AttnzooError
from attnzoo.training import checkpoint_policy as policy
from attnzoo.training.checkpointing import atomic_torch_save, remove_stale_partials
from attnzoo.training.module import ImageClassifier


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_a_failed_write_keeps_the_previous_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "last.ckpt"
    atomic_torch_save({"step": 1}, target)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        atomic_torch_save({"step": 2, "bad": Unpicklable()}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_only_dead_or_abandoned_writers_lose_their_temporary_files(tmp_path):
    from attnzoo.files import partial_path

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    mine = partial_path(tmp_path / "last.ckpt").name  # .last.ckpt.writer-<pid>-<host>.partial
    assert mine.startswith(f".last.ckpt.writer-{os.getpid()}-") and mine.endswith(".partial")
    files = {
        "dead": tmp_path / mine.replace(f"-{os.getpid()}-", f"-{dead.stdout.strip()}-"),
        "alive": tmp_path / mine,
        "other_host_recent": tmp_path / ".last.ckpt.writer-1-node7_cluster_org.partial",
        "other_host_old": tmp_path / ".best.ckpt.writer-2-node7_cluster_org.partial",
    }
    for path in files.values():
        path.write_bytes(b"half a checkpoint")
    old = time.time() - 3600
    os.utime(files["other_host_old"], (old, old))
    (tmp_path / "last.ckpt").write_bytes(b"complete")
    removed = {p.name for p in remove_stale_partials(tmp_path)}
    assert removed == {files["dead"].name, files["other_host_old"].name}
    assert (tmp_path / "last.ckpt").read_bytes() == b"complete"


def test_explicit_options_come_from_flags_and_config_files(tmp_path):
    config = tmp_path / "recipe.yaml"
    config.write_text("model:\n  model: eca_r50\n  optimizer:\n    class_path: torch.optim.SGD\ntrainer:\n  max_epochs: 3\n")
    nested = tmp_path / "top.yaml"
    nested.write_text("fit:\n  model:\n    label_smoothing: 0.1\n")
    argv = ["fit", "--config", str(config), f"--config={nested}", "--model.top_k=3", "--model.init_args.mixup_alpha",
            "0.2", "--model", "{no_weight_decay: none}", "--trainer.max_epochs", "5"]
    assert policy.explicit_model_options(argv, ("fit",)) == {
        "model", "optimizer", "label_smoothing", "top_k", "mixup_alpha", "no_weight_decay"}


def test_checkpoint_hyper_parameters_fill_in_only_what_is_safe():
    accepted = policy.accepted_options(ImageClassifier)
    hparams = {
        "model": "eca_r18", "num_classes": 10, "class_names": ["a"], "_instantiator": "x.y",
        "model_args": {"drop_rate": 0.1, "backbone_weights": "hf-hub:evil-org/x"},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
        "label_smoothing": 0.1, "from_a_future_version": 1,
    }
    options, notes = policy.model_options_from_checkpoint(hparams, accepted, {"label_smoothing"}, "x.ckpt")
    assert options == {"model": "eca_r18", "model_args": {"drop_rate": 0.1},
                       "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}}}
    assert notes and "backbone_weights" in notes[0]
    for bad, message in [
        ({"lr_scheduler": {"class_path": "os.system"}}, "'os.system'"),
        ({"model_args": {"attention_kwargs": {"class_path": "evil.Gate"}}}, "'evil.Gate'"),
        ({"model": {"class_path": "torch.nn.Identity"}}, "not a registry name"),
        ({"top_k": [1, 2]}, "not a plain value"),
    ]:
        with pytest.raises(AttnzooError, match=message):
            policy.model_options_from_checkpoint(bad, accepted, set(), "x.ckpt")
    # A foreign class is no matter when the user gives that option themselves.
    assert policy.model_options_from_checkpoint({"optimizer": {"class_path": "mypkg.Lion"}}, accepted,
                                                {"optimizer"}, "x.ckpt") == ({}, [])


def test_architecture_conflicts_name_both():
    policy.check_architecture("r50", "resnet50", "x.ckpt", "--model.model")  # one model under two names: fine
    with pytest.raises(AttnzooError, match="'se_r18'.*'eca_r18'"):
        policy.check_architecture("eca_r18", "se_r18", "x.ckpt", "--model.model")
    small = {"fc.weight": torch.zeros(5, 8)}
    with pytest.raises(AttnzooError, match=r"shapes differ for fc.weight \[10, 8\] \(model: \[5, 8\]\)"):
        policy.check_state_fits(small, {"fc.weight": torch.zeros(10, 8)}, "x.ckpt", "r18")
