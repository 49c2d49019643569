"""Peak memory of one inference batch or training step.

CUDA: ``torch.cuda.max_memory_allocated`` over the step (after a reset): the peak of live tensors, weights and
optimizer state included.

CPU: torch has no allocator statistics for host memory, and tracemalloc does not see its allocations, so the
operating system is asked instead. On Linux the process's peak resident set (VmHWM) is reset through
``/proc/self/clear_refs``, one step runs, and the peak is read back. glibc keeps freed memory resident for
reuse, which would hide new allocations, so ``malloc_trim(0)`` first hands every free page back; from then
on each page the step touches shows up in the peak. What is reported is

    peak = state (parameters + buffers + optimizer state, counted exactly) + step peak (VmHWM - VmRSS before)

so the CPU figure, like the CUDA one, is "weights + optimizer + the step's peak working set" — allocator
slack and thread stacks included, the compiler's own memory excluded (the model was compiled and warmed up
before). Elsewhere (no /proc, no glibc) the CPU figure is None, never a guess.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import statistics

import torch

from attnzoo.bench.timing import sync
from attnzoo.bench.workload import Workload

CPU_METHOD = "state bytes + increase of peak resident set (VmHWM, reset via /proc/self/clear_refs after malloc_trim) over one step, median of three steps"
CUDA_METHOD = "torch.cuda.max_memory_allocated over one step"


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # noqa: B018 - glibc only
    except (OSError, AttributeError):
        return None
    return libc


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} missing from /proc/self/status")


def cpu_supported() -> bool:
    if _libc() is None or not os.path.exists("/proc/self/clear_refs"):
        return False
    try:
        _reset_peak()
        _status_kib("VmHWM")
    except OSError:
        return False
    return True


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # 5: reset the peak resident set size to the current one (Linux >= 4.0)


def method(device: str) -> str | None:
    if device.startswith("cuda"):
        return CUDA_METHOD
    return CPU_METHOD if cpu_supported() else None


def peak_bytes(workload: Workload, device: str, repeats: int = 3) -> int | None:
    """Peak memory of an already warmed-up workload: the median over ``repeats`` calls.

    On the CPU one call's figure moves by a few percent with the allocator's state (pages glibc did or did
    not hand back), so the median keeps one outlying call out. CUDA's figure is exact: one call suffices.
    """
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        workload.run()
        sync(device)
        return torch.cuda.max_memory_allocated(device)
    if not cpu_supported():
        return None
    return workload.state_bytes() + int(statistics.median(_cpu_step_peak(workload) for _ in range(max(1, repeats))))


def _cpu_step_peak(workload: Workload) -> int:
    _libc().malloc_trim(0)
    _reset_peak()
    before = _status_kib("VmRSS")
    workload.run()
    return max(0, _status_kib("VmHWM") - before) * 1024
