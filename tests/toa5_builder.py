"""Build TOA5 files for tests: a known series, then fragments cut from it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from stationflow.formats.timestamps import format_toa5, to_ns

HEADER = [
    b'"TOA5","FR-Lam","CR3000","1234","CR3000.Std.32","CPU:meteo.CR3","4242","Meteo"',
    b'"TIMESTAMP","RECORD","Ta","RH","P"',
    b'"TS","RN","degC","%","hPa"',
    b'"","","Avg","Avg","Smp"',
]


def series(start: str, step_s: float, count: int, *, first_record: int = 1) -> list[bytes]:
    """``count`` rows from ``start`` every ``step_s`` seconds, values derived from the index."""
    ns = to_ns(start) + np.arange(count, dtype=np.int64) * round(step_s * 1e9)
    stamps = format_toa5(ns)
    return [
        s
        + b",%d,%.2f,%.1f,%d" % (first_record + i, 10 + (i % 97) / 10, 50 + (i % 31), 1000 + i % 7)
        for i, s in enumerate(stamps)
    ]


def toa5(rows: Iterable[bytes], *, header: Sequence[bytes] = HEADER, eol: bytes = b"\r\n") -> bytes:
    return eol.join([*header, *rows]) + eol


def stamp_of(row: bytes) -> bytes:
    return row.split(b",", 1)[0]
