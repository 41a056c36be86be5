"""The sampling interval of a logger table, detected from its timestamps.

The mode of the positive differences survives gaps, duplicates and a few clock jumps; it is
cross-checked with what the file or the inventory declares, and a mismatch is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NS = 1_000_000_000
MIN_NS, MAX_NS = 50_000_000 // 5, 30 * 60 * NS  # 100 Hz .. 30 min


@dataclass(frozen=True)
class Interval:
    ns: int  # the interval used for the grid
    detected_ns: int | None
    declared_ns: int | None
    support: float  # share of positive differences equal to the detected interval
    warnings: tuple[str, ...] = ()

    @property
    def seconds(self) -> float:
        return self.ns / NS


def detect(series: list[np.ndarray]) -> tuple[int | None, float]:
    """Mode of the positive differences inside each series (each sorted on its own)."""
    diffs = []
    for ts in series:
        if len(ts) > 1:
            s = ts if np.all(ts[1:] >= ts[:-1]) else np.sort(ts)
            d = np.diff(s)
            diffs.append(d[d > 0])
    if not diffs or not sum(len(d) for d in diffs):
        return None, 0.0
    d = np.concatenate(diffs)
    # a value held by more than half of the steps is both the median and the mode
    candidate = np.partition(d, len(d) // 2)[len(d) // 2]
    support = np.count_nonzero(d == candidate)
    if 2 * support > len(d):
        return int(candidate), float(support / len(d))
    values, counts = np.unique(d, return_counts=True)
    best = int(np.argmax(counts))
    return int(values[best]), float(counts[best] / len(d))


def _text(ns: int | None) -> str:
    if ns is None:
        return "none"
    return f"{ns / NS:g} s" if ns >= NS else f"{ns / 1e6:g} ms ({NS / ns:g} Hz)"


def choose(series: list[np.ndarray], declared_ns: int | None, forced_ns: int | None) -> Interval:
    """The grid interval: forced (CLI/config) > detected > declared; mismatches reported."""
    detected, support = detect(series)
    warnings = []
    if detected is not None and declared_ns is not None and detected != declared_ns:
        warnings.append(
            f"detected interval {_text(detected)} differs from the declared {_text(declared_ns)}"
        )
    if forced_ns is not None and detected is not None and detected != forced_ns:
        warnings.append(
            f"detected interval {_text(detected)} differs from the configured"
            f" {_text(forced_ns)}; using {_text(forced_ns)}"
        )
    if detected is not None and support < 0.5:
        warnings.append(
            f"weak interval detection: only {support:.0%} of the steps are {_text(detected)}"
        )
    chosen = forced_ns or detected or declared_ns
    if chosen is None:
        raise ValueError(
            "cannot detect the sampling interval from fewer than two rows:"
            " give it explicitly (--interval SECONDS)"
        )
    if not MIN_NS <= chosen <= MAX_NS:
        raise ValueError(f"sampling interval {_text(chosen)} is outside 100 Hz .. 30 min")
    if (86_400 * NS) % chosen:
        warnings.append(f"interval {_text(chosen)} does not divide a day: the grid drifts")
    return Interval(chosen, detected, declared_ns, support, tuple(warnings))
