"""What one benchmark run measures: :class:`BenchSettings`, the one list of options of ``attnzoo bench`` and of
:func:`attnzoo.bench.run` (the command line's options are its fields)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from attnzoo.bench.workload import DTYPES, EAGER, ONNXRUNTIME, TASKS
from attnzoo.compiling import COMPILE_MODES
from attnzoo.errors import AttnzooError
from attnzoo.preprocessing import check_image_side


@dataclass(frozen=True)
class BenchSettings:
    """The models, the settings swept, and how they are timed; checked when built.

    Args:
        models: names, globs or variants, e.g. [r50, "*_r50", "gam_mobilenetv2@groups=2"], and timm /
            torchvision peers such as timm:seresnet50 or torchvision:resnet50 (run through
            benchmarks/peers.py, where installed; each is timed beside its zoo equivalent).
        tasks: infer (forward under inference_mode) and/or train (forward, backward, SGD step).
        compile: eager and/or torch.compile modes (default, reduce-overhead, max-autotune,
            max-autotune-no-cudagraphs), and onnxruntime (the model as `attnzoo export --format onnx` writes it,
            run on the CPU; fp32 inference only, its compile time is the export); the first is the reference for
            speedups.
        batch_sizes: swept.
        resolutions: image sides, swept.
        dtypes: fp32, or bf16/fp16 autocast.
        channels_last: memory formats to sweep, e.g. [false, true].
        device: cpu, cuda, cuda:N or auto.
        freezing: inductor freezing (weights folded as constants) for compiled inference.
        warmup: calls after the first (compiling) one before timing.
        repeats: interleaved rounds; medians, minima and maxima are over these.
        min_time: seconds each timing lasts at least (fast models repeat the call).
        memory: measure peak memory (see attnzoo.bench.memory for what it counts).
        graph_breaks: count graph breaks (eval and training) with torch._dynamo.explain.
        num_classes: classifier outputs.
        model_args: options for every zoo model, e.g. {width_mult: 0.5}.
        threads: torch CPU threads (default: torch's choice).
        peers: add timm's and torchvision's equivalents of the zoo models asked for (registered by
            benchmarks/peers.py), each reported as a ratio to its zoo model. Default (null): those installed, unless
            model_args are given (a peer would not take them); true: refuse a run without timm or
            torchvision; false: none.
    """

    models: Sequence[str] = ("r50", "*_r50")
    tasks: Sequence[str] = ("infer", "train")
    compile: Sequence[str] = ("default",)
    batch_sizes: Sequence[int] = (8,)
    resolutions: Sequence[int] = (224,)
    dtypes: Sequence[str] = ("fp32",)
    channels_last: Sequence[bool] = (False,)
    device: str = "cpu"
    freezing: bool = False
    warmup: int = 1
    repeats: int = 5
    min_time: float = 0.3
    memory: bool = True
    graph_breaks: bool = True
    num_classes: int = 1000
    model_args: Mapping | None = None
    threads: int | None = None
    peers: bool | None = None

    def __post_init__(self) -> None:
        models = [self.models] if isinstance(self.models, str) else list(self.models)
        if not models:
            raise AttnzooError("models needs at least one name or glob, e.g. [r50, '*_r50'].")
        checked = {
            "models": tuple(models),
            "tasks": _choices("tasks", self.tasks, TASKS),
            "compile": _choices("compile", self.compile, (EAGER, *COMPILE_MODES, ONNXRUNTIME)),
            "dtypes": _choices("dtypes", self.dtypes, tuple(DTYPES)),
            "channels_last": _choices("channels_last", self.channels_last, (False, True)),
            "batch_sizes": _positive("batch_sizes", self.batch_sizes),
            "resolutions": tuple(check_image_side(v, "each of resolutions") for v in _positive("resolutions",
                                                                                                  self.resolutions)),
            "model_args": dict(self.model_args or {}),
            # a peer has its library's defaults, not these options: it would not be an equivalent
            "peers": False if self.peers is None and self.model_args else self.peers,
        }
        if not isinstance(self.repeats, int) or self.repeats < 1 or not isinstance(self.warmup, int) or self.warmup < 0:
            raise AttnzooError(f"repeats must be >= 1 and warmup >= 0, got repeats={self.repeats!r}, "
                               f"warmup={self.warmup!r}.")
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def describe(self, device: str) -> dict:
        """The run's configuration as bench.json records it (``device`` as resolved)."""
        return {
            "models": list(self.models), "tasks": list(self.tasks), "compile": list(self.compile),
            "batch_sizes": list(self.batch_sizes), "resolutions": list(self.resolutions), "dtypes": list(self.dtypes),
            "channels_last": list(self.channels_last), "device": device, "freezing": self.freezing,
            "warmup": self.warmup, "repeats": self.repeats, "min_time": self.min_time,
            "num_classes": self.num_classes, "model_args": dict(self.model_args), "peers": self.peers,
        }


def _choices(option: str, values, accepted) -> tuple:
    values = [values] if isinstance(values, (str, bool)) else list(values)
    if not values:
        raise AttnzooError(f"{option} needs at least one value. Accepted: {', '.join(map(str, accepted))}.")
    bad = [v for v in values if v not in accepted]
    if bad:
        raise AttnzooError(f"{option}: unknown {', '.join(map(repr, bad))}. Accepted: {', '.join(map(str, accepted))}.")
    return tuple(dict.fromkeys(values))


def _positive(option: str, values) -> tuple[int, ...]:
    values = [values] if isinstance(values, int) else list(values)
    if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
        raise AttnzooError(f"{option} must be a list of positive integers, got {values!r}.")
    return tuple(dict.fromkeys(values))
