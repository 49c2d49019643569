"""Means, spreads and 95% t-intervals over seeds, and paired differences to the plain backbone.

The quantiles come from :mod:`scipy.stats` (the ``stats`` extra). With n runs the interval of the mean is
``mean ± t(0.975, n-1) · s / √n``: with 3 seeds t is 4.30, so an interval is wide, and honestly so.

A paired difference compares two models seed by seed (same seed: same initialisation stream, data order and
augmentation), which removes the part of the seed noise the two runs share. Two models "cannot be told apart"
when the 95% interval of their paired difference contains zero.

An accuracy lies between 0 and 100%, and the t-interval, which assumes a measure without bounds, can reach past
them when runs sit near one (top-5 at 99.7%, 99.8%, 99.5%): such an interval is cut at the bound
(``summarize(values, bounds=(0, 100))``), and the report says so. The cut moves no mean and no standard
deviation.
"""

from __future__ import annotations

import math
import statistics

from attnzoo.extras import require

CONFIDENCE = 0.95


def _t_quantile(df: int) -> float:
    require("stats", "attnzoo compare's confidence intervals")
    from scipy import stats

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))


def summarize(values: list[float], bounds: tuple[float, float] | None = None) -> dict:
    """n, mean, sample standard deviation, and the 95% t-interval of the mean (None below 2 values), cut at
    ``bounds`` (low, high) where given; ``clipped`` says whether the cut moved an end."""
    n = len(values)
    out = {"n": n, "values": list(values), "mean": statistics.fmean(values) if n else None, "std": None,
           "ci_low": None, "ci_high": None, "clipped": False}
    if n >= 2:
        std = statistics.stdev(values)
        half = _t_quantile(n - 1) * std / math.sqrt(n)
        low, high = out["mean"] - half, out["mean"] + half
        if bounds is not None:
            cut_low, cut_high = max(low, bounds[0]), min(high, bounds[1])
            out["clipped"] = (cut_low, cut_high) != (low, high)
            low, high = cut_low, cut_high
        out.update(std=std, ci_low=low, ci_high=high)
    return out


def paired_difference(model: dict[int, float], reference: dict[int, float]) -> dict | None:
    """``model - reference`` over the seeds both have, summarized; None when they share no seed."""
    seeds = sorted(set(model) & set(reference))
    if not seeds:
        return None
    out = summarize([model[s] - reference[s] for s in seeds])
    out["seeds"] = seeds
    return out


def distinguishable(difference: dict | None) -> bool | None:
    """True when the interval of a difference excludes zero; None when there is no interval (under 2 seeds)."""
    if difference is None or difference["ci_low"] is None:
        return None
    return difference["ci_low"] > 0 or difference["ci_high"] < 0
