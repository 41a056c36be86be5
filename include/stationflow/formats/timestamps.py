"""Vectorized timestamp codec: TOA5 text <-> int64 nanoseconds, without datetime objects.

Logger clocks run in local standard time, so timestamps are plain counts of nanoseconds of
that clock since 1970-01-01 (no time zone): the ETC day is then simple arithmetic.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

NS = 1_000_000_000
DAY_NS = 86_400 * NS
_ZERO = ord("0")


def days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm)."""
    y = y.astype(np.int64) - (m <= 2)
    era = np.floor_divide(y, 400)
    yoe = y - era * 400
    mp = (m.astype(np.int64) + 9) % 12
    doy = (153 * mp + 2) // 5 + d.astype(np.int64) - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def civil_from_days(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of days_from_civil: (year, month, day) arrays."""
    z = z.astype(np.int64) + 719_468
    era = np.floor_divide(z, 146_097)
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = np.where(mp < 10, mp + 3, mp - 9)
    return yoe + era * 400 + (m <= 2), m, d


ROWS = 1 << 16  # rows parsed at once: bounds the temporaries whatever the file size
_WIDTH = 31  # '"YYYY-MM-DD HH:MM:SS.fffffffff"'
_READ = 32  # bytes read per row: the widest timestamp and one more, four machine words
_MINUTE_SEPARATORS = {0: ord('"'), 5: ord("-"), 8: ord("-"), 11: ord(" "), 14: ord(":")}
_MINUTE_DIGITS = [1, 2, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16]
_FRACTION_WEIGHTS = (10 ** np.arange(8, -1, -1)).astype(np.int32)  # ns per fraction digit
YEARS = (1900, 2261)  # what int64 nanoseconds since 1970 hold, from the earliest logger clock


def parse_quoted(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Parse ``"YYYY-MM-DD HH:MM:SS[.f...]"`` at the start of each row.

    ``buf`` is the file as a uint8 array; returns (ns, ok, field_end) where ``ok`` marks
    rows whose timestamp is well formed and ``field_end`` is the offset just past the
    closing quote. Only the first 32 bytes of a row are read, in chunks of rows.
    """
    n = len(starts)
    ns = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    field_end = np.zeros(n, dtype=np.int64)
    for a in range(0, n, ROWS):
        b = min(n, a + ROWS)
        ns[a:b], ok[a:b], field_end[a:b] = _parse_chunk(buf, starts[a:b], ends[a:b])
    return ns, ok, field_end


def _heads(buf: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The first 32 bytes of each row, (n, 32), zero past the end of ``buf``."""
    room = len(buf) - _READ
    if room < 0:
        out = np.zeros((len(starts), _READ), dtype=np.uint8)
    else:  # one gather of 32-byte rows from an overlapping view of the buffer
        view = np.lib.stride_tricks.as_strided(
            buf, shape=(room + 1, _READ), strides=(1, 1), writeable=False
        )
        out = view[np.minimum(starts, room)]
    for i in np.flatnonzero(starts > room):  # the last rows of the buffer
        piece = buf[int(starts[i]) : int(starts[i]) + _READ]
        out[i] = 0
        out[i, : len(piece)] = piece
    return out


def _minutes(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ns at the start of the minute ``"YYYY-MM-DD HH:MM`` of each row head, and ok."""
    d = m[:, :17].T.astype(np.int32) - _ZERO
    digits = d[_MINUTE_DIGITS]
    ok = ((digits >= 0) & (digits <= 9)).all(axis=0)
    for col, ch in _MINUTE_SEPARATORS.items():
        ok &= m[:, col] == ch

    def num(*cols: int) -> np.ndarray:
        out = d[cols[0]].copy()
        for c in cols[1:]:
            out *= 10
            out += d[c]
        return out

    year, month, day, hh, mm = num(1, 2, 3, 4), num(6, 7), num(9, 10), num(12, 13), num(15, 16)
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31) & (hh <= 23) & (mm <= 59)
    ok &= (year >= YEARS[0]) & (year <= YEARS[1])
    days = days_from_civil(year, month, day)
    # a day that does not exist (2026-02-30) does not survive the round trip
    y2, m2, d2 = civil_from_days(days)
    ok &= (y2 == year) & (m2 == month) & (d2 == day)
    return days * DAY_NS + (hh * 3600 + mm * 60).astype(np.int64) * NS, ok


def _parse_chunk(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    n = len(starts)
    m = _heads(buf, starts)
    # Rows of one minute share their first 17 bytes: the calendar is parsed once per run of
    # equal prefixes (1 440 runs in a sorted day), the seconds and fraction for every row.
    w = m.view(np.uint64)  # (n, 4) words; bytes 0-15 are the first two
    new = np.ones(n, dtype=bool)
    new[1:] = (w[1:, 0] != w[:-1, 0]) | (w[1:, 1] != w[:-1, 1]) | (m[1:, 16] != m[:-1, 16])
    run = np.cumsum(new) - 1
    minute_ns, minute_ok = _minutes(m[new])

    t = m[:, 17:].T - np.uint8(_ZERO)  # (15, n): a digit is 0..9, any other byte wraps past
    isdig = t <= 9
    ok = minute_ok[run] & (m[:, 17] == ord(":")) & isdig[1] & isdig[2]
    ss = t[1].astype(np.int32) * 10 + t[2]
    ok &= ss <= 59

    # optional fraction ".d{1,9}", then the closing quote (which must lie inside the row:
    # so every byte read before it was the row's own)
    has_frac = m[:, 20] == ord(".")
    digit = np.logical_and.accumulate(isdig[4:13], axis=0)
    digit &= has_frac
    width = digit.sum(axis=0, dtype=np.int32)
    frac_ns = np.zeros(n, dtype=np.int32)
    for k in range(9):
        frac_ns += np.where(digit[k], t[4 + k], 0).astype(np.int32) * _FRACTION_WEIGHTS[k]
    close = np.where(has_frac, 21 + width, 20)
    ok &= m[np.arange(n), np.minimum(close, _READ - 1)] == ord('"')
    ok &= (close < _WIDTH) & (~has_frac | (width > 0)) & (starts + close < ends)
    ns = minute_ns[run] + ss.astype(np.int64) * NS + frac_ns
    return np.where(ok, ns, 0), ok, starts + close + 1


def fraction_digits(step_ns: int) -> int:
    """Digits of fraction needed to write every multiple of ``step_ns`` exactly."""
    for digits in range(10):
        if step_ns % 10 ** (9 - digits) == 0:
            return digits
    return 9


# ----------------------------------------------------------------------------- formatting
#
# Text is assembled in fixed-width records (numpy structured dtypes laid over the bytes) from
# lookup tables of digit groups: the calendar once per run of equal seconds (86 400 runs in
# a sorted day, at any rate), the fraction as three groups of 3 digits. No Python loop runs
# per timestamp.


def _digit_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """00..99 as 2-byte items; 000..999 as 4-byte items (3 digits and a pad byte, so that
    one native integer copy writes them); the trailing zeros of 000..999 (3 for 000)."""
    k = np.arange(1000)
    digits = np.zeros((1000, 4), dtype=np.uint8)
    digits[:, :3] = np.stack([k // 100, k // 10 % 10, k % 10], axis=1) + _ZERO
    pairs = np.ascontiguousarray(digits[:100, 1:3]).view(np.uint16).ravel()
    zeros = np.where(k == 0, 3, (k % 10 == 0).astype(np.int64) + (k % 100 == 0))
    return pairs, digits.view(np.uint32).ravel(), zeros


_DIGITS2, _DIGITS3, _ZEROS3 = _digit_tables()


def _record(fields: dict[str, tuple[str, int]], itemsize: int) -> np.dtype:
    names = list(fields)
    formats = [f for f, _ in fields.values()]
    offsets = [at for _, at in fields.values()]
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


# ``YYYY-MM-DD HH:MM:SS`` and ``YYYYMMDDHHMMSS``: the year is written as century + year
_CALENDAR = ("c", "y", "m", "d", "hh", "mi", "ss")
_TOA5_SECOND = _record(
    {
        **{f: ("u2", at) for f, at in zip(_CALENDAR, (0, 2, 5, 8, 11, 14, 17), strict=True)},
        **{f"s{at}": ("u1", at) for at in (4, 7, 10, 13, 16)},
    },
    19,
)
_TOA5_SEPARATORS = {"s4": "-", "s7": "-", "s10": " ", "s13": ":", "s16": ":"}
_COMPACT_SECOND = _record({f: ("u2", 2 * i) for i, f in enumerate(_CALENDAR)}, 14)


def _second_texts(sec: np.ndarray, layout: np.dtype, separators: dict[str, str]) -> np.ndarray:
    """The calendar text of each second since 1970-01-01, as ``layout``-wide void items."""
    days, secs = np.divmod(sec, 86_400)
    y, m, d = civil_from_days(days)
    hh, r = np.divmod(secs, 3600)
    mi, ss = np.divmod(r, 60)
    out = np.empty(len(sec), dtype=layout)
    for name, value in zip(_CALENDAR, (y // 100 % 100, y % 100, m, d, hh, mi, ss), strict=True):
        out[name] = _DIGITS2[value]
    for name, ch in separators.items():
        out[name] = ord(ch)
    return out.view(f"V{layout.itemsize}")


def _fraction(out: np.ndarray, frac: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write the 9 digits of ``frac`` (ns) into fields f1, f2, f3 of the records ``out`` (in
    this order: each overwrites the pad byte of the one before); return the 3-digit groups."""
    a, rest = np.divmod(frac.astype(np.int32), 1_000_000)
    b, c = np.divmod(rest, 1000)
    for name, group in (("f1", a), ("f2", b), ("f3", c)):
        out[name] = _DIGITS3[group]
    return a, b, c


def _by_second(ns: np.ndarray, layout: np.dtype, separators: dict[str, str]):
    """(calendar text of each timestamp's second, its fraction in ns), the calendar computed
    once per run of equal seconds."""
    sec, frac = np.divmod(ns, NS)
    new = np.ones(len(ns), dtype=bool)
    np.not_equal(sec[1:], sec[:-1], out=new[1:])
    run = np.cumsum(new) - 1
    return _second_texts(sec[new], layout, separators)[run], frac


# a quoted TOA5 timestamp, the closing quote where the kept digits end
_TOA5_STAMP = _record(
    {
        "open": ("u1", 0),
        "second": ("V19", 1),
        "dot": ("u1", 20),
        "f1": ("u4", 21),
        "f2": ("u4", 24),
        "f3": ("u4", 27),
    },
    _WIDTH,
)


def toa5_grid(ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quoted TOA5 timestamps as an (n, 31) uint8 grid and the length of each: row i holds
    ``"YYYY-MM-DD HH:MM:SS[.f]"`` in its first ``length[i]`` bytes (quotes included)."""
    ns = np.asarray(ns, dtype=np.int64)
    n = len(ns)
    out = np.empty(n, dtype=_TOA5_STAMP)
    out["open"] = ord('"')
    out["second"], frac = _by_second(ns, _TOA5_SECOND, _TOA5_SEPARATORS)
    out["dot"] = ord(".")
    a, b, c = _fraction(out, frac)
    # Campbell drops the trailing zeros of the fraction, and the "." with a whole second
    zeros = np.where(c != 0, _ZEROS3[c], np.where(b != 0, 3 + _ZEROS3[b], 6 + _ZEROS3[a]))
    length = np.where(frac == 0, 21, _WIDTH - zeros)
    grid = out.view(np.uint8).reshape(n, _WIDTH)
    grid[np.arange(n), length - 1] = ord('"')
    return grid, length


def format_toa5_packed(ns: np.ndarray, *, quoted: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``"YYYY-MM-DD HH:MM:SS[.f]"`` of every timestamp, packed in one uint8 buffer.

    Returns ``(data, offsets)``: timestamp i is ``data[offsets[i]:offsets[i + 1]]`` (offsets
    int64, n + 1 of them). Trailing zeros of the fraction are dropped as Campbell loggers
    write them, no fraction at whole seconds; ``quoted=False`` leaves out the quotes.
    """
    grid, length = toa5_grid(ns)
    if not quoted:
        grid, length = grid[:, 1:], length - 2
    data = grid[np.arange(grid.shape[1]) < length[:, None]]
    offsets = np.zeros(len(length) + 1, dtype=np.int64)
    np.cumsum(length, out=offsets[1:])
    return data, offsets


def _split(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    """The items of a packed buffer as bytes objects (made by Arrow, no Python loop)."""
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.large_binary(), len(offsets) - 1, buffers).to_pylist()


def format_toa5(ns: np.ndarray, *, quoted: bool = True) -> list[bytes]:
    """``"YYYY-MM-DD HH:MM:SS[.f]"`` per timestamp, trailing fraction zeros dropped as
    Campbell loggers write them: ``format_toa5_packed`` split into bytes objects."""
    return _split(*format_toa5_packed(ns, quoted=quoted))


# an ETC timestamp: YYYYMMDDHHMMSS, then "." and up to 9 digits of fraction (in f1..f3,
# whose last pad byte falls at 24)
_COMPACT_STAMP = _record(
    {"second": ("V14", 0), "dot": ("u1", 14), "f1": ("u4", 15), "f2": ("u4", 18), "f3": ("u4", 21)},
    25,
)


def format_compact(ns: np.ndarray, *, seconds: bool, fraction: int = 0) -> list[bytes]:
    """ETC table timestamps: ``YYYYMMDDHHMM`` or ``YYYYMMDDHHMMSS[.f]`` with ``fraction``
    digits (1..9) of the fraction, cut (not rounded), trailing zeros kept."""
    ns = np.asarray(ns, dtype=np.int64)
    n = len(ns)
    out = np.empty(n, dtype=_COMPACT_STAMP)
    out["second"], frac = _by_second(ns, _COMPACT_SECOND, {})
    width = 14 if seconds else 12
    if seconds and fraction:
        out["dot"] = ord(".")
        _fraction(out, frac)
        width = 15 + min(fraction, 9)
    grid = np.ascontiguousarray(out.view(np.uint8).reshape(n, out.itemsize)[:, :width])
    return _split(grid.ravel(), np.arange(0, (n + 1) * width, width, dtype=np.int64))


def to_ns(text: str) -> int:
    """One ISO-like local timestamp (``2026-11-20 00:30:00.05``) to ns; for tests and CLI."""
    raw = np.frombuffer(f'"{text}"'.encode(), dtype=np.uint8)
    ns, ok, _ = parse_quoted(raw, np.array([0]), np.array([len(raw)]))
    if not ok[0]:
        raise ValueError(f"not a timestamp: {text!r}")
    return int(ns[0])
