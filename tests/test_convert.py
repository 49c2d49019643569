"""Converters for the official checkpoints, on state dicts laid out like the official releases.

The official layouts are written out here from the official model code (not from attnzoo's converter rules):
the plain parts keep torchvision's names in all three repos, the attention parts are named as below, and the
files are saved the way their training scripts save them (DataParallel's `module.` prefix, a dict with
`state_dict`, `epoch`, `best_prec1`, `optimizer`).
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import attnzoo
from attnzoo.cli import main
from attnzoo.errors import AttnzooError
from attnzoo.weights.commands import convert_command
from attnzoo.weights.convert import convert

X = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(2))
G = torch.Generator().manual_seed(3)


def _randn(*shape):
    return torch.randn(*shape, generator=G)


def _plain(name: str, num_classes: int = 10) -> dict[str, torch.Tensor]:
    """A plain network's state dict (torchvision's keys) with random values."""
    state = attnzoo.create_model(name, num_classes=num_classes).state_dict()
    return {k: (_randn(*v.shape).abs() + 0.5 if "running_var" in k else _randn(*v.shape) * 0.1)
            if v.is_floating_point() else v for k, v in state.items()}


def _blocks(state) -> list[tuple[str, int]]:
    """(block prefix, output channels) of every residual block, from the last BN of each block."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if key.startswith("layer") and parts[2].startswith("bn") and parts[3] == "weight":
            out[f"{parts[0]}.{parts[1]}"] = max(out.get(f"{parts[0]}.{parts[1]}", 0), value.shape[0])
    return sorted(out.items())


def _save(tmp_path, state, name="official.pth.tar"):
    path = tmp_path / name
    torch.save({"epoch": 100, "arch": "official", "best_prec1": 77.0, "optimizer": {"state": {}},
                "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path


def ecanet_resnet18(kernels=(3, 5, 7, 7)):
    # BangguWu/ECANet models/eca_resnet.py: self.eca = eca_layer(planes, k_size); eca_layer.conv = Conv1d(1, 1, k)
    state = _plain("r18")
    for block, _ in _blocks(state):
        state[f"{block}.eca.conv.weight"] = _randn(1, 1, kernels[int(block[5]) - 1])
    return state


def ecanet_mobilenetv2():
    # models/eca_mobilenetv2.py (HEAD): eca_layer is the last entry of InvertedResidual.conv; k = 1 if c < 96
    # else 3 (the released eca_mobilenetv2_k13 has k=3 in features.11-13, the 96-channel stage).
    state = _plain("mobilenetv2")
    index = 1
    for t, c, n in [(1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)]:
        for _ in range(n):
            position = 3 if t == 1 else 4
            state[f"features.{index}.conv.{position}.conv.weight"] = _randn(1, 1, 1 if c < 96 else 3)
            index += 1
    return state


def cbam_resnet18():
    # Jongchan/attention-module MODELS/cbam.py: ChannelGate.mlp = Sequential(Flatten, Linear, ReLU, Linear);
    # SpatialGate.spatial = BasicConv(conv 2->1 7x7 no bias, bn).
    state = _plain("r18")
    for block, channels in _blocks(state):
        hidden = channels // 16
        gate = f"{block}.cbam"
        state[f"{gate}.ChannelGate.mlp.1.weight"] = _randn(hidden, channels)
        state[f"{gate}.ChannelGate.mlp.1.bias"] = _randn(hidden)
        state[f"{gate}.ChannelGate.mlp.3.weight"] = _randn(channels, hidden)
        state[f"{gate}.ChannelGate.mlp.3.bias"] = _randn(channels)
        state[f"{gate}.SpatialGate.spatial.conv.weight"] = _randn(1, 2, 7, 7)
        for name, value in (("weight", _randn(1)), ("bias", _randn(1)), ("running_mean", _randn(1)),
                            ("running_var", torch.ones(1)), ("num_batches_tracked", torch.tensor(5))):
            state[f"{gate}.SpatialGate.spatial.bn.{name}"] = value
    return state


def gct_resnet50():
    # z-x-yang/GCT PyTorch/resnet.py: stem.conv1 = Sequential(GCT(3), Conv2d); stem.bn1; blocks convK =
    # Sequential(GCT, Conv2d); downsample = Sequential(GCT, Conv2d, BN); GCT has alpha, gamma, beta [1, C, 1, 1].
    plain = _plain("r50", 1000)
    state = {}

    def gct(prefix, channels):
        state[f"{prefix}.alpha"] = 1 + 0.1 * _randn(1, channels, 1, 1)
        state[f"{prefix}.gamma"] = 0.1 * _randn(1, channels, 1, 1)
        state[f"{prefix}.beta"] = 0.1 * _randn(1, channels, 1, 1)

    for key, value in plain.items():
        parts = key.split(".")
        if parts[0] == "conv1":
            gct("stem.conv1.0", 3)
            state["stem.conv1.1.weight"] = value
        elif parts[0] == "bn1":
            state[f"stem.{key}"] = value
        elif key.startswith("layer") and parts[2].startswith("conv"):
            gct(f"{parts[0]}.{parts[1]}.{parts[2]}.0", value.shape[1])
            state[f"{parts[0]}.{parts[1]}.{parts[2]}.1.weight"] = value
        elif key.startswith("layer") and parts[2] == "downsample":
            block = f"{parts[0]}.{parts[1]}.downsample"
            if parts[3] == "0":
                gct(f"{block}.0", value.shape[1])
                state[f"{block}.1.weight"] = value
            else:
                state[f"{block}.2.{parts[4]}"] = value
        else:
            state[key] = value
    return state


def senet_resnet50(bias=False):
    # moskomule/senet.pytorch senet/se_resnet.py + se_module.py: torchvision's ResNet with SEBottleneck;
    # self.se = SELayer(planes * 4, reduction=16): fc = Sequential(Linear(C, C // 16, bias=False), ReLU,
    # Linear(C // 16, C, bias=False), Sigmoid). The release (seresnet50-*.pkl) is a bare state dict.
    state = _plain("r50", 1000)
    for block, channels in _blocks(state):
        state[f"{block}.se.fc.0.weight"] = _randn(channels // 16, channels) * 0.3
        state[f"{block}.se.fc.2.weight"] = _randn(channels, channels // 16) * 0.3
        if bias:
            state[f"{block}.se.fc.0.bias"] = _randn(channels // 16) * 0.3
            state[f"{block}.se.fc.2.bias"] = _randn(channels) * 0.3
    return state


def gcnet_mask_rcnn_r50(ratio=1 / 16, stages=(2, 3, 4)):
    # xvjiarui/GCNet (mmdetection) mmdet/models/backbones/resnet.py: BN named bn1..bn3, shortcut
    # downsample.{0,1}, no fc; with gcb: self.context_block = ContextBlock(inplanes=planes * 4, ratio) in the
    # stages of stage_with_gcb=(False, True, True, True) ("c3-c5"). ContextBlock: conv_mask (C -> 1, bias),
    # channel_add_conv = Sequential(Conv2d(C, P), LayerNorm([P, 1, 1]), ReLU, Conv2d(P, C)), P = int(C * ratio).
    # The detector's state dict has the backbone under `backbone.` beside the neck and the heads; mmcv saves
    # {"meta": ..., "state_dict": ..., "optimizer": ...}.
    plain = {k: v for k, v in _plain("r50", 1000).items() if not k.startswith("fc.")}
    state = {f"backbone.{k}": v for k, v in plain.items()}
    for block, channels in _blocks(plain):
        if int(block[5]) not in stages:
            continue
        hidden, gcb = int(channels * ratio), f"backbone.{block}.context_block"
        state[f"{gcb}.conv_mask.weight"] = _randn(1, channels, 1, 1) * 0.1
        state[f"{gcb}.conv_mask.bias"] = _randn(1)
        state[f"{gcb}.channel_add_conv.0.weight"] = _randn(hidden, channels, 1, 1) * 0.1
        state[f"{gcb}.channel_add_conv.0.bias"] = _randn(hidden) * 0.1
        state[f"{gcb}.channel_add_conv.1.weight"] = 1 + 0.1 * _randn(hidden, 1, 1)
        state[f"{gcb}.channel_add_conv.1.bias"] = 0.1 * _randn(hidden, 1, 1)
        state[f"{gcb}.channel_add_conv.3.weight"] = _randn(channels, hidden, 1, 1) * 0.1
        state[f"{gcb}.channel_add_conv.3.bias"] = _randn(channels) * 0.1
    state["neck.lateral_convs.0.conv.weight"] = _randn(256, 256, 1, 1)
    state["neck.lateral_convs.0.conv.bias"] = _randn(256)
    state["rpn_head.rpn_conv.weight"] = _randn(256, 256, 3, 3)
    state["bbox_head.fc_cls.weight"] = _randn(81, 1024)
    state["bbox_head.fc_cls.bias"] = _randn(81)
    return state


def reference_resnet_features(state, x, layers, attention, prefix=""):
    """torchvision's ResNet (strides in the 3x3 convs), written out with torch.nn.functional from a state dict
    in its names, with ``attention(block, branch)`` applied to each residual branch before the addition."""
    def conv(name, t, stride=1, padding=0):
        return F.conv2d(t, state[f"{prefix}{name}.weight"], stride=stride, padding=padding)

    def bn(name, t):
        p = f"{prefix}{name}."
        return F.batch_norm(t, state[p + "running_mean"], state[p + "running_var"], state[p + "weight"],
                            state[p + "bias"], False, 0.0, 1e-5)

    out = F.max_pool2d(F.relu(bn("bn1", conv("conv1", x, 2, 3))), 3, 2, 1)
    for stage, blocks in enumerate(layers, start=1):
        for index in range(blocks):
            b, stride = f"layer{stage}.{index}", 2 if index == 0 and stage > 1 else 1
            h = F.relu(bn(f"{b}.bn1", conv(f"{b}.conv1", out)))
            h = F.relu(bn(f"{b}.bn2", conv(f"{b}.conv2", h, stride, 1)))
            h = attention(b, bn(f"{b}.bn3", conv(f"{b}.conv3", h)))
            shortcut = f"{b}.downsample.0"
            identity = bn(f"{b}.downsample.1", conv(shortcut, out, stride)) if f"{prefix}{shortcut}.weight" in state else out
            out = F.relu(h + identity)
    return out


def test_senet_port_converts_without_biases_and_computes_what_the_port_computes(tmp_path, capsys):
    official = {k: v.double() if v.is_floating_point() else v for k, v in senet_resnet50().items()}
    path = tmp_path / "seresnet50-60a8950a85b2b.pkl"
    torch.save(official, path)
    main(["convert", "--from", "senet", str(path), "--model", "se_r50", "--out", str(tmp_path / "out")])
    assert "bias=False" in capsys.readouterr().out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_args"] == {"attention_kwargs": {"bias": False}}
    model = attnzoo.load(str(tmp_path / "out")).double()
    assert model.layer3[2].attn.fc1.bias is None
    assert sum(p.numel() for p in model.parameters()) == attnzoo.model_info("se_r50")["params"] - 16_048

    def se(block, h):  # SELayer.forward: x * fc(avg_pool(x))
        w1, w2 = official[f"{block}.se.fc.0.weight"], official[f"{block}.se.fc.2.weight"]
        return h * torch.sigmoid(torch.relu(h.mean((2, 3)) @ w1.T) @ w2.T)[:, :, None, None]

    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    features = reference_resnet_features(official, x, [3, 4, 6, 3], se)
    expected = F.linear(features.mean((2, 3)), official["fc.weight"], official["fc.bias"])
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_senet_file_with_biases_keeps_them(tmp_path):
    official = senet_resnet50(bias=True)
    path = tmp_path / "se_resnet50.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.items()}}, path)
    convert("senet", path, "se_r50", tmp_path / "out", echo=lambda _: None)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_args"] == {}
    state = attnzoo.load(str(tmp_path / "out")).state_dict()
    assert torch.equal(state["layer4.2.attn.fc2.bias"], official["layer4.2.se.fc.2.bias"])
    assert torch.equal(state["layer4.2.attn.fc1.weight"].flatten(1), official["layer4.2.se.fc.0.weight"])


def test_senet_reduction_is_read_from_the_file_and_uneven_widths_are_refused():
    from attnzoo.weights.convert import convert_state_dict

    state = _plain("r18", 1000)
    for block, channels in _blocks(state):
        state[f"{block}.se.fc.0.weight"] = _randn(channels // 8, channels)
        state[f"{block}.se.fc.2.weight"] = _randn(channels, channels // 8)
    model, _ = convert_state_dict("senet", state, "se_r18")
    assert model.config.to_dict()["model_args"] == {"attention_kwargs": {"bias": False, "reduction": 8}}
    assert model.layer1[0].attn.fc1.out_channels == 8
    state["layer4.1.se.fc.0.weight"], state["layer4.1.se.fc.2.weight"] = _randn(32, 512), _randn(512, 32)
    with pytest.raises(AttnzooError, match="do not follow one reduction"):
        convert_state_dict("senet", state, "se_r18")


@pytest.mark.parametrize("ratio", [1 / 16, 1 / 4], ids=["r16", "r4"])
def test_gcnet_backbone_converts_with_gc_in_stages_2_to_4_and_a_fresh_head(tmp_path, capsys, ratio):
    official = {k: v.double() if v.is_floating_point() else v for k, v in gcnet_mask_rcnn_r50(ratio).items()}
    path = tmp_path / "mask_rcnn_r16_gcb_c3-c5_r50_fpn_2x.pth"
    torch.save({"meta": {"mmdet_version": "0.6.0", "config": "model = dict(...)", "epoch": 24},
                "state_dict": official, "optimizer": {"state": {}, "param_groups": []}}, path)
    main(["convert", "--from", "gcnet", str(path), "--model", "gc_r50", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "freshly initialised" in out and "5 tensors outside `backbone.`" in out and "stages 2, 3, 4" in out
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    expected_args = {"attention_stages": [2, 3, 4]}
    if ratio != 1 / 16:
        expected_args["attention_kwargs"] = {"ratio": ratio}
    assert config["model_args"] == expected_args and config["num_classes"] == 1000
    assert config["source"]["classifier"].startswith("fresh")
    assert "freshly initialised" in (tmp_path / "out" / "README.md").read_text()
    model = attnzoo.load(str(tmp_path / "out")).double()
    assert not hasattr(model.layer1[0].attn, "conv_mask") and model.layer2[0].attn.channel_add_conv[0].out_channels == 512 * ratio

    def context_block(block, h):  # ContextBlock2d.forward with 'att' pooling and 'channel_add' fusion
        p = f"backbone.{block}.context_block."
        if p + "conv_mask.weight" not in official:
            return h
        mask = F.conv2d(h, official[p + "conv_mask.weight"], official[p + "conv_mask.bias"]).flatten(2).softmax(-1)
        context = torch.matmul(h.flatten(2).unsqueeze(1), mask.unsqueeze(3)).view(h.shape[0], -1, 1, 1)
        t = F.conv2d(context, official[p + "channel_add_conv.0.weight"], official[p + "channel_add_conv.0.bias"])
        t = F.layer_norm(t, t.shape[1:], official[p + "channel_add_conv.1.weight"], official[p + "channel_add_conv.1.bias"])
        return h + F.conv2d(torch.relu(t), official[p + "channel_add_conv.3.weight"], official[p + "channel_add_conv.3.bias"])

    x = torch.randn(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    expected = reference_resnet_features(official, x, [3, 4, 6, 3], context_block, prefix="backbone.")
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(x), expected, rtol=1e-12, atol=1e-12)
    # the fresh head is seeded: converting the same file again gives the same bytes
    main(["convert", "--from", "gcnet", str(path), "--model", "gc_r50", "--out", str(tmp_path / "again")])
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "out" / "model.safetensors").read_bytes()


def test_gcnet_head_size_is_an_option_and_only_for_headless_releases(tmp_path):
    path = tmp_path / "gcnet.pth"
    torch.save({"state_dict": gcnet_mask_rcnn_r50()}, path)
    convert_command(str(path), source="gcnet", model="gc_r50", out=str(tmp_path / "out"), num_classes=10)
    assert attnzoo.load(str(tmp_path / "out")).fc.out_features == 10
    with pytest.raises(AttnzooError, match="has a 1000-class classifier; --num_classes is for releases without one"):
        convert_command(str(_save(tmp_path, senet_resnet50())), source="senet", model="se_r50",
                        out=str(tmp_path / "o2"), num_classes=10)
    torch.save({"state_dict": _plain("r50")}, tmp_path / "plain.pth")
    with pytest.raises(AttnzooError, match="no 'backbone.' entries"):
        convert("gcnet", tmp_path / "plain.pth", "gc_r50", tmp_path / "o3")
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in _plain("r50").items() if not k.startswith("fc")}},
               tmp_path / "no-gc.pth")
    with pytest.raises(AttnzooError, match="no GC blocks"):
        convert("gcnet", tmp_path / "no-gc.pth", "gc_r50", tmp_path / "o4")


def test_ecanet_resnet_converts_with_the_released_kernel_sizes(tmp_path, capsys):
    official = ecanet_resnet18(kernels=(3, 3, 3, 3))  # the official eca_resnet18() hard-codes k=3 everywhere
    path = _save(tmp_path, official)
    main(["convert", "--from", "ecanet", str(path), "--model", "eca_r18", "--out", str(tmp_path / "out")])
    model = attnzoo.load(str(tmp_path / "out"))
    state = model.state_dict()
    assert torch.equal(state["layer4.1.attn.conv.weight"], official["layer4.1.eca.conv.weight"])
    assert torch.equal(state["layer2.0.conv1.weight"], official["layer2.0.conv1.weight"])
    assert "stage 2: k=3" in capsys.readouterr().out
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["source"]["kind"] == "converted" and cfg["source"]["file"] == "official.pth.tar"
    assert model(X).shape == (1, 10)


def test_ecanet_mobilenetv2_converts(tmp_path):
    official = ecanet_mobilenetv2()
    path = _save(tmp_path, official)
    main(["convert", "--from=ecanet", str(path), "--model", "eca_mobilenetv2", "--out", str(tmp_path / "out")])
    state = attnzoo.load(str(tmp_path / "out")).state_dict()
    assert torch.equal(state["features.1.attn.conv.weight"], official["features.1.conv.3.conv.weight"])
    assert torch.equal(state["features.12.attn.conv.weight"], official["features.12.conv.4.conv.weight"])
    assert torch.equal(state["features.15.attn.conv.weight"], official["features.15.conv.4.conv.weight"])
    assert state["features.11.attn.conv.weight"].shape == (1, 1, 3)
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    # the registry's kernels are the release's: nothing to override
    assert "attention_stage_kwargs" not in config["model_args"] and "notes" not in config["source"]


def test_cbam_converts_linear_mlp_into_1x1_convs(tmp_path):
    official = cbam_resnet18()
    path = _save(tmp_path, official, "RESNET18_CBAM.pth")
    main(["convert", "--from", "cbam", str(path), "--model", "cbam_r18", "--out", str(tmp_path / "out")])
    model = attnzoo.load(str(tmp_path / "out"))
    state = model.state_dict()
    mlp = official["layer3.1.cbam.ChannelGate.mlp.1.weight"]
    assert torch.equal(state["layer3.1.attn.channel_mlp.0.weight"].flatten(1), mlp)
    assert torch.equal(state["layer3.1.attn.spatial_bn.running_mean"],
                       official["layer3.1.cbam.SpatialGate.spatial.bn.running_mean"])
    assert torch.isfinite(model(X)).all()


def test_gct_converts_with_the_official_stride_layout(tmp_path, capsys):
    official = gct_resnet50()
    path = _save(tmp_path, official)
    main(["convert", "--from", "gct", str(path), "--model", "gct_r50", "--out", str(tmp_path / "out")])
    assert "stride_in_1x1=True" in capsys.readouterr().out
    model = attnzoo.load(str(tmp_path / "out"))
    assert model.layer2[0].conv1.stride == (2, 2) and model.layer2[0].conv2.stride == (1, 1)
    state = model.state_dict()
    assert torch.equal(state["conv1.gate.alpha"], official["stem.conv1.0.alpha"])
    assert torch.equal(state["layer2.0.conv2.gate.beta"], official["layer2.0.conv2.0.beta"])
    assert torch.equal(state["layer2.0.downsample.0.weight"], official["layer2.0.downsample.1.weight"])
    assert torch.equal(state["layer2.0.downsample.1.running_var"], official["layer2.0.downsample.2.running_var"])
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_args"]["stride_in_1x1"] is True
    assert "stride_in_1x1" in (tmp_path / "out" / "README.md").read_text()


def test_torchvision_weights_convert_by_identity(tmp_path):
    official = _plain("r18", 1000)
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(official, path)  # torchvision files are bare state dicts
    main(["convert", "--from", "torchvision", str(path), "--model", "resnet18", "--out", str(tmp_path / "out")])
    state = attnzoo.load(str(tmp_path / "out")).state_dict()
    assert all(torch.equal(state[k], v) for k, v in official.items())


def test_mismatched_checkpoints_are_refused_with_keys_and_shapes(tmp_path, capsys):
    path = _save(tmp_path, ecanet_resnet18())
    with pytest.raises(AttnzooError, match=r"missing in the file: layer1\.2\."):
        convert("ecanet", path, "eca_r34", tmp_path / "out34")
    broken = cbam_resnet18()
    broken["layer1.0.cbam.ChannelGate.mlp.1.weight"] = _randn(8, 64)
    path = _save(tmp_path, broken, "broken.pth")
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "--from", "cbam", str(path), "--model", "cbam_r18", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "layer1.0.attn.channel_mlp.0.weight [8, 64] (attnzoo: [4, 64, 1, 1])" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("release, model, message", [
    ("torchvision", "gct_r50", "backbone_weights"),
    ("ecanet", "cbam_r18", "eca attention"),
    ("timm", "r18", "unknown --from release 'timm'"),
])
def test_release_and_model_must_agree(tmp_path, release, model, message):
    path = _save(tmp_path, _plain("r18"))
    with pytest.raises(AttnzooError, match=message):
        convert_command(str(path), source=release, model=model, out=str(tmp_path / "o"))


def test_a_bad_num_classes_is_refused_before_the_file_is_read(tmp_path):
    not_a_checkpoint = tmp_path / "gcnet.pth"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(AttnzooError, match=r"^--num_classes must be a positive integer, got 0\.$"):
        convert("gcnet", not_a_checkpoint, "gc_r50", tmp_path / "out", num_classes=0)
    assert not (tmp_path / "out").exists()
