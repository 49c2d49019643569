"""The weights subcommands of the command line: ``attnzoo push``, ``export``, ``convert`` and ``evaluate``.

Plain functions exposed through ``jsonargparse.auto_cli`` (see ``attnzoo.cli.COMMANDS``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from attnzoo.errors import AttnzooError


def _export(ckpt: str, out: Path, repo_id: str | None, license: str, datasets: list[str] | None,
            overwrite: bool) -> tuple[Path, dict]:
    from attnzoo.files import check_writable
    from attnzoo.weights.api import save_pretrained
    from attnzoo.weights.lightning_checkpoint import model_from_lightning_checkpoint

    check_writable(out, "--out", folder=True)
    exported = model_from_lightning_checkpoint(ckpt)
    source = {"kind": "trained", "checkpoint": Path(ckpt).name, "weights": exported.weights}
    if exported.notes:
        source["notes"] = exported.notes
    save_pretrained(exported.model, out, metrics=exported.metrics, train_config=exported.train_config,
                    source=source, repo_id=repo_id, license=license, datasets=datasets, overwrite=overwrite)
    return out, {"architecture": exported.model.config.architecture,
                 "num_classes": exported.model.config.num_classes, "metrics": exported.metrics,
                 "weights": exported.weights}


def export_command(source: str, *, out: str, format: str = "safetensors", opset: int | None = None,
                   fold_preprocessing: bool = False, check: bool = True, license: str = "apache-2.0",
                   datasets: list[str] | None = None, overwrite: bool = False, features_only: bool = False,
                   out_indices: list[int] | None = None) -> None:
    """Export a model: attnzoo weights (a Lightning checkpoint as safetensors + config.json + model card), an
    ONNX file checked in onnxruntime, or a torch.export program; see docs/deploy.md.

    Args:
        source: for safetensors, a checkpoint written by `attnzoo fit` (EMA weights when it has them); for onnx
            and pt2 also anything attnzoo.load accepts (a registry name, hf-hub:ORG/NAME[@REV], a weights
            directory or .safetensors file).
        out: the directory (safetensors) or file (onnx: FILE.onnx, pt2: FILE.pt2) to write; an existing one is
            refused unless --overwrite.
        format: safetensors, onnx or pt2.
        opset: the ONNX opset (onnx only; default 18).
        fold_preprocessing: put the normalisation inside the graph, which then takes uint8 RGB images 0-255
            (onnx and pt2).
        check: run the written file (onnxruntime, or the loaded program) on two batches and refuse it unless it
            matches PyTorch within 1e-4 relative (onnx and pt2).
        license: the license in the model card (safetensors).
        datasets: dataset ids for the model card, e.g. [imagenet-1k] (safetensors).
        overwrite: replace what is at --out.
        features_only: export the backbone's multi-scale feature maps instead of the logits, one output per
            map named stage<i> (onnx and pt2); the head is dropped.
        out_indices: the stages whose maps to export with --features-only, e.g. [1,2,3,4] (default: strides
            4, 8, 16, 32).
    """
    from attnzoo.export.command import export_deployable

    if format != "safetensors":
        export_deployable(source, out=out, format=format, opset=opset, fold_preprocessing=fold_preprocessing,
                          check=check, overwrite=overwrite, features_only=features_only, out_indices=out_indices)
        return
    if opset is not None or fold_preprocessing or features_only or out_indices is not None:
        raise AttnzooError("--opset, --fold-preprocessing, --features-only and --out_indices apply to --format onnx "
                           "(and pt2, except --opset), not to safetensors weights.")
    out_dir, info = _export(source, Path(out), None, license, datasets, overwrite)
    print(f"wrote {info['architecture']} ({info['num_classes']} classes, {info['weights']} weights) to {out_dir}")


def push_command(source: str, *, repo: str, name: str | None = None, private: bool = False,
                 revision: str | None = None, license: str = "apache-2.0", datasets: list[str] | None = None,
                 message: str = "Upload attnzoo weights") -> None:
    """Publish attnzoo weights on the Hugging Face Hub and print their record for checkpoints/index.json.

    The weights are checked first (config.json strictly, model.safetensors loading into its architecture
    with every key); then one commit adds model.safetensors, config.json and a model card rendered for the
    repo. The record (JSON, on stdout) pins the commit and the sha256 of model.safetensors and config.json.

    Args:
        source: a weights directory written by `attnzoo convert` or `attnzoo export` (evaluated with
            `attnzoo evaluate` to carry measured accuracy), or a checkpoint written by `attnzoo fit` (exported
            first; EMA weights when it has them).
        repo: the Hub repo, ORG/NAME (created when missing).
        name: the record's name, which attnzoo.load takes; default the architecture (e.g. eca_mobilenetv2).
        private: create the repo private.
        revision: the branch to commit to (created from main when missing); default main.
        license: the license in the model card.
        datasets: dataset ids for the model card, e.g. [imagenet-1k]; default the evaluated one.
        message: the commit message.
    """
    from attnzoo.weights.evaluate import echo_stderr
    from attnzoo.weights.publish import check_repo_id, push

    check_repo_id(repo, revision)
    with tempfile.TemporaryDirectory(prefix="attnzoo-push-") as tmp:
        directory = Path(source)
        if not directory.is_dir():
            directory, _ = _export(source, Path(tmp) / "weights", repo, license, datasets, overwrite=False)
        published = push(directory, repo, name=name, revision=revision, private=private, license=license,
                         datasets=datasets, message=message)
    cfg = published.config
    echo_stderr(f"verified {source}: {cfg['architecture']}, {cfg['num_classes']} classes, every key loads")
    echo_stderr(f"pushed to {repo} at commit {published.commit}: {published.url}")
    echo_stderr(f"load it with: attnzoo.load('hf-hub:{repo}@{published.commit}')")
    echo_stderr("index record for checkpoints/index.json (paste it under \"weights\"):")
    print(json.dumps(published.record, indent=2))


def evaluate_command(weights: str, *, data: str, dataset: str, batch_size: int = 64, num_workers: int | None = None,
                     device: str | None = None, overwrite: bool = False) -> None:
    """Measure weights on an image folder and record top-1/top-5 in their config.json and model card.

    Class folders map to outputs as the data modules map them: sorted by name, folder i is output i
    (ImageNet's wnid folders in sorted order are its class indices); when every folder is one of the weights'
    label names, by name. Images get the weights' own evaluation preprocessing (resize, center crop, mean,
    std); an unreadable image is skipped and counted. `attnzoo push` then puts the numbers in the index record.

    Args:
        weights: a weights directory (model.safetensors + config.json), e.g. written by `attnzoo convert`.
        data: the image folder, DATA/<class>/<images>, e.g. ImageNet's validation split in wnid folders.
        dataset: the data set's name as the model card and the index record give it, e.g. imagenet-1k.
        batch_size: images per batch.
        num_workers: image-decoding processes; default min(8, CPU cores).
        device: cpu, cuda, cuda:1 ...; default cuda when available.
        overwrite: replace an evaluation (or val/acc1, val/acc5 metrics) config.json records already.
    """
    from attnzoo.devices import resolve_device
    from attnzoo.files import check_writable
    from attnzoo.weights.api import load
    from attnzoo.weights.evaluate import echo_stderr, evaluate_folder, record_evaluation, refuse_to_replace
    from attnzoo.weights.format import CONFIG_NAME, read_config

    if not Path(weights).is_dir():
        raise AttnzooError(f"{weights!r} is not a weights directory: evaluate records its result in the directory's "
                           f"{CONFIG_NAME}, so it takes one (write it with `attnzoo convert` or `attnzoo export`).")
    if not isinstance(dataset, str) or not dataset.strip():
        raise AttnzooError(f"--dataset must name the data set, e.g. imagenet-1k; got {dataset!r}.")
    # What would be refused at the end is refused before the minutes an evaluation takes.
    config_path = Path(weights) / CONFIG_NAME
    refuse_to_replace(read_config(config_path), repr(str(config_path)), overwrite=overwrite)
    check_writable(weights, "the weights directory", folder=True)  # config.json is replaced there at the end
    device = resolve_device(device)
    num_workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    model = load(weights, device=device)
    result = evaluate_folder(model, data, batch_size=batch_size, num_workers=num_workers, device=device,
                             echo=echo_stderr)
    record_evaluation(weights, dataset.strip(), data, result, overwrite=overwrite)
    skipped = f" ({result['unreadable']} unreadable skipped)" if result["unreadable"] else ""
    print(f"{dataset}: top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} on {result['images']} images{skipped}, "
          f"{result['classes']} classes mapped by {result['class_mapping']}; recorded in "
          f"{Path(weights) / CONFIG_NAME} and the model card")


def convert_command(file: str, *, source: str, model: str, out: str, overwrite: bool = False,
                    num_classes: int | None = None) -> None:
    """Convert an official released checkpoint into attnzoo weights.

    Args:
        file: the official checkpoint (.pth / .pth.tar / .pkl / .safetensors); read with
            torch.load(weights_only=True).
        source: which release: torchvision, ecanet, cbam, gct, senet or gcnet.
        model: the attnzoo model it becomes, e.g. eca_r50, cbam_r50, gct_r50, se_r50, gc_r50, r50.
        out: the directory to write.
        overwrite: replace the weights in a non-empty directory.
        num_classes: the size of the fresh classifier for a release without one (gcnet; default 1000).
    """
    from attnzoo.weights.convert import RELEASES, convert

    if source not in RELEASES:
        from attnzoo.errors import unknown

        raise unknown("--from release", source, RELEASES)
    out_dir = convert(source, file, model, out, overwrite=overwrite, num_classes=num_classes)
    print(f"converted {file} ({RELEASES[source].description}) into {model} at {out_dir}")


# `--from` cannot be a Python parameter name; the dispatcher's parser names `source` --from.
convert_command.cli_aliases = {"--from": "--source", "--overwrite": "--overwrite=true"}
# Bare switches, as in `attnzoo push CKPT --repo ORG/NAME --private`.
push_command.cli_aliases = {"--private": "--private=true"}
evaluate_command.cli_aliases = {"--overwrite": "--overwrite=true"}
export_command.cli_aliases = {"--overwrite": "--overwrite=true",
                              "--fold-preprocessing": "--fold_preprocessing=true",
                              "--features-only": "--features_only=true"}
