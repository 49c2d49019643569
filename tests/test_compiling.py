"""The torch.compile arguments shared by the trainer and the benchmark (attnzoo.compiling)."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from attnzoo.compiling import compile_kwargs
from attnzoo.training.module import ImageClassifier


class ConvolutionBackwardLayouts(TorchDispatchMode):
    """Records the memory formats each ``convolution_backward`` call receives its gradient and its input in."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[tuple[int, ...], set[str], set[str]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            grad_output, saved_input = args[0], args[1]
            self.calls.append((tuple(saved_input.shape), _formats(grad_output), _formats(saved_input)))
        return func(*args, **(kwargs or {}))


def _formats(tensor: torch.Tensor) -> set[str]:
    formats = {name for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last))
               if tensor.is_contiguous(memory_format=fmt)}
    return formats or {f"strides {tensor.stride()}"}


@pytest.mark.slow
def test_trainer_compiled_backward_gets_gradients_in_the_saved_activations_layout():
    # Without the forced layout the CPU backward graph hands a depthwise convolution's backward a contiguous
    # gradient and an input in neither contiguous nor channels-last order (ATen then copies both, and the
    # step is slower), see attnzoo/compiling.py.
    torch._dynamo.reset()
    torch.manual_seed(0)
    clf = ImageClassifier("mobilenetv2", num_classes=10, model_args={"width_mult": 0.25}, compile=True)
    clf.configure_model()  # the trainer's compile, on the CPU
    x = torch.randn(2, 3, 32, 32)
    loss = clf.model(x).sum()
    with ConvolutionBackwardLayouts() as probe:
        loss.backward()
    assert len(probe.calls) == 52  # one per convolution of MobileNetV2
    mismatched = [call for call in probe.calls if not call[1] & call[2]]
    assert not mismatched, mismatched


@pytest.mark.parametrize("mode", ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
def test_compile_mode_keeps_its_options_on_the_cpu_and_is_passed_through_elsewhere(mode):
    options = compile_kwargs(mode, "cpu")["options"]
    assert options.items() >= torch._inductor.list_mode_options(mode).items()
    assert options["force_layout_optimization"] is True
    assert compile_kwargs(mode, "cuda:0") == {"mode": mode}
    assert compile_kwargs(None, "cpu") == compile_kwargs("default", "cpu")
