"""Grad-CAM of the predicted class, through captum's ``LayerGradCam`` (Selvaraju et al., ICCV 2017).

The layer is the output of a backbone stage. By default it is the deepest stage whose output is still at least
:data:`MIN_SIDE` positions on a side at the model's input size: ``layer4`` of a ResNet at 224x224 (7x7), the
usual Grad-CAM layer, but ``layer2`` at 32x32, where ``layer4``'s 1x1 output would make every map a constant.
"""

from __future__ import annotations

import torch
from torch import nn

from attnzoo.analysis.model_meta import stage_outputs
from attnzoo.errors import AttnzooError

MIN_SIDE = 4


def output_sizes(model: nn.Module, paths: list[str], input_size: list[int]) -> dict[str, list[int]]:
    """The output shape (without the batch) of each module in ``paths`` for one blank image of ``input_size``."""
    sizes: dict[str, list[int]] = {}
    param = next(model.parameters(), None)
    blank = torch.zeros(1, *input_size, device=param.device if param is not None else "cpu")
    handles = [model.get_submodule(path).register_forward_hook(
        lambda m, a, out, path=path: sizes.__setitem__(path, list(out.shape[1:]))) for path in paths]
    try:
        with torch.no_grad():
            model(blank)
    finally:
        for handle in handles:
            handle.remove()
    return sizes


def choose_layer(model: nn.Module, input_size: list[int], requested: str = "auto") -> tuple[str, list[int]]:
    """(path, output [C, H, W]) of the Grad-CAM layer: ``requested`` if it names a module, else the default."""
    ordered = [path for _, path in stage_outputs(model)]
    if requested != "auto":
        try:
            model.get_submodule(requested)
        except AttributeError:
            raise AttnzooError(f"--gradcam_layer {requested!r} is not a module of this model; its stage outputs are "
                               f"{', '.join(ordered) or 'unknown'} (or 'auto').") from None
        shape = output_sizes(model, [requested], input_size).get(requested, [])
        if len(shape) != 3:
            raise AttnzooError(f"--gradcam_layer {requested!r} outputs shape {shape}, not a [C, H, W] feature map.")
        return requested, shape
    if not ordered:
        raise AttnzooError("this model's stages are unknown; name the Grad-CAM layer with --gradcam_layer PATH.")
    sizes = output_sizes(model, ordered, input_size)
    large = [path for path in ordered if min(sizes[path][1:]) >= MIN_SIDE]
    path = large[-1] if large else ordered[0]
    return path, sizes[path]


def gradcam(model: nn.Module, layer: str, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[B, H, W] Grad-CAM maps of ``targets`` at ``layer``, upsampled (bilinear) to the images' size.

    ReLU is applied as in the paper (only evidence for the class); each map is left unnormalised.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    cam = LayerGradCam(model, model.get_submodule(layer))
    with torch.enable_grad():
        attribution = cam.attribute(images, target=targets.tolist(), relu_attributions=True)
    upsampled = LayerAttribution.interpolate(attribution.detach(), tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return upsampled[:, 0]
