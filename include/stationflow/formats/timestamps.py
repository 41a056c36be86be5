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


def parse_quoted(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Parse ``"YYYY-MM-DD HH:MM:SS[.f...]"`` at the start of each row.

    ``buf`` is the file as a uint8 array; returns (ns, ok, field_end) where ``ok`` marks
    rows whose timestamp is well formed and ``field_end`` is the offset just past the
    closing quote. Only these bytes are read, whatever the width of the row.
    """
    n = len(starts)
    size = len(buf)

    def at(offset: int) -> np.ndarray:
        idx = starts + offset
        return buf[np.minimum(idx, size - 1)].astype(np.int64), idx < ends

    ok = np.ones(n, dtype=bool)
    digits = {}
    for off in (1, 2, 3, 4, 6, 7, 9, 10, 12, 13, 15, 16, 18, 19):
        c, inside = at(off)
        v = c - _ZERO
        ok &= inside & (v >= 0) & (v <= 9)
        digits[off] = v
    for off, ch in ((0, '"'), (5, "-"), (8, "-"), (11, " "), (14, ":"), (17, ":")):
        c, inside = at(off)
        ok &= inside & (c == ord(ch))

    def num(*offs: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int64)
        for o in offs:
            out = out * 10 + digits[o]
        return out

    year, month, day = num(1, 2, 3, 4), num(6, 7), num(9, 10)
    hh, mm, ss = num(12, 13), num(15, 16), num(18, 19)
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (day <= 31)
    ok &= (hh <= 23) & (mm <= 59) & (ss <= 59)

    # optional fraction: ".d{1,9}" then the closing quote at 20 + 1 + width
    c20, inside20 = at(20)
    has_frac = inside20 & (c20 == ord("."))
    frac = np.zeros(n, dtype=np.int64)
    width = np.zeros(n, dtype=np.int64)
    still = has_frac.copy()
    for k in range(9):
        c, inside = at(21 + k)
        v = c - _ZERO
        is_digit = still & inside & (v >= 0) & (v <= 9)
        frac = np.where(is_digit, frac * 10 + v, frac)
        width += is_digit
        still &= is_digit
    frac_ns = frac * 10 ** (9 - width)
    close = np.where(has_frac, 21 + width, 20)
    cq = buf[np.minimum(starts + close, size - 1)]
    ok &= (starts + close < ends) & (cq == ord('"')) & (~has_frac | (width > 0))

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


def format_toa5(ns: np.ndarray, *, quoted: bool = True) -> list[bytes]:
    """``"YYYY-MM-DD HH:MM:SS[.f]"`` per timestamp, trailing fraction zeros dropped as
    Campbell loggers write them."""
    ns = np.asarray(ns, dtype=np.int64)
    days, rem = np.divmod(ns, DAY_NS)
    y, m, d = civil_from_days(days)
    secs, frac = np.divmod(rem, NS)
    hh, r = np.divmod(secs, 3600)
    mi, ss = np.divmod(r, 60)
    q = '"' if quoted else ""
    out = []
    for i in range(len(ns)):
        text = f"{q}{y[i]:04d}-{m[i]:02d}-{d[i]:02d} {hh[i]:02d}:{mi[i]:02d}:{ss[i]:02d}"
        if frac[i]:
            text += "." + f"{frac[i]:09d}".rstrip("0")
        out.append((text + q).encode())
    return out


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
