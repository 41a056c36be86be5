"""TOA5 reader: the real LoggerNet sample, line endings, and every kind of bad line."""

from __future__ import annotations

import numpy as np
import pytest

from stationflow.formats.table import UnreadableFragment
from stationflow.formats.timestamps import format_toa5, to_ns
from stationflow.formats.toa5 import read_toa5
from stationflow.settings import PROJECT_ROOT
from tests.toa5_builder import HEADER, series, toa5

SAMPLE = (
    PROJECT_ROOT / "tests" / "fixtures" / "loggers" / "CampbellScientific_HC2S3_20161201-000000.dat"
)


def test_real_loggernet_file():
    t = read_toa5(SAMPLE)
    assert len(t) == 11_520 and t.issues == [] and t.crlf
    assert t.header.format == "TOA5" and t.header.table_name == "Rotronics_HC2S3"
    assert t.header.environment[:3] == ("CR1000 - IP", "CR1000", "E2948")
    assert t.header.fields[:3] == ("TIMESTAMP", "RECORD", "AirTemp_HC2S3_S01")
    assert t.header.units[:2] == ("TS", "RN") and len(t.header.processing) == 10
    assert t.ts[0] == to_ns("2016-12-01 00:00:00") and t.ts[-1] == to_ns("2016-12-04 23:59:30")
    assert set(np.diff(t.ts)) == {30 * 10**9}
    assert t.row(0) == (
        b'"2016-12-01 00:00:00",381351,-1.849705,53.04319,-1.934711,52.26115,'
        b"-2.104721,51.93812,-2.206726,51.90412"
    )
    assert t.lines[0] == 5 and t.lines[-1] == 11_524
    assert t.header.toa5_lines() == SAMPLE.read_bytes().split(b"\r\n")[:4]  # header kept as is
    assert t.data == SAMPLE.read_bytes()  # the original bytes, untouched


def test_lf_and_crlf_read_alike():
    rows = series("2026-11-20 00:00:05", 5, 50)
    crlf, lf = read_toa5(toa5(rows)), read_toa5(toa5(rows, eol=b"\n"))
    assert crlf.crlf and not lf.crlf
    assert np.array_equal(crlf.ts, lf.ts)
    assert [crlf.row(i) for i in range(50)] == [lf.row(i) for i in range(50)] == rows


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-20 00:00:00.05", "2026-11-20 00:00:00.05"),
        ("2026-11-20 00:00:00.1", "2026-11-20 00:00:00.1"),
        ("2026-11-20 00:00:01", "2026-11-20 00:00:01"),
        ("2026-11-20 00:00:00.123456789", "2026-11-20 00:00:00.123456789"),
    ],
)
def test_variable_fraction_width(text, expected):
    t = read_toa5(toa5([f'"{text}",1,1,2,3'.encode()]))
    assert format_toa5(t.ts, quoted=False) == [expected.encode()]


def test_nan_values_are_kept_as_written():
    t = read_toa5(toa5([b'"2026-11-20 00:30:00",7,"NAN",50.5,"NAN"']))
    assert t.issues == [] and t.row(0) == b'"2026-11-20 00:30:00",7,"NAN",50.5,"NAN"'


def test_a_quoted_comma_is_not_a_column():
    header = [*HEADER[:1], b'"TIMESTAMP","RECORD","Note"', b'"TS","RN",""', b'"","",""']
    t = read_toa5(toa5([b'"2026-11-20 00:30:00",1,"a, b"'], header=header))
    assert t.issues == [] and len(t) == 1


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        (b"", None, "empty file"),
        (b'"TOA5","x"\r\n"TIMESTAMP"\r\n', 3, "header ends early"),
        (b'"TOB9","x"\r\n' + b"\r\n".join(HEADER[1:]) + b"\r\n", 1, "not a TOA5 file"),
        (b"\r\n".join([HEADER[0], b'"RECORD","TIMESTAMP"', *HEADER[2:]]) + b"\r\n", 2, "TIMESTAMP"),
        (b"\r\n".join([*HEADER[:2], b'"TS","RN"', HEADER[3]]) + b"\r\n", 3, "2 header values"),
        (b"\r\n".join([*HEADER, b"garbage", b"\x00\x00\x00"]) + b"\r\n", 5, "no readable data row"),
    ],
)
def test_unreadable_files_say_where_and_why(data, line, reason):
    with pytest.raises(UnreadableFragment) as exc:
        read_toa5(data, "frag.dat")
    assert exc.value.source == "frag.dat" and exc.value.line == line
    assert reason in exc.value.reason


def test_bad_lines_are_named_and_left_out():
    rows = series("2026-11-20 00:00:30", 30, 10)
    rows[2] = b"\x00\x00\x00garbage"
    rows[4] = b'"2026-11-20 00:02:30",5,1.5'  # too few columns
    rows[6] = b'"2026-02-30 00:03:30",7,1,2,3'  # no such day
    rows[7] = b""
    data = toa5(rows)[:-6]  # the last row loses its end: being written when collected
    t = read_toa5(data, "frag.dat")
    assert len(t) == 5
    by_line = {i.line: (i.level, i.message) for i in t.issues}
    assert by_line[7][0] == "error" and "unparsable timestamp" in by_line[7][1]
    assert by_line[9] == ("error", "3 values, expected 5: row not used")
    assert by_line[11][0] == "error" and "2026-02-30" in by_line[11][1]
    assert by_line[12] == ("warning", "empty line: row not used")
    assert by_line[14][0] == "warning" and "truncated last line" in by_line[14][1]
    assert all(str(i).startswith("frag.dat:") for i in t.issues)
    assert list(t.lines) == [5, 6, 8, 10, 13]


def test_clock_going_back_is_reported():
    rows = series("2026-11-20 00:00:30", 30, 5)
    rows[3], rows[2] = rows[2], rows[3]
    t = read_toa5(toa5(rows), "f.dat")
    (issue,) = t.issues
    assert issue.line == 8 and "clock went back" in issue.message and len(t) == 5


def test_released_rows_are_read_back_and_a_changed_file_is_refused(tmp_path):
    from stationflow.formats.table import SourceChanged

    path = tmp_path / "f.dat"
    rows = series("2026-11-20 00:00:30", 30, 5)
    path.write_bytes(toa5(rows))
    t = read_toa5(path.read_bytes(), str(path))
    t.release(path)
    assert t.data == b"" and t.row(3) == rows[3]  # from the file, not from memory
    t.close()
    path.write_bytes(toa5(rows) + rows[0] + b"\r\n")  # appended after it was read
    with pytest.raises(SourceChanged, match="changed since it was read"):
        t.row(0)


def test_an_impossible_date_alone_is_still_named():
    rows = series("2026-11-20 00:00:30", 30, 4)
    rows[1] = b'"2026-02-30 00:01:00",2,1,2,3'  # well formed, but no such day
    t = read_toa5(toa5(rows), "f.dat")
    assert len(t) == 3 and [(i.level, i.line) for i in t.issues] == [("error", 6)]
