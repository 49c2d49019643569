"""Backbones and the registry: torchvision layout, every model runs, retrofit identity, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import attnzoo
from attnzoo.attention import GCT, AttentionModule, GlobalContext
from attnzoo.errors import AttnzooError

FIXTURES = Path(__file__).parent / "fixtures"
TORCHVISION = json.loads((FIXTURES / "torchvision_state_dict_shapes.json").read_text())
PLAIN = {"r18": "resnet18", "r34": "resnet34", "r50": "resnet50", "r101": "resnet101", "r152": "resnet152", "mobilenetv2": "mobilenet_v2"}
TORCHVISION_PARAMS = {"r18": 11_689_512, "r34": 21_797_672, "r50": 25_557_032, "r101": 44_549_160, "r152": 60_192_808, "mobilenetv2": 3_504_872}


def test_registry_has_the_42_models():
    names = attnzoo.list_models()
    assert len(names) == 42 and len(set(names)) == 42
    for attn in ("se", "eca", "gct", "gc", "cbam", "gam"):
        for backbone in PLAIN:
            assert f"{attn}_{backbone}" in names
    assert attnzoo.list_models("eca_*") == [f"eca_{b}" for b in PLAIN]


@pytest.mark.parametrize("ours, theirs", PLAIN.items())
def test_plain_state_dict_equals_torchvision(ours, theirs):
    with torch.device("meta"):
        model = attnzoo.create_model(ours)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == TORCHVISION[theirs]
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[ours]


@pytest.mark.parametrize("ours, theirs", PLAIN.items())
def test_attention_models_keep_every_plain_key(ours, theirs):
    for attn in ("se", "gct", "gam"):
        with torch.device("meta"):
            model = attnzoo.create_model(f"{attn}_{ours}")
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        for key, shape in TORCHVISION[theirs].items():
            assert shapes[key] == shape, key
        extra = set(shapes) - set(TORCHVISION[theirs])
        assert extra and all((".attn." in k) or (".gate." in k) for k in extra)


@pytest.mark.parametrize("name", attnzoo.list_models())
def test_every_model_gives_finite_logits(name):
    torch.manual_seed(0)
    model = attnzoo.create_model(name, num_classes=7).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 48))
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()


def test_aliases_resolve():
    for alias, name in [("resnet50", "r50"), ("mobilenet_v2", "mobilenetv2"), ("gct_resnet50", "gct_r50"), ("ECA-MobileNet_V2", "eca_mobilenetv2")]:
        with torch.device("meta"):
            assert attnzoo.create_model(alias).config.architecture == name


def test_gct_sits_before_every_convolution():
    model = attnzoo.create_model("gct_r50")
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    gates = {n.rsplit(".gate", 1)[0] for n, m in model.named_modules() if isinstance(m, GCT)}
    assert set(convs) == gates  # stem, every block conv, every downsample conv
    assert {"conv1", "layer1.0.downsample.0", "layer4.2.conv3"} <= gates
    assert not any(isinstance(m, GCT) for m in model.fc.modules())


def test_gct_mobilenetv2_covers_stem_blocks_and_last_conv():
    model = attnzoo.create_model("gct_mobilenetv2")
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    gates = {n.rsplit(".gate", 1)[0] for n, m in model.named_modules() if isinstance(m, GCT)}
    assert set(convs) == gates and {"features.0.0", "features.18.0", "features.1.conv.1"} <= gates


def test_residual_attention_sits_at_the_end_of_each_branch():
    model = attnzoo.create_model("se_r50")
    sites = [n for n, m in model.named_modules() if isinstance(m, AttentionModule)]
    assert len(sites) == 16 and all(n.endswith(".attn") for n in sites)
    assert not any("downsample" in n for n in sites)
    # Order inside the block: bn3 -> attn -> + identity. Check by zeroing the attention output.
    block = model.layer1[0].eval()
    x = torch.randn(1, 64, 8, 8)
    with torch.no_grad():
        block.attn.fc2.bias.fill_(-1e4)  # gate -> 0: branch contributes nothing
        expected = torch.relu(block.downsample(x))
        torch.testing.assert_close(block(x), expected)
    mobile = attnzoo.create_model("eca_mobilenetv2")
    assert sum(isinstance(m, AttentionModule) for m in mobile.modules()) == 17  # every inverted-residual block


def test_attention_stages_and_options_pass_through():
    model = attnzoo.create_model("cbam_r18", attention_stages=[3, 4], attention_kwargs={"kernel_size": 3})
    sites = [n for n, m in model.named_modules() if isinstance(m, AttentionModule)]
    assert sites == ["layer3.0.attn", "layer3.1.attn", "layer4.0.attn", "layer4.1.attn"]
    assert all(model.get_submodule(s).kernel_size == 3 for s in sites)
    model = attnzoo.create_model("r18", attention="gc", attention_kwargs={"ratio": 0.25})
    assert isinstance(model.layer1[0].attn, GlobalContext) and model.layer1[0].attn.channel_add_conv[0].out_channels == 16


def test_registered_eca_uses_released_kernel_sizes_and_adaptive_rule_is_one_option_away():
    def kernels(model):
        return [model.get_submodule(f"layer{i}.0.attn").kernel_size for i in range(1, 5)]

    assert kernels(attnzoo.create_model("eca_r50")) == [3, 5, 5, 7]
    assert kernels(attnzoo.create_model("eca_r18")) == [3, 5, 7, 7]
    assert kernels(attnzoo.create_model("eca_r101")) == [3, 3, 5, 7]
    assert kernels(attnzoo.create_model("eca_r50", attention_kwargs={"kernel_size": None})) == [5, 5, 5, 7]
    mobile = attnzoo.create_model("eca_mobilenetv2")
    ks = [(m.channels, m.kernel_size) for m in mobile.modules() if isinstance(m, AttentionModule)]
    # ECANet HEAD: k = 1 if c < 96 else 3; the release has k=3 in the 96-channel stage (features.11-13)
    assert all(k == (1 if c < 96 else 3) for c, k in ks) and (96, 3) in ks and (64, 1) in ks
    assert [mobile.features[i].attn.kernel_size for i in (10, 11, 13, 14)] == [1, 3, 3, 3]
    narrow = attnzoo.create_model("eca_mobilenetv2", width_mult=0.5)  # the rule reads the paper's widths
    assert [m.kernel_size for m in narrow.modules() if isinstance(m, AttentionModule)] == [k for _, k in ks]
    assert attnzoo.model_info("eca_r50")["extra_params"] == 80  # the paper's "80 extra parameters"
    # 10 blocks with k=1 and 7 with k=3; total 3,504,903 as the official model
    assert attnzoo.model_info("eca_mobilenetv2")["extra_params"] == 31
    assert sum(p.numel() for p in mobile.parameters()) == 3_504_903


def test_eca_mobilenetv2_has_the_official_dropout_and_it_can_be_overridden():
    assert attnzoo.create_model("eca_mobilenetv2").classifier[0].p == 0.25  # BangguWu/ECANet: nn.Dropout(0.25)
    assert attnzoo.create_model("eca_mobilenetv2", drop_rate=0.1).classifier[0].p == 0.1
    assert attnzoo.create_model("se_mobilenetv2").classifier[0].p == 0.2  # torchvision's default elsewhere
    assert attnzoo.create_model("mobilenetv2").classifier[0].p == 0.2


def test_gam_deep_resnets_use_grouped_spatial_convs():
    with torch.device("meta"):
        for name, groups in [("gam_r50", 4), ("gam_r152", 4), ("gam_r18", 1), ("gam_mobilenetv2", 1)]:
            model = attnzoo.create_model(name)
            assert {m.groups for m in model.modules() if isinstance(m, AttentionModule)} == {groups}, name


def test_common_options():
    model = attnzoo.create_model("se_r18", num_classes=5, in_chans=1, drop_rate=0.3, zero_init_residual=True)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    assert torch.all(model.layer1[0].bn2.weight == 0)
    assert model.drop.p == 0.3 and model.num_features == 512
    mobile = attnzoo.create_model("mobilenetv2", width_mult=0.5, num_classes=3)
    assert mobile(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    model.reset_classifier(11)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 11) and model.num_classes == 11


def test_config_rebuilds_the_same_model():
    model = attnzoo.create_model("eca_mobilenetv2", num_classes=4, width_mult=0.75, attention_stages=[5, 6, 7])
    cfg = json.loads(json.dumps(model.config.to_dict()))
    again = attnzoo.create_model(cfg["architecture"], num_classes=cfg["num_classes"], **cfg["model_args"])
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert model.config.preprocessing.input_size == (3, 224, 224)


def _randomize_plain(model):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5 if "running_var" in name else torch.randn(t.shape, generator=gen) * 0.1)


@pytest.mark.parametrize("plain_name, attn_name", [("r18", "gct_r18"), ("r50", "gct_r50"), ("mobilenetv2", "gct_mobilenetv2"), ("r18", "gc_r18"), ("r50", "gc_r50"), ("mobilenetv2", "gc_mobilenetv2")])
def test_identity_attention_retrofit_gives_the_plain_outputs_exactly(plain_name, attn_name):
    plain = attnzoo.create_model(plain_name, num_classes=10).eval()
    _randomize_plain(plain)
    model = attnzoo.create_model(attn_name, num_classes=10).eval()
    result = model.load_state_dict(plain.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all((".attn." in k) or (".gate." in k) for k in result.missing_keys)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), plain(x))


@pytest.mark.parametrize(
    "call, words",
    [
        (lambda: attnzoo.create_model("gct_r5"), ["'gct_r5'", "Did you mean: gct_r50"]),
        (lambda: attnzoo.create_model("resnet51"), ["'resnet51'", "resnet50"]),
        (lambda: attnzoo.create_model("r18", dropout=0.1), ["'dropout'", "drop_rate"]),
        (lambda: attnzoo.create_model("se_r18", attention_kwargs={"reduction": 128}), ["reduction=128", "0 hidden"]),
        (lambda: attnzoo.create_model("eca_r18", attention_kwargs={"kernel_size": 4}), ["odd", "4"]),
        (lambda: attnzoo.create_model("gam_r50", attention_kwargs={"groups": 3}), ["groups=3"]),
        (lambda: attnzoo.create_model("gc_r18", attention_kwargs={"ratio": 0.001}), ["ratio"]),
        (lambda: attnzoo.create_model("r18", attention="nope"), ["'nope'", "Accepted"]),
        (lambda: attnzoo.create_model("se_r18", attention_stages=[5]), ["stage 5", "0..4"]),
        (lambda: attnzoo.create_model("r18", num_classes=0), ["num_classes", "0"]),
        # The attention's own options, given beside the backbone's, are pointed where they belong.
        (lambda: attnzoo.create_model("se_r50", reduction=8),
         ["has no option 'reduction' (reduction is an option of its se attention: pass attention_kwargs={'reduction': 8})"]),
        (lambda: attnzoo.create_model("eca_r50", reduction=8), ["has no option 'reduction'. Accepted"]),
        # timm's habit: pointed at backbone_weights (and at load for whole weights).
        (lambda: attnzoo.create_model("eca_r18", pretrained=True),
         ["has no option 'pretrained'", "create_model('eca_r18', backbone_weights=", "attnzoo.load("]),
    ],
)
def test_user_mistakes_get_one_clear_error(call, words):
    with pytest.raises(AttnzooError) as err:
        call()
    for word in words:
        assert word in str(err.value)


def test_wrong_input_channels_are_named():
    model = attnzoo.create_model("r18").eval()
    with pytest.raises(AttnzooError, match=r"\[B, 3, H, W\].*\[1, 1, 32, 32\]"):
        model(torch.randn(1, 1, 32, 32))


def test_model_info_reports_costs_and_sites():
    info = attnzoo.model_info("r50")
    assert info["params"] == 25_557_032 and info["extra_params"] == 0
    assert abs(info["macs"] / 1e9 - 4.09) < 0.02  # torchvision's 4.09 GMACs for ResNet-50
    info = attnzoo.model_info("se_r50")
    assert info["extra_params"] == 2_530_992 and info["attention_sites"] == {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
    info = attnzoo.model_info("gct_r50")
    assert info["placement"] == "before every convolution" and info["attention_modules"] == 53
    model = attnzoo.create_model("cbam_mobilenetv2", num_classes=10)
    assert attnzoo.model_info(model)["params"] == sum(p.numel() for p in model.parameters())


def test_flops_count_the_multiply_adds_modules_write_elementwise():
    # ResNet-50's four stages: (blocks, output channels, output side) at 224x224.
    stages = [(3, 256, 56), (4, 512, 28), (6, 1024, 14), (3, 2048, 7)]
    # GC (paper, Fig. 4): a 1x1 conv C -> 1 for the mask and the softmax-weighted sum over H·W positions
    # (C·H·W multiply-adds each), then the transform's two 1x1 convs C -> C/16 -> C on the context.
    gc_macs = sum(n * (c * s * s + c * s * s + 2 * c * (c // 16)) for n, c, s in stages)
    assert attnzoo.model_info("gc_r50")["extra_flops"] == 2 * gc_macs
    # ECA (paper, Eq. 9): a k-tap conv1d over the C channels, k = 3, 5, 5, 7 in the released ResNet-50.
    eca_macs = sum(n * c * k for (n, c, _), k in zip(stages, (3, 5, 5, 7)))
    assert attnzoo.model_info("eca_r50")["extra_flops"] == 2 * eca_macs


def test_gam_docstring_states_the_cost_we_count():
    import attnzoo.attention.gam as gam

    doc = " ".join(gam.__doc__.split())
    info = attnzoo.model_info("gam_r50")
    assert f"{info['macs'] / 1e9:.2f} GMACs ({info['flops'] / 1e9:.2f} GFLOPs" in doc
    # The channel MLP, C -> C/4 -> C at every position of each of ResNet-50's 16 blocks.
    stages = [(3, 256, 56), (4, 512, 28), (6, 1024, 14), (3, 2048, 7)]
    mlp_macs = sum(n * s * s * 2 * c * (c // 4) for n, c, s in stages)
    assert f"without it we count {(info['macs'] - mlp_macs) / 1e9:.2f} GMACs" in doc


@pytest.mark.parametrize("name", ["r18", "eca_r50", "gc_mobilenetv2", "gct_r18", "cbam_r34", "gam_mobilenetv2"])
def test_shipped_model_stats_match_a_fresh_count(name):
    # A sample, counted afresh; docs/update_tables.py --check (tests/test_docs.py, slow) checks all of them.
    from attnzoo.info import _registered_model_info, counted_registered_info, shipped_stats

    assert shipped_stats()[name] == counted_registered_info(name)
    _registered_model_info.cache_clear()
    attnzoo.model_info(name)
    assert _registered_model_info.cache_info().misses == 0  # read from the shipped file: no model was built


def test_model_info_counts_what_the_shipped_stats_do_not_cover():
    shipped = attnzoo.model_info("gc_r18")
    small = attnzoo.model_info("gc_r18", input_size=(3, 64, 64))
    assert small["input_size"] == [3, 64, 64] and small["flops"] < shipped["flops"]
    assert attnzoo.model_info("gc_r18", num_classes=10)["params"] < shipped["params"]
    wider = attnzoo.model_info("gc_r18", attention_kwargs={"ratio": 1 / 4})
    assert wider["extra_params"] > shipped["extra_params"] and wider["extra_flops"] > shipped["extra_flops"]


@pytest.mark.parametrize("attn", ["se", "eca", "gct", "gc", "cbam", "gam"])
def test_models_compile_fullgraph_and_match_eager(attn):
    # aot_eager traces exactly what inductor would (graph breaks included) without generating C++,
    # so the whole zoo's graphs are checked in seconds; test_compile_inductor runs the real backend.
    torch._dynamo.reset()
    model = attnzoo.create_model(f"{attn}_r18", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_compile_inductor_matches_eager():
    torch._dynamo.reset()
    model = attnzoo.create_model("gct_mobilenetv2", num_classes=10, width_mult=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-3, atol=1e-4)


def test_stride_in_1x1_moves_the_stride_and_keeps_every_shape():
    default, msra = attnzoo.create_model("gct_r50"), attnzoo.create_model("gct_r50", stride_in_1x1=True)
    assert {k: v.shape for k, v in default.state_dict().items()} == {k: v.shape for k, v in msra.state_dict().items()}
    assert msra.layer3[0].conv1.stride == (2, 2) and msra.layer3[0].conv2.stride == (1, 1)
    assert default.layer3[0].conv1.stride == (1, 1) and default.layer3[0].conv2.stride == (2, 2)
    assert msra.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    with pytest.raises(AttnzooError, match="bottleneck"):
        attnzoo.create_model("r18", stride_in_1x1=True)


@pytest.mark.parametrize("backbone", ["r18", "r50", "mobilenetv2"])
def test_stages_are_the_numbers_attention_stages_selects(backbone):
    # One numbering: the stage a module is reported in (stage_of, model_info's sites, the converter's ECA
    # kernels) is the stage that attention_stages put it in.
    with torch.device("meta"):
        stages = attnzoo.create_model(backbone).stages()
        assert [s.index for s in stages] == list(range(len(stages))) and stages[0].index == 0
        for stage in stages:
            for attn in ("gct", "se"):  # before every conv (stem and last conv included) / end of each block
                model = attnzoo.create_model(f"{attn}_{backbone}", attention_stages=[stage.index])
                sites = [path for path, m in model.named_modules() if isinstance(m, AttentionModule)]
                assert bool(sites) == (attn == "gct" or stage.blocks > 0), (stage, attn)
                assert {model.stage_of(path) for path in sites} <= {stage.index}
                assert all(any(p == m or p.startswith(m + ".") for m in stage.modules) for p in sites)
                if sites:
                    assert attnzoo.model_info(model)["attention_sites"] == {stage.name: len(sites)}
        plain = attnzoo.create_model(backbone)
    assert plain.stage_of(plain.classifier_name) is None and plain.stage_of("avgpool") is None


def test_model_config_is_resolved_once_frozen_and_round_trips_through_json():
    from dataclasses import FrozenInstanceError

    from attnzoo.registry import ModelConfig

    model = attnzoo.create_model("ECA-MobileNet_V2", num_classes=4, width_mult=0.75,
                                 attention_stage_kwargs={"6": {"kernel_size": 5}})
    config = model.config
    assert (config.architecture, config.backbone, config.attention, config.in_chans) == (
        "eca_mobilenetv2", "mobilenetv2", "eca", 3)
    # The attention the model really has: the registered per-stage kernels, the user's stage 6 on top.
    built = {model.stage_of(p): m.kernel_size for p, m in model.named_modules() if isinstance(m, AttentionModule)}
    assert {s: o["kernel_size"] for s, o in config.attention_stage_kwargs.items()} == built
    assert built[4] == 1 and built[5] == 3 and built[6] == 5 and built[7] == 3 and config.attention_stages is None
    again = ModelConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and hash(again) == hash(config)
    assert config.to_dict()["model_args"] == {"width_mult": 0.75, "attention_stage_kwargs": {6: {"kernel_size": 5}}}
    with pytest.raises(FrozenInstanceError):
        config.num_classes = 3
    with pytest.raises(TypeError):
        config.attention_kwargs["kernel_size"] = 3
    assert ModelConfig("cbam_r18", 10, {"attention_stages": [4, 3]}).attention_stages == (3, 4)
    other = ModelConfig("r18", 10, {"attention": "gc", "attention_kwargs": {"ratio": 0.25}})
    assert (other.attention, dict(other.attention_kwargs), other.plain()) == ("gc", {"ratio": 0.25}, ModelConfig("r18", 10))
    with pytest.raises(AttnzooError, match="class_names has 2 names but the model has 4 classes"):
        config.replace(class_names=["a", "b"])
    with pytest.raises(AttnzooError, match="not a stage number"):
        ModelConfig("eca_r18", 10, {"attention_stage_kwargs": {"last": {"kernel_size": 3}}})


def test_reset_classifier_keeps_the_config_true():
    model = attnzoo.create_model("se_r18", num_classes=3)
    model.config = model.config.replace(class_names=["a", "b", "c"])
    model.reset_classifier(5)
    assert model.config.num_classes == 5 == model.get_classifier().out_features and model.config.class_names is None
    assert model.config == attnzoo.create_model("se_r18", num_classes=5).config
