"""The weights format on disk: save_pretrained/load, the checkpoints index, export, retrofit (no Hub here)."""

from __future__ import annotations

import json
import logging
import os
import re
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

import attnzoo
from attnzoo.cli import main
from attnzoo.errors import AttnzooError
from attnzoo.weights import load_backbone_weights
from attnzoo.weights.index import INDEX_PATH, load_index, read_index

X = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))


def _model(name="eca_r18", num_classes=5, seed=0):
    torch.manual_seed(seed)
    model = attnzoo.create_model(name, num_classes=num_classes).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
    return model


def test_save_then_load_gives_the_same_outputs_and_metadata(tmp_path):
    model = _model()
    out = attnzoo.save_pretrained(model, tmp_path / "w", metrics={"val/acc1": 0.5}, class_names=list("abcde"),
                                  train_config={"optimizer": {"lr": 0.1}})
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    loaded = attnzoo.load(str(out))
    assert torch.equal(model(X), loaded(X))
    assert not loaded.training
    assert loaded.config.class_names == tuple("abcde")
    assert loaded.config.preprocessing == model.config.preprocessing
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "eca_r18" and cfg["num_classes"] == 5
    assert cfg["metrics"] == {"val/acc1": 0.5} and cfg["attnzoo_version"] == attnzoo.__version__
    assert set(cfg["preprocessing"]) == {"input_size", "interpolation", "crop_pct", "mean", "std"}
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "library_name: attnzoo" in front and "pipeline_tag: image-classification" in front
    assert "ECA-Net: Efficient Channel Attention" in card and "1910.03151" in card and "@inproceedings" in card
    assert "val/acc1" in card and '"lr": 0.1' in card


def test_config_json_is_the_model_config_in_the_same_format(tmp_path):
    model = _model()
    attnzoo.save_pretrained(model, tmp_path / "w", class_names=list("abcde"), metrics={"val/acc1": 0.5})
    cfg = json.loads((tmp_path / "w" / "config.json").read_text())
    assert list(cfg) == ["architecture", "num_classes", "model_args", "preprocessing", "label_names", "metrics",
                         "train_config", "source", "attnzoo_version", "format_version"]
    assert {k: cfg[k] for k in list(cfg)[:5]} == model.config.replace(class_names=list("abcde")).to_dict()
    with pytest.raises(AttnzooError, match="carries `config`"):
        attnzoo.save_pretrained(torch.nn.Linear(2, 2), tmp_path / "other")


def test_the_model_card_front_matter_reads_back_through_huggingface_hub(tmp_path):
    from huggingface_hub import ModelCard

    datasets = ["cifar: 10 #test", "imagenet-1k"]  # YAML specials must survive as written
    attnzoo.save_pretrained(_model(), tmp_path / "w", metrics={"val/acc1": 0.625, "val/acc5": 0.9, "epoch": 4},
                            datasets=datasets, license="mit")
    card = ModelCard.load(tmp_path / "w" / "README.md")
    assert card.data.datasets == datasets and card.data.license == "mit" and card.data.library_name == "attnzoo"
    assert card.data.pipeline_tag == "image-classification" and {"eca", "r18", "attnzoo"} <= set(card.data.tags)
    results = {(r.metric_name, r.dataset_split, r.dataset_type): r.metric_value for r in card.data.eval_results}
    assert results == {("top-1 accuracy", "validation", datasets[0]): 0.625,
                       ("top-5 accuracy", "validation", datasets[0]): 0.9}
    assert card.data.model_name == "eca_r18" and "# eca_r18" in card.text and "| epoch | 4 |" in card.text


def test_the_same_weights_give_the_same_bytes(tmp_path):
    # The index's sha256 is computed on one export and checked against another: the bytes must not vary.
    model = _model("r18", 3)
    a = attnzoo.save_pretrained(model, tmp_path / "a") / "model.safetensors"
    b = attnzoo.save_pretrained(model, tmp_path / "b") / "model.safetensors"
    assert a.read_bytes() == b.read_bytes()


def test_model_options_travel_in_config(tmp_path):
    model = attnzoo.create_model("se_mobilenetv2", num_classes=4, width_mult=0.5, attention_stages=[6, 7]).eval()
    attnzoo.save_pretrained(model, tmp_path / "w")
    loaded = attnzoo.load(str(tmp_path / "w"))
    assert loaded.config == model.config
    assert torch.equal(model(X), loaded(X))


def test_a_safetensors_file_with_config_beside_it_loads_and_wrapper_prefixes_are_stripped(tmp_path):
    model = _model("r18", 3)
    attnzoo.save_pretrained(model, tmp_path / "w")
    weights = tmp_path / "w" / "model.safetensors"
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in load_file(str(weights)))
    # A state dict saved from a DDP-wrapped, compiled model: prefixes are stripped on load.
    save_file({f"module._orig_mod.{k}": v for k, v in load_file(str(weights)).items()}, str(weights))
    assert torch.equal(attnzoo.load(str(weights))(X), model(X))


def test_save_refuses_to_overwrite_unless_asked(tmp_path):
    target = tmp_path / "w"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(AttnzooError, match="not empty"):
        attnzoo.save_pretrained(_model(), target)
    assert (target / "notes.txt").read_text() == "mine" and not (target / "model.safetensors").exists()
    attnzoo.save_pretrained(_model(), target, overwrite=True)
    assert (target / "model.safetensors").is_file() and (target / "notes.txt").is_file()


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_written_files_get_ordinary_permissions(tmp_path, make_lightning_checkpoint, umask, mode):
    # safetensors alone leaves model.safetensors 0600; every file must get what the user's umask gives
    ckpt, _ = make_lightning_checkpoint("r18", num_classes=3)
    previous = os.umask(umask)
    try:
        attnzoo.save_pretrained(_model(), tmp_path / "saved")
        main(["export", str(ckpt), "--out", str(tmp_path / "exported")])
    finally:
        os.umask(previous)
    for out in ("saved", "exported"):
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / out).iterdir()}
        assert modes == {"model.safetensors": mode, "config.json": mode, "README.md": mode}, out


def test_other_num_classes_resets_the_classifier_and_says_so(tmp_path, caplog):
    model = _model(num_classes=5)
    attnzoo.save_pretrained(model, tmp_path / "w", class_names=list("abcde"))
    with caplog.at_level(logging.WARNING, logger="attnzoo.weights"):
        loaded = attnzoo.load(str(tmp_path / "w"), num_classes=7)
    assert "reset to 7 classes" in caplog.text
    assert loaded(X).shape == (2, 7) and loaded.num_classes == 7
    assert loaded.config.num_classes == 7 and loaded.config.class_names is None
    assert torch.equal(loaded.forward_features(X), model.forward_features(X))


def test_missing_or_unexpected_keys_are_named(tmp_path, caplog):
    attnzoo.save_pretrained(_model(), tmp_path / "w")
    weights = tmp_path / "w" / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors["layer1.0.attn.conv.weight"]
    tensors["layer9.extra.weight"] = torch.zeros(1)
    save_file(tensors, str(weights))
    with pytest.raises(AttnzooError, match=r"missing keys: layer1\.0\.attn\.conv\.weight.*unexpected keys: "
                                           r"layer9\.extra\.weight"):
        attnzoo.load(str(tmp_path / "w"))
    with caplog.at_level(logging.WARNING, logger="attnzoo.weights"):
        attnzoo.load(str(tmp_path / "w"), strict=False)
    assert "layer9.extra.weight" in caplog.text


def test_mis_shaped_weights_are_refused_with_shapes(tmp_path):
    attnzoo.save_pretrained(_model(), tmp_path / "w")
    cfg_path = tmp_path / "w" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architecture"] = "eca_r34"  # r18 weights under an r34 config
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(AttnzooError, match="missing keys: layer1.2"):
        attnzoo.load(str(tmp_path / "w"))
    cfg["architecture"], cfg["num_classes"] = "eca_r18", 9
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(AttnzooError, match=r"fc.weight \[5, 512\] \(model: \[9, 512\]\)"):
        attnzoo.load(str(tmp_path / "w"))


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    model = attnzoo.create_model("mobilenetv2", num_classes=5, width_mult=0.35)
    return attnzoo.save_pretrained(model, tmp_path_factory.mktemp("small") / "w", class_names=list("abcde"))


def _set(key, value):
    return lambda cfg: cfg.update({key: value})


def _drop(key):
    return lambda cfg: cfg.pop(key)


@pytest.mark.parametrize("change, message", [
    (_set("num_classes", "ten"), r"num_classes must be a positive integer, got 'ten'"),
    (_set("num_classes", True), r"num_classes must be a positive integer, got True"),
    (_set("num_classes", 0), r"num_classes must be a positive integer, got 0"),
    (_set("num_classes", 5.0), r"num_classes must be a positive integer, got 5.0"),
    (_set("architecture", 18), r"architecture must be a registered model name \(a string\), got 18"),
    (_set("architecture", "eca_r81"), r"unknown model 'eca_r81'.*Did you mean"),
    (_set("preprocessing", "big"), r"preprocessing must be a mapping of input_size, .*got 'big'"),
    (_set("preprocessing", {"size": 224}), r"preprocessing has no field 'size'. Accepted: input_size"),
    (_set("preprocessing", {"mean": "imagenet"}), r"mean must be a list of numbers, got 'imagenet'"),
    (_set("preprocessing", {"crop_pct": "0.9"}), r"crop_pct must be in \(0, 1\], got '0.9'"),
    (_set("preprocessing", {"input_size": [3, 224]}), r"input_size must be three positive integers \[channels, height, width\] with height == width"),
    (_set("label_names", list("abcd")), r"label_names has 4 names but num_classes is 5"),
    (_set("label_names", [0, 1, 2, 3, 4]), r"label_names must be a list of strings.*got \[0, 1, 2, 3, 4\]"),
    (_set("label_names", "abcde"), r"label_names must be a list of strings.*got 'abcde'"),
    (_set("format_version", 2), r"format_version 2 is not one this attnzoo .* reads \(accepted: 1\)"),
    (_set("format_version", "1"), r"format_version '1' is not one"),
    (_drop("format_version"), r"format_version None is not one"),
    (_set("model_args", []), r"model_args must be an object of create_model options \(or null\), got \[\]"),
    (_set("model_args", "width_mult=2"), r"model_args must be an object.*got 'width_mult=2'"),
    # nothing in config.json may start a download or import code: only the backbone's own options exist
    (_set("model_args", {"backbone_weights": "hf-hub:evil/weights"}), r"has no option 'backbone_weights'"),
    (_set("model_args", {"attention": "os:system"}), r"unknown attention 'os:system'"),
    (_set("label_name", list("abcde")), r"unknown field\(s\) label_name \(accepted: architecture"),
    (_set("metrics", [0.5]), r"metrics must be an object of metric name -> number"),
    (_set("metrics", {"val/acc1": "77%"}), r"metrics must be an object"),
    (_set("source", 3), r"source must be an object or a string"),
    (_set("evaluation", {"dataset": "imagenet-1k", "images": 10, "top1": 1.5, "top5": 1, "date": "2025-01-01"}),
     r"evaluation.top1 must be a fraction in \[0, 1\], got 1.5"),
    (_set("evaluation", {"dataset": "imagenet-1k"}), r"evaluation lacks images, top1, top5, date"),
])
def test_config_json_is_read_strictly_with_one_line_naming_field_and_value(small_weights, tmp_path, capsys, change,
                                                                         message):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.safetensors").symlink_to(small_weights / "model.safetensors")
    cfg = json.loads((small_weights / "config.json").read_text())
    change(cfg)
    (tmp_path / "w" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AttnzooError, match=message) as refused:
        attnzoo.load(str(tmp_path / "w"))
    assert "\n" not in str(refused.value) and "config.json" in str(refused.value)
    with pytest.raises(SystemExit):  # the same line for every reader: here `attnzoo push`
        main(["push", str(tmp_path / "w"), "--repo", "org/name"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


@pytest.mark.parametrize("text, message", [
    ("{'architecture': 'r18'}", r"is not valid JSON: Expecting property name"),
    ("[1, 2]", r"must be a JSON object, got list"),
    ('"r18"', r"must be a JSON object, got str"),
    ('{"num_classes": 5}', r"lacks architecture"),
])
def test_a_config_json_that_is_not_a_json_object_is_refused(small_weights, tmp_path, text, message):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.safetensors").symlink_to(small_weights / "model.safetensors")
    (tmp_path / "w" / "config.json").write_text(text)
    with pytest.raises(AttnzooError, match=message):
        attnzoo.load(str(tmp_path / "w"))


@pytest.mark.parametrize("source, message", [
    # A model with an official release is pointed at the one-step conversion first, training second.
    ("eca_mobilenetv2", r"no published weights for 'eca_mobilenetv2'.*download eca_mobilenetv2_k13.pth.tar.*"
                        r"`attnzoo convert --from ecanet eca_mobilenetv2_k13.pth.tar --model eca_mobilenetv2 --out DIR`"
                        r".*attnzoo fit --config.*attnzoo push"),
    ("resnet50", r"no published weights for 'r50'.*attnzoo convert --from torchvision resnet50-0676ba61.pth"),
    ("gam_r50", r"no published weights for 'gam_r50'.*attnzoo fit --config(?!.*convert)"),
    ("ecca_r50", r"unknown weights 'ecca_r50'. Did you mean: eca_r50"),
    ("someorg/somemodel", r"hf-hub:someorg/somemodel"),
    ("missing/dir/model.safetensors", r"no such file"),
])
def test_sources_without_weights_get_a_clear_error(source, message):
    with pytest.raises(AttnzooError, match=message):
        attnzoo.load(source)


def test_every_release_file_names_a_model_its_converter_builds():
    from attnzoo.registry import get_spec
    from attnzoo.weights.convert import RELEASES
    from attnzoo.weights.releases import BACKBONE_ONLY, OFFICIAL_FILES

    assert set(OFFICIAL_FILES) == set(RELEASES)
    assert {name for name, release in RELEASES.items() if not release.has_classifier} == set(BACKBONE_ONLY)
    for release, files in OFFICIAL_FILES.items():
        for model_name in files:
            assert get_spec(model_name).name == model_name
            assert get_spec(model_name).attention == RELEASES[release].attention, (release, model_name)


def test_pickles_are_not_loaded_by_load(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(_model().state_dict(), path)
    with pytest.raises(AttnzooError, match="safetensors only.*attnzoo export"):
        attnzoo.load(str(path))


def test_the_shipped_index_is_valid_and_bad_records_are_refused(tmp_path, monkeypatch):
    assert read_index(INDEX_PATH) is not None  # empty today, but it parses under the schema
    record = {"architecture": "eca_r18", "repo_id": "org/eca_r18", "revision": "main", "sha256": "0" * 64,
              "num_classes": 10, "source": "trained"}
    extra = tmp_path / "index.json"
    extra.write_text(json.dumps({"format_version": 1, "weights": {"eca_r18": record}}))
    monkeypatch.setenv("ATTNZOO_CHECKPOINTS", str(extra))
    with pytest.raises(AttnzooError, match="pins a commit"):
        load_index()
    record["revision"] = "a" * 40
    extra.write_text(json.dumps({"format_version": 1, "weights": {"eca_r18": record}}))
    assert load_index()["eca_r18"].repo_id == "org/eca_r18"


# ------------------------------------------------------------------------------------------------- export
def test_export_writes_a_lightning_checkpoint_as_weights(tmp_path, make_lightning_checkpoint, capsys):
    ckpt, model = make_lightning_checkpoint("eca_r18", num_classes=3, class_names=["cat", "dog", "fox"])
    main(["export", str(ckpt), "--out", str(tmp_path / "out")])
    assert "eca_r18" in capsys.readouterr().out
    loaded = attnzoo.load(str(tmp_path / "out"))
    assert torch.equal(loaded(X), model(X))
    assert loaded.config.class_names == ("cat", "dog", "fox")
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["metrics"]["val/acc1"] == pytest.approx(0.625)
    assert cfg["train_config"]["label_smoothing"] == 0.1
    with pytest.raises(SystemExit) as exit_info:  # a second export into the same directory is refused
        main(["export", str(ckpt), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "not empty" in capsys.readouterr().err


@pytest.mark.parametrize("ema", ["module", "callback"])
def test_export_prefers_ema_weights(tmp_path, make_lightning_checkpoint, ema):
    ckpt, model = make_lightning_checkpoint("r18", ema=ema)
    main(["export", str(ckpt), "--out", str(tmp_path / "out")])
    assert torch.equal(attnzoo.load(str(tmp_path / "out"))(X), model(X))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["source"]["weights"] == "ema"


def test_export_refuses_a_checkpoint_that_does_not_name_its_model(tmp_path, make_lightning_checkpoint):
    from attnzoo.weights.lightning_checkpoint import model_from_lightning_checkpoint

    ckpt, _ = make_lightning_checkpoint("r18")
    checkpoint = torch.load(ckpt, weights_only=True)
    del checkpoint["attnzoo"]  # e.g. a module given as an nn.Module, or another program's checkpoint
    torch.save(checkpoint, ckpt)
    with pytest.raises(AttnzooError, match="does not say which attnzoo model it holds"):
        model_from_lightning_checkpoint(ckpt)


@pytest.mark.parametrize("damage, use_ema, message", [
    (lambda c: c.pop("state_dict"), None, "is not a Lightning checkpoint"),
    (lambda c: c.update(state_dict={k[len("model."):]: v for k, v in c["state_dict"].items()}), None,
     r"no network weights in its state_dict \(no model\.\* entries\)"),
    (lambda c: c["attnzoo"].update(ema=True), None, "says it kept EMA weights"),
    (lambda c: None, True, "has no EMA weights"),
])
def test_the_checkpoint_reader_refuses_what_it_cannot_trust(make_lightning_checkpoint, damage, use_ema, message):
    from attnzoo.weights.lightning_checkpoint import model_from_lightning_checkpoint

    ckpt, _ = make_lightning_checkpoint("r18")
    checkpoint = torch.load(ckpt, weights_only=True)
    damage(checkpoint)
    torch.save(checkpoint, ckpt)
    with pytest.raises(AttnzooError, match=message):
        model_from_lightning_checkpoint(ckpt, use_ema=use_ema)


class NotATensor:  # stands for any object a malicious pickle could ask to build
    pass


def test_export_never_unpickles_objects(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"payload": NotATensor()}}, path)
    with pytest.raises(SystemExit):
        main(["export", str(path), "--out", str(tmp_path / "out")])
    assert "weights-only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------ retrofit
@pytest.mark.parametrize("plain, attention", [("r18", "gct_r18"), ("r18", "gc_r18"),
                                              ("mobilenetv2", "gct_mobilenetv2")])
def test_retrofit_identity_attention_reproduces_the_plain_model_at_step_zero(tmp_path, plain, attention):
    base = _model(plain, num_classes=1000 if plain == "r18" else 6)
    path = tmp_path / "plain.pth"
    torch.save(base.state_dict(), path)  # a torchvision-style state dict file
    model = attnzoo.create_model(attention, num_classes=base.num_classes, backbone_weights=str(path)).eval()
    assert torch.equal(model(X), base(X))
    # The attention parameters keep their (identity) init: compare those that do not depend on the seed.
    fresh = [attnzoo.create_model(attention, num_classes=base.num_classes).state_dict() for _ in range(2)]
    fixed = [k for k in fresh[0] if (".gate." in k or ".attn." in k) and torch.equal(fresh[0][k], fresh[1][k])]
    assert fixed and all(torch.equal(model.state_dict()[k], fresh[0][k]) for k in fixed)


def test_retrofit_from_attnzoo_weights_keeps_a_new_head(tmp_path):
    base = _model("r18", num_classes=1000)
    attnzoo.save_pretrained(base, tmp_path / "plain")
    model = attnzoo.create_model("eca_r18", num_classes=10).eval()
    report = load_backbone_weights(model, str(tmp_path / "plain"))
    assert not report["classifier_loaded"] and report["attention_kept"] == 8
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], base.state_dict()["layer4.1.conv2.weight"])


def test_retrofit_refuses_another_backbone(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(attnzoo.create_model("r34").state_dict(), path)
    with pytest.raises(AttnzooError, match="has weights that gct_r18 lacks: layer1.2"):
        attnzoo.create_model("gct_r18", backbone_weights=str(path))
    torch.save(attnzoo.create_model("r18").state_dict(), path)
    with pytest.raises(AttnzooError, match="lacks plain weights of gct_r34"):
        attnzoo.create_model("gct_r34", backbone_weights=str(path))
