"""Where a compiled model's step goes, kernel by kernel, beside its plain backbone (CPU).

    python benchmarks/kernel_profile.py gct_mobilenetv2 --task infer
    python benchmarks/kernel_profile.py cbam_r50 --task train --top 15

Both models are built and compiled as `attnzoo bench` builds them (same workload, same compile arguments),
with inductor asked to report each generated kernel to the profiler. For each model it prints the time per step
in library calls (convolutions, matmuls: the same for both when an attention adds none), in inductor's fused
kernels, and in the rest, then its slowest kernels with their call counts. An attention's extra passes over the
feature maps show up as the difference in fused-kernel time.

A diagnosis tool, not a measurement of record: one process, a few steps, no interleaving, so differences under
about 10% are noise on a shared machine. `attnzoo bench` gives the ratios.
"""

from __future__ import annotations

import argparse
import collections

import torch
import torch._inductor.config as inductor_config
from torch.profiler import ProfilerActivity, profile

from attnzoo.bench.selection import select
from attnzoo.bench.workload import Setting, make_workload
from attnzoo.errors import AttnzooError

LIBRARY_PREFIX = "aten::"  # ATen ops, the library convolutions among them
FUSED_MARK = "cpp_fused_"  # inductor's generated C++ kernels: graph_<n>_cpp_fused_<ops>_<index>


def category(name: str) -> str:
    if FUSED_MARK in name:
        return "fused kernels"
    if name.startswith(LIBRARY_PREFIX):
        return "library calls"
    return "other"


def profile_steps(run, steps: int) -> dict[str, tuple[float, int]]:
    """Self time in ms per step and calls per step, by profiler event name."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    return {e.key: (e.self_cpu_time_total / 1000 / steps, e.count // steps) for e in prof.key_averages()}


def report(label: str, events: dict[str, tuple[float, int]], top: int) -> None:
    totals = collections.Counter()
    for name, (ms, _) in events.items():
        totals[category(name)] += ms
    print(f"\n{label}: {sum(totals.values()):.1f} ms per step  "
          + "  ".join(f"{k} {v:.1f}" for k, v in sorted(totals.items())))
    for name, (ms, calls) in sorted(events.items(), key=lambda kv: -kv[1][0])[:top]:
        shown = name if len(name) <= 90 else f"{name[:40]}...{name[-47:]}"  # the tail tells kernels apart
        print(f"  {ms:8.2f} ms  x{calls:<3d} {shown}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a registered model; its plain backbone is profiled beside it")
    parser.add_argument("--task", choices=("infer", "train"), default="train")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="profiled steps, after three warm-up steps")
    parser.add_argument("--top", type=int, default=10, help="slowest events listed per model")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    inductor_config.cpp.enable_kernel_profile = True  # each generated kernel becomes a profiler event
    setting = Setting("cpu", "fp32", False, args.task, args.batch, args.resolution)
    try:
        groups = select(args.model)
    except AttnzooError as err:
        parser.error(str(err))  # one line and exit status 2, as for any other bad argument
    for entries in groups.values():
        for entry in entries:
            workload = make_workload(entry, "default", setting, num_classes=1000, model_args={})
            for _ in range(3):
                workload.run()
            report(f"{entry.label} ({setting.describe()})", profile_steps(workload.run, args.steps), args.top)


if __name__ == "__main__":
    main()
