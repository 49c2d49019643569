"""``attnzoo explain``: the command line over :func:`attnzoo.analysis.explainer.explain`."""

from __future__ import annotations

import json


def explain_command(source: str, *, images: list[str], out: str, per_class: bool = False, gradcam_layer: str = "auto",
                    batch_size: int = 16, device: str = "cpu", pictures_per_class: int = 2,
                    overwrite: bool = False) -> None:
    """Pictures of what each attention module does on your images, Grad-CAM beside them, and summary.json.

    Args:
        source: weights attnzoo.load accepts (an index name, hf-hub:ORG/NAME, a folder or .safetensors file)
            or a Lightning checkpoint (.ckpt) written by `attnzoo fit`.
        images: image files and folders (searched recursively): --images a.jpg photos/ ...
        out: the output folder (must be new or empty unless --overwrite true).
        per_class: images is one ImageFolder tree (ROOT/<class>/<images>): also draw the mean gate per
            channel per class at several depths (SE paper, Fig. 6) and the gate distribution by layer (GCT).
        gradcam_layer: the module whose output Grad-CAM explains, e.g. layer4; auto: the deepest stage whose
            output is at least 4x4.
        batch_size: images per forward pass.
        device: cpu, cuda, cuda:N.
        pictures_per_class: with --per_class, the images of each class that get a picture.
        overwrite: write into a non-empty --out folder.
    """
    from attnzoo.analysis.explainer import explain

    summary = explain(source, images, out, per_class=per_class, gradcam_layer=gradcam_layer, batch_size=batch_size,
                      device=device, pictures_per_class=pictures_per_class, overwrite=overwrite)
    pictures = sum(1 for row in summary["images"] if "picture" in row)
    figures = [f for f in summary["files"] if f.endswith(".png") and not f.startswith("images/")]
    print(f"explained {len(summary['images'])} image(s) with {summary['architecture']} "
          f"({summary['attention_modules']} attention modules): {pictures} picture(s) in images/, "
          f"{', '.join(figures) or 'no figure'} and summary.json in {out}")
    if summary["skipped"]:
        print(f"skipped {len(summary['skipped'])} unreadable image(s): {json.dumps(summary['skipped'][:5])}")


# `--images a.jpg b.jpg dir/`: the words after the flag, up to the next flag, form the list.
explain_command.cli_lists = ("--images",)
