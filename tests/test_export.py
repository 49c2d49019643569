"""attnzoo export --format onnx / pt2: parity with eager PyTorch in onnxruntime (the real peer), the metadata a
consumer needs, the docs' onnxruntime example, the command line and the onnxruntime row of attnzoo bench.

Every model is checked with non-trivial weights: identity-at-init modules (GCT, GC) and CBAM's zero-initialised
spatial BatchNorm would otherwise hide their gates, and the BatchNorm statistics are random.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import os
import re
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import attnzoo
from attnzoo.attention import AttentionModule
from attnzoo.cli import main
from attnzoo.errors import AttnzooError
from attnzoo.export import export_onnx, export_program, load_program, read_metadata

ROOT = Path(__file__).resolve().parent.parent
# The two shapes, run on one exported file each: the graph has dynamic batch, height and width.
SHAPES = [(1, 3, 224, 224), (3, 3, 160, 160)]
TOLERANCE = 1e-4  # max |onnxruntime - eager| over max |eager|
# One model per attention type, together covering both backbones, GCT's pre-conv gates, GC's softmax over
# positions, CBAM's [max, mean] descriptor and GAM's grouped convolutions with channel shuffle (registered on
# R-50/101/152 with groups=4, which the slow test exports; here on the shallower R-18 graph, which exports faster).
PER_ATTENTION = {"se": ("se_r18", {}), "eca": ("eca_mobilenetv2", {}), "gct": ("gct_r18", {}), "gc": ("gc_r18", {}),
                 "cbam": ("cbam_r18", {}), "gam": ("gam_r18", {"attention_kwargs": {"groups": 2}})}


# ------------------------------------------------------------------------------------------------- helpers
def randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random BatchNorm statistics and affine terms, and random attention parameters (scaled by fan-in)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AttentionModule):
                for p in module.parameters():
                    fan_in = p[0].numel() if p.dim() > 1 and p.shape[0] > 1 else 1
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5 / math.sqrt(fan_in))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=gen) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.rand(module.num_features, generator=gen) * 0.2 - 0.1)
        # A residual branch's last BatchNorm scaled like [0.5, 1.5] grows the residual stream exponentially over
        # R-152's 36 third-stage blocks (to ~1e19 by layer4): float32 eager then differs from float64 eager by
        # 40%, and a parity check would compare rounding, not the export. Small gains keep every depth tame.
        for module in model.modules():
            if hasattr(module, "last_bn"):
                bn = module.last_bn()
                bn.weight.copy_(torch.rand(bn.num_features, generator=gen) * 0.2 + 0.1)
    return model.eval()


def zoo_model(name: str, **kwargs) -> nn.Module:
    seed = zlib.crc32(name.encode())
    torch.manual_seed(seed)
    return randomize(attnzoo.create_model(name, **kwargs), seed)


def onnxruntime_session(path, threads=None):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def relative_errors(model: nn.Module, path, shapes=SHAPES, threads=None) -> list[float]:
    """max |onnxruntime - eager| / max |eager| at each shape (random images, fixed seeds)."""
    images = [torch.randn(shape, generator=torch.Generator().manual_seed(100 + i)) for i, shape in enumerate(shapes)]
    with torch.no_grad():
        wanted = [model(x).double().numpy() for x in images]
        # An ill-conditioned model's float32 output is rounding noise: then the export could not be judged. The
        # model goes to float64 and back in place (exact both ways): a copy of GAM-R152 would hold 3.3 GB more.
        model.double()
        try:
            exact = [model(x.double()).numpy() for x in images]
        finally:
            model.float()
    session = onnxruntime_session(path, threads)
    errors = []
    for x, want, want64 in zip(images, wanted, exact):
        got = session.run(None, {"image": x.numpy()})[0].astype(np.float64)
        assert got.shape == want.shape == (x.shape[0], model.num_classes)
        assert np.isfinite(want).all() and want.std() > 0  # a degenerate model would compare nothing
        rounding = float(np.abs(want - want64).max() / np.abs(want).max())
        assert rounding <= TOLERANCE / 10, f"eager float32 differs from float64 by {rounding:.1e}: ill-conditioned"
        errors.append(float(np.abs(got - want).max() / np.abs(want).max()))
    return errors


@pytest.fixture(scope="session")
def onnx_exports(tmp_path_factory):
    """(name, options) -> ONNX file of zoo_model(name, **options), exported once per session; the slow test
    reuses those of registered models without options (``cache``, keyed by name)."""
    root = tmp_path_factory.mktemp("onnx")
    cache: dict[str, Path] = {}

    def get(name: str, **options) -> Path:
        key = name + (json.dumps(options, sort_keys=True) if options else "")
        if key not in cache:
            cache[key] = root / f"{len(cache)}-{name}.onnx"
            export_onnx(zoo_model(name, **options), cache[key], check=False)
        return cache[key]

    get.cache = cache
    return get


# --------------------------------------------------------------------------------------- parity (default)
# The tests sharing onnx_exports' files run on one pytest-xdist worker (a session fixture is per worker);
# conftest.py starts this group first.
ONNX_GROUP = pytest.mark.xdist_group("onnx-exports")


@ONNX_GROUP
@pytest.mark.parametrize("attention", list(PER_ATTENTION))
def test_onnx_matches_eager_in_onnxruntime_at_both_shapes(attention, onnx_exports):
    name, options = PER_ATTENTION[attention]
    errors = relative_errors(zoo_model(name, **options), onnx_exports(name, **options))
    assert max(errors) <= TOLERANCE, (name, errors)


@ONNX_GROUP
def test_tiny_images_run_through_the_same_graph(onnx_exports):
    # 32x32 leaves a 1x1 map after the last stage (the case torch.export must not specialise away, and the one
    # nn.ChannelShuffle could not be exported for) and 37x29 is neither square nor a multiple of the stride.
    name, options = PER_ATTENTION["gam"]
    errors = relative_errors(zoo_model(name, **options), onnx_exports(name, **options),
                             shapes=[(2, 3, 32, 32), (1, 3, 37, 29)])
    assert max(errors) <= TOLERANCE, errors


# ------------------------------------------------------------------------------------ metadata and formats
def _normalized(images: torch.Tensor, preprocessing) -> torch.Tensor:
    """uint8 NCHW -> (pixel / 255 - mean) / std, as ImageClassifier.prepare_input does."""
    mean = torch.tensor(preprocessing.mean).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, -1, 1, 1)
    return (images.float() / 255 - mean) / std


def _eval_pipeline_logits(model, image_path):
    """attnzoo's own evaluation pipeline: resize + center crop (Pillow), normalisation, the eager model."""
    from attnzoo.data.transforms import eval_transform

    with Image.open(image_path) as img:
        x = eval_transform(model.config.preprocessing)(img)
    with torch.no_grad():
        return model(_normalized(x[None], model.config.preprocessing)).numpy()


def _docs_example() -> str:
    text = (ROOT / "docs" / "deploy.md").read_text()
    match = re.search(r"<!-- onnxruntime-example:start -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/deploy.md lost its onnxruntime example"
    return match.group(1)


def _photo(path: Path, size=(333, 250)) -> Path:
    gen = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    pixels = np.stack([xx * 255 // size[0], yy * 255 // size[1], (xx + yy) % 256], -1) + gen.integers(0, 40, (*size[::-1], 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=95)
    return path


def _labelled_model(name="eca_r18", **options):
    """A model with label names and a preprocessing of its own (bicubic, 192 crops of 219, mean 0.5)."""
    model = zoo_model(name, num_classes=3, **options)
    preprocessing = dataclasses.replace(model.config.preprocessing, input_size=(3, 192, 192),
                                        interpolation="bicubic", mean=(0.5, 0.5, 0.5))
    model.config = model.config.replace(class_names=("cat", "dog", "owl"), preprocessing=preprocessing)
    return model


@pytest.fixture(scope="module")
def labelled_export(tmp_path_factory):
    """ECA-R18 (kernel 5 everywhere) with labels and its own preprocessing, exported at opset 19 and checked."""
    model = _labelled_model(attention_kwargs={"kernel_size": 5})
    path = tmp_path_factory.mktemp("labelled") / "model.onnx"
    return model, path, export_onnx(model, path, opset=19)


def _run_docs_example(model_path: Path, tmp_path: Path, monkeypatch) -> dict:
    """Run the docs' block in ``tmp_path``, where it finds model.onnx (``model_path``) and image.jpg."""
    (tmp_path / "model.onnx").symlink_to(model_path)
    _photo(tmp_path / "image.jpg")
    example = _docs_example()
    assert len([line for line in example.splitlines() if line.strip() and not line.startswith(('import', 'from'))]) <= 11
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(example, "docs/deploy.md", "exec"), namespace)
    return namespace


def test_the_docs_onnxruntime_example_reproduces_attnzoos_pipeline(labelled_export, tmp_path, monkeypatch, capsys):
    model, path, _ = labelled_export
    logits = _run_docs_example(path, tmp_path, monkeypatch)["logits"]
    want = _eval_pipeline_logits(model, tmp_path / "image.jpg")
    assert np.abs(logits - want).max() <= TOLERANCE * np.abs(want).max()
    assert capsys.readouterr().out.strip() == model.config.class_names[int(want.argmax())]


def test_the_docs_example_runs_a_folded_uint8_graph_alike(tmp_path, monkeypatch, capsys):
    model = _labelled_model("r18")
    result = export_onnx(model, tmp_path / "folded.onnx", fold_preprocessing=True)
    assert result.metadata["input"]["dtype"] == "uint8" and result.metadata["input"]["normalize"] == "in_graph"
    logits = _run_docs_example(tmp_path / "folded.onnx", tmp_path, monkeypatch)["logits"]
    want = _eval_pipeline_logits(model, tmp_path / "image.jpg")
    assert np.abs(logits - want).max() <= TOLERANCE * np.abs(want).max()
    assert capsys.readouterr().out.strip() == model.config.class_names[int(want.argmax())]


def test_metadata_round_trips_through_onnx_and_onnxruntime(labelled_export):
    model, path, result = labelled_export
    meta = read_metadata(path)
    props = onnxruntime_session(path).get_modelmeta().custom_metadata_map
    assert {k: json.loads(v) for k, v in props.items()} == meta == result.metadata
    assert meta["architecture"] == "eca_r18" and meta["num_classes"] == 3
    assert meta["label_names"] == ["cat", "dog", "owl"] and meta["model_args"] == {"attention_kwargs": {"kernel_size": 5}}
    assert meta["preprocessing"] == {"input_size": [3, 192, 192], "resize_to": 219, "crop_pct": 0.875,
                                     "interpolation": "bicubic", "mean": [0.5, 0.5, 0.5],
                                     "std": [0.229, 0.224, 0.225]}
    assert meta["input"]["dtype"] == "float32" and meta["input"]["normalize"] == "caller"
    assert meta["output"]["shape"] == ["batch", 3]
    import onnx

    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [19]
    dims = [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    # Named for a reader (torch.export's own symbols would read s77, s53), the output's batch the input's.
    assert dims == ["batch", 3, "height", "width"]
    assert [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == ["batch", 3]
    # The model rebuilt from the metadata computes what the file computes.
    rebuilt = attnzoo.create_model(meta["architecture"], num_classes=meta["num_classes"], **meta["model_args"])
    rebuilt.load_state_dict(model.state_dict())
    assert max(relative_errors(rebuilt.eval(), path, shapes=[(2, 3, 192, 192)])) <= TOLERANCE


def test_pt2_program_folds_the_normalisation_and_carries_the_metadata(tmp_path):
    model = zoo_model("gc_r18", num_classes=5)
    model.config = model.config.replace(class_names=tuple("vwxyz"))
    result = export_program(model, tmp_path / "gc.pt2", fold_preprocessing=True)
    assert result.max_relative_error <= TOLERANCE and model.training is False
    program, meta = load_program(tmp_path / "gc.pt2")
    assert meta == read_metadata(tmp_path / "gc.pt2") == result.metadata  # read without unpickling, too
    assert meta["input"]["dtype"] == "uint8" and meta["input"]["normalize"] == "in_graph"
    for shape in SHAPES:
        image = torch.randint(0, 256, shape, dtype=torch.uint8)
        with torch.no_grad():
            want = model(_normalized(image, model.config.preprocessing))
            got = program.module()(image)
        assert (got - want).abs().max() <= TOLERANCE * want.abs().max()


def test_a_mismatch_is_refused_writing_nothing_and_the_model_keeps_its_mode(tmp_path):
    model = attnzoo.create_model("r18", num_classes=3)  # in training mode, as create_model returns it
    with pytest.raises(AttnzooError, match=r"differs from PyTorch by .* tolerance 0\b.*nothing was written"):
        export_onnx(model, tmp_path / "r18.onnx", tolerance=0.0)  # no float32 runtime matches to zero
    assert model.training and list(tmp_path.iterdir()) == []  # no file, no temporary directory left


# ------------------------------------------------------------------------------------- sources and the CLI
def test_cli_exports_a_lightning_checkpoint_to_onnx(tmp_path, make_lightning_checkpoint, capsys):
    ckpt, model = make_lightning_checkpoint("cbam_r18", num_classes=3, ema="module")
    main(["export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "out" / "cbam.onnx")])
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"wrote cbam_r18 (3 classes) as ONNX opset 18 to {tmp_path / 'out' / 'cbam.onnx'}")
    assert "onnxruntime matches PyTorch to" in out and "\n" not in out
    meta = read_metadata(tmp_path / "out" / "cbam.onnx")
    assert meta["label_names"] == ["class_0", "class_1", "class_2"] and meta["source"] == ckpt.name
    assert meta["metrics"]["val/acc1"] == 0.625
    assert max(relative_errors(model.eval(), tmp_path / "out" / "cbam.onnx")) <= TOLERANCE  # the EMA weights
    with pytest.raises(SystemExit) as exit_info:  # the same path again is refused, the file left alone
        main(["export", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "out" / "cbam.onnx")])
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err


def test_cli_exports_hub_weights_as_a_program(hub, tmp_path, make_lightning_checkpoint, capsys):
    ckpt, model = make_lightning_checkpoint("r18", num_classes=3)
    main(["push", str(ckpt), "--repo", "zoo/r18"])
    commit = hub.head("zoo/r18")
    capsys.readouterr()
    main(["export", "hf-hub:zoo/r18", "--format", "pt2", "--out", str(tmp_path / "r18.pt2")])
    assert "as a torch.export program" in capsys.readouterr().out
    program, meta = load_program(tmp_path / "r18.pt2")
    assert meta["source"] == f"hf-hub:zoo/r18@{commit}" and meta["label_names"] == ["class_0", "class_1", "class_2"]
    x = torch.randn(3, 3, 160, 160)
    with torch.no_grad():
        assert torch.allclose(program.module()(x), model.eval()(x), rtol=1e-4, atol=1e-5)


def test_export_from_a_weights_directory_keeps_its_metrics(tmp_path):
    model = zoo_model("se_r18", num_classes=2)
    attnzoo.save_pretrained(model, tmp_path / "w", metrics={"val/acc1": 0.9}, class_names=["no", "yes"])
    result = export_program(str(tmp_path / "w"), tmp_path / "se.pt2", check=False)
    assert result.metadata["metrics"] == {"val/acc1": 0.9} and result.metadata["source"] == "w"
    assert result.metadata["label_names"] == ["no", "yes"]


@pytest.mark.parametrize("args, words", [
    (["gct_r5", "--format", "onnx"], "unknown weights 'gct_r5'. Did you mean: gct_r50"),
    (["gct_r50", "--format", "onnx"], "no published weights for 'gct_r50'"),
    (["missing.ckpt", "--format", "pt2"], "no such file or directory: 'missing.ckpt'"),
    (["r18", "--format", "tflite"], "unknown export format 'tflite'. Accepted: onnx, pt2, safetensors"),
    (["r18", "--format", "pt2", "--opset", "19"], "--opset applies to --format onnx, not pt2"),
    (["r18", "--format", "onnx", "--opset", "13"], "opset must be an integer >= 18"),
])
def test_cli_mistakes_are_one_line(args, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *args, "--out", "new/folder/x.onnx"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith("attnzoo: error:") and "\n" not in err
    assert words in err
    assert list(tmp_path.iterdir()) == []  # not even the folders --out named


def test_a_missing_export_extra_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if it were not installed
    with pytest.raises(SystemExit):
        main(["export", "r18", "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    err = capsys.readouterr().err.strip()
    assert "needs onnxscript" in err and "pip install 'attnzoo[export]'" in err and "\n" not in err


# ------------------------------------------------------------------------------------------------ bench
def test_bench_reports_onnxruntime_beside_eager(tmp_path):
    from attnzoo.bench import run, table, write

    results = run(models=["r18"], tasks=["infer", "train"], compile=["eager", "onnxruntime"], batch_sizes=[2],
                  resolutions=[64], repeats=2, warmup=0, min_time=0.0, graph_breaks=False, num_classes=10, threads=1,
                  log=None)
    rows = {(r["compile"], r["task"]): r for r in results["rows"]}
    assert set(rows) == {("eager", "infer"), ("onnxruntime", "infer"), ("eager", "train")}  # no onnxruntime training
    ort = rows[("onnxruntime", "infer")]
    assert ort["error"] is None and ort["latency_s"]["median"] > 0 and ort["compile_s"] > 0
    assert ort.get("peak_memory_bytes") is None  # onnxruntime's arena is not torch's to measure
    assert [s["mode"] for s in results["speedups"]] == ["onnxruntime"]
    assert "onnxruntime" in table(results)
    paths = write(results, tmp_path)  # json, csv and the plot take the onnxruntime rows too
    assert set(paths) == {"json", "csv", "png"} and "onnxruntime" in Path(paths["csv"]).read_text()


# -------------------------------------------------------------------------------------- all 42 (slow)
def _cost(name: str) -> float:
    """A rough export-time weight (graph depth), to start the longest exports first on the two workers."""
    from attnzoo.registry import get_spec

    spec = get_spec(name)
    depth = {"r18": 1, "r34": 1.6, "r50": 2, "r101": 3.5, "r152": 5, "mobilenetv2": 2.5}[spec.backbone]
    return depth * (1.6 if spec.attention == "gct" else 1.0)


def parity_job(name: str, path: str, exported: bool) -> dict:
    """Export zoo_model(name) to ``path`` (unless ``exported``) and compare it at both shapes (a worker process)."""
    import resource

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    torch.set_num_threads(1)
    start, start_cpu = time.perf_counter(), cpu()
    model = zoo_model(name)
    if not exported:
        export_onnx(model, path, check=False)
    exported_at, exported_cpu = time.perf_counter(), cpu()
    errors = relative_errors(model, path, threads=1)
    for leftover in (path, path + ".data"):  # the 42 files hold ~7 GB of weights together (GAM-R152's beside it)
        if os.path.exists(leftover):
            os.remove(leftover)
    return {"errors": errors, "export_s": exported_at - start, "export_cpu_s": exported_cpu - start_cpu,
            "check_s": time.perf_counter() - exported_at, "check_cpu_s": cpu() - exported_cpu}


@pytest.fixture(scope="module")
def all_models_exported(request, onnx_exports, tmp_path_factory):
    """The selected ones of the 42 exports, run on two worker processes (spawned: the forked children of a
    process that has run OpenMP work can hang); those the default tests exported are only compared."""
    out = tmp_path_factory.mktemp("onnx-all")
    test_name = "test_every_model_exports_and_matches_eager_in_onnxruntime"
    selected = [item.callspec.params["name"] for item in request.session.items
                if getattr(item, "originalname", None) == test_name]
    names = sorted(selected, key=_cost, reverse=True)
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {}
        for name in names:
            cached = onnx_exports.cache.pop(name, None)
            futures[name] = pool.submit(parity_job, name, str(cached or out / f"{name}.onnx"), cached is not None)
        yield futures


@ONNX_GROUP
@pytest.mark.slow
@pytest.mark.exhaustive
@pytest.mark.parametrize("name", attnzoo.list_models())
def test_every_model_exports_and_matches_eager_in_onnxruntime(name, all_models_exported):
    result = all_models_exported[name].result()  # no timeout: a job may wait behind all the others
    print(f"{name}: export {result['export_s']:.1f}s (cpu {result['export_cpu_s']:.1f}s), check {result['check_s']:.1f}s "
          f"(cpu {result['check_cpu_s']:.1f}s), errors {result['errors']}")
    assert max(result["errors"]) <= TOLERANCE, (name, result["errors"])
