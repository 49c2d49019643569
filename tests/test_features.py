"""Multi-scale features (``features_only``), ``forward_intermediates``, frozen BatchNorm and frozen stages."""

from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn

import attnzoo
from attnzoo.backbones import FeatureNet, FrozenBatchNorm2d, features_of, freeze_batch_norm
from attnzoo.errors import AttnzooError

FIXTURES = Path(__file__).parent / "fixtures"
TORCHVISION = json.loads((FIXTURES / "torchvision_state_dict_shapes.json").read_text())
SIZE = 64
HEAVY = {"gam_r101", "gam_r152"}  # 250-400 M parameters: built one at a time, in one test


def _slow_if_deep(name: str):
    deep = name.endswith(("r101", "r152")) or name == "gam_r50"
    return pytest.param(name, marks=pytest.mark.slow) if deep else name


def check_features_match_classifier(name: str) -> None:
    """Every stage output of the features network is bitwise the tensor the classifier computes there (forward
    hooks on the classifier), and so is forward_intermediates'; shapes, channels and strides are what
    feature_info says; the default outputs are at strides 4..32; the state dict is the classifier's less its
    head. One build per model, 32-pixel images (the stride-32 map is 1x1)."""
    size = 32
    with torch.no_grad():
        classifier = attnzoo.create_model(name).eval()
        head = {f"{classifier.classifier_name}.weight", f"{classifier.classifier_name}.bias"}
        keys = set(classifier.state_dict())
        stages = classifier.stages()
        seen = {}
        hooks = [classifier.get_submodule(path).register_forward_hook(
                 lambda module, args, out, path=path: seen.__setitem__(path, out))
                 for path in {stage.runs[-1] for stage in stages}]
        x = torch.randn(1, 3, size, size)
        classifier(x)
        for hook in hooks:
            hook.remove()
        final, intermediates = classifier.forward_intermediates(x)
        assert torch.equal(final, seen[stages[-1].runs[-1]])

        every = FeatureNet(classifier, out_indices=range(len(stages)))
        maps = every(x)
        info = every.feature_info
        assert len(maps) == len(stages) == len(intermediates)
        for stage, out, mid in zip(stages, maps, intermediates, strict=True):
            expected = seen[info.module_name(stage.index)]
            assert torch.equal(out, expected), (name, stage.index)
            assert torch.equal(mid, expected), (name, stage.index)
            reduction = info.reduction(stage.index)
            assert out.shape == (1, info.channels(stage.index), size // reduction, size // reduction)
        assert set(every.state_dict()) == keys - head

        default = FeatureNet(classifier)  # the same modules: its maps are every's at its indices
        assert default.out_indices == type(classifier).default_out_indices
        assert default.feature_info.reduction() == [4, 8, 16, 32]
        assert default.config == classifier.config


@pytest.mark.parametrize("name", [_slow_if_deep(n) for n in attnzoo.list_models() if n not in HEAVY])
def test_features_are_the_classifiers_stage_outputs(name):
    check_features_match_classifier(name)


@pytest.mark.slow
def test_features_of_the_largest_gam_models():
    for name in sorted(HEAVY):
        check_features_match_classifier(name)
        gc.collect()


@pytest.mark.parametrize("name, torchvision_name, channels", [
    ("r50", "resnet50", [256, 512, 1024, 2048]),
    ("mobilenetv2", "mobilenet_v2", [24, 32, 96, 1280]),
])
def test_features_keep_torchvisions_keys_without_the_head(name, torchvision_name, channels):
    with torch.device("meta"):
        body = attnzoo.create_model(name, features_only=True)
    shapes = {k: list(v.shape) for k, v in body.state_dict().items()}
    theirs = {k: v for k, v in TORCHVISION[torchvision_name].items() if not k.startswith(("fc.", "classifier."))}
    assert shapes == theirs
    assert body.feature_info.channels() == channels and body.out_indices == body.feature_info.out_indices


def test_feature_info_follows_timms_contract():
    body = attnzoo.create_model("r18", features_only=True, out_indices=(0, 2, 4))
    info = body.feature_info
    assert info.channels() == [64, 128, 512] and info.reduction() == [2, 8, 32]
    assert info.module_name() == ["relu", "layer2", "layer4"]
    assert info[3] == {"num_chs": 256, "reduction": 16, "module": "layer3", "index": 3, "stage": 3}
    assert info.channels(1) == 64 and info.reduction([1, 2]) == [4, 8] and len(info) == 5
    assert info.get_dicts(keys=["num_chs"]) == [{"num_chs": 64}, {"num_chs": 128}, {"num_chs": 512}]
    body = attnzoo.create_model("mobilenetv2", features_only=True, out_indices=(0, 1, 2, 3, 4, 5, 6, 7, 8))
    assert body.feature_info.reduction() == [2, 2, 4, 8, 16, 16, 32, 32, 32]
    assert body.feature_info.module_name() == [f"features.{i}" for i in (0, 1, 3, 6, 10, 13, 16, 17, 18)]


def test_features_hold_nothing_after_the_last_output():
    body = attnzoo.create_model("r18", features_only=True, out_indices=(1, 2))
    assert not hasattr(body, "layer3") and not hasattr(body, "fc") and not hasattr(body, "avgpool")
    assert "layer3.0.conv1.weight" in body.dropped_keys and "fc.weight" in body.dropped_keys
    body = attnzoo.create_model("mobilenetv2", features_only=True, out_indices=(2,))
    assert list(body.features._modules) == ["0", "1", "2", "3"]
    assert [m.shape[1] for m in body(torch.randn(1, 3, 32, 32))] == [24]


def test_forward_intermediates_indices_and_stop_early():
    model = attnzoo.create_model("r18").eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        final, every = model.forward_intermediates(x)
        assert len(every) == 5 and torch.equal(final, model.forward_features(x))
        final, last2 = model.forward_intermediates(x, indices=2)
        assert [m.shape[1] for m in last2] == [256, 512] and torch.equal(last2[1], final)
        early = model.forward_intermediates(x, indices=[-4], intermediates_only=True)
        assert [m.shape[1] for m in early] == [64]  # -4 is stage 1 of 0..4
    with pytest.raises(AttnzooError, match="each stage once"):
        model.forward_intermediates(x, indices=[1, -4])
    with torch.no_grad():
        final, taken = model.forward_intermediates(x, indices=[1, 2], stop_early=True)
    assert torch.equal(final, taken[-1]) and final.shape[1] == 128


@pytest.mark.parametrize("call, words", [
    (lambda: attnzoo.create_model("r18", features_only=True, out_indices=(1, 5)), "stage index 5 does not exist"),
    (lambda: attnzoo.create_model("r18", out_indices=(1, 2)), "features_only=True"),
    (lambda: attnzoo.create_model("r18", frozen_stages=1), "features_only=True"),
    (lambda: attnzoo.create_model("r18", features_only=True, frozen_stages=5), "frozen_stages=5"),
    (lambda: attnzoo.create_model("r18", features_only=True, out_indices=()), "at least one"),
    (lambda: attnzoo.create_model("r18", features_only="yes"), "features_only must be True or False"),
    (lambda: attnzoo.create_model("r18").forward_intermediates(torch.randn(1, 3, 32, 32), output_fmt="NHWC"),
     "output_fmt"),
    (lambda: attnzoo.create_model("r18", features_only=True)(torch.randn(1, 1, 32, 32)), "in_chans=3"),
])
def test_feature_mistakes_get_one_clear_error(call, words):
    with pytest.raises(AttnzooError, match=words):
        call()


def test_classification_weights_load_with_the_head_dropped_and_said_so(tmp_path, caplog, make_lightning_checkpoint):
    classifier = attnzoo.create_model("gc_r18", num_classes=7).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        _, expected = classifier.forward_intermediates(x, indices=[1, 2, 3, 4])
    state = classifier.state_dict()

    body = attnzoo.create_model("gc_r18", features_only=True).eval()
    with caplog.at_level(logging.WARNING, logger="attnzoo.features"):
        body.load_state_dict(state)  # strict: only the head's entries are dropped
    assert "2 classifier weight entries dropped (fc.weight, fc.bias)" in caplog.text
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(body(x), expected, strict=True))
    with pytest.raises(RuntimeError, match="layer9"):
        body.load_state_dict({**state, "layer9.weight": torch.zeros(1)})

    # attnzoo.load of saved weights
    attnzoo.save_pretrained(classifier, tmp_path / "weights")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attnzoo.features"):
        loaded = attnzoo.load(str(tmp_path / "weights"), features_only=True, out_indices=[1, 2, 3, 4])
    assert "2 classifier weight entries dropped" in caplog.text and isinstance(loaded, FeatureNet)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded(x), expected, strict=True))
    with pytest.raises(AttnzooError, match="load\\(\\) has no option 'out_indice'"):
        attnzoo.load(str(tmp_path / "weights"), features_only=True, out_indice=[1])

    # a training checkpoint (what `attnzoo fit` writes), through features_of
    from attnzoo.weights.lightning_checkpoint import model_from_lightning_checkpoint

    ckpt, trained = make_lightning_checkpoint("r18", num_classes=3)
    body = features_of(model_from_lightning_checkpoint(ckpt).model).eval()
    with torch.no_grad():
        _, want = trained.eval().forward_intermediates(x, indices=[1, 2, 3, 4])
        assert all(torch.equal(a, b) for a, b in zip(body(x), want, strict=True))

    # retrofit: plain weights (a torchvision-style .pth with a 1000-class head) into a features model
    plain = attnzoo.create_model("r18").eval()
    torch.save(plain.state_dict(), tmp_path / "resnet18.pth")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="attnzoo.features"):
        retro = attnzoo.create_model("gct_r18", features_only=True, backbone_weights=str(tmp_path / "resnet18.pth"))
    assert "2 classifier weight entries dropped" in caplog.text
    with torch.no_grad():
        _, plain_maps = plain.forward_intermediates(x, indices=[1, 2, 3, 4])
        assert all(torch.equal(a, b) for a, b in zip(retro.eval()(x), plain_maps, strict=True))  # GCT: identity


def _train_step(body: nn.Module, x: torch.Tensor) -> None:
    optimizer = torch.optim.SGD([p for p in body.parameters() if p.requires_grad], lr=0.1)
    body.train()
    loss = sum(m.square().mean() for m in body(x))
    loss.backward()
    optimizer.step()


def test_frozen_batch_norm_is_a_fixed_affine_map():
    bn = nn.BatchNorm2d(8, eps=1e-3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    frozen = freeze_batch_norm(bn)
    assert isinstance(frozen, FrozenBatchNorm2d) and list(frozen.parameters()) == [] and frozen.eps == 1e-3
    x = torch.randn(2, 8, 5, 5)
    torch.testing.assert_close(frozen(x), bn.eval()(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(frozen.train()(x), frozen.eval()(x))
    # a BatchNorm state dict loads (num_batches_tracked dropped); the keys are torchvision's
    frozen.load_state_dict(bn.state_dict())
    assert sorted(frozen.state_dict()) == ["bias", "running_mean", "running_var", "weight"]
    channels_last = x.to(memory_format=torch.channels_last)
    assert frozen(channels_last).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(frozen(channels_last), frozen(x))


@pytest.mark.peers
def test_frozen_batch_norm_is_bitwise_torchvisions():
    ops = pytest.importorskip("torchvision.ops")
    bn = nn.BatchNorm2d(16)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
    theirs = ops.FrozenBatchNorm2d(16)
    theirs.load_state_dict(bn.state_dict())
    ours = FrozenBatchNorm2d.from_batch_norm(bn)
    x = torch.randn(2, 16, 9, 9)
    assert torch.equal(ours(x), theirs(x))
    assert set(ours.state_dict()) == set(theirs.state_dict())


def test_frozen_bn_freezes_the_backbone_and_leaves_attention_norms_trainable():
    # GAM (BatchNorms in the spatial branch) in stage 4 only, CBAM is checked the same way by the class
    body = attnzoo.create_model("gam_r18", features_only=True, frozen_bn=True, attention_stages=[4])
    assert isinstance(body.bn1, FrozenBatchNorm2d) and isinstance(body.layer4[0].bn2, FrozenBatchNorm2d)
    attention_bn = body.layer4[0].attn.spatial_bn1
    assert type(attention_bn) is nn.BatchNorm2d
    assert not [n for n, m in body.named_modules() if isinstance(m, nn.BatchNorm2d) and ".attn" not in n]
    frozen = [f"{n}.{key}" for n, m in body.named_modules() if isinstance(m, FrozenBatchNorm2d)
              for key in ("weight", "bias", "running_mean", "running_var")]
    x = torch.randn(2, 3, SIZE, SIZE)
    before = {k: v.clone() for k, v in body.state_dict().items()}
    _train_step(body, x)
    after = body.state_dict()
    assert len(frozen) == 4 * 20 and all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["layer4.0.conv1.weight"], after["layer4.0.conv1.weight"])
    assert not torch.equal(before["layer4.0.attn.spatial_bn1.running_mean"], after["layer4.0.attn.spatial_bn1.running_mean"])
    assert attention_bn.weight.grad is not None
    # include_attention freezes the attention's BatchNorms too
    freeze_batch_norm(body, include_attention=True)
    assert isinstance(body.layer4[0].attn.spatial_bn1, FrozenBatchNorm2d)


@pytest.mark.parametrize("name, attention_norm", [("gc_r18", "layer2.0.attn.channel_add_conv.1"),
                                                  ("cbam_r18", "layer2.0.attn.spatial_bn")])
def test_norm_eval_keeps_backbone_statistics_and_attention_norms_train(name, attention_norm):
    body = attnzoo.create_model(name, features_only=True, norm_eval=True, out_indices=(1, 2))
    body.train()
    backbone_bns = [m for n, m in body.named_modules() if isinstance(m, nn.BatchNorm2d) and ".attn" not in n]
    assert backbone_bns and not any(bn.training for bn in backbone_bns)
    norm = body.get_submodule(attention_norm)
    assert norm.training
    before = {k: v.clone() for k, v in body.state_dict().items()}
    _train_step(body, torch.randn(2, 3, SIZE, SIZE))
    after = body.state_dict()
    assert not any(not torch.equal(before[k], after[k]) for k in before if "running" in k and ".attn" not in k)
    assert all(bn.weight.grad is not None for bn in backbone_bns)  # affine still learns (mmdetection's norm_eval)
    assert norm.weight.grad is not None  # (GC's is zero at init: the conv after it starts at zero)
    body.eval().train()
    assert not any(bn.training for bn in backbone_bns) and norm.training


def test_frozen_stages_freeze_the_stem_and_early_stages_attention_included():
    body = attnzoo.create_model("cbam_r18", features_only=True, frozen_stages=1, out_indices=(1, 2))
    body.train()
    frozen = {n for n, _ in body.named_parameters() if n.startswith(("conv1", "bn1", "layer1"))}
    assert any(".attn." in n for n in frozen)
    assert all(not p.requires_grad for n, p in body.named_parameters() if n in frozen)
    assert all(p.requires_grad for n, p in body.named_parameters() if n not in frozen)
    assert not body.bn1.training and not body.layer1.training and not body.layer1[0].attn.spatial_bn.training
    assert body.layer2.training
    before = {k: v.clone() for k, v in body.state_dict().items()}
    _train_step(body, torch.randn(2, 3, SIZE, SIZE))
    after = body.state_dict()
    assert all(p.grad is None for n, p in body.named_parameters() if n in frozen)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert not any(k.startswith(("conv1", "bn1", "layer1")) for k in changed)
    assert any(k.startswith("layer2") and k.endswith("weight") for k in changed)
    assert {k for k in changed if k.startswith("layer2") and "running_mean" in k}  # not norm_eval: stats update


@pytest.mark.slow
@pytest.mark.parametrize("name", ["r18", "mobilenetv2"])
def test_features_compile_with_no_graph_break_and_channels_last(name):
    torch._dynamo.reset()
    body = attnzoo.create_model(name, features_only=True, frozen_bn=name == "r18", out_indices=(0, 1, 2, 3, 4))
    x = torch.randn(2, 3, SIZE, SIZE)
    for mode in ("eval", "train"):
        body.train(mode == "train")
        with torch.set_grad_enabled(mode == "train"):
            explanation = torch._dynamo.explain(body)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
    body.eval()
    compiled = torch.compile(body, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        want = body(x)
        for got in (compiled(x), body.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))):
            assert len(got) == len(want)
            for a, b in zip(got, want):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_features_export_to_onnx_with_one_output_per_map(tmp_path, capsys):
    """`attnzoo export WEIGHTS --format onnx --features-only` (export_onnx(..., features_only=True)): one graph
    output per map, each checked in onnxruntime against eager PyTorch."""
    pytest.importorskip("onnxruntime")
    from attnzoo.cli import main
    from attnzoo.export.api import onnxruntime_session
    from attnzoo.export.metadata import read_metadata

    classifier = attnzoo.create_model("gct_r18", num_classes=5)
    attnzoo.save_pretrained(classifier, tmp_path / "weights")
    path = tmp_path / "body.onnx"
    main(["export", str(tmp_path / "weights"), "--format", "onnx", "--out", str(path), "--features-only",
          "--out_indices", "[2,3,4]"])
    out = capsys.readouterr().out
    assert "wrote gct_r18 (3 feature maps at strides 8, 16, 32) as ONNX" in out and "onnxruntime matches" in out
    session = onnxruntime_session(path)
    assert [o.name for o in session.get_outputs()] == ["stage2", "stage3", "stage4"]
    x = torch.randn(1, 3, 96, 64)
    got = session.run(None, {"image": x.numpy()})
    body = features_of(classifier, out_indices=(2, 3, 4)).eval()
    with torch.no_grad():
        want = body(x)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(torch.from_numpy(a), b, rtol=1e-4, atol=1e-4)
    maps = read_metadata(path)["output"]["maps"]
    assert [(m["channels"], m["reduction"]) for m in maps] == [(128, 8), (256, 16), (512, 32)]
