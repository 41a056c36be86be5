from datetime import datetime, timedelta

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from stationflow.formats.timestamps import (
    civil_from_days,
    days_from_civil,
    format_compact,
    format_toa5,
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
