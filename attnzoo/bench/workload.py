"""What one measurement runs: a model, its input, and one inference batch or one training step.

Inference is a forward pass under ``torch.inference_mode``. A training step is forward, cross-entropy,
backward and an SGD step (momentum 0.9, ``foreach``), gradients set to None after it, as a training loop does.
Compiled models use ``torch.compile(model, fullgraph=True)`` with the trainer's compile arguments
(``attnzoo.compiling``): a graph break is an error here, never a silent slowdown. The loss and the optimizer
step stay eager, identical for every model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from attnzoo.bench import peers
from attnzoo.bench.selection import Entry
from attnzoo.compiling import compile_kwargs
from attnzoo.registry import create_model

EAGER = "eager"
# Not a compile mode: the model exported as `attnzoo export --format onnx` writes it and run in onnxruntime (CPU).
ONNXRUNTIME = "onnxruntime"
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
TASKS = ("infer", "train")


@dataclass(frozen=True)
class Setting:
    """Everything that is the same for all models in one interleaved comparison."""

    device: str
    dtype: str
    channels_last: bool
    task: str
    batch: int
    resolution: int
    freezing: bool = False  # inductor's constant folding of weights (inference only)

    def describe(self) -> str:
        parts = [self.device, self.dtype, "channels_last" if self.channels_last else "contiguous", self.task,
                 f"batch {self.batch}", f"{self.resolution}x{self.resolution}"]
        if self.freezing:
            parts.append("freezing")
        return ", ".join(parts)


def _create(entry: Entry, num_classes: int, model_args: dict) -> nn.Module:
    if entry.is_peer:
        return peers.build(entry.name, num_classes)  # imports timm / torchvision, only now
    kwargs = dict(model_args)
    if entry.options:
        kwargs["attention_kwargs"] = {**kwargs.get("attention_kwargs", {}), **entry.options}
    return create_model(entry.name, num_classes=num_classes, **kwargs)


def build_model(entry: Entry, setting: Setting, num_classes: int, model_args: dict) -> nn.Module:
    torch.manual_seed(0)
    model = _create(entry, num_classes, model_args).to(setting.device)
    if setting.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.train(setting.task == "train")


def make_batch(setting: Setting, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(setting.batch, 3, setting.resolution, setting.resolution, generator=generator)
    y = torch.randint(0, num_classes, (setting.batch,), generator=generator)
    x = x.to(setting.device)
    if setting.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(setting.device)


def _autocast(setting: Setting):
    dtype = DTYPES[setting.dtype]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(setting.device).type, dtype=dtype)


def _inductor_options(setting: Setting):
    if not setting.freezing:
        return contextlib.nullcontext()
    import torch._inductor.config as inductor_config

    return inductor_config.patch(freezing=True)


def compile_model(model: nn.Module, mode: str, device: str) -> nn.Module:
    if mode == EAGER:
        return model
    return torch.compile(model, fullgraph=True, **compile_kwargs(mode, device))


@dataclass
class Workload:
    """One callable that runs one batch (inference) or one training step, plus what it holds on to."""

    run: Callable[[], None]
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    measures_memory: bool = True  # False where the memory is another runtime's (onnxruntime's arena)

    def state_bytes(self) -> int:
        """Bytes held between steps: parameters, buffers and optimizer state."""
        tensors = list(self.model.parameters()) + list(self.model.buffers())
        if self.optimizer is not None:
            for state in self.optimizer.state.values():
                tensors += [v for v in state.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors)


def applies(mode: str, setting: Setting) -> bool:
    """onnxruntime runs fp32 inference on the CPU only; the other modes run everywhere."""
    return mode != ONNXRUNTIME or (setting.task == "infer" and setting.device == "cpu" and setting.dtype == "fp32"
                                   and not setting.channels_last)


def make_workload(entry: Entry, mode: str, setting: Setting, num_classes: int, model_args: dict) -> Workload:
    model = build_model(entry, setting, num_classes, model_args)
    if mode == ONNXRUNTIME:
        from attnzoo.export.bench import onnxruntime_runner

        x, _ = make_batch(setting, num_classes)
        return Workload(onnxruntime_runner(model, x), model, None, measures_memory=False)
    compiled = compile_model(model, mode, setting.device)
    x, y = make_batch(setting, num_classes)
    autocast = _autocast(setting)
    inductor_options = _inductor_options(setting)

    if setting.task == "infer":

        def run() -> None:
            with torch.inference_mode(), autocast, inductor_options:
                compiled(x)

        return Workload(run, model, None)

    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)

    def step() -> None:
        with autocast:
            loss = nn.functional.cross_entropy(compiled(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return Workload(step, model, optimizer)
