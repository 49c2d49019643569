"""Each attention module against an independent computation of its paper's equations.

The references below are written from the formulas (loops and explicit sums where that keeps them honest)
and never call the modules' own helpers. Parameters are randomised first so that zero-initialised parts
(GCT's γ, GC's last conv, CBAM's spatial BN) cannot hide a wrong formula.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from attnzoo import attention
from attnzoo.attention import CBAM, ECA, GAM, GCT, SE, GlobalContext
from attnzoo.attention.eca import adaptive_kernel_size
from attnzoo.errors import AttnzooError

torch.manual_seed(0)


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
    return module.eval()


def gap(x):
    return x.sum(dim=(2, 3)) / (x.shape[2] * x.shape[3])


def bn_eval(x, bn):
    shape = (1, -1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + bn.eps) * bn.weight.view(
        shape
    ) + bn.bias.view(shape)


def se_reference(x, m):
    s = gap(x)
    w1, b1 = m.fc1.weight.flatten(1), m.fc1.bias
    w2, b2 = m.fc2.weight.flatten(1), m.fc2.bias
    if b1 is None:  # bias=False (the moskomule/senet.pytorch port)
        b1, b2 = torch.zeros(w1.shape[0], dtype=x.dtype), torch.zeros(w2.shape[0], dtype=x.dtype)
    g = torch.sigmoid(torch.relu(s @ w1.T + b1) @ w2.T + b2)
    return x * g[:, :, None, None]


def eca_reference(x, m):
    s = gap(x)  # [B, C]
    w = m.conv.weight.flatten()
    k = w.numel()
    pad = (k - 1) // 2
    B, C = s.shape
    out = torch.zeros_like(s)
    for c in range(C):
        for j in range(k):
            src = c + j - pad
            if 0 <= src < C:  # zero padding at both ends, not circular
                out[:, c] += w[j] * s[:, src]
    return x * torch.sigmoid(out)[:, :, None, None]


def gct_reference(x, m):
    C = x.shape[1]
    alpha, gamma, beta = (p.view(1, C) for p in (m.alpha, m.gamma, m.beta))
    eps = m.epsilon
    if m.mode == "l2":
        s = alpha * torch.sqrt((x**2).sum(dim=(2, 3)) + eps)
        s_hat = math.sqrt(C) * s / torch.sqrt((s**2).sum(dim=1, keepdim=True) + C * eps)  # √C·s/‖s‖ (ε inside)
    else:
        s = alpha * x.abs().sum(dim=(2, 3))
        s_hat = C * s / (s.abs().sum(dim=1, keepdim=True) + C * eps)
    gate = 1 + torch.tanh(gamma * s_hat + beta)
    return x * gate[:, :, None, None]


def layer_norm_chw(t, ln):
    mean = t.mean(dim=(1, 2, 3), keepdim=True)
    var = t.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    return (t - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def gc_transform(c, seq):
    conv1, ln, _, conv2 = seq
    h = F.conv2d(c, conv1.weight, conv1.bias)
    h = torch.relu(layer_norm_chw(h, ln))
    return F.conv2d(h, conv2.weight, conv2.bias)


def gc_reference(x, m):
    B, C, H, W = x.shape
    if m.pooling == "att":
        logits = (x * m.conv_mask.weight.view(1, C, 1, 1)).sum(1) + m.conv_mask.bias  # [B, H, W]
        a = torch.exp(logits - logits.amax(dim=(1, 2), keepdim=True))
        a = a / a.sum(dim=(1, 2), keepdim=True)
        context = (x * a[:, None]).sum(dim=(2, 3))[:, :, None, None]
    else:
        context = gap(x)[:, :, None, None]
    out = x
    if m.channel_mul_conv is not None:
        out = out * torch.sigmoid(gc_transform(context, m.channel_mul_conv))
    if m.channel_add_conv is not None:
        out = out + gc_transform(context, m.channel_add_conv)
    return out


def cbam_reference(x, m):
    def mlp(v):
        w1, b1 = m.channel_mlp[0].weight.flatten(1), m.channel_mlp[0].bias
        w2, b2 = m.channel_mlp[2].weight.flatten(1), m.channel_mlp[2].bias
        return torch.relu(v @ w1.T + b1) @ w2.T + b2

    mc = torch.sigmoid(mlp(gap(x)) + mlp(x.flatten(2).max(dim=2).values))
    x = x * mc[:, :, None, None]
    desc = torch.stack([x.max(dim=1).values, x.sum(dim=1) / x.shape[1]], dim=1)  # [max, mean]
    k = m.kernel_size
    ms = F.conv2d(desc, m.spatial_conv.weight, padding=k // 2)
    ms = torch.sigmoid(bn_eval(ms, m.spatial_bn))
    return x * ms


def gam_reference(x, m):
    B, C, H, W = x.shape
    # Channel sub-module: an MLP over each position's channel vector, then σ.
    w1, b1 = m.channel_mlp[0].weight.flatten(1), m.channel_mlp[0].bias
    w2, b2 = m.channel_mlp[2].weight.flatten(1), m.channel_mlp[2].bias
    v = x.permute(0, 2, 3, 1)  # [B, H, W, C]
    mc = torch.sigmoid(torch.relu(v @ w1.T + b1) @ w2.T + b2).permute(0, 3, 1, 2)
    x = x * mc
    k, g = m.kernel_size, m.groups
    h = F.conv2d(x, m.spatial_conv1.weight, padding=k // 2, groups=g)
    h = torch.relu(bn_eval(h, m.spatial_bn1))
    if g > 1:  # channel shuffle: channel (group i, index j) moves to position j * g + i
        n = h.shape[1] // g
        order = [i * n + j for j in range(n) for i in range(g)]
        h = h[:, order]
    s = F.conv2d(h, m.spatial_conv2.weight, padding=k // 2, groups=g)
    return x * torch.sigmoid(bn_eval(s, m.spatial_bn2))


CASES = [
    ("se", lambda: SE(32, reduction=4), se_reference),
    ("se-no-bias", lambda: SE(32, reduction=4, bias=False), se_reference),
    ("eca", lambda: ECA(32, kernel_size=5), eca_reference),
    ("gct-l2", lambda: GCT(32), gct_reference),
    ("gct-l1", lambda: GCT(32, mode="l1"), gct_reference),
    ("gc-att-add", lambda: GlobalContext(32, ratio=1 / 4), gc_reference),
    ("gc-avg-both", lambda: GlobalContext(32, ratio=1 / 4, pooling="avg", fusion=("channel_add", "channel_mul")), gc_reference),
    ("cbam", lambda: CBAM(32, reduction=4), cbam_reference),
    ("cbam-k3", lambda: CBAM(32, reduction=4, kernel_size=3), cbam_reference),
    ("gam", lambda: GAM(32, rate=4), gam_reference),
    ("gam-grouped", lambda: GAM(32, rate=4, groups=4), gam_reference),
]


@pytest.mark.parametrize("make, reference", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_matches_paper_formula(make, reference):
    module = randomize(make())
    x = torch.randn(3, 32, 7, 9, dtype=torch.float64)
    module = module.double()
    torch.testing.assert_close(module(x), reference(x, module), rtol=1e-10, atol=1e-10)


def test_gct_l1_after_relu_equals_abs_on_nonnegative_input():
    a, b = randomize(GCT(16, mode="l1")), randomize(GCT(16, mode="l1", after_relu=True))
    x = torch.relu(torch.randn(2, 16, 5, 5))
    torch.testing.assert_close(a(x), b(x))


@pytest.mark.parametrize("make", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_gradients_reach_every_parameter(make):
    module = randomize(make()).train()
    x = torch.randn(4, 32, 6, 6, requires_grad=True)
    module(x).square().sum().backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        if isinstance(module, GlobalContext) and name == "conv_mask.bias":
            # softmax over positions ignores a constant shift: the official mask bias has zero gradient in
            # exact arithmetic; in float32 what is left is rounding (zero or not), so a nonzero check flakes.
            assert p.grad.abs().max() < 1e-5 * module.conv_mask.weight.grad.abs().max(), name
            continue
        assert p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [lambda: GCT(24), lambda: GCT(24, mode="l1"), lambda: GlobalContext(24), lambda: GlobalContext(24, pooling="avg")])
def test_identity_at_initialisation(make):
    module = make()
    x = torch.randn(2, 24, 5, 7)
    assert torch.equal(module(x), x)


def test_not_identity_where_the_paper_says_so():
    x = torch.randn(2, 32, 5, 5)
    for module in (SE(32), CBAM(32), GlobalContext(32, fusion=("channel_mul",))):
        assert not torch.allclose(module(x), x)


def test_cbam_spatial_gate_starts_at_one_half():
    m = CBAM(32).eval()
    assert torch.all(m.spatial_bn.weight == 0)


ALL = [lambda n=n: attention.create(n, 32) for n in attention.list_attention()]


@pytest.mark.parametrize("make", ALL, ids=attention.list_attention())
@pytest.mark.parametrize("shape", [(1, 32, 8, 8), (2, 32, 5, 11), (2, 32, 1, 1)], ids=["batch1", "nonsquare", "1x1"])
def test_shapes(make, shape):
    module = make().eval()
    x = torch.randn(shape)
    y = module(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


@pytest.mark.parametrize("make", ALL, ids=attention.list_attention())
def test_batch1_training_mode(make):
    module = make().train()
    y = module(torch.randn(1, 32, 6, 6))
    assert y.shape == (1, 32, 6, 6)


@pytest.mark.parametrize("make", ALL, ids=attention.list_attention())
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast(make, dtype):
    module = randomize(make())
    x = torch.randn(2, 32, 8, 8)
    with torch.autocast("cpu", dtype=dtype):
        y = module(x.to(dtype))
    assert y.shape == x.shape and torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), module(x), rtol=0.1, atol=0.1)


def test_gct_statistics_do_not_overflow_in_half_precision():
    # Σx² over a 32x32 map of values ~100 is ~1e7: far beyond float16's 65504.
    module = randomize(GCT(8))
    x = torch.full((1, 8, 32, 32), 100.0)
    y = module(x.half())
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.float(), module(x), rtol=1e-2, atol=1e-1)


@pytest.mark.parametrize("make", ALL, ids=attention.list_attention())
def test_channels_last(make):
    module = randomize(make())
    x = torch.randn(2, 32, 6, 7)
    y = module(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y, module(x), rtol=1e-5, atol=1e-5)


def test_eca_adaptive_kernel_rule():
    # k = |log2(C)/2 + 1/2|_odd
    assert [adaptive_kernel_size(c) for c in (64, 128, 256, 512, 1024, 2048)] == [3, 5, 5, 5, 5, 7]
    assert ECA(256).kernel_size == 5


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: SE(8, reduction=16), ["reduction=16", "0 hidden"]),
        (lambda: CBAM(8, reduction=16), ["reduction=16"]),
        (lambda: GlobalContext(8, ratio=1 / 16), ["ratio"]),
        (lambda: ECA(64, kernel_size=4), ["odd", "4"]),
        (lambda: GAM(64, groups=3), ["groups=3", "divide"]),
        (lambda: GCT(16, mode="l3"), ["l3", "l2, l1"]),
        (lambda: GlobalContext(16, fusion=("channel_sub",)), ["channel_sub"]),
        (lambda: attention.create("sea", 16), ["'sea'", "Did you mean: se"]),
        (lambda: attention.create("se", 16, ratio=2), ["'ratio'", "reduction"]),
    ],
)
def test_bad_hyperparameters_get_one_clear_error(make, words):
    with pytest.raises(AttnzooError) as err:
        make()
    for word in words:
        assert word in str(err.value)


def test_wrong_channel_count_is_named():
    with pytest.raises(AttnzooError, match=r"\[B, 32, H, W\].*\[2, 16, 4, 4\]"):
        SE(32)(torch.randn(2, 16, 4, 4))


def test_registry_lists_the_six():
    assert attention.list_attention() == ["cbam", "eca", "gam", "gc", "gct", "se"]
    assert isinstance(attention.create("gc", 64), GlobalContext)


@pytest.mark.slow
@pytest.mark.parametrize("make", ALL, ids=attention.list_attention())
def test_compiles_fullgraph(make):
    torch._dynamo.reset()
    module = randomize(make())
    x = torch.randn(2, 32, 6, 6)
    compiled = torch.compile(module, fullgraph=True)
    torch.testing.assert_close(compiled(x), module(x), rtol=1e-4, atol=1e-5)


def _saved_bytes_for_backward(module: torch.nn.Module, x: torch.Tensor, compiled: bool = True) -> int:
    """Bytes of every tensor autograd keeps for the backward pass of one (compiled) training forward, each
    storage counted once (eager mode saves x for several operations)."""
    total, seen = 0, set()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if tensor.untyped_storage().data_ptr() not in seen:
            seen.add(tensor.untyped_storage().data_ptr())
            total += tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        (torch.compile(module, fullgraph=True) if compiled else module)(x)
    return total


def _gated_conv(channels: int, **conv):
    from attnzoo.backbones.layers import GatedConv2d

    kernel_size, bias = conv.pop("kernel_size", 1), conv.pop("bias", False)
    layer = randomize(GatedConv2d(channels, channels, kernel_size, bias=bias, gate=GCT(channels), **conv))
    return layer.train()  # the fused backward is a training step's: in eval mode the gate module runs as written


def _saved_fraction(compiled: bool, layer: torch.nn.Module) -> float:
    torch._dynamo.reset()
    x = torch.randn(2, 32, 16, 16, requires_grad=True)
    return _saved_bytes_for_backward(layer, x, compiled) / (x.numel() * x.element_size())


def test_gated_convolution_keeps_its_input_not_the_gated_copy():
    # The gate keeps x for its statistics anyway; the convolution used to keep x·g beside it (2 feature maps).
    assert _saved_fraction(False, _gated_conv(32)) < 1.5
    plain = torch.nn.Sequential(GCT(32), torch.nn.Conv2d(32, 32, 1, bias=False))
    assert _saved_fraction(False, plain) >= 2  # what the measurement sees when the copy is kept


@pytest.mark.slow
def test_compiled_gated_convolution_keeps_its_input_not_the_gated_copy():
    assert _saved_fraction(True, _gated_conv(32)) < 1.5


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("conv", [{"kernel_size": 3, "padding": 1, "stride": 2},
                                  {"kernel_size": 3, "padding": 1, "groups": 2}, {"kernel_size": 1, "bias": True}])
def test_gated_convolution_is_exactly_the_gate_then_the_convolution(conv, channels_last):
    layer = _gated_conv(4, **conv).double()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    layer = layer.to(memory_format=memory_format)
    x = torch.randn(2, 4, 5, 4, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
    params = list(layer.parameters())
    assert torch.autograd.gradcheck(lambda x, *_: layer(x), (x, *params), fast_mode=True)
    y = layer(x)
    reference = F.conv2d(layer.gate(x), layer.weight, layer.bias, layer.stride, layer.padding, layer.dilation,
                         layer.groups)
    assert torch.equal(y, reference)
    grad = torch.randn_like(y)
    for ours, theirs in zip(torch.autograd.grad(y, [x, *params], grad), torch.autograd.grad(reference, [x, *params], grad)):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_an_eval_pass_with_gradients_runs_the_gate_module_as_written():
    """Grad-CAM and the FLOP counter run eval passes with gradients: the gate module's own forward (and so its
    hooks) runs there; only a training step takes the fused path."""
    layer, calls = _gated_conv(8), []
    layer.gate.register_forward_hook(lambda *_: calls.append(layer.training))
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    layer.eval()(x).sum().backward()
    layer.train()(x).sum().backward()
    assert calls == [False]


def test_gated_convolution_follows_autocast():
    layer = _gated_conv(8, kernel_size=3, padding=1)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        reference = F.conv2d(layer.gate(x), layer.weight, None, 1, 1)
    assert y.dtype == reference.dtype == torch.bfloat16 and torch.equal(y, reference)
    ours = torch.autograd.grad(y.float().sum(), [x, layer.weight, layer.gate.gamma])
    theirs = torch.autograd.grad(reference.float().sum(), [x, layer.weight, layer.gate.gamma])
    for a, b in zip(ours, theirs):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-2, atol=1e-2)


@pytest.mark.slow
@pytest.mark.parametrize("make", [lambda: CBAM(32), lambda: GCT(32)], ids=["cbam", "gct"])
def test_recomputing_modules_train_like_eager(make):
    """Values, every gradient and BatchNorm's running statistics (updated once) match eager mode."""
    torch._dynamo.reset()
    compiled_module = randomize(make()).double().train()
    eager_module = copy.deepcopy(compiled_module)
    assert compiled_module.recompute_for_backward
    x = torch.randn(3, 32, 7, 9, dtype=torch.float64)
    outputs, grads = [], []
    for module, run in ((compiled_module, torch.compile(compiled_module, fullgraph=True)), (eager_module, eager_module)):
        x_in = x.clone().requires_grad_()
        y = run(x_in)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outputs.append(y.detach())
        grads.append([x_in.grad] + [p.grad for p in module.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-10, atol=1e-12)
    for compiled_grad, eager_grad in zip(*grads):
        torch.testing.assert_close(compiled_grad, eager_grad, rtol=1e-9, atol=1e-11)
    for compiled_buffer, eager_buffer in zip(compiled_module.buffers(), eager_module.buffers()):
        torch.testing.assert_close(compiled_buffer, eager_buffer, rtol=1e-12, atol=0)


def test_gam_channel_shuffle_is_nn_channel_shuffle_bit_for_bit():
    # GAM's shuffle is written as a stack of the groups so that torch.export accepts 1-pixel maps (attnzoo export).
    from attnzoo.attention.gam import ChannelShuffle

    for shape, groups in (((2, 12, 5, 7), 3), ((1, 8, 1, 1), 4), ((3, 16, 4, 4), 2)):
        x = torch.randn(shape)
        for layout in (x, x.contiguous(memory_format=torch.channels_last)):
            assert torch.equal(ChannelShuffle(groups)(layout), torch.nn.ChannelShuffle(groups)(layout))
