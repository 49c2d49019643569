"""Record what every attention module of a model applies, with forward hooks on its gate taps.

    >>> from attnzoo.analysis import record_attention
    >>> with record_attention(model) as recording:
    ...     logits = model(images)
    >>> recording["layer3.1.attn"].channel_gate          # [B, C], what multiplies each channel
    >>> recording["layer1.0.attn"].spatial_gate          # [B, 1, H, W] (CBAM, GAM)
    >>> recording["layer2.0.conv1.gate"].channel_gate    # GCT: one entry per gated convolution

Each attention module routes what it applies through named :class:`~attnzoo.attention.base.GateTap`
submodules (identities); the recorder hooks those and nothing else, so the modules know nothing about it.
One :class:`AttentionRecord` per attention module, keyed by the module's path in the model, holds:

- ``channel_gate`` [B, C]: SE, ECA, GCT, CBAM's channel gate, GC's ``channel_mul`` gate σ(T_mul(context));
  GAM's channel map is a full [B, C, H, W] map, kept as its mean over positions;
- ``spatial_gate`` [B, 1, H, W]: CBAM's spatial gate; GAM's spatial map, kept as its mean over channels;
- ``context_mask`` [B, 1, H, W]: GC's softmax weights over positions (they sum to 1 over H·W);
- ``context_add`` [B, C]: GC's transformed context T_add(context), added at every position.

Only these small tensors are kept (detached, float32, on the CPU unless ``to_cpu=False``), never a copy of a
feature map; GAM's full maps are reduced inside the hook. A module that records two [B, C, H, W] maps notes
them in ``reduced`` so a reader knows the value is a mean.

Each forward pass replaces the previous one's records. The hooks run inside ``torch.no_grad`` or not, as the
caller's forward does; nothing they keep requires grad.

Compiled models: TorchDynamo traces the hooks that exist when a module is first compiled into the graph
(the recorded values are then the compiled graph's own), so attach the recorder *before* the first call of a
``torch.compile``-d model. Dynamo does not recompile when a hook is added later
(``torch._dynamo.config.skip_nnmodule_hook_guards``), so a recorder attached to a model that has already run
compiled would silently see nothing; reading its records then raises an error that says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from attnzoo.attention.base import AttentionModule, GateTap
from attnzoo.errors import AttnzooError

TAPS = ("channel_gate", "spatial_gate", "context_mask", "context_add")
_COMPILED_PREFIX = "_orig_mod."


@dataclass
class AttentionRecord:
    """What one attention module applied in the last forward pass (see the module docstring)."""

    path: str
    module: str  # the attention class, e.g. "CBAM"
    channels: int
    channel_gate: torch.Tensor | None = None
    spatial_gate: torch.Tensor | None = None
    context_mask: torch.Tensor | None = None
    context_add: torch.Tensor | None = None
    reduced: tuple[str, ...] = ()  # taps whose applied tensor was a full [B, C, H, W] map, kept as a mean
    applied_shapes: dict[str, list[int]] = field(default_factory=dict)  # per tap, the applied tensor's shape

    def taps(self) -> dict[str, torch.Tensor]:
        """The recorded tensors by tap name, in the order of ``TAPS``."""
        return {name: getattr(self, name) for name in TAPS if getattr(self, name) is not None}


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` (or a submodule) runs through torch.compile: ``torch.compile(m)`` or ``m.compile()``."""
    if type(model).__name__ == "OptimizedModule":
        return True
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def _clean_path(path: str) -> str:
    """Module paths as the eager model names them (``torch.compile(m)`` puts everything under ``_orig_mod``)."""
    return ".".join(part for part in path.split(".") if part != "_orig_mod")


def attention_modules(model: nn.Module) -> dict[str, AttentionModule]:
    """Every attention module of ``model`` by path, in forward (definition) order."""
    return {_clean_path(path): m for path, m in model.named_modules() if isinstance(m, AttentionModule)}


def _reduce(tap: GateTap, value: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The kept form of a tap's tensor and whether it was a full map that had to be averaged."""
    if tap.kind == "channel":
        if value.dim() == 4 and value.shape[2] * value.shape[3] > 1:
            return value.mean((2, 3)), True
        return value.flatten(1), False  # [B, C] or [B, C, 1, 1]
    if value.shape[1] > 1:
        return value.mean(1, keepdim=True), True
    return value, False


class AttentionRecorder:
    """Forward hooks on every gate tap of ``model``; a context manager that removes them on exit.

    Args:
        model: any module holding attnzoo attention modules (a zoo model, a compiled one, a LightningModule).
        to_cpu: move the recorded tensors to the CPU (default); False keeps them on the model's device.
    """

    def __init__(self, model: nn.Module, to_cpu: bool = True):
        self.model = model
        self.to_cpu = to_cpu
        self.enabled = True
        self.modules = attention_modules(model)
        self._compiled_before = is_compiled(model)
        self._values: dict[tuple[str, str], torch.Tensor] = {}
        self._reduced: dict[tuple[str, str], bool] = {}
        self._shapes: dict[tuple[str, str], list[int]] = {}
        self._handles: list = []
        self._expected: dict[str, list[str]] = {}
        for path, module in self.modules.items():
            taps = [(name, child) for name, child in module.named_children() if isinstance(child, GateTap)]
            self._expected[path] = [name for name, _ in taps]
            for name, tap in taps:
                self._handles.append(tap.register_forward_hook(self._hook(path, name)))

    def _hook(self, path: str, name: str):
        def hook(tap: GateTap, args, output: torch.Tensor) -> None:
            if not self.enabled:
                return
            value, reduced = _reduce(tap, output.detach())
            value = value.float()
            if self.to_cpu:
                value = value.cpu()
            self._values[(path, name)] = value
            self._reduced[(path, name)] = reduced
            self._shapes[(path, name)] = list(output.shape)

        return hook

    def clear(self) -> None:
        self._values.clear()
        self._reduced.clear()
        self._shapes.clear()

    def remove(self) -> None:
        """Remove the hooks (the records stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self) -> AttentionRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __len__(self) -> int:
        return len(self.modules)

    def __getitem__(self, path: str) -> AttentionRecord:
        records = self.records
        if path not in records:
            raise KeyError(f"no attention module at {path!r}; recorded: {', '.join(records) or 'none'}")
        return records[path]

    @property
    def records(self) -> dict[str, AttentionRecord]:
        """One record per attention module, in forward order, from the last forward pass.

        Raises :class:`AttnzooError` when a module's gates were not seen, saying why when the model is compiled.
        """
        missing = [f"{path}.{name}" for path, names in self._expected.items() for name in names
                   if (path, name) not in self._values]
        if missing:
            seen = len(self._values)
            if is_compiled(self.model) and seen == 0:
                when = ("was already compiled when the recorder was attached" if self._compiled_before
                        else "was compiled after the recorder was attached, or compiled elsewhere")
                raise AttnzooError(
                    f"no attention gate was recorded: the model runs through torch.compile and {when}; TorchDynamo "
                    "does not recompile for hooks added to a module it has already traced "
                    "(torch._dynamo.config.skip_nnmodule_hook_guards), so the compiled graph never calls them. "
                    "Attach the recorder before the model's first compiled call, or record the eager model "
                    "(`model._orig_mod` for torch.compile(model)).")
            if seen == 0:
                raise AttnzooError("no attention gate was recorded yet: run a forward pass of the model inside the "
                                   "recorder first.")
            raise AttnzooError(f"{len(missing)} gate taps were not reached by the last forward pass "
                               f"(first: {', '.join(missing[:3])}); did it run the whole model?")
        out = {}
        for path, module in self.modules.items():
            names = self._expected[path]
            record = AttentionRecord(path, type(module).__name__, module.channels)
            for name in names:
                setattr(record, name, self._values[(path, name)])
                record.applied_shapes[name] = self._shapes[(path, name)]
            record.reduced = tuple(name for name in names if self._reduced[(path, name)])
            out[path] = record
        return out


def record_attention(model: nn.Module, to_cpu: bool = True) -> AttentionRecorder:
    """An :class:`AttentionRecorder` on ``model``: ``with record_attention(model) as rec: model(x)``."""
    return AttentionRecorder(model, to_cpu=to_cpu)
