"""attnzoo.detection against torchvision's detectors, torchvision as the oracle.

- fpn_backbone("r50") with torchvision's ResNet-50 weights (random, random BatchNorm statistics) has the state
  dict of torchvision's resnet_fpn_backbone and computes bitwise its maps (frozen BatchNorm and BatchNorm), and a
  whole Faster R-CNN built on it loads a torchvision detector's state dict and gives bitwise its detections;
- attnzoo's FrozenBatchNorm2d is torchvision's, bitwise;
- add_attention with GC or GCT (identities at initialisation) leaves a Mask R-CNN's boxes, labels, scores and
  masks bitwise unchanged, keeps every parameter object and its freezing, and adds only attention keys;
- a training step of Faster R-CNN (on fpn_backbone) and Mask R-CNN (retrofitted) with each of the six
  attentions gives finite losses and a finite, non-zero gradient on every attention parameter that learns.

They run where torchvision imports (the peers venv, `pytest -m peers`); the first test runs everywhere.
`python -m pytest -m peers tests/test_detection_backbone.py -s` prints the PEER lines.
"""

from __future__ import annotations

import copy
import importlib
import sys

import pytest
import torch
from test_peers import randomise, report

from attnzoo.errors import AttnzooError

peers = pytest.mark.peers
ATTENTIONS = ["se", "eca", "gct", "gc", "cbam", "gam"]
SIZE = 128  # the detectors' min_size and max_size: small images, fast enough for CI's two cores
# Few proposals and sampled regions: the box head's cost is per region (torchvision's defaults run 1000-2000).
RCNN = {"min_size": SIZE, "max_size": SIZE, "rpn_pre_nms_top_n_train": 200, "rpn_post_nms_top_n_train": 100,
        "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 100, "box_batch_size_per_image": 64}


def _torchvision():
    return pytest.importorskip("torchvision", reason="torchvision is a test peer, installed only in the peers venv")


def test_without_torchvision_the_detection_api_is_one_line_naming_the_extra(monkeypatch):
    for name in [n for n in sys.modules if n.startswith("attnzoo.detection.") or n.startswith("torchvision")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torchvision", None)  # what importlib sees where it is not installed
    import attnzoo.detection  # the package and its modules import: torchvision is imported where it is used
    namespace = {}
    exec("from attnzoo.detection import *", namespace)  # as help(), pydoc and star imports walk every name
    assert "fpn_backbone" in namespace and "add_attention" in namespace
    assert hasattr(attnzoo.detection, "fpn_backbone") and hasattr(attnzoo.detection, "add_attention")
    for use in (lambda: attnzoo.detection.fpn_backbone("r18"),
                lambda: attnzoo.detection.add_attention(torch.nn.Module(), "se")):
        with pytest.raises(AttnzooError) as err:
            use()
        assert "\n" not in str(err.value)
        assert "torchvision" in str(err.value) and "pip install 'attnzoo[detection]'" in str(err.value)
    importlib.invalidate_caches()


def _resnet50_state_dict(seed: int) -> dict:
    tv = _torchvision()
    return randomise(tv.models.resnet50(weights=None), seed).state_dict()


@pytest.fixture(scope="module")
def resnet50_weights():
    return _resnet50_state_dict(seed=50)


def _images(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(3, SIZE, SIZE, generator=gen), torch.rand(3, SIZE - 32, SIZE, generator=gen)]


@peers
def test_frozen_batch_norm_equals_torchvisions_bitwise():
    tv = _torchvision()
    from attnzoo.backbones.frozen import FrozenBatchNorm2d

    theirs = randomise(tv.ops.misc.FrozenBatchNorm2d(64), seed=1)
    ours = FrozenBatchNorm2d(64)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for dtype in (torch.float32, torch.float64):
        x = torch.randn(2, 64, 9, 7, dtype=dtype)
        assert torch.equal(ours.to(dtype)(x), theirs.to(dtype)(x))


@peers
def test_the_fpn_of_a_built_model_says_which_of_its_weights_it_drops(caplog):
    """A model with its weights (attnzoo.load, a checkpoint's) loses its head in the features: said, as when
    weights are given; a fresh model's head is not news."""
    import logging

    import attnzoo
    from attnzoo.detection import fpn_backbone

    _torchvision()
    with caplog.at_level(logging.WARNING, logger="attnzoo.features"):
        fpn_backbone("r18")
    assert "dropped" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="attnzoo.features"):
        fpn_backbone(attnzoo.create_model("r18"))
    assert "2 classifier weight entries dropped (fc.weight, fc.bias)" in caplog.text


@peers
@pytest.mark.parametrize("norm", ["frozen", "bn"])
def test_r50_fpn_backbone_is_torchvisions_resnet_fpn_backbone_bitwise(norm, resnet50_weights):
    tv = _torchvision()
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from attnzoo.detection import fpn_backbone

    norm_layer = tv.ops.misc.FrozenBatchNorm2d if norm == "frozen" else torch.nn.BatchNorm2d
    theirs = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=norm_layer, trainable_layers=3)
    theirs.body.load_state_dict({k: v for k, v in resnet50_weights.items() if not k.startswith("fc.")}, strict=True)
    ours = fpn_backbone("r50", weights=resnet50_weights, norm=norm, trainable_layers=3)
    assert ours.out_channels == theirs.out_channels == 256
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.fpn.load_state_dict(theirs.fpn.state_dict(), strict=True)  # the FPN's own random init
    x = torch.randn(2, 3, 64, 96)
    # torchvision's frozen layers keep a trainable BatchNorm in training mode; ours fix it (mmdetection's
    # frozen_stages): with norm="bn" the training-mode maps are compared where nothing is frozen (the next test).
    for training in (False, True) if norm == "frozen" else (False,):
        theirs.train(training), ours.train(training)
        expected, got = theirs(x), ours(x)
        assert list(got) == list(expected) == ["0", "1", "2", "3", "pool"]
        for key in expected:
            report(f"fpn_backbone r50 norm={norm} train={training} [{key}]", got[key], expected[key])
            assert torch.equal(got[key], expected[key]), key


@peers
def test_trainable_layers_are_counted_as_torchvision_counts_them():
    tv = _torchvision()
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from attnzoo.detection import fpn_backbone

    weights = randomise(tv.models.resnet18(weights=None), seed=18).state_dict()
    for trainable_layers in range(6):
        theirs = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=torch.nn.BatchNorm2d,
                                     trainable_layers=trainable_layers)
        ours = fpn_backbone("r18", norm="bn", trainable_layers=trainable_layers)
        assert ({n for n, p in ours.named_parameters() if p.requires_grad}
                == {n for n, p in theirs.named_parameters() if p.requires_grad}), trainable_layers
    # Nothing frozen: trainable BatchNorm in training mode computes torchvision's maps too.
    theirs.body.load_state_dict({k: v for k, v in weights.items() if not k.startswith("fc.")}, strict=True)
    ours = fpn_backbone("r18", weights=weights, norm="bn", trainable_layers=5)
    ours.fpn.load_state_dict(theirs.fpn.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 96)
    expected, got = theirs.train()(x), ours.train()(x)
    assert all(torch.equal(got[key], expected[key]) for key in expected)
    assert all(torch.equal(a, b) for a, b in zip(ours.body.state_dict().values(), theirs.body.state_dict().values()))


def _coco_like(kind: str, backbone_name: str = "resnet50", num_classes: int = 91, trainable_layers: int = 3):
    """What torchvision's ``*_resnet50_fpn(weights=COCO)`` builds (frozen BatchNorm, 3 trainable layers), without a
    download: a random body, random BatchNorm statistics."""
    tv = _torchvision()
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    backbone = resnet_fpn_backbone(backbone_name=backbone_name, weights=None, norm_layer=tv.ops.misc.FrozenBatchNorm2d,
                                   trainable_layers=trainable_layers)
    randomise(backbone.body, seed=7)
    cls = {"faster": FasterRCNN, "mask": MaskRCNN}[kind]
    return cls(backbone, num_classes=num_classes, box_score_thresh=0.0, **RCNN)


def _detections(model, images) -> list[dict]:
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert all(len(o["boxes"]) > 0 for o in out)  # something to compare
    return out


def _assert_same_detections(got: list[dict], expected: list[dict], label: str) -> None:
    for image, (g, e) in enumerate(zip(got, expected, strict=True)):
        assert sorted(g) == sorted(e)
        for key in e:
            if e[key].is_floating_point():
                report(f"{label} image {image} {key}", g[key], e[key])
            assert torch.equal(g[key], e[key]), (image, key)


@peers
def test_a_torchvision_detectors_state_dict_loads_into_one_on_fpn_backbone_and_detects_bitwise_the_same():
    _torchvision()
    from torchvision.models.detection import FasterRCNN

    from attnzoo.detection import fpn_backbone

    theirs = _coco_like("faster")
    ours = FasterRCNN(fpn_backbone("r50"), num_classes=91, box_score_thresh=0.0, **RCNN)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    images = _images()
    _assert_same_detections(_detections(ours, images), _detections(theirs, images), "FasterRCNN on fpn_backbone(r50)")


@pytest.fixture(scope="module")
def mask_rcnn():
    """A Mask R-CNN R50-FPN in the COCO layout, the images, and its detections on them."""
    model = _coco_like("mask")
    images = _images(1)
    return model, images, _detections(model, images)


@peers
@pytest.mark.parametrize("attention, options", [("gc", {"ratio": 1 / 4}), ("gct", {})], ids=["gc_r4", "gct"])
def test_retrofit_of_an_identity_attention_leaves_a_mask_rcnn_bitwise_unchanged(attention, options, mask_rcnn):
    _torchvision()
    from attnzoo.detection import add_attention

    model, images, before = mask_rcnn
    model = copy.deepcopy(model)
    state = model.state_dict()
    parameters = {name: p for name, p in model.named_parameters()}
    report_ = add_attention(model, attention, attention_kwargs=options)
    after = _detections(model, images)
    _assert_same_detections(after, before, f"MaskRCNN r50 + {attention} {options}")
    assert "masks" in after[0]
    # Every weight is still there, the very same parameter, frozen where it was; only attention keys are new.
    new_parameters = dict(model.named_parameters())
    assert all(new_parameters[name] is p and p.requires_grad == new_parameters[name].requires_grad
               for name, p in parameters.items())
    added = set(model.state_dict()) - set(state)
    assert set(state) <= set(model.state_dict()) and added
    assert all(".attn." in key or ".gate." in key for key in added)
    # The torchvision checkpoint still loads, only the attention keys missing.
    result = model.load_state_dict(state, strict=False)
    assert set(result.missing_keys) == added and not result.unexpected_keys
    body = model.backbone.body
    if attention == "gc":  # GCNet's placement: every block of c3-c5, none in c2
        assert report_["stages"] == [2, 3, 4] and report_["backbone"] == "r50"
        assert all(block.attn.ratio == 1 / 4 for stage in (2, 3, 4) for block in getattr(body, f"layer{stage}"))
        assert not any(".attn." in key for key in added if key.startswith("backbone.body.layer1."))
    else:  # GCT before every convolution; those in the layers the detector froze are frozen with them
        assert report_["stages"] == [0, 1, 2, 3, 4]
        assert not body.conv1.gate.alpha.requires_grad and not body.layer1[0].conv1.gate.alpha.requires_grad
        assert body.layer2[0].downsample[0].gate.alpha.requires_grad
    assert 0 < report_["trainable_parameters"] <= report_["parameters"]


@peers
def test_retrofit_refuses_in_one_line_and_leaves_the_detector_as_it_was():
    _torchvision()
    from attnzoo.detection import add_attention

    model = _coco_like("faster", backbone_name="resnet18")
    add_attention(model, "se", attention_stages=[3, 4])
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for call, message in [
        (lambda: add_attention(model, "eca"), "layer3.0 has attention already"),
        (lambda: add_attention(model, "gcnet"), "unknown attention 'gcnet'"),
        (lambda: add_attention(model, "gc", attention_stages=[5]), "attention stage 5 does not exist"),
        (lambda: add_attention(model, "gc", attention_kwargs={"ratio": 2}), "ratio must be in (0, 1]"),
        (lambda: add_attention(torch.nn.Linear(2, 2), "gc"), "takes a torchvision detector with a ResNet body"),
    ]:
        with pytest.raises(AttnzooError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            call()
        assert "\n" not in str(err.value)
    assert list(model.state_dict()) == list(state)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@peers
def test_fpn_backbone_of_a_built_model_takes_its_modules_and_weights():
    _torchvision()
    import attnzoo
    from attnzoo.detection import fpn_backbone

    classifier = attnzoo.create_model("eca_r18", attention_stages=[3, 4])
    with torch.no_grad():
        classifier.layer4[0].attn.conv.weight.fill_(0.5)  # trained attention weights, as attnzoo.load gives them
    backbone = fpn_backbone(classifier, norm="bn")
    assert backbone.body.layer4 is classifier.layer4 and backbone.body.config.attention_stages == (3, 4)
    with pytest.raises(AttnzooError, match="takes no model options"):
        fpn_backbone(classifier, attention_stages=[4])


@peers
def test_fpn_backbone_refuses_bad_options_in_one_line():
    _torchvision()
    from attnzoo.detection import fpn_backbone

    for kwargs, message in [
        ({"norm": "group"}, "norm='group' is not one of frozen, eval, bn, syncbn"),
        ({"trainable_layers": 6}, "trainable_layers=6: must be 0..5"),
        ({"num_classes": 3}, "takes no num_classes"),
        ({"out_indices": [1, 2]}, "use returned_layers"),
        ({"returned_layers": [1, 9]}, "stage index 9 does not exist"),
    ]:
        with pytest.raises(AttnzooError, match=message) as err:
            fpn_backbone("r18", **kwargs)
        assert "\n" not in str(err.value)


@peers
def test_fpn_backbone_serves_retinanet_and_fcos_with_p6_p7_and_mobilenetv2_in_faster_rcnn():
    _torchvision()
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    from attnzoo.detection import fpn_backbone

    size = 64  # dense heads score every anchor: the smallest images that still have five pyramid levels
    images = [torch.rand(3, size, size), torch.rand(3, size - 16, size)]
    targets = [{"boxes": torch.tensor([[6.0, 8.0, 40.0, 44.0]]), "labels": torch.tensor([1])}] * 2
    for cls, name, kwargs in [
        (RetinaNet, "eca_r18", {"returned_layers": [2, 3, 4], "extra_blocks": LastLevelP6P7(256, 256)}),
        (FCOS, "cbam_r18", {"returned_layers": [2, 3, 4], "extra_blocks": LastLevelP6P7(256, 256)}),
        (FasterRCNN, "se_mobilenetv2", {}),
    ]:
        backbone = fpn_backbone(name, **kwargs)
        options = {**(RCNN if cls is FasterRCNN else {}), "min_size": size, "max_size": size}
        model = cls(backbone, num_classes=3, **options)
        model.train()
        losses = model(images, targets)
        assert losses and all(torch.isfinite(v) for v in losses.values()), (name, losses)
        out = model.eval()(images)
        assert len(out) == 2 and {"boxes", "labels", "scores"} <= set(out[0]), name
    assert list(backbone.body.feature_info.reduction()) == [4, 8, 16, 32]


def _perturb_attention(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Move every attention parameter off its initialisation (GC and GCT start as identities, whose first
    gradients reach only their last layer), so each one's gradient shows it is connected to the loss."""
    named = [(n, p) for n, p in model.named_parameters() if ".attn." in n or ".gate." in n]
    with torch.no_grad():
        for _, p in named:
            p.add_(0.1 * torch.randn_like(p))
    return named


def _targets(masks: bool) -> list[dict]:
    boxes = [torch.tensor([[8.0, 10.0, 70.0, 80.0], [60.0, 20.0, 120.0, 90.0]]), torch.tensor([[20.0, 8.0, 90.0, 60.0]])]
    targets = []
    for i, b in enumerate(boxes):
        height = SIZE if i == 0 else SIZE - 32
        target = {"boxes": b, "labels": torch.arange(1, len(b) + 1)}
        if masks:
            target["masks"] = torch.zeros(len(b), height, SIZE, dtype=torch.uint8)
            for k, (x1, y1, x2, y2) in enumerate(b.int().tolist()):
                target["masks"][k, y1:y2, x1:x2] = 1
        targets.append(target)
    return targets


def _check_training_step(model, named_attention, masks: bool, label: str) -> None:
    model.train()
    losses = model(_images(3), _targets(masks))
    assert ("loss_mask" in losses) == masks
    assert all(torch.isfinite(v) for v in losses.values()), (label, losses)
    sum(losses.values()).backward()
    learning = [(n, p) for n, p in named_attention if p.requires_grad]
    assert learning, label
    for name, p in named_attention:
        if not p.requires_grad:  # in a stage the detector froze
            assert p.grad is None, (label, name)
            continue
        assert p.grad is not None and torch.isfinite(p.grad).all(), (label, name)
        if not name.endswith("conv_mask.bias"):  # GC's mask bias: zero by design (softmax is shift-invariant)
            assert p.grad.abs().max() > 0, (label, name)


@peers
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_a_training_step_with_each_attention_gives_finite_losses_and_gradients(attention):
    _torchvision()
    from torchvision.models.detection import FasterRCNN

    from attnzoo.detection import add_attention, fpn_backbone

    faster = FasterRCNN(fpn_backbone(f"{attention}_r18"), num_classes=3, **RCNN)
    _check_training_step(faster, _perturb_attention(faster), masks=False, label=f"FasterRCNN {attention}_r18")

    mask = _coco_like("mask", backbone_name="resnet18", num_classes=3)
    add_attention(mask, attention)
    _check_training_step(mask, _perturb_attention(mask), masks=True, label=f"MaskRCNN r18 + {attention}")
