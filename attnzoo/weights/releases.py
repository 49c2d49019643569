"""Which official release file ``attnzoo convert --from RELEASE`` turns into weights for a registry name, as the
releases' READMEs name their files: a user asking ``attnzoo.load`` for weights the zoo has not published yet is
pointed at the one download and one command, rather than at a training run. Imports nothing, so that loading
weights does not import the converters."""

from __future__ import annotations

# --from name -> {registry name: released file}
OFFICIAL_FILES: dict[str, dict[str, str]] = {
    "torchvision": {"r18": "resnet18-f37072fd.pth", "r34": "resnet34-b627a593.pth", "r50": "resnet50-0676ba61.pth",
                    "r101": "resnet101-63fe2227.pth", "r152": "resnet152-394f9c45.pth",
                    "mobilenetv2": "mobilenet_v2-b0353104.pth"},
    "ecanet": {"eca_r18": "eca_resnet18_k3577.pth.tar", "eca_r34": "eca_resnet34_k3357.pth.tar",
               "eca_r50": "eca_resnet50_k3557.pth.tar", "eca_r101": "eca_resnet101_k3357.pth.tar",
               "eca_r152": "eca_resnet152_k3357.pth.tar", "eca_mobilenetv2": "eca_mobilenetv2_k13.pth.tar"},
    "cbam": {"cbam_r50": "RESNET50_CBAM_new_name_wrap.pth"},
    "gct": {"gct_r50": "gct_resnet50.pth.tar"},
    "senet": {"se_r50": "seresnet50-60a8950a85b2b.pkl"},
    "gcnet": {"gc_r50": "mask_rcnn_r16_gcb_c3-c5_r50_fpn_2x.pth"},
}
# Releases without an ImageNet classifier (detection backbones): the converted head must be trained.
BACKBONE_ONLY = ("gcnet",)


def release_of(model_name: str) -> tuple[str, str] | None:
    """(--from name, file) of the official release for a registry name, or None."""
    for release, files in OFFICIAL_FILES.items():
        if model_name in files:
            return release, files[model_name]
    return None
