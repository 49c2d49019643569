"""`attnzoo explain` end to end (in process, tiny 32x32 images): it writes decodable pictures, figures and a
summary.json that parses, reads every kind of source, and answers a bad input with one line. Also the bench's
picture without matplotlib. The viz extra (matplotlib, captum) is part of the test extra."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import attnzoo
from attnzoo.attention import AttentionModule
from attnzoo.info import model_info

SHAPES_PREPROCESSING = {"input_size": [3, 32, 32], "interpolation": "bilinear", "crop_pct": 1.0,
                        "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


def randomize_attention(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random attention parameters (GC's zero last conv, CBAM's zero BN weight would hide every map)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, AttentionModule):
                for p in module.parameters():
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return model.eval()


def write_shapes(root: Path, per_class: int = 2, classes: int = 3) -> list[str]:
    from attnzoo.data.synthetic import SHAPE_CLASSES, generate

    images, labels = generate(per_class * classes, 32, seed=7, num_classes=classes)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / SHAPE_CLASSES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i}.png")
    return list(SHAPE_CLASSES[:classes])


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Trained-looking weights on disk (random, with BN statistics) for the shapes preprocessing, per model."""
    from attnzoo.training import ImageClassifier

    made = {}

    def make(name: str) -> str:
        if name not in made:
            torch.manual_seed(0)
            from attnzoo.data.synthetic import SHAPE_CLASSES

            classifier = ImageClassifier(name, num_classes=3, class_names=list(SHAPE_CLASSES[:3]),
                                         preprocessing=SHAPES_PREPROCESSING)
            randomize_attention(classifier.model)
            folder = tmp_path_factory.mktemp(name)
            attnzoo.save_pretrained(classifier.model, folder, class_names=list(SHAPE_CLASSES[:3]), overwrite=True)
            made[name] = str(folder)
        return made[name]

    return make


def explain_cli(*args: str) -> None:
    from attnzoo.cli import main

    main(["explain", *args])


def decodable_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        assert image.format == "PNG"
        return image.size


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cbam_r18", "gc_r18", "gct_r18", "gam_r18"])
def test_explain_writes_pictures_figures_and_summary(name, weights, tmp_path, capsys):
    write_shapes(tmp_path / "shapes")
    out = tmp_path / "out"
    explain_cli(weights(name), "--images", str(tmp_path / "shapes" / "disk"), str(tmp_path / "shapes" / "ring"),
                "--out", str(out), "--batch_size", "3")
    assert "explained 4 image(s)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["architecture"] == name and len(summary["images"]) == 4
    assert summary["gradcam_layer"] == {"path": "layer2", "output_shape": [128, 4, 4]}
    modules = summary["modules"]
    assert len(modules) == summary["attention_modules"] == model_info(name)["attention_modules"]
    for path, entry in modules.items():
        for tap, stats in entry["taps"].items():
            assert stats["images"] == 4
            p = stats["percentiles"]
            assert stats["min"] <= p["p1"] <= p["p25"] <= p["p50"] <= p["p75"] <= p["p99"] <= stats["max"]
    first = modules[next(iter(modules))]
    if name == "cbam_r18":
        assert first["taps"]["spatial_gate"]["shape"] == [1, 8, 8] and first["taps"]["channel_gate"]["shape"] == [64]
    if name == "gc_r18":
        assert set(first["taps"]) == {"context_mask", "context_add"}
    if name == "gam_r18":
        assert first["taps"]["channel_gate"]["kept"] == "mean over positions"
    for row in summary["images"]:
        width, height = decodable_png(out / row["picture"])
        assert width > 300 and height > 150
        assert row["predicted"]["name"] in ("disk", "ring", "square")
    for figure in summary["files"]:
        if figure.endswith(".png"):
            decodable_png(out / figure)
    assert "channel_gate.png" in summary["files"] or "context_add.png" in summary["files"]


@pytest.mark.slow
def test_explain_per_class_draws_the_papers_figures_and_skips_a_broken_image(weights, tmp_path):
    classes = write_shapes(tmp_path / "shapes", per_class=3)
    (tmp_path / "shapes" / "disk" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="broken.png"):
        explain_cli(weights("gct_r18"), "--images", str(tmp_path / "shapes"), "--out", str(out), "--per_class", "true",
                    "--pictures_per_class", "1")
    summary = json.loads((out / "summary.json").read_text())
    per_class = summary["per_class"]
    assert per_class["classes"] == sorted(classes) and per_class["images_per_class"] == {c: 3 for c in classes}
    assert len(summary["images"]) == 9 and sum("picture" in row for row in summary["images"]) == 3
    assert summary["skipped"] == [str(tmp_path / "shapes" / "disk" / "broken.png")]
    assert 0 <= per_class["top1_accuracy"] <= 1
    stats = per_class["modules"]["layer4.1.conv2.gate"]["channel_gate"]
    assert stats["between_class_std"] >= 0 and stats["within_class_std"] > 0
    for figure in ("per_class_channel_gate.png", "distribution_channel_gate.png", "channel_gate.png"):
        decodable_png(out / figure)


@pytest.mark.slow
def test_explain_reads_a_lightning_checkpoint(make_lightning_checkpoint, tmp_path):
    path, _ = make_lightning_checkpoint("eca_r18", num_classes=3)
    write_shapes(tmp_path / "shapes", per_class=1)
    out = tmp_path / "out"
    explain_cli(str(path), "--images", str(tmp_path / "shapes"), "--out", str(out), "--gradcam_layer", "layer4")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["architecture"] == "eca_r18" and len(summary["modules"]) == 8
    assert summary["gradcam_layer"]["path"] == "layer4"
    assert summary["images"][0]["predicted"]["name"].startswith("class_")


def one_line_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        explain_cli(*args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attnzoo: error: "), err
    return err


def test_bad_inputs_are_one_line(weights, tmp_path, capsys):
    source = weights("cbam_r18")
    write_shapes(tmp_path / "shapes", per_class=1)
    images = str(tmp_path / "shapes")
    out = str(tmp_path / "out")
    assert "no such file or directory: 'missing-weights/'" in one_line_error(
        capsys, "missing-weights/", "--images", images, "--out", out)
    assert "no such checkpoint" in one_line_error(capsys, "gone.ckpt", "--images", images, "--out", out)
    assert "no such image file or folder" in one_line_error(capsys, source, "--images", "nowhere/", "--out", out)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 truncated")
    assert "cannot read image" in one_line_error(capsys, source, "--images", images, str(corrupt), "--out", out)
    assert not Path(out).exists()  # refused before anything was written
    assert "ROOT/<class name>" in one_line_error(capsys, source, "--images", str(corrupt), "--out", out,
                                                 "--per_class", "true")
    assert "no class folders" in one_line_error(capsys, source, "--images", str(tmp_path / "shapes" / "disk"),
                                                "--out", out, "--per_class", "true")
    assert "is not a module of this model" in one_line_error(capsys, source, "--images", images, "--out", out,
                                                             "--gradcam_layer", "layer9")
    Path(out).mkdir()
    (Path(out) / "mine.txt").write_text("keep me")
    assert "is not empty" in one_line_error(capsys, source, "--images", images, "--out", out)
    assert (Path(out) / "mine.txt").read_text() == "keep me"


def test_missing_viz_extra_is_one_line_naming_it(tmp_path):
    write_shapes(tmp_path / "shapes", per_class=1)
    code = ("import sys; sys.modules['matplotlib'] = None; from attnzoo.cli import main; "
            f"main(['explain', 'r18', '--images', {str(tmp_path / 'shapes')!r}, '--out', {str(tmp_path / 'o')!r}])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("attnzoo: error: attnzoo explain needs matplotlib, which is not installed: "
                                     "pip install 'attnzoo[viz]'")


def test_bench_without_matplotlib_writes_numbers_and_skips_the_picture(tmp_path, monkeypatch, capsys):
    from attnzoo.bench import run, write

    results = run(models=["mobilenetv2", "eca_mobilenetv2"], tasks=["infer"], compile=["eager"], batch_sizes=[1],
                  resolutions=[32], repeats=1, warmup=0, min_time=0.0, graph_breaks=False, memory=False,
                  num_classes=10, model_args={"width_mult": 0.25}, threads=1, log=None)
    paths = write(results, tmp_path / "with")
    assert np.prod(decodable_png(Path(paths["png"]))) > 500 * 100
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the viz extra were not installed
    paths = write(results, tmp_path / "without")
    assert set(paths) == {"json", "csv"} and not (tmp_path / "without" / "bench.png").exists()
    assert json.loads(Path(paths["json"]).read_text())["rows"]
    assert capsys.readouterr().err.strip() == ("bench.png skipped: matplotlib is not installed "
                                               "(pip install 'attnzoo[viz]')")


@pytest.mark.parametrize("backbone", ["r18", "r34", "r50", "r101", "r152", "mobilenetv2"])
def test_gradcam_layer_is_the_deepest_stage_that_keeps_a_map(backbone):
    from attnzoo.analysis.gradcam import choose_layer

    with torch.device("meta"):
        model = attnzoo.create_model(f"cbam_{backbone}", num_classes=10).eval()
    mobile = backbone == "mobilenetv2"
    width = 1280 if mobile else (512 if backbone in ("r18", "r34") else 2048)
    assert choose_layer(model, [3, 224, 224]) == ("features.18" if mobile else "layer4", [width, 7, 7])
    assert choose_layer(model, [3, 32, 32]) == (("features.6", [32, 4, 4]) if mobile else ("layer2", [width // 4, 4, 4]))


@pytest.mark.slow
def test_explain_api_takes_a_model_mobilenetv2_included(tmp_path):
    from attnzoo.analysis import explain
    from attnzoo.training import ImageClassifier

    write_shapes(tmp_path / "shapes", per_class=1)
    classifier = ImageClassifier("gam_mobilenetv2", num_classes=3, model_args={"width_mult": 0.25},
                                 preprocessing=SHAPES_PREPROCESSING)
    summary = explain(randomize_attention(classifier.model), [str(tmp_path / "shapes")], tmp_path / "out",
                      progress=False)
    assert summary["gradcam_layer"]["path"] == "features.6" and len(summary["modules"]) == 17
    assert summary["modules"]["features.1.attn"]["taps"]["spatial_gate"]["shape"] == [1, 16, 16]
    assert [summary["modules"][p]["stage"] for p in ("features.1.attn", "features.17.attn")] == [1, 7]
    for row in summary["images"]:
        decodable_png(tmp_path / "out" / row["picture"])


def test_analysis_page_shows_committed_small_pictures():
    import re

    root = Path(__file__).resolve().parents[1] / "docs"
    page = (root / "analysis.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\((analysis/[^)]+\.png)\)", page)
    assert len(shown) >= 6
    for name in shown:
        assert (root / name).stat().st_size < 200_000, name  # the repository keeps small pictures only
        decodable_png(root / name)
    numbers = json.loads((root / "analysis" / "numbers.json").read_text())
    assert set(numbers) == {"eca_r18", "cbam_r18", "gc_r18", "gct_r18"}
