"""Push to and pull from a Hub over real HTTP (tests/hub_server.py), through the real huggingface_hub."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch

import attnzoo
from attnzoo.cli import main
from attnzoo.errors import AttnzooError
from attnzoo.weights.format import sha256_file

X = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
SMALL = {"width_mult": 0.35}  # a ~1.7M-parameter MobileNetV2 keeps the uploads small


def _push(ckpt, repo, *extra):
    main(["push", str(ckpt), "--repo", repo, *extra])


def _cached_files(cache: str) -> list[Path]:
    return [p for p in Path(cache).rglob("*") if p.is_file() or p.is_symlink()]


def test_push_then_load_in_a_fresh_cache_gives_the_same_outputs(hub, make_lightning_checkpoint, capsys):
    ckpt, model = make_lightning_checkpoint("eca_mobilenetv2", num_classes=3, **SMALL)
    _push(ckpt, "zoo/eca_mnv2")
    out = capsys.readouterr().out
    commit = hub.head("zoo/eca_mnv2")
    assert commit in out and '"sha256"' in out  # prints the pinned index record to publish
    card = hub.file("zoo/eca_mnv2", "README.md").decode()
    assert "library_name: attnzoo" in card and "hf-hub:zoo/eca_mnv2" in card
    loaded = attnzoo.load("hf-hub:zoo/eca_mnv2")
    assert torch.equal(loaded(X), model(X))
    assert loaded.config.class_names == ("class_0", "class_1", "class_2")
    assert loaded.config.preprocessing.crop_pct == 0.875


def test_revisions_can_be_pinned(hub, make_lightning_checkpoint):
    first_ckpt, first = make_lightning_checkpoint("mobilenetv2", seed=1, **SMALL)
    second_ckpt, second = make_lightning_checkpoint("mobilenetv2", seed=2, **SMALL)
    _push(first_ckpt, "zoo/mnv2")
    first_commit = hub.head("zoo/mnv2")
    _push(second_ckpt, "zoo/mnv2")
    _push(first_ckpt, "zoo/mnv2", "--revision", "v1")
    assert torch.equal(attnzoo.load("hf-hub:zoo/mnv2")(X), second(X))
    assert torch.equal(attnzoo.load(f"hf-hub:zoo/mnv2@{first_commit}")(X), first(X))
    assert torch.equal(attnzoo.load("hf-hub:zoo/mnv2", revision="v1")(X), first(X))
    with pytest.raises(AttnzooError, match="give one"):
        attnzoo.load("hf-hub:zoo/mnv2@v1", revision="main")


def test_missing_repo_file_and_revision_are_told_apart(hub, tmp_path, make_lightning_checkpoint):
    with pytest.raises(AttnzooError, match=r"Hub repo 'zoo/nothing' does not exist"):
        attnzoo.load("hf-hub:zoo/nothing")
    ckpt, _ = make_lightning_checkpoint("mobilenetv2", **SMALL)
    _push(ckpt, "zoo/mnv2")
    with pytest.raises(AttnzooError, match=r"has no revision 'no-such-branch'"):
        attnzoo.load("hf-hub:zoo/mnv2@no-such-branch")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url)
    api.create_repo("zoo/not-weights")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.json").write_text(json.dumps({"architecture": "r18", "num_classes": 3}))
    api.upload_folder(repo_id="zoo/not-weights", folder_path=str(tmp_path / "notes"))
    with pytest.raises(AttnzooError, match=r"has no file 'model.safetensors'"):
        attnzoo.load("hf-hub:zoo/not-weights")


def test_private_repos_need_a_token(hub, make_lightning_checkpoint, monkeypatch):
    ckpt, model = make_lightning_checkpoint("mobilenetv2", **SMALL)
    _push(ckpt, "zoo/secret", "--private")
    assert torch.equal(attnzoo.load("hf-hub:zoo/secret")(X), model(X))
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_HUB_CACHE", str(Path(os.environ["HF_HUB_CACHE"]).parent / "other-cache"))
    with pytest.raises(AttnzooError, match="private and you are not logged in"):
        attnzoo.load("hf-hub:zoo/secret")


def _publish(hub, tmp_path, monkeypatch, make_lightning_checkpoint, name="eca_mobilenetv2"):
    """Push a model and list it in an extra index, as the zoo does for its own weights."""
    ckpt, model = make_lightning_checkpoint(name, **SMALL)
    _push(ckpt, f"zoo/{name}")
    (tmp_path / "export").mkdir()
    main(["export", str(ckpt), "--out", str(tmp_path / "export" / "w")])
    record = {"architecture": name, "repo_id": f"zoo/{name}", "revision": hub.head(f"zoo/{name}"),
              "sha256": sha256_file(tmp_path / "export" / "w" / "model.safetensors"), "num_classes": 3,
              "source": {"kind": "trained", "config": "tests"}}
    index = tmp_path / "index.json"
    index.write_text(json.dumps({"format_version": 1, "weights": {f"{name}.test": record}}))
    monkeypatch.setenv("ATTNZOO_CHECKPOINTS", str(index))
    return model


def test_a_registry_name_resolves_through_the_index_and_is_verified(hub, tmp_path, monkeypatch,
                                                                    make_lightning_checkpoint):
    model = _publish(hub, tmp_path, monkeypatch, make_lightning_checkpoint)
    assert torch.equal(attnzoo.load("eca_mobilenetv2.test")(X), model(X))


def test_a_tampered_file_is_refused_and_not_trusted_again(hub, tmp_path, monkeypatch, make_lightning_checkpoint):
    model = _publish(hub, tmp_path, monkeypatch, make_lightning_checkpoint)
    genuine = hub.file("zoo/eca_mobilenetv2", "model.safetensors")
    # A compromised mirror: same name, same commit, other bytes (still a valid safetensors file).
    from safetensors.torch import load, save

    tensors = load(genuine)
    tensors["classifier.1.bias"] = tensors["classifier.1.bias"] + 1.0
    hub.tamper("zoo/eca_mobilenetv2", "model.safetensors", save(tensors))
    with pytest.raises(AttnzooError, match="refusing the weights of 'eca_mobilenetv2.test'.*sha256"):
        attnzoo.load("eca_mobilenetv2.test")
    cache = os.environ["HF_HUB_CACHE"]
    assert not [p for p in _cached_files(cache) if p.name == "model.safetensors"]
    # Once the Hub serves the genuine file again, it is downloaded afresh (the refused copy is gone).
    hub.tamper("zoo/eca_mobilenetv2", "model.safetensors", genuine)
    assert torch.equal(attnzoo.load("eca_mobilenetv2.test")(X), model(X))
    # A cached file altered on disk is refused too, and evicted.
    blob = next(p.resolve() for p in _cached_files(cache) if p.name == "model.safetensors")
    blob.write_bytes(save(tensors))
    with pytest.raises(AttnzooError, match="removed from the local cache"):
        attnzoo.load("eca_mobilenetv2.test")
    assert not blob.exists()


def _dead_endpoint() -> str:
    with socket.socket() as sock:  # a port nothing listens on: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_offline_reload_from_the_cache(hub, make_lightning_checkpoint, monkeypatch):
    ckpt, model = make_lightning_checkpoint("mobilenetv2", **SMALL)
    _push(ckpt, "zoo/mnv2")
    attnzoo.load("hf-hub:zoo/mnv2")
    monkeypatch.setenv("HF_ENDPOINT", _dead_endpoint())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert torch.equal(attnzoo.load("hf-hub:zoo/mnv2")(X), model(X))
    monkeypatch.delenv("HF_HUB_OFFLINE")  # no network but a cached copy: still served
    assert torch.equal(attnzoo.load("hf-hub:zoo/mnv2")(X), model(X))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AttnzooError, match=r"'zoo/other'.*HF_HUB_OFFLINE=1 is set.*Remedy"):
        attnzoo.load("hf-hub:zoo/other")


def test_no_network_and_no_cache_fails_fast_with_the_remedy(hub, monkeypatch):
    # huggingface_hub alone retries for ~23 s here; attnzoo probes once. The bound is generous on purpose:
    # it tells "one attempt" from "a retry loop", not a benchmark.
    monkeypatch.setenv("HF_ENDPOINT", _dead_endpoint())
    start = time.monotonic()
    with pytest.raises(AttnzooError, match=r"'zoo/mnv2'.*cannot be reached.*Remedy: connect"):
        attnzoo.load("hf-hub:zoo/mnv2")
    assert time.monotonic() - start < 10
