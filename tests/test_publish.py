"""From an official release to ``attnzoo.load(NAME)``: convert -> evaluate -> push -> index record -> load, over
real HTTP (tests/hub_server.py) through the real huggingface_hub; and what each step refuses."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image
from test_convert import _save, ecanet_mobilenetv2

import attnzoo
from attnzoo.cli import main
from attnzoo.data.transforms import eval_transform
from attnzoo.errors import AttnzooError
from attnzoo.preprocessing import Preprocessing
from attnzoo.registry import ModelConfig, build
from attnzoo.weights.format import sha256_file

X = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(4))


def _image_folder(root, counts: dict[str, int], size: int = 40):
    """``root/<class>/<i>.png`` with ``counts[class]`` small random images each."""
    rng = np.random.default_rng(0)
    for name, count in counts.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def _modes(directory) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _use_index(tmp_path, monkeypatch, record: dict):
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"format_version": 1, "weights": record}))
    monkeypatch.setenv("ATTNZOO_CHECKPOINTS", str(index))


def test_the_ecanet_release_goes_from_convert_through_evaluate_and_push_to_attnzoo_load(
        hub, tmp_path, monkeypatch, capsys):
    official = ecanet_mobilenetv2()  # random weights in the layout of eca_mobilenetv2_k13.pth.tar (10 classes)
    release = _save(tmp_path, official, "eca_mobilenetv2_k13.pth.tar")
    out = tmp_path / "eca_mnv2-official"
    wnids = [f"n0{1440764 + 7 * i}" for i in range(10)]
    data = _image_folder(tmp_path / "val", {wnid: 1 + i % 2 for i, wnid in enumerate(wnids)})
    previous = os.umask(0o022)
    try:
        main(["convert", "--from", "ecanet", str(release), "--model", "eca_mobilenetv2", "--out", str(out)])
        assert _modes(out) == {"model.safetensors": 0o644, "config.json": 0o644, "README.md": 0o644}
        main(["evaluate", str(out), "--data", str(data), "--dataset", "imagenet-1k", "--num_workers", "0"])
        assert _modes(out) == {"model.safetensors": 0o644, "config.json": 0o644, "README.md": 0o644}
    finally:
        os.umask(previous)
    assert "top-1" in capsys.readouterr().out

    # What evaluate recorded is what the converted model predicts, image by image, folder i being class i.
    local = attnzoo.load(str(out))
    transform = eval_transform(local.config.preprocessing)
    hits1 = hits5 = total = 0
    with torch.no_grad():
        for target, wnid in enumerate(sorted(wnids)):
            for path in sorted((data / wnid).iterdir()):
                with Image.open(path) as img:
                    logits = local(local.config.preprocessing.normalize(transform(img)[None]))[0]
                hits1 += int(logits.argmax()) == target
                hits5 += target in logits.topk(5).indices.tolist()
                total += 1
    cfg = json.loads((out / "config.json").read_text())
    evaluation = cfg["evaluation"]
    assert cfg["metrics"] == {"val/acc1": hits1 / total, "val/acc5": hits5 / total}
    assert evaluation == {"dataset": "imagenet-1k", "data": str(data), "split": "validation", "images": total,
                          "unreadable": 0, "classes": 10, "class_mapping": "sorted folder names",
                          "top1": hits1 / total, "top5": hits5 / total, "date": datetime.date.today().isoformat()}
    assert cfg["source"]["file"] == "eca_mobilenetv2_k13.pth.tar"

    before = {p.name: p.read_bytes() for p in out.iterdir()}
    main(["push", str(out), "--repo", "zoo/eca_mobilenetv2", "--license", "mit"])
    printed = capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # push writes nothing locally
    record = json.loads(printed.out)  # stdout is the record alone, ready to paste
    entry = record["eca_mobilenetv2"]
    assert entry["revision"] == hub.head("zoo/eca_mobilenetv2") and entry["revision"] in printed.err
    assert entry["sha256"] == sha256_file(out / "model.safetensors")
    assert entry["config_sha256"] == hashlib.sha256(hub.file("zoo/eca_mobilenetv2", "config.json")).hexdigest()
    assert hub.file("zoo/eca_mobilenetv2", "config.json") == before["config.json"]
    assert entry["metrics"]["val/acc1"] == hits1 / total and entry["dataset"] == "imagenet-1k"
    assert entry["evaluation"]["images"] == total and entry["source"]["kind"] == "converted"

    from huggingface_hub import ModelCard

    card = ModelCard(hub.file("zoo/eca_mobilenetv2", "README.md").decode())
    results = {(r.metric_name, r.dataset_name): r.metric_value for r in card.data.eval_results}
    assert results == {("top-1 accuracy", "imagenet-1k"): hits1 / total,
                       ("top-5 accuracy", "imagenet-1k"): hits5 / total}
    assert card.data.license == "mit" and "hf-hub:zoo/eca_mobilenetv2" in card.text
    assert f"{total} images" in card.text

    _use_index(tmp_path, monkeypatch, record)
    model = attnzoo.load("eca_mobilenetv2")
    assert torch.equal(model.state_dict()["features.12.attn.conv.weight"], official["features.12.conv.4.conv.weight"])
    assert torch.equal(model(X), local(X))


def _small_weights(tmp_path, class_names=("cat", "dog", "fox"), name="w"):
    torch.manual_seed(0)
    model = attnzoo.create_model("mobilenetv2", num_classes=len(class_names), width_mult=0.35).eval()
    return attnzoo.save_pretrained(model, tmp_path / name, class_names=list(class_names), source="tests"), model


def _published(hub, tmp_path, monkeypatch, capsys):
    directory, model = _small_weights(tmp_path)
    main(["push", str(directory), "--repo", "zoo/mnv2", "--name", "mnv2.test"])
    record = json.loads(capsys.readouterr().out)
    _use_index(tmp_path, monkeypatch, record)
    return record, model


@pytest.mark.parametrize("change", [
    lambda cfg: cfg.update(label_names=cfg["label_names"][::-1]),
    lambda cfg: cfg["preprocessing"].update(mean=[0.5, 0.5, 0.5]),
], ids=["label names reversed", "preprocessing mean changed"])
def test_a_config_json_changed_at_the_pinned_commit_is_refused(hub, tmp_path, monkeypatch, capsys, change):
    record, model = _published(hub, tmp_path, monkeypatch, capsys)
    assert torch.equal(attnzoo.load("mnv2.test")(X), model(X))
    genuine = hub.file("zoo/mnv2", "config.json")
    cfg = json.loads(genuine)
    change(cfg)
    hub.tamper("zoo/mnv2", "config.json", json.dumps(cfg, indent=2).encode())  # same commit, other bytes
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "fresh-cache"))
    with pytest.raises(AttnzooError, match=r"refusing the config.json of 'mnv2.test'.*sha256") as refused:
        attnzoo.load("mnv2.test")
    assert "\n" not in str(refused.value)
    assert not list((tmp_path / "fresh-cache").rglob("config.json"))  # the refused file is not kept
    # The same tampered commit, loaded without the index's pin, reads it: the pin is what refuses it.
    assert attnzoo.load(f"hf-hub:zoo/mnv2@{record['mnv2.test']['revision']}").config.to_dict()["label_names"] == \
        cfg["label_names"]


def test_records_without_a_config_pin_still_load_and_say_so(hub, tmp_path, monkeypatch, capsys, caplog):
    record, model = _published(hub, tmp_path, monkeypatch, capsys)
    del record["mnv2.test"]["config_sha256"]  # a record printed before config.json was pinned
    _use_index(tmp_path, monkeypatch, record)
    with caplog.at_level(logging.WARNING, logger="attnzoo.weights"):
        assert torch.equal(attnzoo.load("mnv2.test")(X), model(X))
    assert "pins model.safetensors only" in caplog.text


def test_push_refuses_a_directory_that_does_not_load_strictly_before_uploading(hub, tmp_path, capsys):
    directory, _ = _small_weights(tmp_path)
    cfg_path = directory / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_args"] = {"width_mult": 0.5}  # weights of width 0.35 under a config of width 0.5
    cfg_path.write_text(json.dumps(cfg))
    err = _one_line_error(capsys, ["push", str(directory), "--repo", "zoo/bad"])
    assert "shapes differ" in err
    cfg["model_args"], cfg["num_classes"] = {"width_mult": 0.35}, "three"
    cfg_path.write_text(json.dumps(cfg))
    assert "num_classes must be a positive integer, got 'three'" in _one_line_error(
        capsys, ["push", str(directory), "--repo", "zoo/bad"])
    (directory / "model.safetensors").unlink()
    assert "has no model.safetensors" in _one_line_error(capsys, ["push", str(directory), "--repo", "zoo/bad"])
    assert "zoo/bad" not in hub.state.repos  # nothing was uploaded


# ------------------------------------------------------------------------------------------------ evaluate
def _ranked_weights(tmp_path, class_names=None, num_classes=6):
    """Classes whose scores are ranked 0 > 1 > ... for every image: top-1 is always output 0, top-5 outputs
    0-4, so the recorded accuracy tells which folder became which output."""
    config = ModelConfig("mobilenetv2", num_classes, {"width_mult": 0.35}, Preprocessing((3, 32, 32), crop_pct=1.0),
                         class_names)
    model = build(config).eval()
    with torch.no_grad():
        model.classifier[1].weight.zero_()
        model.classifier[1].bias.copy_(torch.arange(num_classes, 0, -1, dtype=torch.float))
    return attnzoo.save_pretrained(model, tmp_path / "ranked", overwrite=True)


COUNTS = {"n05": 3, "n02": 1, "n00": 2, "n04": 1, "n01": 1, "n03": 1}  # 9 images, created out of order


def test_evaluate_maps_sorted_folders_to_outputs_and_records_top1_and_top5(tmp_path, capsys):
    weights = _ranked_weights(tmp_path)
    data = _image_folder(tmp_path / "val", COUNTS)
    (data / "n03" / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match="broken.jpg"):
        main(["evaluate", str(weights), "--data", str(data), "--dataset", "ranked-6", "--num_workers", "0",
              "--batch_size", "4"])
    assert "top-1 0.2222, top-5 0.6667 on 9 images (1 unreadable skipped)" in capsys.readouterr().out
    cfg = json.loads((weights / "config.json").read_text())
    assert cfg["metrics"] == {"val/acc1": 2 / 9, "val/acc5": 6 / 9}  # n00 is output 0, n05 output 5
    assert cfg["evaluation"]["images"] == 9 and cfg["evaluation"]["unreadable"] == 1
    assert list(cfg).index("evaluation") == list(cfg).index("metrics") + 1
    from huggingface_hub import ModelCard

    card = ModelCard.load(weights / "README.md")
    assert "9 images, 1 unreadable skipped" in card.text
    assert {(r.metric_name, r.dataset_name, r.metric_value) for r in card.data.eval_results} == {
        ("top-1 accuracy", "ranked-6", 2 / 9), ("top-5 accuracy", "ranked-6", 6 / 9)}
    recorded = (weights / "config.json").read_bytes()
    err = _one_line_error(capsys, ["evaluate", str(weights), "--data", str(data), "--dataset", "ranked-6"])
    assert "already records" in err and "--overwrite" in err
    assert (weights / "config.json").read_bytes() == recorded  # nothing measured before is lost
    assert not [p for p in weights.iterdir() if p.name.startswith(".")]


def test_evaluate_maps_folders_by_label_name_when_the_weights_have_them(tmp_path, capsys):
    data = _image_folder(tmp_path / "val", COUNTS)
    weights = _ranked_weights(tmp_path, class_names=sorted(COUNTS, reverse=True))  # n05 is output 0
    main(["evaluate", str(weights), "--data", str(data), "--dataset", "ranked-6", "--num_workers", "0"])
    evaluation = json.loads((weights / "config.json").read_text())["evaluation"]
    assert evaluation["top1"] == 3 / 9 and evaluation["top5"] == 7 / 9 and evaluation["class_mapping"] == "label_names"
    (data / "n06").mkdir()  # a folder that is no label name, beside five that are
    weights = _ranked_weights(tmp_path, class_names=sorted(COUNTS, reverse=True))
    assert "n06 are not label names" in _one_line_error(
        capsys, ["evaluate", str(weights), "--data", str(data), "--dataset", "x", "--num_workers", "0"])
    weights = _ranked_weights(tmp_path)  # no label names: sorted folders, one per class
    assert "has 7 class folders but the weights have 6 classes" in _one_line_error(
        capsys, ["evaluate", str(weights), "--data", str(data), "--dataset", "x", "--num_workers", "0"])


def test_evaluate_maps_folders_named_by_class_index_by_their_number(tmp_path, capsys):
    # ImageNet-V2's layout: folders 0..N-1. Sorted as text, "10" would be output 2 and "2" output 4.
    counts = {str(i): 3 if i == 10 else 1 for i in range(12)}
    data = _image_folder(tmp_path / "val", counts)
    weights = _ranked_weights(tmp_path, num_classes=12)
    main(["evaluate", str(weights), "--data", str(data), "--dataset", "v2-like", "--num_workers", "0"])
    evaluation = json.loads((weights / "config.json").read_text())["evaluation"]
    assert evaluation["class_mapping"] == "folder names as class indices"
    assert (evaluation["top1"], evaluation["top5"]) == (1 / 14, 5 / 14)  # text order would give 7 / 14
    del counts["10"], counts["11"], counts["7"]  # a subset of the classes is measured as well
    data = _image_folder(tmp_path / "subset", counts)
    weights = _ranked_weights(tmp_path, num_classes=12)
    main(["evaluate", str(weights), "--data", str(data), "--dataset", "v2-subset", "--num_workers", "0"])
    evaluation = json.loads((weights / "config.json").read_text())["evaluation"]
    assert (evaluation["top1"], evaluation["top5"]) == (1 / 9, 5 / 9)
    capsys.readouterr()


def test_the_documented_release_path_uses_real_commands_and_options():
    # docs/weights.md walks a maintainer through the path the first test runs; its commands must stay real.
    import inspect
    import re
    from pathlib import Path

    from attnzoo.cli import EXTRA_COMMANDS, _load

    page = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    section = page.split("## From an official release to `attnzoo.load(\"eca_mobilenetv2\")`")[1].split("\n## ")[0]
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("attnzoo ")]
    assert [line.split()[1] for line in lines] == ["convert", "evaluate", "push"]
    for line in lines:
        func = _load(EXTRA_COMMANDS[line.split()[1]])
        accepted = {f"--{name}" for name in inspect.signature(func).parameters} | set(getattr(func, "cli_aliases", {}))
        used = set(re.findall(r"(--[\w-]+)", line))
        assert used <= accepted, (line, used - accepted)
    assert 'attnzoo.load("eca_mobilenetv2")' in section
