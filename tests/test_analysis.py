"""attnzoo.analysis's recorder: it sees what each attention module really applies (recomputed here from the
module's input and output), on every one of the 42 models, eager or compiled, and changes nothing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import attnzoo
from attnzoo.analysis import AttentionRecorder, record_attention
from attnzoo.attention import CBAM, ECA, GAM, GCT, SE, AttentionModule, GlobalContext
from attnzoo.errors import AttnzooError
from attnzoo.backbones.mobilenetv2 import INVERTED_RESIDUAL_SETTING
from attnzoo.registry import BACKBONES, get_spec, list_models
from test_attention import randomize  # random parameters and BN statistics, so zero-initialised parts act

def randomize_attention(model: nn.Module) -> nn.Module:
    """A zoo model whose attention modules (only) are randomised: gates that vary, activations that stay sane."""
    for module in model.modules():
        if isinstance(module, AttentionModule):
            randomize(module)
    return model.eval()


def record(module: nn.Module, x: torch.Tensor):
    with record_attention(module) as recording, torch.no_grad():
        y = module(x)
    return y, recording.records[""]


def per_channel_factor(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The least-squares g with y ≈ x · g[:, :, None, None], from the output and the input alone."""
    return (y * x).sum((2, 3)) / (x * x).sum((2, 3))


X = torch.randn(2, 32, 6, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("make", [lambda: SE(32, reduction=4), lambda: ECA(32, kernel_size=3), lambda: GCT(32),
                                  lambda: GCT(32, mode="l1")], ids=["se", "eca", "gct_l2", "gct_l1"])
def test_recorded_channel_gate_is_what_the_module_multiplies(make):
    module = randomize(make().double())
    y, rec = record(module, X)
    assert rec.channel_gate.shape == (2, 32) and rec.spatial_gate is None
    torch.testing.assert_close(rec.channel_gate, per_channel_factor(y, X).float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, X * rec.channel_gate.double()[:, :, None, None], rtol=1e-6, atol=1e-6)


def test_recorded_cbam_gates_are_what_it_multiplies():
    module = randomize(CBAM(32, reduction=4).double())
    y, rec = record(module, X)
    assert rec.channel_gate.shape == (2, 32) and rec.spatial_gate.shape == (2, 1, 6, 5)
    mlp = lambda v: module.channel_mlp[2](torch.relu(module.channel_mlp[0](v)))  # noqa: E731
    channel = torch.sigmoid(mlp(X.mean((2, 3), keepdim=True)) + mlp(X.amax((2, 3), keepdim=True)))
    torch.testing.assert_close(rec.channel_gate, channel.flatten(1).float())
    gated = X * channel
    spatial_from_output = (y * gated).sum(1, keepdim=True) / (gated * gated).sum(1, keepdim=True)
    torch.testing.assert_close(rec.spatial_gate, spatial_from_output.float(), rtol=1e-5, atol=1e-6)
    assert 0 < rec.spatial_gate.min() and rec.spatial_gate.max() < 1 and rec.spatial_gate.std() > 0


@pytest.mark.parametrize("fusion", [("channel_add",), ("channel_mul",), ("channel_mul", "channel_add")])
def test_recorded_gc_mask_and_context_are_what_it_pools_and_applies(fusion):
    module = randomize(GlobalContext(32, ratio=1 / 4, fusion=fusion).double())
    y, rec = record(module, X)
    logits = F.conv2d(X, module.conv_mask.weight, module.conv_mask.bias)  # [B, 1, H, W]
    mask = logits.flatten(2).softmax(-1).view_as(logits)
    torch.testing.assert_close(rec.context_mask, mask.float())
    torch.testing.assert_close(rec.context_mask.sum((2, 3)), torch.ones(2, 1))
    mul = rec.channel_gate.double()[:, :, None, None] if rec.channel_gate is not None else 1.0
    add = rec.context_add.double()[:, :, None, None] if rec.context_add is not None else 0.0
    assert (rec.channel_gate is not None) == ("channel_mul" in fusion)
    assert (rec.context_add is not None) == ("channel_add" in fusion)
    torch.testing.assert_close(y, X * mul + add, rtol=1e-6, atol=1e-6)
    if fusion == ("channel_add",):  # the added context is the output minus the input, the same at every position
        torch.testing.assert_close(rec.context_add, (y - X)[:, :, 0, 0].float())


def test_recorded_gam_maps_are_the_means_of_what_it_multiplies():
    module = randomize(GAM(32, rate=4, groups=2).double())
    y, rec = record(module, X)

    def bn(v, norm):
        return F.batch_norm(v, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps)

    first, _, second = module.channel_mlp
    channel = torch.sigmoid(F.conv2d(torch.relu(F.conv2d(X, first.weight, first.bias)), second.weight, second.bias))
    gated = X * channel
    hidden = torch.relu(bn(F.conv2d(gated, module.spatial_conv1.weight, padding=3, groups=2), module.spatial_bn1))
    hidden = hidden.view(2, 2, 4, 6, 5).transpose(1, 2).reshape(2, 8, 6, 5)  # channel shuffle, 2 groups
    spatial = torch.sigmoid(bn(F.conv2d(hidden, module.spatial_conv2.weight, padding=3, groups=2), module.spatial_bn2))
    torch.testing.assert_close(y, gated * spatial)  # the independent maps are the ones applied
    torch.testing.assert_close(rec.channel_gate, channel.mean((2, 3)).float())
    torch.testing.assert_close(rec.spatial_gate, spatial.mean(1, keepdim=True).float())
    assert set(rec.reduced) == {"channel_gate", "spatial_gate"}
    assert rec.applied_shapes == {"channel_gate": [2, 32, 6, 5], "spatial_gate": [2, 32, 6, 5]}


def test_gct_at_initialisation_records_gates_of_exactly_one():
    model = attnzoo.create_model("gct_r18", num_classes=3).eval()
    with record_attention(model) as recording, torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    records = recording.records
    assert len(records) == sum(isinstance(m, nn.Conv2d) for m in model.modules())  # one gate per convolution
    for path, rec in records.items():
        assert torch.equal(rec.channel_gate, torch.ones_like(rec.channel_gate)), path


def test_spatial_maps_are_aligned_with_the_module_input():
    for name, options in (("cbam_r18", {}), ("gc_r18", {}), ("gam_mobilenetv2", {"width_mult": 0.25})):
        model = randomize_attention(attnzoo.create_model(name, num_classes=3, **options))
        inputs = {}
        hooks = [m.register_forward_pre_hook(lambda m, a, path=path: inputs.__setitem__(path, a[0].shape))
                 for path, m in model.named_modules() if isinstance(m, AttentionModule)]
        with record_attention(model) as recording, torch.no_grad():
            model(torch.randn(2, 3, 64, 48))
        for hook in hooks:
            hook.remove()
        sizes = set()
        for path, rec in recording.records.items():
            b, c, h, w = inputs[path]
            for tap in ("spatial_gate", "context_mask"):
                if getattr(rec, tap) is not None:
                    assert getattr(rec, tap).shape == (b, 1, h, w), (name, path, tap)
                    sizes.add((h, w))
            for tap in ("channel_gate", "context_add"):
                if getattr(rec, tap) is not None:
                    assert getattr(rec, tap).shape == (b, c), (name, path, tap)
        assert len(sizes) >= 3, name  # several depths, several resolutions
        if name.endswith("r18"):
            assert model_input_sizes(recording) == [(16, 12)] * 2 + [(8, 6)] * 2 + [(4, 3)] * 2 + [(2, 2)] * 2


def model_input_sizes(recording: AttentionRecorder) -> list[tuple[int, int]]:
    taps = [rec.spatial_gate if rec.spatial_gate is not None else rec.context_mask for rec in recording.records.values()]
    return [tuple(t.shape[-2:]) for t in taps]


EXPECTED_TAPS = {SE: {"channel_gate"}, ECA: {"channel_gate"}, GCT: {"channel_gate"}, CBAM: {"channel_gate", "spatial_gate"},
                 GAM: {"channel_gate", "spatial_gate"}, GlobalContext: {"context_mask", "context_add"}}


def expected_attention_modules(name: str, model: nn.Module) -> int:
    """From the architecture: one per residual block (every ResNet block, MobileNetV2's 17), or one per conv (GCT)."""
    spec = get_spec(name)
    if spec.attention is None:
        return 0
    if spec.attention == "gct":
        return sum(isinstance(m, nn.Conv2d) for m in model.modules())
    if spec.backbone == "mobilenetv2":
        return sum(repeats for _, _, repeats, _ in INVERTED_RESIDUAL_SETTING)
    return sum(BACKBONES[spec.backbone][1]["layers"])


@pytest.mark.parametrize("name", list_models())
def test_every_model_records_one_entry_per_attention_module(name):
    with torch.device("meta"):  # shapes only: even GAM-ResNet-152 builds and runs in no time and no memory
        model = attnzoo.create_model(name, num_classes=10).eval()
        x = torch.empty(2, 3, 64, 64)
    with record_attention(model, to_cpu=False) as recording, torch.no_grad():
        model(x)
    records = recording.records
    expected = [p for p, m in model.named_modules() if isinstance(m, AttentionModule)]
    assert len(list_models()) == 42
    assert list(records) == expected and len(records) == expected_attention_modules(name, model)
    for path, rec in records.items():
        module = model.get_submodule(path)
        assert set(rec.taps()) == EXPECTED_TAPS[type(module)], path
        assert rec.module == type(module).__name__ and rec.channels == module.channels
        for tap, value in rec.taps().items():
            assert value.shape[0] == 2 and (value.shape[1] == module.channels or value.shape[1] == 1), (path, tap)


def test_a_plain_model_records_nothing_and_a_model_without_forward_says_so():
    plain = attnzoo.create_model("r18", num_classes=3).eval()
    with record_attention(plain) as recording:
        plain(torch.randn(1, 3, 32, 32))
    assert recording.records == {}
    model = attnzoo.create_model("se_r18", num_classes=3).eval()
    with pytest.raises(AttnzooError, match="run a forward pass"):
        record_attention(model).records


def test_recording_changes_nothing_and_keeps_no_feature_map():
    model = randomize_attention(attnzoo.create_model("cbam_r18", num_classes=3))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        with record_attention(model) as recording:
            during = model(x)
    assert torch.equal(before, during)
    kept = sum(v.numel() for rec in recording.records.values() for v in rec.taps().values())
    feature_maps = sum(2 * m.channels * 8 * 8 for m in model.modules() if isinstance(m, CBAM))  # layer1's alone
    assert kept < feature_maps / 4
    assert not any(m._forward_hooks for m in model.modules())  # removed on exit


@pytest.mark.slow
def test_recording_a_compiled_model_or_saying_why_not():
    torch.manual_seed(0)
    net = randomize(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), CBAM(16, reduction=4), GCT(16)))
    x = torch.randn(2, 3, 12, 12)
    with record_attention(net) as eager, torch.no_grad():
        net(x)
    compiled = torch.compile(net)
    with record_attention(compiled) as recording, torch.no_grad():  # attached before the first compiled call
        compiled(x)
    assert list(recording.records) == ["1", "2"]
    for path, rec in recording.records.items():
        for tap, value in rec.taps().items():
            torch.testing.assert_close(value, getattr(eager.records[path], tap), rtol=1e-5, atol=1e-6)

    late = torch.compile(randomize(nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), SE(16, reduction=4))))
    with torch.no_grad():
        late(x)  # traced without hooks
        with record_attention(late) as recording:
            late(x)
    with pytest.raises(AttnzooError, match="torch.compile.*before the model's first compiled call"):
        recording.records


def test_picture_titles_stay_inside_their_panel_and_the_figure():
    # A long file name or class name ran over the next panel and past the figure's left edge.
    pytest.importorskip("matplotlib")
    import numpy as np

    from attnzoo.analysis.figures import image_figure

    title = "0012_a_rather_long_image_file_name.png\npredicted: checkered_square 98% (true: checkered_square)"
    figure = image_figure(torch.rand(3, 32, 32), title, [("layer1.0.attn\nspatial_gate 8x8", np.random.rand(32, 32))] * 3)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for ax in figure.axes:
        if ax.get_title():
            title_box, panel = ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert title_box.x0 >= 0 and title_box.x1 <= figure.bbox.width, ax.get_title()
            assert title_box.width <= panel.width * 1.05, ax.get_title()
    assert "(true: checkered_square)" in figure.axes[0].get_title()
