"""``attnzoo bench``: the command line over :func:`attnzoo.bench.run`."""

from __future__ import annotations

from typing import Literal

from attnzoo.bench.report import table, write
from attnzoo.bench.runner import run


def bench_command(
    models: list[str] | None = None,
    tasks: list[Literal["infer", "train"]] | None = None,
    compile: list[str] | None = None,
    batch_sizes: list[int] | None = None,
    resolutions: list[int] | None = None,
    dtypes: list[Literal["fp32", "bf16", "fp16"]] | None = None,
    channels_last: list[bool] | None = None,
    device: str = "cpu",
    freezing: bool = False,
    warmup: int = 1,
    repeats: int = 5,
    min_time: float = 0.3,
    memory: bool = True,
    graph_breaks: bool = True,
    num_classes: int = 1000,
    model_args: dict | None = None,
    threads: int | None = None,
    out_dir: str | None = "bench-out",
    plot: bool = True,
    data_dir: str | None = None,
    data_workers: int = 16,
) -> None:
    """Throughput, latency, peak memory, compile time and graph breaks; attention models also as a ratio to
    their plain backbone, timed interleaved with it in the same process.

    Args:
        models: names, globs or variants, e.g. [r50, "*_r50", "gam_mobilenetv2@groups=2", timm:resnet50]
            (timm peers only where timm is installed). Default: [r50, "*_r50"].
        tasks: infer (forward under inference_mode) and/or train (forward, backward, SGD step). Default: both.
        compile: eager and/or torch.compile modes (default, reduce-overhead, max-autotune,
            max-autotune-no-cudagraphs), and onnxruntime (the model as `attnzoo export --format onnx` writes it,
            run on the CPU; fp32 inference only, its compile time is the export); the first is the reference for
            speedups. Default: [default].
        batch_sizes: swept. Default: [8].
        resolutions: image sides, swept. Default: [224].
        dtypes: fp32, or bf16/fp16 autocast. Default: [fp32].
        channels_last: memory formats to sweep, e.g. [false, true]. Default: [false].
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
        out_dir: where bench.json, bench.csv and bench.png go; null to write nothing.
        plot: write bench.png.
        data_dir: an ImageFolder root (train/ and val/): also measure the data pipeline's images/s.
        data_workers: data loader workers for that measurement.
    """
    swept = dict(models=models, tasks=tasks, compile=compile, batch_sizes=batch_sizes, resolutions=resolutions,
                 dtypes=dtypes, channels_last=channels_last)
    results = run(
        **{option: values for option, values in swept.items() if values is not None},  # else run()'s defaults
        device=device, freezing=freezing, warmup=warmup, repeats=repeats, min_time=min_time, measure_memory=memory,
        graph_breaks=graph_breaks, num_classes=num_classes, model_args=model_args, threads=threads,
    )
    if data_dir is not None:
        from attnzoo.bench.data_pipeline import throughput

        results["data_pipeline"] = throughput(data_dir, num_workers=data_workers)
    print(table(results))
    if out_dir is not None:
        paths = write(results, out_dir, plot=plot)
        print("wrote " + ", ".join(paths.values()))
