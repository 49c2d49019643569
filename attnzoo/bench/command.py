"""``attnzoo bench``: the command line over :func:`attnzoo.bench.run`.

Its measurement options are the fields of :class:`~attnzoo.bench.settings.BenchSettings` (jsonargparse reads
them, with their help, through ``**settings``); the command adds only what it does with the results.
"""

from __future__ import annotations

from attnzoo.bench.report import check_out_dir, table, write_numbers, write_plot
from attnzoo.bench.runner import run
from attnzoo.bench.settings import BenchSettings


def bench_command(out_dir: str | None = "bench-out", plot: bool = True, data_dir: str | None = None,
                  data_workers: int = 16, **settings) -> None:
    """Throughput, latency, peak memory, compile time and graph breaks of models, against plain backbones.

    Every attention model is also given as a ratio to its plain backbone, timed interleaved with it in the
    same process.

    Args:
        out_dir: where bench.json, bench.csv and bench.png go; null to write nothing. bench.json and bench.csv
            are rewritten after every measured setting ("complete": false until the last), so a run that is
            killed or times out keeps the rows it finished.
        plot: write bench.png.
        data_dir: an ImageFolder root (train/ and val/): also measure the data pipeline's images/s.
        data_workers: data loader workers for that measurement.
    """
    bench_settings = BenchSettings(**settings)
    out = None if out_dir is None else check_out_dir(out_dir)  # before the benchmark, not after it
    paths: dict[str, str] = {}
    results = run(bench_settings,
                  on_progress=None if out is None else lambda partial: paths.update(write_numbers(partial, out)))
    if data_dir is not None:
        from attnzoo.bench.data_pipeline import throughput

        results["data_pipeline"] = throughput(data_dir, num_workers=data_workers)
    print(table(results))
    if out is not None:
        # The last progress call wrote bench.json and bench.csv as run() returned them; only the data pipeline's
        # numbers, measured after it, need them written again.
        if data_dir is not None:
            paths.update(write_numbers(results, out))
        if plot:
            paths.update(write_plot(results, out))
        print("wrote " + ", ".join(paths.values()))


# `attnzoo bench --models r18 "*_r18" --batch_sizes 1 8`: several words after a list option are its items
# (a YAML list, --models '[r18, "*_r18"]', works as well).
bench_command.cli_lists = ("--models", "--tasks", "--compile", "--batch_sizes", "--resolutions", "--dtypes",
                           "--channels_last")
