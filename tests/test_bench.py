"""attnzoo bench: runs end to end on a tiny configuration, writes what it promises, and every model in a
representative set traces into one graph for evaluation and for a training step."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from attnzoo.bench import graph_breaks, memory, run, table, write
from attnzoo.bench.selection import Entry, select
from attnzoo.bench.workload import Setting, Workload, make_workload
from attnzoo.cli import main
from attnzoo.compiling import compile_kwargs
from attnzoo.errors import AttnzooError

TINY = {"width_mult": 0.25}


@pytest.fixture(scope="module")
def tiny_results():
    return run(
        models=["mobilenetv2", "eca_mobilenetv2", "gam_mobilenetv2@groups=2"], tasks=["infer", "train"],
        compile=["eager"], batch_sizes=[2], resolutions=[32, 48], repeats=2, warmup=0, min_time=0.0,
        graph_breaks=False, num_classes=10, model_args=TINY, threads=1, log=None,
    )


def test_run_measures_every_model_against_its_plain_backbone(tiny_results):
    rows = tiny_results["rows"]
    assert len(rows) == 3 * 2 * 2  # models x tasks x resolutions
    for row in rows:
        assert row["error"] is None
        assert row["latency_s"]["min"] <= row["latency_s"]["median"] <= row["latency_s"]["max"]
        assert row["images_per_s"]["median"] == pytest.approx(2 / row["latency_s"]["median"])
        assert row["timings"] >= 2 and row["ratio_to_plain"]["median"] > 0
        if row["attention"] is None:
            assert row["ratio_to_plain"] == {"median": 1.0, "min": 1.0, "max": 1.0}
        if memory.cpu_supported():
            assert row["peak_memory_bytes"] > 0 and row["memory_ratio_to_plain"] > 0
    gam = [r for r in rows if r["model"] == "gam_mobilenetv2@groups=2" and r["task"] == "train"]
    assert gam and all(r["memory_ratio_to_plain"] > 1 for r in gam if r.get("memory_ratio_to_plain"))
    assert tiny_results["machine"]["torch"] == torch.__version__


def test_outputs_table_json_csv_png(tiny_results, tmp_path):
    text = table(tiny_results)
    assert "eca_mobilenetv2" in text and "x plain" in text
    paths = write(tiny_results, tmp_path / "out")
    assert json.loads(open(paths["json"]).read())["rows"] == json.loads(json.dumps(tiny_results["rows"]))
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(tiny_results["rows"]) and float(rows[1]["ratio_to_plain_median"]) > 0
    with Image.open(paths["png"]) as image:
        assert image.format == "PNG" and image.width > 500 and image.height > 100


def test_docs_page_regenerated_from_runs_without_peers_keeps_its_peer_section(tiny_results, tmp_path):
    # the peer table comes from a run in the peers venv; regenerating the page from this venv's runs keeps it
    spec = importlib.util.spec_from_file_location("make_docs", Path(__file__).parent.parent / "benchmarks" / "make_docs.py")
    make_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_docs)
    write(tiny_results, tmp_path / "runs" / "tiny", plot=False)
    docs = tmp_path / "docs"
    docs.mkdir()
    section = f"{make_docs.PEERS_START}\n## Peers: timm and torchvision (earlier)\n\n| table |\n{make_docs.PEERS_END}"
    (docs / "benchmarks.md").write_text(f"# Benchmarks\n\nold text\n\n{section}\n")
    make_docs.main(str(tmp_path / "runs"), str(docs))
    page = (docs / "benchmarks.md").read_text()
    assert "old text" not in page and "## tiny" in page and page.count(section) == 1
    # Written for users: the budget each attention is held to, not the project's goal bookkeeping.
    assert "within budget" in page and "issue" not in page.lower() and "| met |" not in page


def test_peak_memory_counts_state_and_the_step():
    setting = Setting("cpu", "fp32", False, "train", 2, 32)
    workload = make_workload(select("r18")["r18"][0], "eager", setting, 10, {})
    workload.run()
    peak = memory.peak_bytes(workload, "cpu")
    if not memory.cpu_supported():
        pytest.skip("torch built without the profiler: the CPU figure is None by design")
    # weights + momentum of ResNet-18 alone are ~90 MB; the step adds activations and gradients on top.
    assert peak > workload.state_bytes() > 80e6
    assert memory.peak_bytes(workload, "cpu") == peak  # counted from the allocator's records: no noise


def test_cpu_peak_is_the_most_bytes_alive_at_once():
    if not memory.cpu_supported():
        pytest.skip("torch built without the profiler")
    model = torch.nn.Linear(1000, 1000)  # 4,004,000 bytes of state

    def step():
        first = torch.ones(2_000_000)  # 8 MB
        second = torch.ones(1_000_000)  # 4 MB, alive beside the first: 12 MB
        del first, second
        third = torch.ones(2_500_000)  # 10 MB alone: not the peak
        del third

    peak = memory.peak_bytes(Workload(step, model, None), "cpu")
    # A few bytes of the ops' own bookkeeping (scalars) may come on top; never a whole map more or less.
    assert 4_004_000 + 12_000_000 <= peak < 4_004_000 + 12_000_000 + 4096


def test_gct_training_memory_stays_at_the_plain_network():
    """GCT gates all 20 convolutions of ResNet-18; its gated convolution keeps x and the [B, C] gate for the
    backward pass instead of the gated copy x·g (attnzoo.backbones.layers.GatedConv2d). Without that, each gate
    adds one feature map: the step's bytes above the state went from 1.01x plain ResNet-18's to 1.16x when it
    was turned off (SE-ResNet-18: 1.05x)."""
    if not memory.cpu_supported():
        pytest.skip("torch built without the profiler")
    setting = Setting("cpu", "fp32", False, "train", 8, 96)
    step_bytes = {}
    for name in ("r18", "se_r18", "gct_r18"):
        workload = make_workload(select(name)["r18"][-1], "eager", setting, 10, {})
        workload.run()
        step_bytes[name] = memory.peak_bytes(workload, "cpu") - workload.state_bytes()
    assert step_bytes["gct_r18"] <= step_bytes["se_r18"] and step_bytes["gct_r18"] < 1.04 * step_bytes["r18"], step_bytes


def test_selection_globs_variants_and_the_added_plain_backbone():
    groups = select(["eca_r18", "gam_*@groups=2"])
    assert [e.label for e in groups["r18"]] == ["r18", "eca_r18", "gam_r18@groups=2"]
    assert groups["mobilenetv2"][0] == Entry("mobilenetv2", "mobilenetv2", "mobilenetv2", None)
    assert groups["mobilenetv2"][1].options == {"groups": 2}
    with pytest.raises(AttnzooError, match="unknown model 'se_r51'"):
        select(["se_r51"])
    with pytest.raises(AttnzooError, match="key=value"):
        select(["se_r18@16"])
    with pytest.raises(AttnzooError, match="has no attention"):
        select(["r18@groups=2"])
    with pytest.raises(AttnzooError, match="no model matches"):
        select(["*_vit"])


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None or importlib.util.find_spec("torchvision") is not None,
                    reason="checks the venv without peers (the peers venv has tests/test_peers.py)")
def test_without_timm_or_torchvision_no_peer_is_added_and_asking_for_one_is_one_clear_error(registered_peers):
    groups = select(["r50", "se_r50"], peers=None)
    assert [e.label for e in groups["r50"]] == ["r50", "se_r50"]
    with pytest.raises(AttnzooError, match="'timm:seresnet50' needs timm, which is not installed here"):
        select(["timm:seresnet50"])
    with pytest.raises(AttnzooError, match="timm and torchvision are not installed"):
        select(["r50"], peers=True)
    with pytest.raises(AttnzooError, match="unknown torchvision peer 'torchvision:vgg16'. Accepted: torchvision:mobilenet_v2"):
        select(["torchvision:vgg16"])
    assert "timm" not in sys.modules and "torchvision" not in sys.modules


def test_plain_attnzoo_bench_has_no_peers_and_says_where_they_come_from():
    with pytest.raises(AttnzooError, match="no peers are registered: attnzoo does not import timm or torchvision"):
        select(["timm:seresnet50"])
    assert [e.label for e in select(["r50", "se_r50"], peers=None)["r50"]] == ["r50", "se_r50"]


def test_cli_bad_option_is_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--models", "[r18]", "--compile", "[turbo]", "--out_dir", "null"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnzoo: error: compile: unknown 'turbo'") and "\n" not in err


# The placements and operations that could break a graph: pre-conv gates (GCT), softmax pooling + bmm (GC),
# max/mean descriptors + concat (CBAM), grouped convs + channel shuffle (GAM), on both backbone families.
# SE and ECA are plain pooling + conv; tests/test_models.py compiles every attention fullgraph, and
# `attnzoo bench` reports the graph breaks of every model it runs.
REPRESENTATIVE = ["gct_r18", "gc_r18", "cbam_r18", "gam_mobilenetv2@groups=2"]


@pytest.mark.parametrize("label", REPRESENTATIVE)
def test_no_graph_breaks_in_eval_or_training(label):
    entry = next(e for entries in select([label]).values() for e in entries if e.label == label)
    args = TINY if entry.backbone == "mobilenetv2" else {}
    counts = graph_breaks.count(entry, num_classes=10, model_args=args, resolution=32)
    assert (counts["eval"], counts["train"]) == (0, 0), counts["reasons"]


@pytest.mark.slow
def test_compiled_training_step_fullgraph_inductor_matches_eager():
    # The one real inductor compile: forward + backward of a pre-conv gated (GCT) model, fullgraph.
    # Float64 and no dropout: with random gates and batch-4 BatchNorm the float32 gradients are too
    # ill-conditioned to compare (they differ by rounding alone); in float64 compiled and eager agree to ~1e-10.
    torch._dynamo.reset()
    torch.manual_seed(0)
    import attnzoo

    model = attnzoo.create_model("gct_mobilenetv2", num_classes=10, width_mult=0.25, drop_rate=0.0).train().double()
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "gamma") and hasattr(module, "beta"):
                module.gamma.normal_()  # a non-trivial gate
                module.beta.normal_()
    x, y = torch.randn(4, 3, 32, 32, dtype=torch.float64), torch.randint(0, 10, (4,))
    compiled = torch.compile(model, fullgraph=True, **compile_kwargs(None, "cpu"))  # as the trainer compiles
    grads = []
    for fn in (compiled, model):
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(fn(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8)


KERNEL_PROFILE = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_profile.py"


def _load_kernel_profile():
    spec = importlib.util.spec_from_file_location("kernel_profile", KERNEL_PROFILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_profile_unknown_model_is_one_line(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["kernel_profile.py", "gct_r55"])
    with pytest.raises(SystemExit) as exit_info:
        _load_kernel_profile().main()
    assert exit_info.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "unknown model 'gct_r55'" in error_lines[0], error_lines


@pytest.mark.slow
def test_kernel_profile_sees_inductors_kernels_and_the_library_calls():
    # benchmarks/kernel_profile.py sorts profiler events into inductor's fused kernels and library calls; if the
    # kernels stopped reaching the profiler, or were renamed, its totals would silently drop them.
    import torch._inductor.config as inductor_config

    kernel_profile = _load_kernel_profile()

    torch._dynamo.reset()
    entry = select(["gct_mobilenetv2"])["mobilenetv2"][1]
    workload = make_workload(entry, "default", Setting("cpu", "fp32", False, "infer", 2, 32), 10, TINY)
    with inductor_config.patch({"cpp.enable_kernel_profile": True}):
        workload.run()
        events = kernel_profile.profile_steps(workload.run, steps=1)
    by_category = {}
    for name, (ms, calls) in events.items():
        by_category.setdefault(kernel_profile.category(name), []).append((name, calls))
    fused = by_category.get("fused kernels", [])
    assert fused, sorted(events)
    # MobileNetV2 has 52 convolutions, each with its GCT fused ahead of it; the library runs the convolutions.
    assert sum(calls for _, calls in fused) >= 52
    assert any("convolution" in name for name, _ in by_category.get("library calls", []))


def test_one_settings_dataclass_behind_run_and_the_command_line(capsys):
    import dataclasses

    from attnzoo.bench import BenchSettings
    from attnzoo.bench.command import bench_command
    from attnzoo.cli import _load

    settings = BenchSettings(models="r18", tasks=["infer", "infer"], compile=["eager"])
    assert settings.models == ("r18",) and settings.tasks == ("infer",)  # normalised, and frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.repeats = 2
    # The command's options are the dataclass's fields plus what it does with the results: nothing repeated.
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    shown = capsys.readouterr().out
    for name in [f.name for f in dataclasses.fields(BenchSettings)] + ["out_dir", "plot", "data_dir", "data_workers"]:
        assert f"--{name} " in shown, name
    assert _load("attnzoo.bench.command:bench_command") is bench_command
    with pytest.raises(AttnzooError, match="repeats must be >= 1"):
        run(settings, repeats=0)  # options on top of a settings object are checked the same way


def test_bench_and_trainer_accept_the_same_compile_modes():
    from attnzoo.bench import BenchSettings
    from attnzoo.compiling import COMPILE_MODES
    from attnzoo.training import ImageClassifier

    assert set(COMPILE_MODES) <= set(torch._inductor.list_mode_options())  # torch's own names
    for mode in COMPILE_MODES:
        assert BenchSettings(compile=["eager", mode]).compile == ("eager", mode)
        assert ImageClassifier("r18", num_classes=2, compile=mode).compile_mode == mode
    with pytest.raises(AttnzooError, match="max-autotune-no-cudagraphs"):
        ImageClassifier("r18", num_classes=2, compile="turbo")


def test_timing_stands_on_its_own():
    import ast

    source = (Path(__file__).resolve().parents[1] / "attnzoo" / "bench" / "timing.py").read_text()
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("attnzoo.bench") for m in imported)


def test_make_docs_says_which_device_ran_and_keeps_the_hand_written_part(tiny_results, tmp_path):
    spec = importlib.util.spec_from_file_location("make_docs", Path(__file__).resolve().parents[1] / "benchmarks"
                                                  / "make_docs.py")
    make_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_docs)
    write(tiny_results, tmp_path / "runs" / "cpu", plot=False)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "benchmarks.md").write_text(f"old tables\n\n{make_docs.KEEP_MARKER}\n\n## Design measurements\nkept\n")
    make_docs.main(str(tmp_path / "runs"), str(docs))
    page = (docs / "benchmarks.md").read_text()
    assert "old tables" not in page and "No GPU was available" in page
    assert page.endswith(f"{make_docs.KEEP_MARKER}\n\n## Design measurements\nkept\n")
    on_gpu = {**tiny_results, "machine": {**tiny_results["machine"], "device": "cuda", "gpu": "NVIDIA H200"}}
    write(on_gpu, tmp_path / "runs" / "cpu", plot=False)
    page = make_docs.render(str(tmp_path / "runs"))
    assert "No GPU" not in page and "GPU NVIDIA H200" in page
