"""The LightningModule and its parts: parameter groups, schedules, mixing, freezing, EMA, checkpoints, compile."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

import attnzoo
from attnzoo.attention import GCT, AttentionModule
from attnzoo.data import ShapesDataModule
from attnzoo.errors import AttnzooError
from attnzoo.training import (
    ImageClassifier,
    WarmupCosineLR,
    WarmupStepLR,
    load_checkpoint_model,
    parameter_groups,
)
from attnzoo.training.mixing import MixupCutmix


def tiny_trainer(tmp_path, **kwargs) -> L.Trainer:
    options = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(kwargs)
    return L.Trainer(**options)


def tiny_data(**kwargs) -> ShapesDataModule:
    return ShapesDataModule(num_train=32, num_val=16, image_size=32, batch_size=8, **kwargs)


# ---- parameter groups ----------------------------------------------------------------------------------------


def test_paper_default_excludes_exactly_gct_beta():
    model = attnzoo.create_model("gct_r18", num_classes=10)
    decay, no_decay = parameter_groups(model, "gct_beta")
    betas = [m.beta for m in model.modules() if isinstance(m, GCT)]
    assert betas and {id(p) for p in no_decay["params"]} == {id(p) for p in betas}
    assert no_decay["weight_decay"] == 0.0 and "weight_decay" not in decay
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_norm_bias_gate_excludes_by_module_type():
    model = attnzoo.create_model("gct_r18", num_classes=10)
    decay, no_decay = parameter_groups(model, "norm_bias_gate")
    excluded = {id(p) for p in no_decay["params"]}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            is_norm = isinstance(module, (nn.BatchNorm2d, GCT))
            assert (id(param) in excluded) == (is_norm or name == "bias"), (type(module).__name__, name)
    assert all(p.ndim > 1 for p in decay["params"])  # only conv and linear weights decay


def test_no_exclusion_and_plain_models():
    model = attnzoo.create_model("eca_r18", num_classes=10)
    assert len(parameter_groups(model, "none")) == 1
    assert len(parameter_groups(model, "gct_beta")) == 1  # no GCT: nothing excluded
    with pytest.raises(AttnzooError, match="no_weight_decay"):
        parameter_groups(model, "bias")


# ---- schedules and mixing ------------------------------------------------------------------------------------


def _lrs(scheduler, steps):
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_gct_schedule_one_warmup_epoch_then_step_decay():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    lrs = _lrs(WarmupStepLR(opt, step_size=30, warmup_epochs=1, warmup="constant", warmup_start_factor=0.1), 95)
    assert lrs[0] == pytest.approx(0.01)
    assert lrs[1] == lrs[29] == pytest.approx(0.1)
    assert lrs[30] == pytest.approx(0.01) and lrs[60] == pytest.approx(0.001) and lrs[90] == pytest.approx(1e-4)


def test_warmup_cosine_per_step_when_bound():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosineLR(opt, warmup_epochs=1, warmup_start_factor=0.0)
    scheduler.bind(steps_per_epoch=10, max_epochs=3)
    lrs = _lrs(scheduler, 31)
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert lrs[20] == pytest.approx(0.5) and lrs[30] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(AttnzooError, match="max_epochs"):
        WarmupCosineLR(opt, warmup_epochs=5).bind(10, None)


def test_cutmix_targets_follow_pasted_area():
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 8, 8).clone()
    labels = torch.tensor([0, 1, 2, 3])
    mixed, targets = MixupCutmix(4, cutmix_alpha=1.0)(images, labels)
    assert torch.allclose(targets.sum(1), torch.ones(4))
    share_own = (mixed[0, 0] == 0).float().mean()  # image 0 is mixed with image 3
    assert targets[0, 0] == pytest.approx(share_own.item()) and targets[0, 3] == pytest.approx(1 - share_own.item())
    _, smoothed = MixupCutmix(4, mixup_alpha=0.2, label_smoothing=0.1)(images, labels)
    assert smoothed.min() >= 0.1 / 4 - 1e-6


# ---- the module ------------------------------------------------------------------------------------------------


def test_module_from_name_and_from_module():
    clf = ImageClassifier("eca_r18", num_classes=10, class_names=[f"c{i}" for i in range(10)])
    assert clf.model.config.architecture == "eca_r18" and clf.num_classes == 10
    assert clf.hparams.model == "eca_r18"
    net = attnzoo.create_model("se_r18", num_classes=1000)
    clf = ImageClassifier(net, num_classes=5)
    assert clf.model.get_classifier().out_features == 5 and "model" not in clf.hparams
    with pytest.raises(AttnzooError, match="unknown model"):
        ImageClassifier("eca_r19", num_classes=10)
    with pytest.raises(AttnzooError, match="class names"):
        ImageClassifier("eca_r18", num_classes=10, class_names=["a"])


def test_uint8_input_is_normalised_with_the_preprocessing():
    clf = ImageClassifier("r18", num_classes=2, preprocessing={"mean": [0.5] * 3, "std": [0.25] * 3})
    x = torch.full((1, 3, 4, 4), 191, dtype=torch.uint8)
    assert torch.allclose(clf.prepare_input(x), torch.full((1, 3, 4, 4), (191 / 255 - 0.5) / 0.25))
    assert clf.model.config.preprocessing.mean == (0.5,) * 3 and clf.model.config.preprocessing.crop_pct == 0.875


def test_predict_step_returns_topk_names_and_probabilities():
    names = [f"class{i}" for i in range(10)]
    clf = ImageClassifier("eca_r18", num_classes=10, class_names=names, top_k=3).eval()
    rows = clf.predict_step((torch.zeros(2, 3, 32, 32, dtype=torch.uint8), ["a.jpg", "b.jpg"]), 0)
    assert [r["input"] for r in rows] == ["a.jpg", "b.jpg"]
    row = rows[0]
    assert len(row["classes"]) == 3 and row["classes"][0] == names[row["indices"][0]]
    assert row["probabilities"] == sorted(row["probabilities"], reverse=True) and 0 < sum(row["probabilities"]) <= 1.0001


def test_frozen_backbone_trains_only_attention(tmp_path):
    clf = ImageClassifier("gct_r18", num_classes=10, freeze_backbone_epochs=1)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    tiny_trainer(tmp_path).fit(clf, tiny_data())
    attention = {
        f"{name}.{p}" for name, m in clf.model.named_modules() if isinstance(m, AttentionModule)
        for p, _ in m.named_parameters()
    }
    changed = {k for k, v in clf.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and changed <= attention  # BN statistics and every backbone weight untouched
    assert "layer1.0.conv1.gate.alpha" in changed


def test_ema_is_lightnings_weight_averaging_saved_and_loaded(tmp_path):
    from lightning.pytorch.callbacks import EMAWeightAveraging

    from attnzoo.training.checkpointing import LastCheckpoint

    clf = ImageClassifier("eca_r18", num_classes=10, ema_decay=0.5)
    trainer = tiny_trainer(tmp_path, enable_checkpointing=True, callbacks=[LastCheckpoint(dirpath=tmp_path)])
    trainer.fit(clf, tiny_data())
    assert any(isinstance(cb, EMAWeightAveraging) for cb in trainer.callbacks)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)  # written at the epoch end
    averaged, live = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert not any(k.startswith("ema.") for k in averaged)
    assert not torch.equal(averaged["model.fc.weight"], live["model.fc.weight"])
    net = load_checkpoint_model(tmp_path / "last.ckpt")
    assert torch.equal(net.fc.weight, averaged["model.fc.weight"])
    raw = load_checkpoint_model(tmp_path / "last.ckpt", use_ema=False)
    assert torch.equal(raw.fc.weight, live["model.fc.weight"])
    assert net.config.class_names == tuple(str(i) for i in range(10)) and net.config.num_classes == 10
    reloaded = ImageClassifier.load_from_checkpoint(tmp_path / "last.ckpt")  # evaluation uses the average
    assert torch.equal(reloaded.model.fc.weight, averaged["model.fc.weight"])


def old_ema_checkpoint(tmp_path, decay=0.5):
    """A checkpoint in the layout of attnzoo 0.1 (ImageClassifier kept an AveragedModel as ``self.ema``): the
    trained weights as ``model.*``, the average as ``ema.module.*`` and ``ema.n_averaged``, ``attnzoo.ema`` True
    and ``ema_decay`` among the hyper-parameters, as that code wrote them (keys checked against a file it wrote)."""
    clf = ImageClassifier("eca_mobilenetv2", num_classes=10, model_args={"width_mult": 0.25})
    trainer = tiny_trainer(tmp_path)
    trainer.fit(clf, tiny_data())
    path = tmp_path / "new.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    live = checkpoint["state_dict"]
    average = {k: v + 1 if v.is_floating_point() else v.clone() for k, v in live.items()}
    checkpoint["state_dict"] = {**live, **{"ema.module." + k[len("model."):]: v for k, v in average.items()},
                                "ema.n_averaged": torch.tensor(2)}
    checkpoint["hyper_parameters"]["ema_decay"] = decay
    checkpoint["attnzoo"]["ema"] = True
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    return old, live, average


def test_checkpoints_of_the_previous_ema_layout_still_load_and_resume(tmp_path):
    old, live, average = old_ema_checkpoint(tmp_path)
    # Evaluation: the average, as before.
    reloaded = ImageClassifier.load_from_checkpoint(old)
    assert all(torch.equal(v, average[f"model.{k}"]) for k, v in reloaded.model.state_dict().items())
    net = load_checkpoint_model(old)
    assert torch.equal(net.classifier[-1].weight, average["model.classifier.1.weight"])
    assert net.config.class_names == tuple(str(i) for i in range(10)) and net.config.num_classes == 10
    metrics = tiny_trainer(tmp_path).validate(ImageClassifier("eca_mobilenetv2", num_classes=10,
                                                              model_args={"width_mult": 0.25}),
                                              tiny_data(), ckpt_path=old, verbose=False)
    assert "val/acc1" in metrics[0]

    # Resuming: the trained weights keep training, the average continues from the old one.
    seen = {}

    class Look(L.Callback):
        def on_train_start(self, trainer, pl_module):
            ema = next(cb for cb in trainer.callbacks if type(cb).__name__ == "EMA")
            seen["live"] = pl_module.model.state_dict()["classifier.1.weight"].clone()
            seen["average"] = ema._average_model.module.model.state_dict()["classifier.1.weight"].clone()

    clf = ImageClassifier("eca_mobilenetv2", num_classes=10, model_args={"width_mult": 0.25}, ema_decay=0.5)
    tiny_trainer(tmp_path, max_epochs=2, callbacks=[Look()]).fit(clf, tiny_data(), ckpt_path=old)
    assert torch.equal(seen["live"], live["model.classifier.1.weight"])
    assert torch.equal(seen["average"], average["model.classifier.1.weight"])


def test_freezing_is_a_callback_that_keeps_requires_grad(tmp_path):
    from attnzoo.training.freezing import BackboneFreeze

    clf = ImageClassifier("gct_r18", num_classes=10, freeze_backbone_epochs=1, train_head_while_frozen=True)
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    frozen_after_epoch0 = {}

    class Look(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 0:
                frozen_after_epoch0.update({k: v.clone() for k, v in pl_module.model.state_dict().items()})

    trainer.callbacks.append(Look())
    trainer.fit(clf, tiny_data())
    assert any(isinstance(cb, BackboneFreeze) for cb in trainer.callbacks)
    assert all(p.requires_grad for p in clf.model.parameters())  # DDP's reducer and compiled graphs stay valid
    assert torch.equal(frozen_after_epoch0["conv1.weight"], before["conv1.weight"])
    assert not torch.equal(frozen_after_epoch0["fc.weight"], before["fc.weight"])  # the head trained
    assert not torch.equal(clf.model.conv1.weight, before["conv1.weight"])  # thawed in epoch 1
    assert clf.model.bn1.training  # BatchNorm back in training mode after the frozen epoch


def test_checkpoint_rebuilds_model_with_classes_and_preprocessing(tmp_path):
    data = tiny_data()
    clf = ImageClassifier("eca_r18", num_classes=data.num_classes, class_names=data.class_names,
                          preprocessing=data.preprocessing, label_smoothing=0.1, mixup_alpha=0.2)
    trainer = tiny_trainer(tmp_path)
    trainer.fit(clf, data)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    net = load_checkpoint_model(tmp_path / "m.ckpt")
    assert list(net.config.class_names) == data.class_names and net.config.preprocessing.input_size == (3, 32, 32)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), clf.model.state_dict().values()))
    reloaded = ImageClassifier.load_from_checkpoint(tmp_path / "m.ckpt")
    assert reloaded.class_names == data.class_names


@pytest.mark.slow
def test_compile_on_cpu_keeps_checkpoint_keys_clean(tmp_path):
    clf = ImageClassifier("eca_r18", num_classes=10, compile=True)
    before = clf.model.fc.weight.detach().clone()
    trainer = tiny_trainer(tmp_path, limit_train_batches=3, limit_val_batches=0)  # one graph: training mode
    trainer.fit(clf, tiny_data())
    assert clf.model._compiled_call_impl is not None and not torch.equal(before, clf.model.fc.weight)
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    keys = torch.load(tmp_path / "c.ckpt", weights_only=True)["state_dict"].keys()
    assert "model.conv1.weight" in keys and not any("_orig_mod" in k for k in keys)
    assert load_checkpoint_model(tmp_path / "c.ckpt").config.architecture == "eca_r18"


def test_resuming_a_previous_versions_checkpoint_keeps_writing_its_last_ckpt(tmp_path):
    from attnzoo.training.checkpointing import LastCheckpoint

    old, _, _ = old_ema_checkpoint(tmp_path)
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    checkpoint = torch.load(old, weights_only=True)
    # attnzoo 0.1 had one ModelCheckpoint, which wrote last.ckpt (save_last=True).
    checkpoint["callbacks"] = {"ModelCheckpoint{'monitor': 'val/acc1', 'mode': 'max', 'every_n_train_steps': 0, "
                               "'every_n_epochs': 1, 'train_time_interval': None}": {
                                   "monitor": "val/acc1", "best_model_score": None, "best_model_path": "",
                                   "current_score": None, "dirpath": str(folder), "best_k_models": {},
                                   "kth_best_model_path": "", "kth_value": torch.tensor(0.0),
                                   "last_model_path": str(folder / "last.ckpt")}}
    torch.save(checkpoint, folder / "last.ckpt")
    clf = ImageClassifier("eca_mobilenetv2", num_classes=10, model_args={"width_mult": 0.25}, ema_decay=0.5)
    trainer = tiny_trainer(tmp_path, max_epochs=2, enable_checkpointing=True,
                           callbacks=[LastCheckpoint(dirpath=str(folder))])
    trainer.fit(clf, tiny_data(), ckpt_path=folder / "last.ckpt")
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 1


def test_a_mid_epoch_resume_says_it_is_exact_once_and_predict_ignores_the_saved_generators(tmp_path, caplog):
    # Lightning warns that a loader without state_dict() makes a mid-epoch resume "unreliable"; attnzoo's data
    # module carries the position itself, so the user reads one true line instead. Evaluating draws no random
    # numbers: a checkpoint's generators, of any world size, are not restored nor warned about.
    import logging
    import warnings

    from attnzoo.training.checkpointing import RandomState

    def classifier():
        return ImageClassifier("eca_mobilenetv2", num_classes=10, model_args={"width_mult": 0.25})

    trainer = tiny_trainer(tmp_path, max_steps=2, limit_train_batches=None, callbacks=[RandomState()])
    trainer.fit(classifier(), tiny_data())  # stops after 2 of the epoch's 4 batches
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, max_steps=3, limit_train_batches=None, callbacks=[RandomState()]).fit(
            classifier(), tiny_data(), ckpt_path=tmp_path / "mid.ckpt")
    assert not [w for w in caught if "not resumable" in str(w.message)]
    said = [r.getMessage() for r in caplog.records if "resuming at" in r.getMessage()]
    assert said == ["attnzoo: resuming at epoch 0, sample 16 of its order: the data order, optimizer, schedule and "
                    "random generators continue exactly as in an uninterrupted run."]

    checkpoint = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    for key, state in checkpoint["callbacks"].items():
        if key.startswith("RandomState"):  # as a 2-process run saves them
            state.update({k: torch.stack([v, v]) for k, v in state.items()}, world_size=2)
    torch.save(checkpoint, tmp_path / "ddp.ckpt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_trainer(tmp_path, callbacks=[RandomState()], limit_predict_batches=1).predict(
            classifier(), tiny_data(), ckpt_path=tmp_path / "ddp.ckpt")
    assert not [w for w in caught if "random states" in str(w.message)]


def test_importing_attnzoo_training_leaves_lightnings_logging_alone():
    # The command line hides Lightning's "💡 Tip:" advertisements (tests/test_cli.py); a Python user who imports
    # attnzoo.training keeps Lightning's logging as it was. A fresh interpreter: another test may have built
    # the CLI in this one.
    import subprocess
    import sys

    code = ("import logging, attnzoo.training; "
            "print(logging.getLogger('lightning.pytorch.utilities.rank_zero').filters)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"
