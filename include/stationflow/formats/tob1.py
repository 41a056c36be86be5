"""Campbell Scientific TOB1 (binary table) reader.

A TOB1 file is five quoted-CSV header lines (environment, field names, units, processing,
data types) followed by fixed-length little-endian binary records without separators. The
records are decoded at once with a numpy structured dtype and RENDERED into TOA5 data lines
(``"2026-11-20 00:30:00.05",42,1.1,"NAN"``), so merging, gap filling and writing treat
every format alike. Rendering is columnar (pyarrow casts and joins, numpy for timestamps):
no Python loop runs per record or per value.

Text as a Campbell logger writes TOA5: timestamp quoted with the trailing zeros of its
fraction dropped, integers plain, BOOL as -1 / 0, strings quoted (``"`` doubled), NaN as
``"NAN"``, infinities as ``"INF"`` / ``"-INF"``. Floats are written in the SHORTEST text that
reads back to the same float32 (float64 for IEEE8): ``1.1``, not ``1.100000023841858``;
outside 1e-6 <= |x| < 1e10 in exponent form ``1E-07`` / ``3.4028235E+38``. (Loggers and
CardConvert print 7 significant digits, which does not always read back to the same float32;
this renders the stored value losslessly instead.)
"""

from __future__ import annotations

import csv
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stationflow.formats.table import Header, Table, UnreadableFragment
from stationflow.formats.timestamps import NS, format_toa5_packed, toa5_grid

EPOCH_1990_S = 631_152_000  # 1990-01-01 00:00:00 (logger epoch) in seconds since 1970-01-01
HEADER_LINES = 5

# FP2: 2 bytes big-endian, bit 15 sign, bits 14-13 negative decimal exponent, bits 12-0
# mantissa (Campbell keeps |mantissa| <= 7999). Special words, as Campbell loggers store them:
FP2_NAN = 0x9FFE  # -8190 at exponent 0
FP2_POS_INF = 0x1FFF  # +8191 at exponent 0
FP2_NEG_INF = 0x9FFF  # -8191 at exponent 0

_BIN = pa.large_binary()
_COMMA = pa.scalar(b",", _BIN)
_CRLF = pa.scalar(b"\r\n", _BIN)
_QUOTE = pa.scalar(b'"', _BIN)
_EMPTY = pa.scalar(b"", _BIN)


@dataclass(frozen=True)
class FieldType:
    """One TOB1 data type: its layout on disk and how its values are rendered."""

    name: str  # as spelled in header line 5
    dtype: np.dtype  # layout in the record (byte order included)
    kind: str  # "float", "int", "fp2", "bool", "ascii" or "time"


def _t(code: str, kind: str) -> tuple[np.dtype, str]:
    return np.dtype(code), kind


_TYPES: dict[str, tuple[np.dtype, str]] = {
    "IEEE4": _t("<f4", "float"),
    "IEEE4L": _t("<f4", "float"),
    "IEEE4B": _t(">f4", "float"),
    "IEEE8": _t("<f8", "float"),
    "IEEE8L": _t("<f8", "float"),
    "IEEE8B": _t(">f8", "float"),
    "FP2": _t(">u2", "fp2"),
    "ULONG": _t("<u4", "int"),
    "LONG": _t("<i4", "int"),
    "UINT4": _t(">u4", "int"),
    "INT4": _t(">i4", "int"),
    "USHORT": _t("<u2", "int"),
    "SHORT": _t("<i2", "int"),
    "UINT2": _t(">u2", "int"),
    "INT2": _t(">i2", "int"),
    "BOOL": _t("u1", "bool"),
    "BOOL2": _t("<u2", "bool"),
    "BOOL4": _t("<u4", "bool"),
    "SECNANO": _t("(2,)<u4", "time"),  # seconds since 1990, then nanoseconds; little-endian
    "NSEC": _t("(2,)>u4", "time"),  # the same, big-endian
}
_ASCII = re.compile(r"ASCII\((\d+)\)", re.IGNORECASE)
MAX_RECORD = 2**31 - 1  # bytes; numpy keeps a dtype's size in a C int (it wraps silently)


def field_type(name: str) -> FieldType | None:
    """The TOB1 type spelled ``name`` (case-insensitive), or None if it is not supported."""
    key = name.strip().upper()
    if key in _TYPES:
        dtype, kind = _TYPES[key]
        return FieldType(name, dtype, kind)
    m = _ASCII.fullmatch(key)
    if m and 0 < int(m.group(1)) <= MAX_RECORD:
        return FieldType(name, np.dtype((np.uint8, (int(m.group(1)),))), "ascii")
    return None


# ----------------------------------------------------------------------------- header


@dataclass
class _Layout:
    header: Header
    names: list[str]  # binary fields in file order (SECONDS and NANOSECONDS included)
    types: list[FieldType]
    body: int  # offset of the first record
    warnings: list[str]


def _header(raw: bytes, source: str) -> _Layout:
    """Parse the 5 header lines."""
    offset, rows = 0, []
    for n in range(HEADER_LINES):
        end = raw.find(b"\n", offset)
        if end < 0:
            raise UnreadableFragment(source, f"header ends early: {n} of 5 lines", n + 1)
        line = raw[offset:end].rstrip(b"\r")
        offset = end + 1
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            text = line.decode("latin-1")
        try:
            row = next(csv.reader([text]))
        except (csv.Error, StopIteration) as exc:
            raise UnreadableFragment(source, f"header line is not CSV text ({exc})", n + 1) from exc
        if n == 0 and (not row or row[0] != "TOB1"):
            raise UnreadableFragment(source, f"not a TOB1 file (first field {row[:1]})", 1)
        rows.append(row)
    env, names, units, processing, type_names = rows

    if len(type_names) != len(names):
        raise UnreadableFragment(
            source, f"{len(type_names)} data types for {len(names)} fields", HEADER_LINES
        )
    types = []
    for name, tname in zip(names, type_names, strict=True):
        t = field_type(tname)
        if t is None:
            raise UnreadableFragment(
                source, f"unsupported data type {tname!r} (field {name!r})", HEADER_LINES
            )
        types.append(t)
    record = sum(t.dtype.itemsize for t in types)
    if record > MAX_RECORD:
        raise UnreadableFragment(source, f"records of {record} bytes: too large", HEADER_LINES)
    for key in ("SECONDS", "NANOSECONDS"):
        if key not in names:
            raise UnreadableFragment(source, f"no {key} field: records have no time", 2)
        if types[names.index(key)].kind != "int":
            t = types[names.index(key)].name
            raise UnreadableFragment(source, f"{key} is {t}, not an integer type", HEADER_LINES)

    warnings = []
    for n, row in ((3, units), (4, processing)):
        if len(row) != len(names):
            warnings.append(
                f"header line {n} has {len(row)} values for {len(names)} fields: "
                + ("completed with empty values" if len(row) < len(names) else "extra ignored")
            )
            row[:] = (row + [""] * len(names))[: len(names)]
    keep = [i for i, name in enumerate(names) if name not in ("SECONDS", "NANOSECONDS")]
    header = Header(
        format="TOB1",
        environment=tuple(env[1:]),
        fields=("TIMESTAMP", *(names[i] for i in keep)),
        units=("TS", *(units[i] for i in keep)),
        processing=("", *(processing[i] for i in keep)),
        stamping="end",
        declared_interval_ns=None,  # TOB1 does not state the table interval
        raw=raw[:offset],
    )
    return _Layout(header, names, types, offset, warnings)


# ----------------------------------------------------------------------------- decoding


def decode_fp2(words: np.ndarray) -> np.ndarray:
    """FP2 words (as unsigned 16-bit integers, native order) to float32, vectorized."""
    w = np.asarray(words).astype(np.uint16, copy=False)
    mantissa = (w & 0x1FFF).astype(np.float32)
    scale = np.array([1, 10, 100, 1000], dtype=np.float32)[(w >> 13) & 0x3]
    value = mantissa / scale  # correctly rounded: prints as the decimal it stands for
    value = np.where((w & 0x8000) != 0, -value, value) + np.float32(0)  # -0 becomes 0
    value[w == FP2_NAN] = np.nan
    value[w == FP2_POS_INF] = np.inf
    value[w == FP2_NEG_INF] = -np.inf
    return value


def _native(col: np.ndarray) -> np.ndarray:
    """A contiguous copy of a record field in native byte order."""
    return np.ascontiguousarray(col, dtype=col.dtype.newbyteorder("="))


def _binary(data: np.ndarray, offsets: np.ndarray) -> pa.Array:
    n = len(offsets) - 1
    return pa.Array.from_buffers(_BIN, n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


VIEW_LIMIT = 2**31  # binary view offsets are int32: above, the grid is compacted by numpy


def _render_time(ns: np.ndarray) -> pa.Array:
    """Quoted timestamps as an Arrow array. Each row of the grid is addressed in place by
    a binary view (every timestamp is longer than the 12 bytes a view would inline), so
    Arrow's cast does the compaction, several times faster than a numpy boolean mask."""
    n = len(ns)
    if n * 31 >= VIEW_LIMIT:
        return _binary(*format_toa5_packed(ns))
    grid, length = toa5_grid(ns)
    views = np.empty((n, 4), dtype=np.int32)  # length, first 4 bytes, buffer 0, offset
    views[:, 0] = length
    views[:, 1] = np.ascontiguousarray(grid[:, :4]).view(np.int32).ravel()
    views[:, 2] = 0
    views[:, 3] = np.arange(0, 31 * n, 31, dtype=np.int32)
    buffers = [None, pa.py_buffer(views), pa.py_buffer(grid)]
    return pa.Array.from_buffers(pa.binary_view(), n, buffers).cast(_BIN)


_EXPONENT = r"e([+-])(\d)$"


def _exponent_form(text: pa.Array) -> pa.Array:
    """``1e-7`` and ``1e+21`` as Campbell spells them: ``1E-07``, ``1E+21``."""
    text = pc.replace_substring_regex(text, _EXPONENT, r"E\10\2")
    return pc.replace_substring(text, "e", "E")


def _render_float(values: np.ndarray) -> pa.Array:
    """Shortest round-trip text for the width (float32 or float64), as Arrow casts it:
    fixed notation for 1e-6 <= |x| < 1e10, exponent form outside."""
    v = values + values.dtype.type(0)  # -0.0 becomes 0.0
    text = pc.cast(pa.array(v), pa.large_string())
    a = np.abs(v)
    maybe = np.flatnonzero((a < 2e-6) & (a != 0) | (a >= 5e9) & (a != np.inf))
    if len(maybe):  # a superset of the values Arrow writes with an exponent; usually none
        idx = pa.array(maybe)
        sub = _exponent_form(text.take(idx))
        mask = np.zeros(len(v), dtype=bool)
        mask[maybe] = True
        text = pc.replace_with_mask(text, pa.array(mask), sub)
    special = ~np.isfinite(v)
    if special.any():
        s = v[special]
        words = np.where(np.isnan(s), '"NAN"', np.where(s > 0, '"INF"', '"-INF"'))
        text = pc.replace_with_mask(text, pa.array(special), pa.array(words, pa.large_string()))
    return text.cast(_BIN)


LOOKUP_RANGE = 1 << 16  # integer columns spanning fewer values are rendered by table lookup


def _render_int(values: np.ndarray) -> pa.Array:
    if len(values) > LOOKUP_RANGE:
        lo, hi = int(values.min()), int(values.max())
        if hi - lo < LOOKUP_RANGE:  # diagnostics, counters: a few distinct values
            table = pc.cast(pa.array(np.arange(lo, hi + 1)), pa.large_string()).cast(_BIN)
            return table.take(pa.array(values.astype(np.int64) - lo))
    return pc.cast(pa.array(values), pa.large_string()).cast(_BIN)


_FP2_TEXT: list[pa.Array] = []


def _render_fp2(words: np.ndarray) -> pa.Array:
    """FP2 by lookup in the text of all 65 536 words (made once)."""
    if not _FP2_TEXT:
        _FP2_TEXT.append(_render_float(decode_fp2(np.arange(1 << 16, dtype=np.uint16))))
    return _FP2_TEXT[0].take(pa.array(words.astype(np.uint16)))


def _render_bool(values: np.ndarray) -> pa.Array:
    # loggers write a true Boolean as -1
    return pa.array([b"0", b"-1"], _BIN).take(pa.array((values != 0).view(np.int8)))


def _render_ascii(raw: np.ndarray) -> pa.Array:
    """NUL-terminated (and padded) byte strings, quoted with ``"`` doubled inside."""
    n, width = raw.shape
    nul = raw == 0
    length = np.where(nul.any(axis=1), nul.argmax(axis=1), width)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    text = _binary(np.ascontiguousarray(raw[np.arange(width) < length[:, None]]), offsets)
    if (raw == ord('"')).any():
        text = pc.replace_substring(text, '"', '""')
    return pc.binary_join_element_wise(_QUOTE, text, _QUOTE, _EMPTY)


def _render(col: np.ndarray, t: FieldType) -> pa.Array:
    if t.kind == "float":
        return _render_float(_native(col))
    if t.kind == "fp2":
        return _render_fp2(_native(col))
    if t.kind == "int":
        return _render_int(_native(col))
    if t.kind == "bool":
        return _render_bool(_native(col))
    if t.kind == "ascii":
        return _render_ascii(np.ascontiguousarray(col))
    both = _native(col).astype(np.int64)  # time: (seconds since 1990, nanoseconds)
    return _render_time((both[:, 0] + EPOCH_1990_S) * NS + both[:, 1])


PARALLEL_ROWS = 50_000  # below this, threads cost more than they save
WORKERS = os.cpu_count() or 1


def _join(columns: list[pa.Array], begin: int, end: int) -> tuple[np.ndarray, pa.Buffer]:
    """Rows begin..end joined with commas: (offsets from 0, buffer of the lines)."""
    lines = pc.binary_join_element_wise(*(c.slice(begin, end - begin) for c in columns), _COMMA)
    _, off_buf, data_buf = lines.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[lines.offset : lines.offset + end - begin + 1]
    first = int(offsets[0])
    return offsets - first, data_buf.slice(first, int(offsets[-1]) - first)


def _lines(jobs: list[tuple], n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Render every column and join them into CRLF-terminated lines: (data, starts, ends).

    Columns are rendered in threads (numpy and Arrow release the GIL), then rows are joined
    in as many blocks as threads; the last column carries the CRLF so a join writes whole
    lines. Only the final concatenation copies the text once more, into ``bytes``.
    """
    if n == 0:
        return b"", np.empty(0, np.int64), np.empty(0, np.int64)

    def render(i: int) -> pa.Array:
        kind, *args = jobs[i]
        col = _render_time(*args) if kind == "ts" else _render(*args)
        if i == len(jobs) - 1:
            col = pc.binary_join_element_wise(col, _CRLF, _EMPTY)
        return col

    workers = WORKERS
    if n < PARALLEL_ROWS or workers < 2:
        columns = [render(i) for i in range(len(jobs))]
        blocks = [_join(columns, 0, n)]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            columns = list(pool.map(render, range(len(jobs))))
            bounds = np.linspace(0, n, workers + 1).astype(int).tolist()
            blocks = list(pool.map(lambda a, b: _join(columns, a, b), bounds[:-1], bounds[1:]))
    data = b"".join(buf for _, buf in blocks)
    offsets = np.empty(n + 1, dtype=np.int64)
    offsets[0], at, base = 0, 1, 0
    for off, buf in blocks:
        offsets[at : at + len(off) - 1] = off[1:] + base
        at, base = at + len(off) - 1, base + buf.size
    return data, offsets[:-1], offsets[1:] - 2


# ----------------------------------------------------------------------------- reader


def read_tob1(path_or_bytes: str | os.PathLike | bytes, source: str | None = None) -> Table:
    """Read a TOB1 file into a Table whose rows are TOA5 data lines.

    Record i (1-based) of the body is "line" i of the Table. A last record cut short (a file
    copied while being written) is left out with a warning; anything wrong in the header
    raises UnreadableFragment naming the header line.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        raw, source = bytes(path_or_bytes), source or "<bytes>"
    else:
        with open(path_or_bytes, "rb") as f:
            raw = f.read()
        source = source or str(path_or_bytes)
    if not raw:
        raise UnreadableFragment(source, "empty file", 1)
    layout = _header(raw, source)
    keys = [f"f{i}" for i in range(len(layout.types))]  # header names may repeat
    dtype = np.dtype({"names": keys, "formats": [t.dtype for t in layout.types]})
    size = dtype.itemsize
    n, partial = divmod(len(raw) - layout.body, size)
    rec = np.frombuffer(raw, dtype=dtype, count=n, offset=layout.body)

    sec = rec[keys[layout.names.index("SECONDS")]].astype(np.int64)
    nano = rec[keys[layout.names.index("NANOSECONDS")]].astype(np.int64)
    ts = (sec + EPOCH_1990_S) * NS + nano

    jobs: list[tuple] = [("ts", ts)]
    for key, name, t in zip(keys, layout.names, layout.types, strict=True):
        if name not in ("SECONDS", "NANOSECONDS"):
            jobs.append(("value", rec[key], t))
    data, starts, ends = _lines(jobs, n)

    table = Table(
        source=source,
        header=layout.header,
        data=data,
        starts=starts,
        ends=ends,
        ts=ts,
        lines=np.arange(1, n + 1, dtype=np.int64),
        crlf=True,
    )
    for message in layout.warnings:
        table.issue("warning", None, message)
    if partial:
        table.issue("warning", n + 1, f"truncated last record: {partial} of {size} bytes")
    return table
