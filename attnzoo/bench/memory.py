"""Peak memory of one inference batch or training step.

CUDA: ``torch.cuda.max_memory_allocated`` over the step (after a reset): the peak of live tensors, weights and
optimizer state included.

CPU: the same quantity, counted from the allocator's own records. torch has no allocator statistics for host
memory, but its CPU allocator reports every allocation and every free to the profiler when memory profiling is
on; one step runs under ``torch.profiler`` with ``profile_memory=True``, the running sum of those events gives
the peak of the bytes the step's tensors held above what was alive before it, and

    peak = state (parameters + buffers + optimizer state, counted exactly) + that step peak

so the CPU figure is, like CUDA's, "weights + optimizer + the step's peak of live tensors", exact and the same
at every call. It sees eager operators and the compiled (inductor) code alike, since both allocate through
torch's allocator; scratch space a C++ kernel allocates itself is not seen (small, per thread).

What it leaves out is the allocator's slack: glibc keeps freed blocks for reuse and fragments, so the process's
resident set rises by more than the tensors need, and by more for a network of many small tensors (GCT's
per-channel statistics) than for a few large ones. :func:`peak_resident_bytes` measures that figure too
(Linux/glibc only), for the benchmark that compares the two; the bench reports the allocator's figure because
it is the one that transfers to CUDA and does not move with the allocator's state.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import statistics
import sys

import torch

from attnzoo.bench.timing import sync
from attnzoo.bench.workload import Workload

CPU_METHOD = "state bytes + peak of the step's live tensor bytes (allocation events of torch's CPU allocator, via torch.profiler), the figure CUDA's max_memory_allocated gives"
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
    """Whether the CPU figure can be measured here: torch built with the profiler (Kineto)."""
    return bool(getattr(torch.autograd, "kineto_available", lambda: False)())


def resident_supported() -> bool:
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


def peak_bytes(workload: Workload, device: str) -> int | None:
    """Peak memory of one call of an already warmed-up workload, state included (None where unmeasurable)."""
    if device.startswith("cuda"):
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        workload.run()
        sync(device)
        return torch.cuda.max_memory_allocated(device)
    if not cpu_supported():
        return None
    return workload.state_bytes() + _cpu_step_peak(workload)


def _cpu_step_peak(workload: Workload) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _native_stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        workload.run()
    # In the order they happened (a stable sort keeps the recorded order of events with one timestamp). A free
    # of a block allocated before the step has no record: it cannot lower the count below the start.
    events = sorted(((event.start_ns(), event.nbytes()) for event in prof.profiler.kineto_results.events()
                     if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU),
                    key=lambda event: event[0])
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


@contextlib.contextmanager
def _native_stderr_silenced():
    """The profiler's native code prints start/stop lines (and a warning about blocks older than the profile)
    straight to file descriptor 2; they say nothing to a bench user. The step was warmed up before, so nothing
    of its own is lost."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_resident_bytes(workload: Workload, repeats: int = 3) -> int | None:
    """The CPU peak as the operating system sees it: state + the rise of the peak resident set over one call,
    median of ``repeats`` calls (it moves by a few percent with the pages glibc did or did not hand back).
    glibc's ``malloc_trim(0)`` first hands every free page back, so each page the step touches counts.
    None without Linux's /proc/self/clear_refs or glibc."""
    if not resident_supported():
        return None
    return workload.state_bytes() + int(statistics.median(_resident_step_peak(workload)
                                                          for _ in range(max(1, repeats))))


def _resident_step_peak(workload: Workload) -> int:
    _libc().malloc_trim(0)
    _reset_peak()
    before = _status_kib("VmRSS")
    workload.run()
    return max(0, _status_kib("VmHWM") - before) * 1024
