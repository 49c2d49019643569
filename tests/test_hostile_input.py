"""A hostile world (issue 21): values out of range, FIFOs, config bombs, garbled weights, data that does not match,
Hub names that are paths. Each is refused or skipped in one line, quickly, before the work."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import attnzoo
from attnzoo.cli import main
from attnzoo.errors import MAX_MESSAGE, AttnzooError
from attnzoo.preprocessing import Preprocessing
from attnzoo.weights.api import save_pretrained
from attnzoo.weights.format import CONFIG_NAME, WEIGHTS_NAME, parse_config

from test_data import make_image_folder

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def attnzoo_cli(*args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    """The attnzoo command in a fresh process, as a user runs it; a hang fails the test instead of the run."""
    return subprocess.run([sys.executable, "-m", "attnzoo", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("attnzoo: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def _cli_error(capsys, *argv) -> str:
    """The one line the CLI (in this process) ends with."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@contextmanager
def time_limit(seconds: int):
    """Fail (instead of hanging for ever) when the block takes longer than ``seconds``."""
    def expire(*_):
        raise TimeoutError(f"took more than {seconds} s: a hang")
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def weights_dir(tmp_path) -> Path:
    model = attnzoo.create_model("mobilenetv2", num_classes=2, width_mult=0.35)
    model.config = model.config.replace(preprocessing=Preprocessing((3, 32, 32)))
    save_pretrained(model, tmp_path / "weights", class_names=["cat", "dog"])
    return tmp_path / "weights"


def _rewrite_weights(directory: Path, cast) -> None:
    tensors = load_file(directory / WEIGHTS_NAME)
    save_file({k: cast(v) for k, v in tensors.items()}, directory / WEIGHTS_NAME, metadata={"format": "pt"})


def _rewrite_config(directory: Path, **changes) -> None:
    cfg = json.loads((directory / CONFIG_NAME).read_text())
    (directory / CONFIG_NAME).write_text(json.dumps({**cfg, **changes}))


# ---- values are range-checked where they are read ------------------------------------------------------------

def test_info_refuses_image_sizes_out_of_range_with_the_range():
    line = one_line_error(attnzoo_cli("info", "r18", "--input_size", "3", "0", "0", timeout=60))
    assert "input_size's height must be an image side in pixels from 1 to 4096, got 0." in line
    for size in (-5, 1000000):
        with pytest.raises(AttnzooError, match=f"input_size's width must be an image side .* got {size}"):
            attnzoo.model_info("r18", input_size=(3, 224, size))


@pytest.mark.slow
def test_fit_refuses_a_negative_learning_rate_before_the_data_is_made(tmp_path):
    result = attnzoo_cli("fit", "--config", ROOT / "configs/quickstart.yaml", "--model.optimizer.init_args.lr", "-0.1",
                         "--trainer.default_root_dir", tmp_path / "run")
    line = one_line_error(result)
    assert "--model.optimizer AdamW refuses its init_args: Invalid learning rate: -0.1" in line
    assert "lr, weight_decay, momentum and eps 0 or more" in line
    assert not (tmp_path / "run").exists()


def test_a_data_set_that_cannot_fit_in_memory_is_refused_before_it_is_made():
    from attnzoo.data import ShapesDataModule

    with pytest.raises(AttnzooError, match="image_size must be an image side in pixels from 16 to 4096, got 1000000"):
        ShapesDataModule(image_size=1000000)
    with pytest.raises(AttnzooError, match=r"GiB in memory, more than this machine's"):
        ShapesDataModule(image_size=4096, num_train=10**6)


def test_an_unknown_device_is_one_line_before_the_weights_are_read(weights_dir, tmp_path, capsys):
    make_image_folder(tmp_path / "data", per_class=1)
    line = _cli_error(capsys, "evaluate", str(weights_dir), "--data", str(tmp_path / "data/val"), "--dataset", "x",
                      "--device", "cdua")
    assert "--device 'cdua' is not a device. Accepted: cpu, cuda, cuda:N, mps or auto." in line
    from attnzoo.devices import resolve_device

    assert resolve_device("cpu") == "cpu" and resolve_device(None) in ("cpu", "cuda")
    with pytest.raises(AttnzooError, match="--device 'meta' is not a device attnzoo runs on"):
        resolve_device("meta")
    with pytest.raises(AttnzooError, match="cuda:99"):
        resolve_device("cuda:99")


def test_negative_num_workers_and_a_single_class_are_refused(tmp_path):
    from attnzoo.data import ImageFolderDataModule
    from attnzoo.weights.evaluate import evaluate_folder

    with pytest.raises(AttnzooError, match="num_workers must be 0 .* or more, got -1"):
        evaluate_folder(attnzoo.create_model("r18", num_classes=2), tmp_path, num_workers=-1)
    make_image_folder(tmp_path / "one", classes=("cat",), per_class=1)
    with pytest.raises(AttnzooError, match=r"has 1 class folder \(cat\): a classifier needs 2 or more"):
        ImageFolderDataModule(tmp_path / "one", num_workers=0)


def test_optimizer_options_are_checked_when_the_module_is_built():
    from attnzoo.training import ImageClassifier

    with pytest.raises(AttnzooError, match="SGD refuses its init_args: Invalid momentum value: -0.9"):
        ImageClassifier("r18", num_classes=2, optimizer=partial(torch.optim.SGD, lr=0.1, momentum=-0.9))
    ImageClassifier("r18", num_classes=2, optimizer=partial(torch.optim.SGD, lr=0.0))  # zero is a learning rate


# ---- bounded input -------------------------------------------------------------------------------------------

def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


@pytest.mark.slow
def test_fit_skips_a_fifo_named_like_an_image_and_says_so(tmp_path):
    """``pipe.jpg`` a FIFO: fit ran for ever on the old code. An empty extra validation class folder is only
    mentioned."""
    make_image_folder(tmp_path / "data", per_class=1, size=(40, 40))
    _fifo(tmp_path / "data/train/cat/pipe.jpg")
    _fifo(tmp_path / "data/val/dog/pipe.jpg")
    (tmp_path / "data/val/bird").mkdir()
    result = attnzoo_cli(  # one batch of 4 > 3 samples: every file is read, the FIFOs too
        "fit", "--model.model", "mobilenetv2", "--model.model_args", '{"width_mult": 0.35}',
        "--data", "attnzoo.data.ImageFolderDataModule", "--data.data_dir", tmp_path / "data",
        "--data.input_size", "32", "--data.batch_size", "4", "--data.num_workers", "0",
        "--trainer.max_steps", "1", "--trainer.accelerator", "cpu", "--trainer.logger", "false",
        "--trainer.default_root_dir", tmp_path / "run", timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pipe.jpg" in result.stderr and "not a regular file (a FIFO)" in result.stderr
    assert "class folder(s) without images and not in the training split are ignored: bird" in result.stderr


def test_predict_evaluate_and_explain_read_images_through_one_bounded_open(tmp_path):
    from attnzoo.data.image_folder import ImageFiles
    from attnzoo.data.transforms import eval_transform
    from attnzoo.preprocessing import Preprocessing

    make_image_folder(tmp_path / "images", per_class=1)
    pipe = _fifo(tmp_path / "images/val/cat/pipe.jpg")
    files = ImageFiles([tmp_path / "images/val", pipe], eval_transform(Preprocessing((3, 32, 32))))
    with time_limit(30), pytest.warns(UserWarning, match="pipe.jpg.*not a regular file \\(a FIFO\\)"):
        readable = [files[i][2] for i in range(len(files))]
    assert readable.count(False) == 2 and readable.count(True) == 2
    from attnzoo.data.image_folder import open_image  # evaluate's and explain's images come through it too

    with time_limit(30), pytest.raises(OSError, match="a character device"), open_image("/dev/zero"):
        pass


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    for name, previous in zip("bcdefghi", "abcdefgh"):
        bomb += f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    (tmp_path / "bomb.yaml").write_text("trainer:\n  plugins:\n" + "".join(f"    {line}\n" for line in bomb.splitlines()))
    assert (tmp_path / "bomb.yaml").stat().st_size < 600  # nine levels of nine: 387 million strings
    for command in ("fit", "export"):
        line = one_line_error(attnzoo_cli(command, "--config", tmp_path / "bomb.yaml", timeout=60))
        assert "stands for more than 100,000 values once its YAML aliases" in line
    (tmp_path / "deep.yaml").write_text("a:\n" + "".join("  " * i + "b:\n" for i in range(1, 2000)))
    assert "nests deeper than 50 levels" in one_line_error(attnzoo_cli("fit", "--config", tmp_path / "deep.yaml"))


def test_deep_or_huge_config_json_is_one_short_line(weights_dir):
    for depth in (40, 100_000):
        with pytest.raises(AttnzooError, match="nests deeper than 32 levels"):
            parse_config(b'{"a": ' * depth + b"1" + b"}" * depth, "config.json")
    _rewrite_config(weights_dir, architecture="x" * 1_000_000)
    with pytest.raises(AttnzooError, match="unknown model 'xxx.*characters cut") as err:
        attnzoo.load(str(weights_dir))
    assert len(str(err.value)) <= MAX_MESSAGE


def test_long_values_are_cut_in_every_message(capsys):
    line = _cli_error(capsys, "info", "y" * 100_000)
    assert "characters cut" in line and len(line) < MAX_MESSAGE


def test_config_sizes_are_compared_with_the_weights_before_the_network_is_built(weights_dir):
    _rewrite_config(weights_dir, num_classes=1_000_000_000, label_names=None)
    with pytest.raises(AttnzooError, match=r"shapes differ for classifier.1.bias \[2\] \(model: \[1000000000\]\)"):
        attnzoo.load(str(weights_dir))


# ---- garbled weights -----------------------------------------------------------------------------------------

def test_weights_cast_to_int8_are_refused_and_nothing_is_recorded(weights_dir, tmp_path):
    _rewrite_weights(weights_dir, lambda t: t.to(torch.int8) if t.is_floating_point() else t)
    before = (weights_dir / CONFIG_NAME).read_bytes()
    make_image_folder(tmp_path / "data", per_class=1)
    line = one_line_error(attnzoo_cli("evaluate", weights_dir, "--data", tmp_path / "data/val", "--dataset", "x",
                                      "--device", "cpu", timeout=60))
    assert "are not weights mobilenetv2 can use: classifier.1.bias (int8; the network's is float32)" in line
    assert (weights_dir / CONFIG_NAME).read_bytes() == before


def test_half_precision_weights_load_and_say_so(weights_dir, caplog):
    original = attnzoo.load(str(weights_dir))
    for dtype in (torch.float16, torch.bfloat16):
        directory = weights_dir.with_name(str(dtype))
        shutil.copytree(weights_dir, directory)
        _rewrite_weights(directory, lambda t: t.to(dtype) if t.is_floating_point() else t)
        with caplog.at_level("WARNING", logger="attnzoo.weights"):
            loaded = attnzoo.load(str(directory))
        assert f"{str(dtype)[6:]} -> float32 (exact)" in caplog.text
        expected = {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in original.state_dict().items()}
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
    _rewrite_weights(weights_dir, lambda t: t.float() if not t.is_floating_point() else t)  # num_batches_tracked
    with pytest.raises(AttnzooError, match="num_batches_tracked \\(float32; the network's is int64\\)"):
        attnzoo.load(str(weights_dir))


# ---- data that does not match --------------------------------------------------------------------------------

def test_a_validation_class_that_training_lacks_is_refused(tmp_path):
    from attnzoo.data import ImageFolderDataModule

    make_image_folder(tmp_path, per_class=1)
    (tmp_path / "val/bird").mkdir()
    shutil.copy(tmp_path / "val/cat/0.jpg", tmp_path / "val/bird/0.jpg")
    module = ImageFolderDataModule(tmp_path, num_workers=0)
    with pytest.raises(AttnzooError, match=r"has class folder\(s\) the training split .* does not: bird\. Their "):
        module.setup("validate")


# ---- Hub names and paths -------------------------------------------------------------------------------------

def test_hub_names_that_are_paths_are_refused_before_any_request(hub, tmp_path, capsys, weights_dir):
    from attnzoo.weights.hub import download, upload_files

    for source in ("hf-hub:../etc", "hf-hub:src/..", "hf-hub:zoo/a@../../x", "hf-hub:zoo/a@/abs"):
        with pytest.raises(AttnzooError, match="is refused"):
            attnzoo.load(source)
    with pytest.raises(AttnzooError, match=r"file name '\.\./x\.json' in Hub repo 'zoo/a' is refused"):
        download("zoo/a", "../x.json")
    with pytest.raises(AttnzooError, match="revision 'a/../b' of Hub repo 'zoo/a' is refused"):
        upload_files({"config.json": b"{}"}, "zoo/a", revision="a/../b")
    line = _cli_error(capsys, "push", str(weights_dir), "--repo", "zoo/a", "--revision", "../main")
    assert "revision '../main' of Hub repo 'zoo/a' is refused: it has an empty, '.' or '..' path segment" in line
    assert hub.state.requests == []


def test_a_mirror_answering_a_path_for_a_commit_writes_nothing_outside_the_cache(hub, tmp_path, weights_dir):
    from attnzoo.weights.hub import cache_dir, upload_files

    upload_files({WEIGHTS_NAME: weights_dir / WEIGHTS_NAME, CONFIG_NAME: weights_dir / CONFIG_NAME}, "zoo/a")
    # The cache is tmp_path/hf-cache: ../../../../evil from its snapshots folder is tmp_path/../evil.
    for answer in ("../../../../evil", "/tmp/evil-attnzoo", "a/b", ".."):
        hub.answer_commit(answer)
        with pytest.raises(AttnzooError, match="answered"):
            attnzoo.load("hf-hub:zoo/a")
    assert not (tmp_path.parent / "evil").exists() and not Path("/tmp/evil-attnzoo").exists()
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and not str(p).startswith(cache_dir())
               and not str(p).startswith(str(weights_dir))]
    assert outside == []
    hub.answer_commit(None)
    assert attnzoo.load("hf-hub:zoo/a").config.architecture == "mobilenetv2"  # nothing refused stays cached


def test_messages_never_suggest_a_refused_value(tmp_path, capsys):
    official = {k: v for k, v in attnzoo.create_model("r18", num_classes=10).state_dict().items()
                if "num_batches_tracked" not in k}
    torch.save(official, tmp_path / "r18.pth")
    line = _cli_error(capsys, "convert", str(tmp_path / "r18.pth"), "--from", "torchvision", "--model", "r18",
                      "--out", str(tmp_path / "out"), "--num_classes", "0")
    assert "--num_classes must be a positive integer, got 0." in line and "num_classes=0" not in line
    with pytest.raises(AttnzooError) as err:
        attnzoo.load("../etc")
    assert "hf-hub:" not in str(err.value)
