"""``attnzoo bench``: throughput, latency, peak memory, compile time and graph breaks of the zoo's models.

    >>> from attnzoo import bench
    >>> results = bench.run(models=["r50", "*_r50"], tasks=["infer", "train"], compile=["default"])
    >>> bench.write(results, "bench-out")   # bench.json, bench.csv, bench.png

The options are the fields of :class:`BenchSettings` (``attnzoo bench --help`` lists them);
``bench.run(BenchSettings(...))`` takes them as one object.

Every attention model is measured against its plain backbone in the same process, interleaved (see
:mod:`attnzoo.bench.timing`), and reported as a ratio to it as well as in absolute numbers.
"""

from attnzoo.bench.report import table, write
from attnzoo.bench.runner import run
from attnzoo.bench.settings import BenchSettings

__all__ = ["BenchSettings", "run", "table", "write"]
