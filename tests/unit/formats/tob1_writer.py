"""A small Campbell TOB1 writer for tests: numpy arrays in, file bytes out.

Written from the format description (LoggerNet manual, appendix "Campbell Scientific File
Formats"; CR1000 manual, appendix "FP2 Data Format"), independently of the reader: each
type is encoded here with its own byte layout, FP2 included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stationflow.formats.timestamps import NS, to_ns

EPOCH_1990_NS = 631_152_000 * NS
ENVIRONMENT = ("FR-Lam", "CR3000", "4242", "CR3000.Std.32.03", "CPU:flux.CR3", "51234", "ts_data")

# on-disk layout of each type (BOOLs are written as all bits set / all clear)
LAYOUT = {
    "IEEE4": "<f4",
    "IEEE4L": "<f4",
    "IEEE4B": ">f4",
    "IEEE8": "<f8",
    "IEEE8L": "<f8",
    "IEEE8B": ">f8",
    "FP2": ">u2",
    "ULONG": "<u4",
    "LONG": "<i4",
    "UINT4": ">u4",
    "INT4": ">i4",
    "USHORT": "<u2",
    "SHORT": "<i2",
    "UINT2": ">u2",
    "INT2": ">i2",
    "BOOL": "u1",
    "BOOL2": "<u2",
    "BOOL4": "<u4",
    "SecNano": "(2,)<u4",
    "NSec": "(2,)>u4",
}


@dataclass
class Column:
    name: str
    type: str  # as written on header line 5: "IEEE4", "FP2", "ASCII(8)", ...
    # floats, ints, bools, str/bytes (ASCII), ns since 1970 (SecNano, NSec); FP2 takes floats,
    # or its raw words as a uint16 array
    values: Sequence | np.ndarray
    units: str = ""
    processing: str = "Smp"


def encode_fp2(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Floats to FP2 words (uint16): the most decimals that keep the mantissa <= 7999."""
    v = np.asarray(values, dtype=np.float64)
    a = np.abs(np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0))
    exp = np.select([a < 7.9995, a < 79.995, a < 799.95], [3, 2, 1], 0)
    mantissa = np.minimum(np.rint(a * 10.0**exp), 7999).astype(np.uint16)
    sign = ((v < 0) & (mantissa > 0)).astype(np.uint16)
    words = (sign << 15) | (exp.astype(np.uint16) << 13) | mantissa
    words[np.isnan(v)] = 0x9FFE
    words[v == np.inf] = 0x1FFF
    words[v == -np.inf] = 0x9FFF
    return words


def logger_time(ns: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ns since 1970 -> (SECONDS since 1990, NANOSECONDS)."""
    sec, nano = np.divmod(np.asarray(ns, dtype=np.int64) - EPOCH_1990_NS, NS)
    return sec.astype(np.uint32), nano.astype(np.uint32)


def time_columns(start: str, count: int, step_ns: int) -> tuple[list[Column], np.ndarray]:
    """SECONDS and NANOSECONDS of ``count`` records every ``step_ns`` from ``start``."""
    ns = to_ns(start) + np.arange(count, dtype=np.int64) * step_ns
    sec, nano = logger_time(ns)
    cols = [
        Column("SECONDS", "ULONG", sec, "SECONDS", ""),
        Column("NANOSECONDS", "ULONG", nano, "NANOSECONDS", ""),
    ]
    return cols, ns


def _encode(col: Column, n: int) -> tuple[np.dtype, np.ndarray]:
    if col.type.upper().startswith("ASCII("):
        width = int(col.type[6:-1])
        out = np.zeros((n, width), dtype=np.uint8)
        for i, text in enumerate(col.values):
            raw = text.encode() if isinstance(text, str) else bytes(text)
            out[i, : len(raw[:width])] = np.frombuffer(raw[:width], dtype=np.uint8)
        return np.dtype((np.uint8, (width,))), out
    dtype = np.dtype(LAYOUT[col.type])
    if col.type == "FP2":
        values = np.asarray(col.values)
        return dtype, values if values.dtype == np.uint16 else encode_fp2(values)
    if col.type.startswith("BOOL"):
        full = np.iinfo(dtype).max
        return dtype, np.where(np.asarray(col.values, dtype=bool), full, 0)
    if col.type in ("SecNano", "NSec"):
        sec, nano = logger_time(col.values)
        return dtype, np.stack([sec, nano], axis=1)
    return dtype, np.asarray(col.values)


def header_lines(columns: Sequence[Column], environment: Sequence[str] = ENVIRONMENT):
    def q(values) -> bytes:
        return ",".join('"' + v.replace('"', '""') + '"' for v in values).encode()

    return [
        q(("TOB1", *environment)),
        q([c.name for c in columns]),
        q([c.units for c in columns]),
        q([c.processing for c in columns]),
        q([c.type for c in columns]),
    ]


def records(columns: Sequence[Column]) -> bytes:
    """The binary body: one fixed-length record per row, fields in column order."""
    n = len(columns[0].values)
    encoded = [_encode(c, n) for c in columns]
    dtype = np.dtype([(f"f{i}", dt) for i, (dt, _) in enumerate(encoded)])  # packed
    rec = np.zeros(n, dtype=dtype)
    for i, (_, values) in enumerate(encoded):
        rec[f"f{i}"] = values
    return rec.tobytes()


def tob1(
    columns: Sequence[Column],
    environment: Sequence[str] = ENVIRONMENT,
    *,
    header: Sequence[bytes] | None = None,
) -> bytes:
    """A whole TOB1 file; ``header`` replaces the 5 header lines (to break them)."""
    lines = header_lines(columns, environment) if header is None else header
    return b"".join(line + b"\r\n" for line in lines) + records(columns)
