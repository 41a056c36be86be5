"""TOB1 reader: binary records rendered as the TOA5 lines a Campbell logger would write."""

from __future__ import annotations

import re
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stationflow.formats import tob1
from stationflow.formats.table import UnreadableFragment
from stationflow.formats.timestamps import NS, format_toa5, to_ns
from stationflow.formats.tob1 import decode_fp2, format_toa5_packed, read_tob1
from tests.unit.formats.tob1_writer import ENVIRONMENT, Column, header_lines, time_columns
from tests.unit.formats.tob1_writer import tob1 as make_tob1

NUMBER = re.compile(rb"-?\d+(\.\d+)?(E[+-]\d{2,3})?")  # how every finite value must look


def three_records() -> list[Column]:
    times, _ = time_columns("2026-11-20 00:30:00", 3, NS // 20)
    return [
        *times,
        Column("RECORD", "ULONG", [42, 43, 44], "RN", ""),
        Column("Ux", "IEEE4", [1.1, np.nan, -np.inf], "m/s"),
        Column("Ts", "FP2", [23.45, -0.001, np.nan], "C", "Avg"),
        Column("diag", "LONG", [-3, 0, 2_147_483_647]),
        Column("flag", "BOOL", [True, False, True]),
        Column("msg", "ASCII(8)", ["ok", 'say "hi"', ""]),
        Column("count", "UINT2", [65535, 0, 12]),
        Column("P", "IEEE8", [0.1, 1e-7, 1e21], "kPa"),
    ]


def rows(table) -> list[bytes]:
    return [table.row(i) for i in range(len(table))]


def values(table) -> list[bytes]:
    """The text after the timestamp of single-value files."""
    return [r.split(b",", 1)[1] for r in rows(table)]


def single(type_name: str, vals, **kw) -> bytes:
    times, _ = time_columns("2026-11-20 00:00:00", len(vals), NS)
    return make_tob1([*times, Column("x", type_name, vals, **kw)])


def test_rendered_lines_are_exactly_toa5():
    t = read_tob1(make_tob1(three_records()), source="ts_data.dat")
    assert rows(t) == [
        b'"2026-11-20 00:30:00",42,1.1,23.45,-3,-1,"ok",65535,0.1',
        b'"2026-11-20 00:30:00.05",43,"NAN",-0.001,0,0,"say ""hi""",0,1E-07',
        b'"2026-11-20 00:30:00.1",44,"-INF","NAN",2147483647,-1,"",12,1E+21',
    ]
    assert t.data == b"".join(r + b"\r\n" for r in rows(t))  # every row ends with CRLF
    assert t.crlf and t.issues == [] and t.source == "ts_data.dat"
    assert t.starts.dtype == t.ends.dtype == t.ts.dtype == t.lines.dtype == np.int64
    assert list(t.lines) == [1, 2, 3]


def test_header():
    data = make_tob1(three_records())
    h = read_tob1(data).header
    assert h.format == "TOB1" and h.environment == ENVIRONMENT and h.table_name == "ts_data"
    assert h.fields == ("TIMESTAMP", "RECORD", "Ux", "Ts", "diag", "flag", "msg", "count", "P")
    assert h.units == ("TS", "RN", "m/s", "C", "", "", "", "", "kPa")
    assert h.processing == ("", "", "Smp", "Avg", "Smp", "Smp", "Smp", "Smp", "Smp")
    assert h.stamping == "end" and h.declared_interval_ns is None
    assert h.raw == b"".join(line + b"\r\n" for line in header_lines(three_records()))
    assert data.startswith(h.raw)
    assert h.toa5_lines()[0] == b'"TOA5","FR-Lam","CR3000","4242","CR3000.Std.32.03",' + (
        b'"CPU:flux.CR3","51234","ts_data"'
    )


def test_20hz_timestamps_with_fractions():
    times, ns = time_columns("2026-11-20 23:59:58", 60, NS // 20)  # crosses midnight
    cols = [*times, Column("RECORD", "ULONG", np.arange(60), "RN", "")]
    t = read_tob1(make_tob1(cols))
    assert np.array_equal(t.ts, ns)
    assert t.ts[0] == to_ns("2026-11-20 23:59:58") and t.ts[-1] == to_ns("2026-11-21 00:00:00.95")
    assert [r.split(b",")[0] for r in rows(t)] == format_toa5(ns)
    assert t.row(1) == b'"2026-11-20 23:59:58.05",1'
    assert t.row(40) == b'"2026-11-21 00:00:00",40'


def test_nanosecond_timestamps():
    ns = [to_ns("2026-11-20 00:00:00.123456789"), to_ns("1990-01-01 00:00:00.000000001")]
    sec, nano = np.divmod(np.array(ns) - 631_152_000 * NS, NS)
    cols = [Column("SECONDS", "ULONG", sec), Column("NANOSECONDS", "ULONG", nano)]
    t = read_tob1(make_tob1(cols))
    assert list(t.ts) == ns
    assert rows(t) == [b'"2026-11-20 00:00:00.123456789"', b'"1990-01-01 00:00:00.000000001"']


@pytest.mark.parametrize(
    ("type_name", "vals", "expected"),
    [
        ("IEEE4", [0.5, -2.25, 3.4028235e38, 1e-45], ["0.5", "-2.25", "3.4028235E+38", "1E-45"]),
        ("IEEE4", [np.nan, np.inf, -np.inf], ['"NAN"', '"INF"', '"-INF"']),
        ("IEEE4B", [1.1, -0.0, 12345678], ["1.1", "0", "12345678"]),
        ("IEEE4L", [100.0, 0.000001, 0.0000001], ["100", "0.000001", "1E-07"]),
        ("IEEE8", [0.1, 123456789.123, 1e300], ["0.1", "123456789.123", "1E+300"]),
        ("IEEE8B", [-1e-300, np.nan], ["-1E-300", '"NAN"']),
        ("IEEE8L", [2.5], ["2.5"]),
        ("FP2", [7999, -7999, 0.001, -12.5, 0.0], ["7999", "-7999", "0.001", "-12.5", "0"]),
        ("FP2", [np.nan, np.inf, -np.inf], ['"NAN"', '"INF"', '"-INF"']),
        ("ULONG", [0, 4_294_967_295], ["0", "4294967295"]),
        ("LONG", [-2_147_483_648, 2_147_483_647], ["-2147483648", "2147483647"]),
        ("UINT4", [258, 4_294_967_295], ["258", "4294967295"]),
        ("INT4", [-5, 513], ["-5", "513"]),
        ("USHORT", [258, 65535], ["258", "65535"]),
        ("SHORT", [-32768, 32767], ["-32768", "32767"]),
        ("UINT2", [258, 65535], ["258", "65535"]),  # big-endian: 258 would read 513 as LE
        ("INT2", [-2, 513], ["-2", "513"]),
        ("BOOL", [True, False], ["-1", "0"]),  # loggers write True as -1
        ("BOOL2", [True, False], ["-1", "0"]),
        ("BOOL4", [False, True], ["0", "-1"]),
        ("ASCII(4)", ["abcd", "a", ""], ['"abcd"', '"a"', '""']),
        ("ASCII(6)", [b"ab\0cd", b'"q"'], ['"ab"', '"""q"""']),  # NUL ends the string
        (
            "SecNano",
            [to_ns("2026-11-20 00:30:00.25"), to_ns("2026-11-20 00:30:01")],
            ['"2026-11-20 00:30:00.25"', '"2026-11-20 00:30:01"'],
        ),
        ("NSec", [to_ns("2000-02-29 12:00:00.000001")], ['"2000-02-29 12:00:00.000001"']),
    ],
)
def test_every_type(type_name, vals, expected):
    t = read_tob1(single(type_name, vals))
    assert values(t) == [e.encode() for e in expected]
    assert t.header.fields == ("TIMESTAMP", "x") and t.issues == []


FP2_VECTORS = [
    (0x0000, 0.0, "0"),
    (0x8000, 0.0, "0"),  # negative zero
    (0x0001, 1.0, "1"),
    (0x1F3F, 7999.0, "7999"),  # largest allowed magnitude, exponent 0
    (0x9F3F, -7999.0, "-7999"),
    (0x2000 | 1234, 123.4, "123.4"),  # exponent 1
    (0x4000 | 1234, 12.34, "12.34"),  # exponent 2
    (0x6000 | 1234, 1.234, "1.234"),  # exponent 3
    (0xA000 | 75, -7.5, "-7.5"),
    (0xC000 | 5, -0.05, "-0.05"),
    (0xE000 | 1, -0.001, "-0.001"),
    (0x6000 | 7999, 7.999, "7.999"),
    (0x9FFE, np.nan, '"NAN"'),
    (0x1FFF, np.inf, '"INF"'),
    (0x9FFF, -np.inf, '"-INF"'),
]


@pytest.mark.parametrize(("word", "value", "text"), FP2_VECTORS)
def test_fp2_vectors(word, value, text):
    decoded = decode_fp2(np.array([word], dtype=np.uint16))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, np.float32(value))
    t = read_tob1(single("FP2", np.array([word], dtype=np.uint16)))
    assert values(t) == [text.encode()]


def test_fp2_every_word_renders_its_decimal():
    words = np.arange(1 << 16, dtype=np.uint16)
    t = read_tob1(single("FP2", words))
    for w, text in zip(words.tolist(), values(t), strict=True):
        sign, exp, mantissa = w >> 15, (w >> 13) & 3, w & 0x1FFF
        special = {0x9FFE: b'"NAN"', 0x1FFF: b'"INF"', 0x9FFF: b'"-INF"'}
        if w in special:
            assert text == special[w]
            continue
        assert NUMBER.fullmatch(text), text
        expected = (-1 if sign else 1) * mantissa / 10**exp
        assert float(text) == expected, (hex(w), text)
        assert len(text.lstrip(b"-").replace(b".", b"").lstrip(b"0")) <= 4  # no float noise


def test_truncated_last_record_is_left_out_with_a_warning():
    times, ns = time_columns("2026-11-20 00:30:00", 5, NS // 10)
    cols = [*times, Column("RECORD", "ULONG", range(5), "RN", ""), Column("x", "FP2", [1] * 5)]
    data = make_tob1(cols)
    t = read_tob1(data[:-3], source="cut.dat")  # the last record lost 3 of its 14 bytes
    assert len(t) == 4 and np.array_equal(t.ts, ns[:4])
    assert t.row(3) == b'"2026-11-20 00:30:00.3",3,1'
    assert [(i.level, i.line, i.message) for i in t.issues] == [
        ("warning", 5, "truncated last record: 11 of 14 bytes")
    ]
    assert str(t.issues[0]) == "cut.dat:5: truncated last record: 11 of 14 bytes"


def test_header_without_records():
    cols = three_records()
    header = b"".join(line + b"\r\n" for line in header_lines(cols))
    t = read_tob1(header)
    assert len(t) == 0 and t.data == b"" and t.issues == []
    assert t.header.fields[0] == "TIMESTAMP"
    t = read_tob1(header + b"\x01\x02")  # only a piece of the first record
    assert len(t) == 0 and [i.line for i in t.issues] == [1]


def test_path_source_and_lf_header(tmp_path):
    path = tmp_path / "TOB1_ts_data.dat"
    lines = header_lines(three_records())
    body = make_tob1(three_records()).split(b"\r\n", 5)[5]
    path.write_bytes(b"".join(line + b"\n" for line in lines) + body)  # LF header
    t = read_tob1(path)
    assert t.source == str(path) and len(t) == 3
    assert rows(t) == rows(read_tob1(make_tob1(three_records())))
    assert read_tob1(str(path), source="x").source == "x"
    assert read_tob1(path.read_bytes()).source == "<bytes>"


def test_units_or_processing_count_mismatch_is_a_warning():
    lines = header_lines(three_records())
    lines[2] = b'"SECONDS","NANOSECONDS","RN"'  # units of the first three fields only
    t = read_tob1(make_tob1(three_records(), header=lines))
    assert t.header.units == ("TS", "RN", "", "", "", "", "", "", "")
    assert [(i.level, i.line) for i in t.issues] == [("warning", None)]
    assert "header line 3 has 3 values for 10 fields" in t.issues[0].message


def broken(line: int, text: bytes) -> bytes:
    lines = header_lines(three_records())
    lines[line - 1] = text
    return make_tob1(three_records(), header=lines)


NAMES = b'"SECONDS","NANOSECONDS","RECORD","Ux","Ts","diag","flag","msg","count","P"'
TYPES = b'"ULONG","ULONG","ULONG","IEEE4","FP2","LONG","BOOL","ASCII(8)","UINT2","IEEE8"'


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"", 1, "empty file"),
        (b"\x00\x01binary garbage", 1, "header ends early: 0 of 5 lines"),
        (broken(1, b'"TOA5","st","CR1000"'), 1, "not a TOB1 file"),
        (b'"TOB1","st"\r\n"SECONDS","NANOSECONDS"\r\n"",""\r\n', 4, "header ends early"),
        (broken(5, TYPES.replace(b"IEEE8", b"FOO")), 5, "unsupported data type 'FOO'"),
        (broken(5, TYPES.replace(b"FP2", b"BOOL8")), 5, "unsupported data type 'BOOL8'"),
        (broken(5, TYPES.replace(b"ASCII(8)", b"ASCII(0)")), 5, "unsupported data type"),
        (broken(5, TYPES.rsplit(b",", 1)[0]), 5, "9 data types for 10 fields"),
        (broken(2, NAMES.replace(b'"NANOSECONDS"', b'"NS"')), 2, "no NANOSECONDS field"),
        (broken(2, NAMES.replace(b'"SECONDS",', b'"T",')), 2, "no SECONDS field"),
        (broken(5, b'"IEEE4"' + TYPES[7:]), 5, "SECONDS is IEEE4, not an integer type"),
    ],
)
def test_malformed_header_is_unreadable(data, line, reason):
    with pytest.raises(UnreadableFragment) as exc:
        read_tob1(data, source="bad.dat")
    assert exc.value.line == line and exc.value.source == "bad.dat"
    assert reason in exc.value.reason
    assert str(exc.value).startswith(f"bad.dat:{line}: ")


def test_threaded_path_gives_the_same_lines(monkeypatch):
    n = 60_000
    times, ns = time_columns("2026-11-20 00:00:00", n, NS // 20)
    rng = np.random.default_rng(7)
    cols = [
        *times,
        Column("RECORD", "ULONG", np.arange(n), "RN", ""),
        Column("u", "IEEE4", rng.normal(0, 3, n).astype(np.float32)),
        Column("t", "FP2", np.round(rng.normal(20, 5, n), 2)),
        Column("diag", "LONG", rng.integers(0, 64, n)),
        Column("flag", "BOOL", rng.integers(0, 2, n)),
    ]
    data = make_tob1(cols)
    monkeypatch.setattr(tob1, "WORKERS", 3)
    threaded = read_tob1(data)
    monkeypatch.setattr(tob1, "WORKERS", 1)
    serial = read_tob1(data)
    assert threaded.data == serial.data
    assert np.array_equal(threaded.starts, serial.starts)
    assert np.array_equal(threaded.ends, serial.ends)
    assert np.array_equal(threaded.ts, ns)
    assert rows(threaded) == threaded.data.split(b"\r\n")[:-1]


def test_integer_lookup_matches_plain_rendering(monkeypatch):
    vals = np.array([-5, 7, 3, -5, 2_000_000_000, 0], dtype=np.int64)
    expected = [str(v).encode() for v in vals]
    monkeypatch.setattr(tob1, "LOOKUP_RANGE", 4)  # 6 values > 4: range too wide, plain cast
    assert tob1._render_int(vals).to_pylist() == expected
    small = np.array([3, 1, 2, 3, 3, 1, 2], dtype=np.uint16)
    assert tob1._render_int(small).to_pylist() == [str(v).encode() for v in small]


@given(st.lists(st.integers(0, 150 * 365 * 86_400 * NS), min_size=0, max_size=200))
def test_packed_timestamps_match_format_toa5(ns):
    ns = np.array(ns, dtype=np.int64)
    for quoted in (True, False):
        data, offsets = format_toa5_packed(ns, quoted=quoted)
        texts = [data[a:b].tobytes() for a, b in pairwise(offsets)]
        assert texts == format_toa5(ns, quoted=quoted)


def test_timestamps_beyond_binary_views(monkeypatch):
    times, ns = time_columns("2026-11-20 00:00:00", 30, NS // 8)
    data = make_tob1(times)
    expected = rows(read_tob1(data))
    monkeypatch.setattr(tob1, "VIEW_LIMIT", 0)  # as for a grid of 2 GiB and more
    assert rows(read_tob1(data)) == expected == format_toa5(ns)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(width=32), min_size=1, max_size=100),
    st.sampled_from(["IEEE4", "IEEE4B"]),
)
def test_float32_text_reads_back_to_the_same_float32(vals, type_name):
    stored = np.array(vals, dtype=np.float32)
    t = read_tob1(single(type_name, stored))
    for v, text in zip(stored.tolist(), values(t), strict=True):
        if np.isnan(v):
            assert text == b'"NAN"'
        elif np.isinf(v):
            assert text == (b'"INF"' if v > 0 else b'"-INF"')
        else:
            assert NUMBER.fullmatch(text), text
            assert np.float32(float(text)) == np.float32(v)  # the float32 itself


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_float64_text_round_trips(vals):
    t = read_tob1(single("IEEE8", vals))
    for v, text in zip(vals, values(t), strict=True):
        assert NUMBER.fullmatch(text), text
        assert float(text) == v
