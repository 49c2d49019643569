"""The weights subcommands of the command line: ``attnzoo push``, ``attnzoo export``, ``attnzoo convert``.

Plain functions exposed through ``jsonargparse.auto_cli`` (see ``attnzoo.cli.COMMANDS``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from attnzoo.errors import AttnzooError


def _export(ckpt: str, out: Path, repo_id: str | None, license: str, datasets: list[str] | None,
            overwrite: bool) -> tuple[Path, dict]:
    from attnzoo.weights.api import save_pretrained
    from attnzoo.weights.lightning_checkpoint import model_from_lightning_checkpoint

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
                   datasets: list[str] | None = None, overwrite: bool = False) -> None:
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
    """
    from attnzoo.export.command import export_deployable

    if format != "safetensors":
        export_deployable(source, out=out, format=format, opset=opset, fold_preprocessing=fold_preprocessing,
                          check=check, overwrite=overwrite)
        return
    if opset is not None or fold_preprocessing:
        raise AttnzooError("--opset and --fold-preprocessing apply to --format onnx (and pt2 for "
                           "--fold-preprocessing), not to safetensors weights.")
    out_dir, info = _export(source, Path(out), None, license, datasets, overwrite)
    print(f"wrote {info['architecture']} ({info['num_classes']} classes, {info['weights']} weights) to {out_dir}")


def push_command(ckpt: str, *, repo: str, private: bool = False, revision: str | None = None,
                 license: str = "apache-2.0", datasets: list[str] | None = None,
                 message: str = "Upload attnzoo weights") -> None:
    """Publish a Lightning checkpoint on the Hugging Face Hub as attnzoo weights.

    Args:
        ckpt: a checkpoint written by `attnzoo fit` (EMA weights when it has them).
        repo: the Hub repo, ORG/NAME (created when missing).
        private: create the repo private.
        revision: the branch to commit to (created from main when missing); default main.
        license: the license in the model card.
        datasets: dataset ids for the model card, e.g. [imagenet-1k].
        message: the commit message.
    """
    from attnzoo.weights import hub
    from attnzoo.weights.format import WEIGHTS_NAME, sha256_file
    from attnzoo.weights.index import index_entry

    if repo.count("/") != 1 or not all(repo.split("/")):
        raise AttnzooError(f"--repo must be ORG/NAME, got {repo!r}.")
    with tempfile.TemporaryDirectory(prefix="attnzoo-push-") as tmp:
        out, info = _export(ckpt, Path(tmp) / "weights", repo, license, datasets, overwrite=False)
        sha256 = sha256_file(out / WEIGHTS_NAME)
        commit, url = hub.upload_folder(out, repo, revision=revision, private=private, message=message)
    print(f"pushed {info['architecture']} ({info['weights']} weights) to {repo} at commit {commit}: {url}")
    print(f"load it with: attnzoo.load('hf-hub:{repo}@{commit}')")
    entry = index_entry(repo.split("/")[1], info["architecture"], repo, commit, sha256, info["num_classes"],
                        source={"kind": "trained", "checkpoint": Path(ckpt).name}, metrics=info["metrics"],
                        dataset=(datasets or [None])[0])
    print("index record for checkpoints/index.json (under \"weights\"):")
    print(json.dumps(entry, indent=2))


def convert_command(file: str, *, source: str, model: str, out: str, overwrite: bool = False,
                    num_classes: int | None = None) -> None:
    """Convert an official released checkpoint into attnzoo weights.

    Args:
        file: the official checkpoint (.pth / .pth.tar / .pkl / .safetensors); read with
            torch.load(weights_only=True).
        source: which release (given as --from): torchvision, ecanet, cbam, gct, senet or gcnet.
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


# `--from` cannot be a Python parameter name; the dispatcher maps it onto `--source`.
convert_command.cli_aliases = {"--from": "--source", "--overwrite": "--overwrite=true"}
# Bare switches, as in `attnzoo push CKPT --repo ORG/NAME --private`.
push_command.cli_aliases = {"--private": "--private=true"}
export_command.cli_aliases = {"--overwrite": "--overwrite=true",
                              "--fold-preprocessing": "--fold_preprocessing=true"}
