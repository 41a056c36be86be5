"""Hourly aggregation of per-sample columns, per record (one raw hour), in one pass each.

Samples of a record are contiguous (the record index never decreases), so group sums are
``bincount`` and group extremes ``reduceat`` over the groups that have valid samples.
Only valid (non-NaN) samples count: the original counted rejected ones too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GroupStats:
    count: np.ndarray  # valid samples per record
    mean: np.ndarray  # NaN where count == 0
    min: np.ndarray
    max: np.ndarray


def stats(record: np.ndarray, values: np.ndarray, n: int, *, energetic: bool) -> GroupStats:
    """Per record: count, mean (energetic for dB: 10*log10(mean(10^(L/10))), in floating
    point), min and max of the valid values."""
    ok = np.isfinite(values)
    rec, v = record[ok], values[ok]
    count = np.bincount(rec, minlength=n)
    weights = np.power(10.0, v / 10.0) if energetic else v
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(rec, weights=weights, minlength=n) / count
        if energetic:
            mean = 10.0 * np.log10(mean)
    lo = np.full(n, np.nan)
    hi = np.full(n, np.nan)
    if len(v):
        starts = np.flatnonzero(np.r_[True, rec[1:] != rec[:-1]])
        groups = rec[starts]
        lo[groups] = np.minimum.reduceat(v, starts)
        hi[groups] = np.maximum.reduceat(v, starts)
    mean[count == 0] = np.nan
    return GroupStats(count, mean, lo, hi)


def median(record: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per record, the median of the valid values (NaN where there is none).

    Records are laid out as the rows of a grid padded with +inf and sorted row-wise: far
    cheaper than one sort of the whole column by (record, value) when records hold similar
    numbers of samples, as hours do; the whole-column sort is kept for lopsided batches."""
    ok = np.isfinite(values)
    rec, v = record[ok], values[ok]
    out = np.full(n, np.nan)
    if not len(v):
        return out
    count = np.bincount(rec, minlength=n)
    has = np.flatnonzero(count)
    lo, hi = (count[has] - 1) // 2, count[has] // 2
    width = int(count.max())
    if len(has) * width <= 4 * len(v):
        first = np.concatenate(([0], np.cumsum(count)[:-1]))
        grid = np.full((n, width), np.inf)
        grid[rec, np.arange(len(v)) - first[rec]] = v
        grid.sort(axis=1)
        out[has] = (grid[has, lo] + grid[has, hi]) / 2.0
        return out
    order = np.lexsort((v, rec))
    v = v[order]
    first = np.concatenate(([0], np.cumsum(count)[:-1]))[has]
    out[has] = (v[first + lo] + v[first + hi]) / 2.0
    return out


def round_half_away(x: np.ndarray, digits: int) -> np.ndarray:
    """Round as people do (2.5 -> 3, -2.5 -> -3), not to even."""
    scale = 10.0**digits
    return np.sign(x) * np.floor(np.abs(x) * scale + 0.5) / scale
