"""Peers as oracles: torchvision's own models and timm's own attention modules.

These tests run only where torchvision and timm import (a second venv with the torch 2.14.1 / torchvision
0.29.1 pair and timm; `.ci/run` builds one and runs `pytest -m peers` in it). In attnzoo's own venv they are
skipped: attnzoo never imports either, and neither is installed there.

- torchvision: every plain network, with random weights and random BatchNorm statistics, loads strictly
  into attnzoo's and computes bitwise the same eval outputs in float64 (directly, through `attnzoo convert
  --from torchvision`, and retrofitted into the GCT and GC models, which start as exact identities).
- timm: SE, ECA, CBAM and GC against timm's modules with the options that make the two definitions the same
  function, weights copied across; and the places where timm's defaults are another function.

`python -m pytest -m peers -s` prints one `PEER` line per comparison with its max differences.
"""

from __future__ import annotations

import pytest
import torch

import attnzoo
from attnzoo.attention import CBAM, ECA, SE, GlobalContext
from attnzoo.bench import run
from attnzoo.bench.selection import select
from attnzoo.cli import main

pytestmark = pytest.mark.peers

TORCHVISION_MODELS = [("resnet18", "r18"), ("resnet34", "r34"), ("resnet50", "r50"), ("resnet101", "r101"),
                      ("resnet152", "r152"), ("mobilenet_v2", "mobilenetv2")]


def _torchvision():
    return pytest.importorskip("torchvision", reason="torchvision is a test peer, installed only in the peers venv")


def _timm_layers():
    layers = pytest.importorskip("timm.layers", reason="timm is a test peer, installed only in the peers venv")
    return (layers.squeeze_excite.SEModule, layers.eca.EcaModule, layers.cbam.CbamModule,
            layers.global_context.GlobalContext)


def randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere, and random BatchNorm statistics, so eval outputs depend on all of them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean") or name.endswith("bias"):
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * 0.1)
            elif name.endswith("weight") and tensor.dim() == 1:  # norm scales
                tensor.copy_(1 + 0.2 * torch.randn(tensor.shape, generator=gen))
            else:  # conv / linear: new values at about the scale of the layer's init
                scale = max(tensor.std().item(), 1e-3) if tensor.numel() > 1 else 0.5
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * scale)
    return module


def report(name: str, ours: torch.Tensor, peer: torch.Tensor) -> tuple[float, float]:
    diff = (ours - peer).abs()
    max_abs = diff.max().item()
    max_rel = (diff / peer.abs().clamp_min(1e-300)).max().item()
    print(f"PEER {name}: max |diff| {max_abs:.1e}, max rel {max_rel:.1e}, max |peer| {peer.abs().max().item():.1e}")
    return max_abs, max_rel


def images(seed: int = 0, size: int = 64) -> torch.Tensor:
    return torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def features(channels: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(3, channels, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# --- torchvision -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=TORCHVISION_MODELS, ids=[m[0] for m in TORCHVISION_MODELS])
def torchvision_model(request):
    tv = _torchvision()
    tv_name, ours = request.param
    model = randomise(getattr(tv.models, tv_name)(weights=None), seed=len(tv_name)).double().eval()
    x = images()
    with torch.no_grad():
        return tv_name, ours, model, x, model(x)


def test_torchvision_weights_load_strictly_and_compute_bitwise_the_same(torchvision_model):
    tv_name, name, peer, x, expected = torchvision_model
    model = attnzoo.create_model(name).double().eval()
    model.load_state_dict(peer.state_dict(), strict=True)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in peer.parameters())
    with torch.no_grad():
        out = model(x)
    report(f"torchvision {tv_name} -> {name}", out, expected)
    assert torch.equal(out, expected)


def test_torchvision_files_convert_to_bitwise_the_same_function(torchvision_model, tmp_path):
    tv_name, name, peer, x, expected = torchvision_model
    path = tmp_path / f"{tv_name}.pth"
    torch.save(peer.state_dict(), path)  # torchvision's files are bare state dicts
    main(["convert", "--from", "torchvision", str(path), "--model", name, "--out", str(tmp_path / "out")])
    with torch.no_grad():
        assert torch.equal(attnzoo.load(str(tmp_path / "out")).double()(x), expected)


@pytest.mark.parametrize("attention", ["gct", "gc"])
def test_torchvision_weights_retrofit_into_identity_initialised_attention(torchvision_model, attention):
    tv_name, name, peer, x, expected = torchvision_model
    model = attnzoo.create_model(f"{attention}_{name}", backbone_weights=peer.state_dict()).double().eval()
    extra = set(model.state_dict()) - set(peer.state_dict())
    assert extra and all(".attn." in k or ".gate." in k for k in extra)
    with torch.no_grad():
        out = model(x)
    report(f"torchvision {tv_name} -> {attention}_{name} (retrofit)", out, expected)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_timm_resnets_have_torchvisions_keys_and_function(name):
    timm = pytest.importorskip("timm")
    peer = randomise(timm.create_model(name), seed=3).double().eval()
    model = attnzoo.create_model(name).double().eval()
    model.load_state_dict(peer.state_dict(), strict=True)
    x = images(2)
    with torch.no_grad():
        assert torch.equal(model(x), peer(x))


# --- timm's attention modules ------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [64, 256, 2048])
@pytest.mark.parametrize("bias", [True, False])
def test_se_equals_timm_semodule_with_the_exact_hidden_width(channels, bias):
    SEModule, *_ = _timm_layers()
    ours = randomise(SE(channels, bias=bias), seed=channels).double().eval()
    peer = SEModule(channels, rd_channels=channels // 16, bias=bias).double().eval()
    peer.load_state_dict(ours.state_dict(), strict=True)  # fc1 / fc2, the same keys and shapes
    x = features(channels)
    max_abs, _ = report(f"SE({channels}, bias={bias}) vs timm SEModule(rd_channels={channels // 16})", ours(x), peer(x))
    assert max_abs <= 1e-14


def test_timm_se_default_rounds_the_hidden_width_to_a_multiple_of_8():
    SEModule, *_ = _timm_layers()
    # equal where C / 16 is already a multiple of 8 (ResNet-50's 256..2048), not below (ResNet-18's 64, 128)
    for channels in (256, 512, 1024, 2048):
        assert SEModule(channels).fc1.out_channels == SE(channels).fc1.out_channels == channels // 16
    for channels in (32, 64, 96):  # ResNet-18's first stage, MobileNetV2's 32/64/96-channel stages
        assert SEModule(channels).fc1.out_channels == 8 != SE(channels).fc1.out_channels == channels // 16


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_eca_equals_timm_ecamodule_given_only_a_kernel_size(kernel_size):
    _, EcaModule, *_ = _timm_layers()
    channels = 256
    ours = randomise(ECA(channels, kernel_size=kernel_size), seed=kernel_size).double().eval()
    peer = EcaModule(None, kernel_size=kernel_size).double().eval()  # with channels, timm ignores kernel_size
    peer.load_state_dict(ours.state_dict(), strict=True)  # conv.weight [1, 1, k]
    x = features(channels)
    max_abs, _ = report(f"ECA({channels}, kernel_size={kernel_size}) vs timm EcaModule(None, kernel_size={kernel_size})",
                        ours(x), peer(x))
    assert max_abs <= 1e-14


def test_eca_adaptive_rule_equals_timms_from_8_channels_on():
    _, EcaModule, *_ = _timm_layers()
    for channels in range(8, 4097):
        assert EcaModule(channels).conv.kernel_size[0] == ECA(channels).kernel_size, channels
    for channels in range(1, 8):  # timm takes at least 3
        assert EcaModule(channels).conv.kernel_size[0] == 3 != ECA(channels).kernel_size
    # and timm ignores kernel_size when channels is given: its resnet50 attn_layer='eca' has 5, 5, 5, 7
    assert EcaModule(256, kernel_size=3).conv.kernel_size[0] == 5


def cbam_into_timm(ours: CBAM, peer) -> None:
    """Copy attnzoo CBAM's weights into timm's CbamModule(mlp_bias=True)."""
    state = ours.state_dict()
    peer.load_state_dict({
        "channel.fc1.weight": state["channel_mlp.0.weight"], "channel.fc1.bias": state["channel_mlp.0.bias"],
        "channel.fc2.weight": state["channel_mlp.2.weight"], "channel.fc2.bias": state["channel_mlp.2.bias"],
        # official order [max, mean]; timm's is [mean, max]: the conv's two input channels swap
        "spatial.conv.conv.weight": state["spatial_conv.weight"].flip(1),
        **{f"spatial.conv.bn.{k}": v for k, v in state.items() if k.startswith("spatial_bn.") for k in [k[11:]]},
    }, strict=True)


@pytest.mark.parametrize("channels", [64, 512])
def test_cbam_equals_timm_cbammodule_with_biases_and_flipped_spatial_channels(channels):
    *_, CbamModule, _ = _timm_layers()
    ours = randomise(CBAM(channels), seed=channels).double()
    peer = CbamModule(channels, mlp_bias=True).double()
    cbam_into_timm(ours, peer)
    peer.spatial.conv.bn.momentum = 0.01  # the official momentum (timm: 0.1)
    x = features(channels)
    max_abs, _ = report(f"CBAM({channels}) vs timm CbamModule(mlp_bias=True), eval", ours.eval()(x), peer.eval()(x))
    assert max_abs <= 1e-14
    ours.train(), peer.train()
    for step in range(2):  # training mode: batch statistics, and the running statistics they update
        y = features(channels, seed=10 + step)
        max_abs, _ = report(f"CBAM({channels}) vs timm CbamModule, train step {step}", ours(y), peer(y))
        assert max_abs <= 1e-14
    torch.testing.assert_close(ours.spatial_bn.running_var, peer.spatial.conv.bn.running_var, rtol=1e-14, atol=0)
    torch.testing.assert_close(ours.spatial_bn.running_mean, peer.spatial.conv.bn.running_mean, rtol=1e-14, atol=1e-16)


def test_timm_cbam_defaults_are_another_function():
    *_, CbamModule, _ = _timm_layers()
    ours = randomise(CBAM(64), seed=4).double().eval()
    assert CbamModule(64).channel.fc1.bias is None  # no MLP biases by default
    unflipped = CbamModule(64, mlp_bias=True).double().eval()
    state = {f"spatial.conv.bn.{k[11:]}": v for k, v in ours.state_dict().items() if k.startswith("spatial_bn.")}
    unflipped.load_state_dict({"channel.fc1.weight": ours.channel_mlp[0].weight, "channel.fc1.bias": ours.channel_mlp[0].bias,
                               "channel.fc2.weight": ours.channel_mlp[2].weight, "channel.fc2.bias": ours.channel_mlp[2].bias,
                               "spatial.conv.conv.weight": ours.spatial_conv.weight, **state})
    x = features(64)
    assert (ours(x) - unflipped(x)).abs().max() > 1e-3  # [mean, max] against [max, mean]
    assert CbamModule(64).spatial.conv.bn.momentum == 0.1 != ours.spatial_bn.momentum


def gc_into_timm(ours: GlobalContext, peer) -> None:
    """Copy attnzoo GlobalContext's weights into timm's GlobalContext (conv_attn, mlp_add, mlp_scale)."""
    mapping = {"conv_mask": "conv_attn", "channel_add_conv": "mlp_add", "channel_mul_conv": "mlp_scale"}
    layers = {"0": "fc1", "1": "norm", "3": "fc2"}
    state = {}
    for key, value in ours.state_dict().items():
        module, *rest = key.split(".")
        if module == "conv_mask":
            state[f"conv_attn.{rest[0]}"] = value
        else:
            index, param = rest
            state[f"{mapping[module]}.{layers[index]}.{param}"] = value.flatten() if index == "1" else value
    peer.load_state_dict(state, strict=True)


GC_CASES = [
    # (ours, timm's options) where the two are the same function
    (dict(), dict(fuse_add=True, fuse_scale=False)),
    (dict(fusion=("channel_mul",)), dict(fuse_add=False, fuse_scale=True)),
    (dict(fusion=("channel_add", "channel_mul")), dict(fuse_add=True, fuse_scale=True)),
    (dict(pooling="avg"), dict(fuse_add=True, fuse_scale=False, use_attn=False)),
]


@pytest.mark.parametrize("ours_kwargs, timm_kwargs", GC_CASES, ids=["add", "mul", "add+mul", "avg-add"])
def test_gc_equals_timm_globalcontext_with_the_papers_options_and_layernorm_eps(ours_kwargs, timm_kwargs):
    *_, TimmGC = _timm_layers()
    channels = 256
    ours = randomise(GlobalContext(channels, **ours_kwargs), seed=5).double().eval()
    peer = TimmGC(channels, rd_ratio=1 / 16, **timm_kwargs).double().eval()
    gc_into_timm(ours, peer)
    x = features(channels)
    label = f"GlobalContext({channels}, {ours_kwargs or 'defaults'}) vs timm GlobalContext(rd_ratio=1/16, {timm_kwargs}"
    default_eps, _ = report(label + ", LayerNorm eps 1e-6)", ours(x), peer(x))
    for norm in (peer.mlp_add, peer.mlp_scale):
        if norm is not None:
            norm.norm.eps = 1e-5  # the official block's nn.LayerNorm eps (timm's LayerNorm2d: 1e-6)
    max_abs, _ = report(label + ", LayerNorm eps set to 1e-5)", ours(x), peer(x))
    assert max_abs <= 1e-13 and default_eps > 10 * max_abs


def test_timm_gc_defaults_are_another_function():
    *_, TimmGC = _timm_layers()
    peer = TimmGC(256)  # timm "gc": multiplicative fusion, ratio 1/8
    assert peer.mlp_add is None and peer.mlp_scale.fc1.out_channels == 32
    ours = GlobalContext(256)
    assert ours.channel_mul_conv is None and ours.channel_add_conv[0].out_channels == 16
    x = features(256).float()
    gca = TimmGC(256, fuse_add=True, fuse_scale=False, rd_ratio=1 / 16).eval()  # timm "gca"
    assert torch.equal(ours(x), x)  # the official init zeroes the last conv's weight and bias
    assert not torch.equal(gca(x), x)  # timm zeroes only fc2.weight: not an identity at init
    print(f"PEER timm gca at init: max |y - x| {(gca(x) - x).abs().max().item():.2f} (attnzoo: 0)")



# --- attnzoo bench with the peers installed ----------------------------------------------------------------


def _make_docs():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "make_docs.py"
    spec = importlib.util.spec_from_file_location("make_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_adds_the_installed_peers_and_times_each_against_its_zoo_equivalent(tmp_path, registered_peers):
    _torchvision(), _timm_layers()
    groups = select(["r18", "se_r18", "eca_r18@kernel_size=3"], peers=None)
    labels = [e.label for e in groups["r18"]]
    assert labels == ["r18", "se_r18", "eca_r18@kernel_size=3", "torchvision:resnet18", "timm:resnet18",
                      "timm:seresnet18"]  # no peer for a variant
    assert [e.label for e in select(["timm:resnet50+gca"])["r50"]] == ["r50", "gc_r50", "timm:resnet50+gca"]
    results = run(models=["r18", "se_r18"], tasks=["infer", "train"], compile=["eager"], batch_sizes=[2],
                  resolutions=[32], repeats=2, warmup=0, min_time=0.0, graph_breaks=False, num_classes=10,
                  threads=1, log=None)
    rows = {(r["model"], r["task"]): r for r in results["rows"]}
    assert all(r["error"] is None for r in rows.values())
    for task in ("infer", "train"):
        assert rows[("timm:seresnet18", task)]["peer_of"] == "se_r18"
        assert rows[("torchvision:resnet18", task)]["ratio_to_equivalent"]["median"] > 0
        assert rows[("timm:resnet18", task)]["memory_ratio_to_equivalent"] > 0
        assert "ratio_to_equivalent" not in rows[("se_r18", task)]
    assert set(results["peer_versions"]) == {"timm", "torchvision"}
    # the docs page's peer section: written into an existing page once, replaced (not repeated) on a rerun
    from attnzoo.bench import write

    write(results, tmp_path / "runs" / "peers-r18", plot=False)
    make_docs = _make_docs()
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text("# Benchmarks\n\n## r50\n\ntable\n\n## Plots\n\n![r50](benchmarks/r50.png)\n")
    for _ in range(2):
        make_docs.write_peers(str(tmp_path / "runs"), str(tmp_path / "docs"))
    text = page.read_text()
    assert text.count("## Peers: timm and torchvision (peers-r18)") == 1 and text.index("## Peers") < text.index("## Plots")
    assert "| `timm:seresnet18` | `se_r18` | infer | eager |" in text and "rounded up to a multiple of 8" in text
    # options for the zoo models (model_args) are not the peers' defaults: no peer is added by itself then
    assert all(not e.is_peer for entries in select(["r18"], peers=False).values() for e in entries)
