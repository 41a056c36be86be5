"""Vectorized timestamp codec: TOA5 text <-> int64 nanoseconds, without datetime objects.

Logger clocks run in local standard time, so timestamps are plain counts of nanoseconds of
that clock since 1970-01-01 (no time zone): the ETC day is then simple arithmetic.
"""

from __future__ import annotations

import numpy as np

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
_SEPARATORS = {0: ord('"'), 5: ord("-"), 8: ord("-"), 11: ord(" "), 14: ord(":"), 17: ord(":")}
_DIGITS = (1, 2, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19)
_FRACTION_WEIGHTS = 10 ** np.arange(8, -1, -1, dtype=np.int64)  # ns per fraction digit


def parse_quoted(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Parse ``"YYYY-MM-DD HH:MM:SS[.f...]"`` at the start of each row.

    ``buf`` is the file as a uint8 array; returns (ns, ok, field_end) where ``ok`` marks
    rows whose timestamp is well formed and ``field_end`` is the offset just past the
    closing quote. Only the first 31 bytes of a row are read, in chunks of rows.
    """
    n = len(starts)
    ns = np.zeros(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    field_end = np.zeros(n, dtype=np.int64)
    for a in range(0, n, ROWS):
        b = min(n, a + ROWS)
        ns[a:b], ok[a:b], field_end[a:b] = _parse_chunk(buf, starts[a:b], ends[a:b])
    return ns, ok, field_end


def _parse_chunk(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    idx = starts[:, None] + np.arange(_WIDTH)
    inside = idx < ends[:, None]
    m = np.where(inside, buf[np.minimum(idx, len(buf) - 1)], 0).astype(np.int16)
    d = m - _ZERO
    isdig = (d >= 0) & (d <= 9)
    ok = isdig[:, _DIGITS].all(axis=1)
    for col, ch in _SEPARATORS.items():
        ok &= m[:, col] == ch

    def num(*cols: int) -> np.ndarray:
        out = np.zeros(len(starts), dtype=np.int64)
        for c in cols:
            out = out * 10 + d[:, c]
        return out

    year, month, day = num(1, 2, 3, 4), num(6, 7), num(9, 10)
    hh, mm, ss = num(12, 13), num(15, 16), num(18, 19)
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    ok &= (hh <= 23) & (mm <= 59) & (ss <= 59)

    # optional fraction ".d{1,9}", then the closing quote
    has_frac = m[:, 20] == ord(".")
    run = np.logical_and.accumulate(isdig[:, 21:30], axis=1) & has_frac[:, None]
    width = run.sum(axis=1)
    frac_ns = (np.where(run, d[:, 21:30], 0) * _FRACTION_WEIGHTS).sum(axis=1)
    close = np.where(has_frac, 21 + width, 20)
    ok &= m[np.arange(len(starts)), np.minimum(close, _WIDTH - 1)] == ord('"')
    ok &= (close < _WIDTH) & (~has_frac | (width > 0))

    days = days_from_civil(year, month, day)
    # a day that does not exist (2026-02-30) does not survive the round trip
    y2, m2, d2 = civil_from_days(days)
    ok &= (y2 == year) & (m2 == month) & (d2 == day)
    ns = days * DAY_NS + (hh * 3600 + mm * 60 + ss) * NS + frac_ns
    return np.where(ok, ns, 0), ok, starts + close + 1


def fraction_digits(step_ns: int) -> int:
    """Digits of fraction needed to write every multiple of ``step_ns`` exactly."""
    for digits in range(10):
        if step_ns % 10 ** (9 - digits) == 0:
            return digits
    return 9


def _text_matrix(ns: np.ndarray, quoted: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-width byte matrix of ``"YYYY-MM-DD HH:MM:SS.fffffffff"`` and each row's width."""
    days, rem = np.divmod(ns, DAY_NS)
    y, mo, d = civil_from_days(days)
    secs, frac = np.divmod(rem, NS)
    hh, r = np.divmod(secs, 3600)
    mi, ss = np.divmod(r, 60)
    q = 1 if quoted else 0
    mat = np.zeros((len(ns), _WIDTH), dtype=np.uint8)
    cols = [
        (y, 4, q),
        (mo, 2, q + 5),
        (d, 2, q + 8),
        (hh, 2, q + 11),
        (mi, 2, q + 14),
        (ss, 2, q + 17),
        (frac, 9, q + 20),
    ]
    for value, width, at in cols:
        v = value.astype(np.int64)
        for k in range(width - 1, -1, -1):
            v, digit = np.divmod(v, 10)
            mat[:, at + k] = digit + _ZERO
    for col, ch in ((q + 4, "-"), (q + 7, "-"), (q + 10, " "), (q + 13, ":"), (q + 16, ":")):
        mat[:, col] = ord(ch)
    # fraction digits kept: up to the last non-zero one (Campbell drops trailing zeros)
    nz = mat[:, q + 20 : q + 29] != _ZERO
    keep = np.where(nz.any(axis=1), 9 - np.argmax(nz[:, ::-1], axis=1), 0)
    mat[:, q + 19] = ord(".")
    width = q + 19 + np.where(keep > 0, keep + 1, 0)
    if quoted:
        mat[:, 0] = ord('"')
        mat[np.arange(len(ns)), width] = ord('"')
        width = width + 1
    return mat, width


def format_toa5(ns: np.ndarray, *, quoted: bool = True) -> list[bytes]:
    """``"YYYY-MM-DD HH:MM:SS[.f]"`` per timestamp, trailing fraction zeros dropped as
    Campbell loggers write them. Vectorized: one byte matrix, then one slice per row."""
    ns = np.asarray(ns, dtype=np.int64)
    if not len(ns):
        return []
    mat, width = _text_matrix(ns, quoted)
    flat = mat.tobytes()
    base = np.arange(len(ns)) * _WIDTH
    return [flat[b : b + w] for b, w in zip(base.tolist(), width.tolist(), strict=True)]


def format_compact(ns: np.ndarray, *, seconds: bool, fraction: int = 0) -> list[bytes]:
    """ETC table timestamps: ``YYYYMMDDHHMM`` or ``YYYYMMDDHHMMSS[.f]``."""
    ns = np.asarray(ns, dtype=np.int64)
    days, rem = np.divmod(ns, DAY_NS)
    y, m, d = civil_from_days(days)
    secs, frac = np.divmod(rem, NS)
    hh, r = np.divmod(secs, 3600)
    mi, ss = np.divmod(r, 60)
    out = []
    for i in range(len(ns)):
        text = f"{y[i]:04d}{m[i]:02d}{d[i]:02d}{hh[i]:02d}{mi[i]:02d}"
        if seconds:
            text += f"{ss[i]:02d}"
            if fraction:
                text += "." + f"{frac[i]:09d}"[:fraction]
        out.append(text.encode())
    return out


def to_ns(text: str) -> int:
    """One ISO-like local timestamp (``2026-11-20 00:30:00.05``) to ns; for tests and CLI."""
    raw = np.frombuffer(f'"{text}"'.encode(), dtype=np.uint8)
    ns, ok, _ = parse_quoted(raw, np.array([0]), np.array([len(raw)]))
    if not ok[0]:
        raise ValueError(f"not a timestamp: {text!r}")
    return int(ns[0])
