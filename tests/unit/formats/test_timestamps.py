import re
from datetime import datetime, timedelta
from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stationflow.formats.timestamps import (
    NS,
    civil_from_days,
    days_from_civil,
    format_compact,
    format_toa5,
    format_toa5_packed,
    parse_quoted,
)

EPOCH = datetime(1970, 1, 1)


def parse(texts: list[bytes]):
    data = b"".join(texts)
    lens = np.array([len(t) for t in texts])
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    return parse_quoted(np.frombuffer(data, np.uint8), starts, starts + lens)


@given(
    st.lists(
        st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
        min_size=1,
        max_size=50,
    ),
    st.sampled_from([1, 1_000, 1_000_000, 50_000_000, 10**9]),
)
def test_format_then_parse_is_exact(moments, resolution):
    ns = np.array([(m - EPOCH) // timedelta(microseconds=1) * 1000 for m in moments])
    ns -= ns % resolution
    texts = format_toa5(ns)
    for t, m, n in zip(texts, moments, ns, strict=True):
        expected = (EPOCH + timedelta(microseconds=int(n) // 1000)).strftime("%Y-%m-%d %H:%M:%S")
        assert t.startswith(f'"{expected}'.encode())
        assert not t.endswith(b'0"') or b"." not in t  # trailing fraction zeros dropped
        del m
    parsed, ok, end = parse(texts)
    assert ok.all() and np.array_equal(parsed, ns)
    assert list(end - np.concatenate(([0], np.cumsum([len(t) for t in texts])[:-1]))) == [
        len(t) for t in texts
    ]


@given(st.dates(min_value=datetime(1600, 1, 1).date(), max_value=datetime(2400, 1, 1).date()))
def test_civil_day_numbers_match_the_calendar(d):
    n = days_from_civil(np.array([d.year]), np.array([d.month]), np.array([d.day]))[0]
    assert n == (d - EPOCH.date()).days
    y, m, dd = civil_from_days(np.array([n]))
    assert (y[0], m[0], dd[0]) == (d.year, d.month, d.day)


def test_compact_etc_timestamps():
    ns = np.array(
        [(datetime(2026, 11, 20, 12, 30, 5, 50_000) - EPOCH) // timedelta(microseconds=1) * 1000]
    )
    assert format_compact(ns, seconds=False) == [b"202611201230"]
    assert format_compact(ns, seconds=True) == [b"20261120123005"]
    assert format_compact(ns, seconds=True, fraction=2) == [b"20261120123005.05"]


# ----------------------------------------------------------------------------- formatting
# checked against plain Python: datetime for the calendar, string rules for the fraction

FIRST_SECOND = (datetime(1990, 1, 1) - EPOCH) // timedelta(seconds=1)
END_SECOND = (datetime(2101, 1, 1) - EPOCH) // timedelta(seconds=1)  # 2100 included


def reference_toa5(ns: int, quoted: bool) -> bytes:
    sec, frac = divmod(ns, NS)
    text = (EPOCH + timedelta(seconds=sec)).strftime("%Y-%m-%d %H:%M:%S")
    if frac:  # Campbell drops the trailing zeros of the fraction, and "." at whole seconds
        text += "." + f"{frac:09d}".rstrip("0")
    return (f'"{text}"' if quoted else text).encode()


def reference_compact(ns: int, seconds: bool, fraction: int) -> bytes:
    sec, frac = divmod(ns, NS)
    moment = EPOCH + timedelta(seconds=sec)
    if not seconds:
        return moment.strftime("%Y%m%d%H%M").encode()
    text = moment.strftime("%Y%m%d%H%M%S")
    if fraction:  # a fixed number of digits, cut, trailing zeros kept
        text += "." + f"{frac:09d}"[:fraction]
    return text.encode()


@st.composite
def fractions(draw) -> int:
    """ns of a fraction written with exactly 0..9 digits."""
    digits = draw(st.integers(0, 9))
    if digits == 0:
        return 0
    leading = draw(st.integers(0, 10 ** (digits - 1) - 1))
    return (leading * 10 + draw(st.integers(1, 9))) * 10 ** (9 - digits)


@st.composite
def stamps(draw) -> list[int]:
    """ns since 1970, 1990..2100, some of them within the same few seconds."""
    base = draw(st.integers(FIRST_SECOND, END_SECOND - 4))
    anywhere = st.integers(FIRST_SECOND, END_SECOND - 1)
    nearby = st.integers(0, 3).map(lambda d: base + d)
    seconds = draw(st.lists(st.one_of(anywhere, nearby), max_size=60))
    ns = [s * NS + draw(fractions()) for s in seconds]
    return sorted(ns) if draw(st.booleans()) else ns


@settings(deadline=None)
@given(stamps(), st.booleans())
def test_packed_toa5_matches_plain_python(ns, quoted):
    expected = [reference_toa5(n, quoted) for n in ns]
    data, offsets = format_toa5_packed(np.array(ns, dtype=np.int64), quoted=quoted)
    assert data.dtype == np.uint8 and offsets.dtype == np.int64
    assert len(offsets) == len(ns) + 1 and offsets[0] == 0 and offsets[-1] == len(data)
    assert [data[a:b].tobytes() for a, b in pairwise(offsets.tolist())] == expected
    assert format_toa5(np.array(ns, dtype=np.int64), quoted=quoted) == expected


@settings(deadline=None)
@given(stamps(), st.booleans(), st.integers(0, 9))
def test_compact_matches_plain_python(ns, seconds, fraction):
    expected = [reference_compact(n, seconds, fraction) for n in ns]
    assert format_compact(np.array(ns, dtype=np.int64), seconds=seconds, fraction=fraction) == (
        expected
    )


def test_empty_input_formats_to_nothing():
    none = np.array([], dtype=np.int64)
    data, offsets = format_toa5_packed(none)
    assert len(data) == 0 and offsets.tolist() == [0]
    assert format_toa5(none) == [] == format_compact(none, seconds=True, fraction=3)


_STAMP = re.compile(rb'"(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"')


def _reference(row: bytes) -> int | None:
    """The timestamp at the start of a row, the slow and obvious way."""
    m = _STAMP.match(row)
    if m is None:
        return None
    y, mo, d, h, mi, s, frac = m.groups()
    try:
        when = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s))
    except ValueError:
        return None
    if not 1900 <= when.year <= 2261:  # beyond int64 nanoseconds (or no logger's clock)
        return None
    frac_ns = int((frac or b"").ljust(9, b"0"))
    return (when - EPOCH) // timedelta(seconds=1) * NS + frac_ns


@settings(max_examples=200)
@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)),
    st.lists(
        st.tuples(
            st.integers(0, 90_000),  # ms after the previous row: many share a minute
            st.integers(0, 9),  # fraction digits
            st.one_of(st.none(), st.tuples(st.integers(0, 31), st.sampled_from(b'0915":.- xA'))),
            st.integers(0, 3),  # bytes cut from the end of the row
        ),
        min_size=1,
        max_size=60,
    ),
)
def test_parse_matches_a_plain_python_reader_on_good_and_bad_rows(first, rows):
    """Mutated bytes, cut rows and minute runs: the vectorized parse agrees with a regex."""
    texts, at = [], first
    for gap_ms, digits, mutation, cut in rows:
        at += timedelta(milliseconds=gap_ms)
        text = bytearray(at.strftime('"%Y-%m-%d %H:%M:%S').encode())
        if digits:
            text += b"." + f"{at.microsecond:06d}000".encode()[:digits]
        text += b'",1.5,2\r\n'
        if mutation is not None and mutation[0] < len(text):
            text[mutation[0]] = mutation[1]
        texts.append(bytes(text[: len(text) - cut] if cut < len(text) else text))
    ns, ok, _ = parse(texts)
    for text, got, good in zip(texts, ns, ok, strict=True):
        want = _reference(text)
        assert bool(good) == (want is not None), text
        if want is not None:
            assert int(got) == want, text
