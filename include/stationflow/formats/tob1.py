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
outside 1e-6 <= |x| < 1e21 in exponent form ``1E-07`` / ``3.4028235E+38``. (Loggers and
CardConvert print 7 significant digits, which does not always read back to the same float32;
this renders the stored value losslessly instead.)
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stationflow.formats.table import Header, Table, UnreadableFragment
from stationflow.formats.timestamps import DAY_NS, NS, civil_from_days

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


def field_type(name: str) -> FieldType | None:
    """The TOB1 type spelled ``name`` (case-insensitive), or None if it is not supported."""
    key = name.strip().upper()
    if key in _TYPES:
        dtype, kind = _TYPES[key]
        return FieldType(name, dtype, kind)
    m = _ASCII.fullmatch(key)
    if m and int(m.group(1)) > 0:
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


def format_toa5_packed(ns: np.ndarray, *, quoted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized ``format_toa5``: all the timestamps packed in one uint8 buffer.

    Returns ``(data, offsets)``: timestamp i is ``data[offsets[i]:offsets[i + 1]]``, the same
    bytes ``format_toa5`` gives (fraction trailing zeros dropped), built with numpy only.
    """
    ns = np.asarray(ns, dtype=np.int64)
    n = len(ns)
    days, rem = np.divmod(ns, DAY_NS)
    y, m, d = civil_from_days(days)
    secs, frac = np.divmod(rem, NS)
    hh, r = np.divmod(secs, 3600)
    mi, ss = np.divmod(r, 60)

    q = int(quoted)
    width = 29 + 2 * q  # "YYYY-MM-DD HH:MM:SS.fffffffff" and its quotes
    out = np.empty((n, width), dtype=np.uint8)

    def put(col: int, value: np.ndarray, digits: int) -> None:
        for k in range(digits - 1, -1, -1):
            out[:, q + col + k] = value % 10 + 48
            value = value // 10

    put(0, y, 4)
    put(5, m, 2)
    put(8, d, 2)
    put(11, hh, 2)
    put(14, mi, 2)
    put(17, ss, 2)
    put(20, frac, 9)
    for col, ch in ((4, "-"), (7, "-"), (10, " "), (13, ":"), (16, ":"), (19, ".")):
        out[:, q + col] = ord(ch)
    zeros = np.zeros(n, dtype=np.int64)  # trailing zeros of the fraction (9 when it is 0)
    for k in range(1, 10):
        zeros += frac % 10**k == 0
    length = np.where(frac == 0, 19, 29 - zeros) + 2 * q
    if quoted:
        out[:, 0] = ord('"')
        out[np.arange(n), length - 1] = ord('"')
    data = out[np.arange(width) < length[:, None]]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    return data, offsets


def _render_time(ns: np.ndarray) -> pa.Array:
    return _binary(*format_toa5_packed(ns))


_EXPONENT = re.compile(r"e([+-])(\d)$")


def _render_float(values: np.ndarray) -> pa.Array:
    v = values + values.dtype.type(0)  # -0.0 becomes 0.0
    text = pc.cast(pa.array(v), pa.large_string())  # shortest round-trip text for the width
    has_e = pc.match_substring(text, "e")
    if pc.any(has_e).as_py():  # 1e-7, 1e+21: Campbell spells them 1E-07, 1E+21
        sub = pc.filter(text, has_e)
        sub = pc.replace_substring_regex(sub, _EXPONENT.pattern, r"E\10\2")
        sub = pc.replace_substring(sub, "e", "E")
        text = pc.replace_with_mask(text, has_e, sub)
    special = ~np.isfinite(v)
    if special.any():
        s = v[special]
        words = np.where(np.isnan(s), '"NAN"', np.where(s > 0, '"INF"', '"-INF"'))
        text = pc.replace_with_mask(text, pa.array(special), pa.array(words, pa.large_string()))
    return text.cast(_BIN)


def _render_int(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.large_string()).cast(_BIN)


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
        return _render_float(decode_fp2(_native(col)))
    if t.kind == "int":
        return _render_int(_native(col))
    if t.kind == "bool":
        return _render_bool(_native(col))
    if t.kind == "ascii":
        return _render_ascii(np.ascontiguousarray(col))
    both = _native(col).astype(np.int64)  # time: (seconds since 1990, nanoseconds)
    return _render_time((both[:, 0] + EPOCH_1990_S) * NS + both[:, 1])


def _rows(columns: list[pa.Array], n: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """Join rendered columns into CRLF-terminated lines; returns data, starts, ends."""
    if n == 0:
        return b"", np.empty(0, np.int64), np.empty(0, np.int64)
    lines = pc.binary_join_element_wise(*columns, _COMMA)
    lines = pc.binary_join_element_wise(lines, _EMPTY, _CRLF)  # each row + CRLF
    _, off_buf, data_buf = lines.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[lines.offset : lines.offset + n + 1]
    first = int(offsets[0])
    data = data_buf.slice(first, int(offsets[-1]) - first).to_pybytes()
    offsets = offsets - first
    return data, offsets[:-1].copy(), offsets[1:] - 2


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

    columns = [_render_time(ts)]
    for key, name, t in zip(keys, layout.names, layout.types, strict=True):
        if name not in ("SECONDS", "NANOSECONDS"):
            columns.append(_render(rec[key], t))
    data, starts, ends = _rows(columns, n)

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
