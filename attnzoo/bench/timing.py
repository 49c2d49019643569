"""Interleaved timing: every model is timed between two timings of the reference, round after round.

The machine is shared and noisy, so absolute times drift between runs and even within one. A ratio taken
from measurements seconds apart is far steadier than one taken from two medians minutes apart, so each
round runs ``ref, A, ref, B, ref, C, ..., ref`` (the order of A, B, C rotating from round to round) and
each subject's ratio for that round is its time over the mean of the two reference timings around it.
Reported: median, min and max over rounds, of times and of ratios.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch


def sync(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so a timing covers what it ran."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], None], device: str, iterations: int = 1) -> float:
    """Seconds per call of ``fn``, averaged over ``iterations`` back-to-back calls."""
    sync(device)
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iterations


@dataclass
class Contestant:
    key: Hashable
    run: Callable[[], None]
    first_call_s: float = 0.0  # the first call, compilation included
    iterations: int = 1
    times: list[float] = field(default_factory=list)
    ratios: list[float | None] = field(default_factory=list)  # per round, vs the reference; None for it


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def warm_up(contestant: Contestant, device: str, warmup: int, min_time: float) -> None:
    """First call (compiles), ``warmup`` more, and enough back-to-back calls per timing for ``min_time``."""
    contestant.first_call_s = timed(contestant.run, device)
    estimate = contestant.first_call_s
    for _ in range(max(1, warmup)):
        estimate = timed(contestant.run, device)
    contestant.iterations = max(1, math.ceil(min_time / max(estimate, 1e-9)))


def interleave(reference: Contestant, subjects: list[Contestant], device: str, repeats: int) -> None:
    """Fill ``times`` and ``ratios`` of all contestants (already warmed up)."""
    for round_index in range(repeats):
        shift = round_index % len(subjects) if subjects else 0
        order = subjects[shift:] + subjects[:shift]
        before = timed(reference.run, device, reference.iterations)
        reference.times.append(before)
        reference.ratios.append(1.0)
        for subject in order:
            t = timed(subject.run, device, subject.iterations)
            after = timed(reference.run, device, reference.iterations)
            subject.times.append(t)
            subject.ratios.append(t / ((before + after) / 2))
            reference.times.append(after)
            before = after
