"""Shared test setup.

The Hugging Face Hub environment is set here, at conftest import, i.e. before any test module imports
huggingface_hub (which reads HF_ENDPOINT, HF_HOME and the telemetry switch once, at import): a temporary
HF_HOME (no real token, no real cache), no telemetry, and HF_ENDPOINT pointing at the in-memory Hub of
tests/hub_server.py, whose socket is bound now so its address is known. It serves once the `hub_server`
fixture starts it. attnzoo itself reads these variables at call time, so the `hub` fixture can give every
test its own cache directory.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import pytest

from hub_server import HubServer

_HF_HOME = tempfile.mkdtemp(prefix="attnzoo-test-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
             "ATTNZOO_CHECKPOINTS"):
    os.environ.pop(_var, None)
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
_HUB = HubServer()
os.environ["HF_ENDPOINT"] = _HUB.url

TEST_TOKEN = "hf_attnzoo_test_token"


EXHAUSTIVE_SKIP = ("an exhaustive sweep (the 42-model ONNX export: ~22 CPU-minutes, 11 min on 2 cores), "
                   "which would take CI past 20 minutes: run it with --exhaustive")


def pytest_addoption(parser):
    parser.addoption("--exhaustive", action="store_true",
                     help="also run the tests marked exhaustive (every model through the slowest paths)")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``exhaustive`` are skipped, loudly, unless ``--exhaustive`` is given. Grouped tests come
    first (pytest-xdist's loadgroup runs a group on one worker, in this order), so the ONNX group's exports
    start at once instead of last."""
    if not config.getoption("--exhaustive"):
        for item in items:
            if item.get_closest_marker("exhaustive"):
                item.add_marker(pytest.mark.skip(reason=EXHAUSTIVE_SKIP))
    items.sort(key=lambda item: item.get_closest_marker("xdist_group") is None)  # stable: the rest keep order


@pytest.fixture(autouse=True)
def _seeded(request):
    """Each test draws the same random numbers whichever xdist worker runs it and whatever ran before it, so
    a failure reproduces with ``pytest <nodeid>``; the seed comes from the test's id."""
    import random

    import numpy
    import torch

    seed = zlib.crc32(request.node.nodeid.encode())
    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


@pytest.fixture(scope="session")
def hub_server():
    _HUB.start()
    yield _HUB
    _HUB.stop()


@pytest.fixture
def hub(hub_server, tmp_path, monkeypatch):
    """The test Hub, emptied, with a fresh Hub cache for this test and a (fake) write token."""
    hub_server.reset()
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_TOKEN", TEST_TOKEN)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hub_server


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of a width-0.25 ECA-MobileNetV2 on the shapes data, as `attnzoo fit` writes it (trained
    once per test process, for the tests that need a real Trainer-written checkpoint)."""
    import lightning as L

    from attnzoo.data import ShapesDataModule
    from attnzoo.training import ImageClassifier

    folder = tmp_path_factory.mktemp("checkpoint")
    data = ShapesDataModule(num_train=32, num_val=16, batch_size=16)
    model = ImageClassifier("eca_mobilenetv2", num_classes=data.num_classes, model_args={"width_mult": 0.25},
                            class_names=data.class_names, preprocessing=data.preprocessing)
    trainer = L.Trainer(default_root_dir=folder, accelerator="cpu", max_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, data)
    trainer.save_checkpoint(folder / "eca.ckpt")
    return folder / "eca.ckpt"


@pytest.fixture
def make_lightning_checkpoint(tmp_path):
    """A factory of checkpoints laid out like those of attnzoo.training.module.ImageClassifier.

    Weights under ``model.``, metadata in ``checkpoint["attnzoo"]``, hyper-parameters as the module saves
    them. ``ema="module"``: the module's AveragedModel copy under ``ema.module.``; ``ema="callback"``:
    Lightning's WeightAveraging layout. Returns (path, model) where model holds the weights an export must
    produce (the averaged ones when there is an average).
    """
    import torch

    import attnzoo

    def make(name="r18", num_classes=3, seed=0, ema=None, class_names=None, filename=None, **model_args):
        torch.manual_seed(seed)
        model = attnzoo.create_model(name, num_classes=num_classes, **model_args).eval()
        for module in model.modules():  # non-trivial BatchNorm statistics, so eval outputs depend on them
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        weights = {k: v.clone() for k, v in model.state_dict().items()}
        other = {k: v + 1.0 if v.is_floating_point() else v for k, v in weights.items()}  # the "live" ones
        class_names = class_names or [f"class_{i}" for i in range(num_classes)]
        config = model.config.to_dict()
        checkpoint = {
            "epoch": 4,
            "global_step": 40,
            "pytorch-lightning_version": "2.6.6",
            "hyper_parameters": {"model": name, "num_classes": num_classes, "model_args": model_args,
                                 "class_names": class_names, "preprocessing": None, "label_smoothing": 0.1,
                                 "ema_decay": 0.999 if ema == "module" else None, "compile": False},
            "attnzoo": {"attnzoo_config": {k: config[k] for k in ("architecture", "num_classes", "model_args")},
                        "preprocessing": config["preprocessing"], "class_names": class_names, "ema": ema == "module"},
            "callbacks": {"ModelCheckpoint{'monitor': 'val/acc1'}": {"monitor": "val/acc1",
                                                                     "best_model_score": torch.tensor(0.625)}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        }
        if ema == "module":
            state = {f"model.{k}": v for k, v in other.items()}
            state.update({f"ema.module.{k}": v for k, v in weights.items()})
            state["ema.n_averaged"] = torch.tensor(40)
        elif ema == "callback":
            state = {f"model.{k}": v for k, v in weights.items()}
            checkpoint["current_model_state"] = {f"model.{k}": v for k, v in other.items()}
            checkpoint["averaging_state"] = {"n_averaged": torch.tensor(40)}
        else:
            state = {f"model.{k}": v for k, v in weights.items()}
        checkpoint["state_dict"] = state
        path = tmp_path / (filename or f"{name}-seed{seed}.ckpt")
        torch.save(checkpoint, path)
        return path, model

    return make


@pytest.fixture
def registered_peers():
    """benchmarks/peers.py's timm/torchvision catalogue registered with the bench for one test (the package
    itself never imports either library)."""
    import importlib.util
    from pathlib import Path

    from attnzoo.bench import peers

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "peers.py"
    spec = importlib.util.spec_from_file_location("attnzoo_benchmark_peers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    saved = dict(peers.PEERS)
    peers.register(module.PEERS.values())
    yield module
    peers.PEERS.clear()
    peers.PEERS.update(saved)
