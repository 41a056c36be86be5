"""LI-COR SmartFlux .ghg reader: a real (trimmed) archive and archives built in the test."""

from __future__ import annotations

import io
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from stationflow.formats.ghg import read_ghg
from stationflow.formats.table import UnreadableFragment
from stationflow.formats.timestamps import NS, format_toa5, parse_quoted, to_ns

FIXTURE = (
    Path(__file__).resolve().parents[2]
    / "fixtures"
    / "loggers"
    / "ghg"
    / "2016-12-11T200000_AIU-1359.ghg"
)
STEM = "2016-12-11T200000_AIU-1359"
MS = 1_000_000

# line 9 of the fixture's .data (its first DATA row), tabs written as commas by hand
FIRST_ROW = (
    b'"2016-12-11 20:00:00",1481482800,0,291039717,8191,1,"2016-12-11","20:00:00:000",'
    b"0.0820202,0.0333157,16.0021,704.093,250.326,4.50587,6.47052,95.9696,99.433,"
    b"-3.46342,-3.80697,-0.379826,0.596513,339.476,1.9027,0,388.976,391.357,6.08488,"
    b"6.12213,-0.678984,7.4873,10.2986,6.78448,102.157,102.234,102.08,0.154352,2.5,"
    b"2.71163,3.7577,12.0537,100,39670,43857,37647,37720,6,10.5864,140"
)

HEADER = (
    b"Model:\tLI-7200 Enclosed CO2/H2O Analyzer\n"
    b"SN:\t72H-0616\n"
    b"Instrument:\tAIU-1359\n"
    b"File Type:\t2\n"
    b"Software Version:\t8.0.0\n"
    b"Timestamp:\t20:00:00\n"
    b"Timezone:\tEurope/Berlin\n"
)
METADATA = (
    b";GHG_METADATA\n[Station]\nstation_name=Test_Site\nlogger_id=AIU-0001\n"
    b"[Timing]\nacquisition_frequency=20.0\nfile_duration=30\n"
)


def ghg(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


def small(data_lines: list[bytes], metadata: bytes = METADATA, *, end: bytes = b"\n") -> bytes:
    """A .ghg with the real header lines and a short DATAH."""
    datah = b"DATAH\tSeconds\tNanoseconds\tDate\tTime\tCO2 (umol/mol)\tNote\tCHK"
    data = HEADER + datah + b"\n" + b"\n".join(data_lines) + end
    return ghg({f"{STEM}.data": data, f"{STEM}.metadata": metadata})


def row(ns: int, co2: str = "388.976", note: str = "ok", chk: str = " 28", sec: int = 0) -> bytes:
    s = 1481482800 + sec
    ms = ns // MS
    return f"DATA\t{s}\t{ns}\t2016-12-11\t20:00:{sec:02d}:{ms:03d}\t{co2}\t{note}\t{chk}".encode()


@pytest.fixture(scope="module")
def table():
    return read_ghg(FIXTURE, utc_offset_hours=1)


def test_fixture_is_small_and_real():
    assert FIXTURE.stat().st_size < 500_000
    with zipfile.ZipFile(FIXTURE) as z:
        assert sorted(z.namelist()) == [f"{STEM}.data", f"{STEM}.metadata"]
        data = z.read(f"{STEM}.data")
    assert b"\t 28\n" in data  # padded values, to be stripped
    assert not data.endswith(b"\n")  # SmartFlux writes no line end after the last row


def test_fixture_rows_and_times(table):
    assert len(table) == 2400
    assert table.ts.dtype == np.int64
    assert table.ts[0] == to_ns("2016-12-11 20:00:00")  # 19:00 UTC + 1 h, period start
    assert table.ts[-1] == to_ns("2016-12-11 20:01:59.95")
    assert set(np.diff(table.ts).tolist()) == {50 * MS}
    assert table.lines[0] == 9 and table.lines[-1] == 2408  # 7 header lines + DATAH
    assert table.issues == []
    assert table.crlf


def test_fixture_header(table):
    h = table.header
    assert h.format == "GHG"
    assert h.stamping == "start"
    assert h.declared_interval_ns == 50 * MS
    assert h.environment == (
        "Measurement_Site",
        "LI-7200 Enclosed CO2/H2O Analyzer",
        "72H-0616",
        "8.0.0",
        "",
        "",
        "AIU-1359",
    )
    assert h.table_name == "AIU-1359"
    assert h.fields[:8] == (
        "TIMESTAMP",
        "Seconds",
        "Nanoseconds",
        "Sequence Number",
        "Diagnostic Value",
        "Diagnostic Value 2",
        "Date",
        "Time",
    )
    assert {"CO2 (umol/mol)", "CO2 dry(umol/mol)", "CO2 (mmol/m^3)"} <= set(h.fields)
    assert h.fields[-1] == "CHK" and len(h.fields) == 48
    assert h.units == ("TS",) + ("",) * 47
    assert h.processing == ("",) * 48
    assert h.raw.startswith(b"Model:\tLI-7200")
    assert b"Timezone:\tEurope/Berlin\n" in h.raw  # kept, though deliberately not used
    assert b"DATAH\tSeconds\tNanoseconds\t" in h.raw
    assert b"[Timing]\nacquisition_frequency=20.0" in h.raw


def test_fixture_rendering(table):
    assert table.row(0) == FIRST_ROW
    assert table.row(1).startswith(b'"2016-12-11 20:00:00.05",1481482800,50000000,')
    assert b',"2016-12-11","20:00:00:050",' in table.row(1)
    last = table.row(len(table) - 1)
    assert last.startswith(b'"2016-12-11 20:01:59.95",1481482919,950000000,')
    assert last.endswith(b",10.5864,239")  # the row after which the file has no line end
    for i in range(len(table)):
        values = table.row(i).split(b",")
        assert len(values) == 48
        assert values[6].startswith(b'"2016-12-') and values[7].startswith(b'"20:0')
        assert b" " not in b"".join(values[1:])  # padding (the CHK column) is stripped
        assert not values[-1].startswith(b'"')


def test_fixture_offsets_and_timestamps_agree(table):
    data = table.data
    assert data.endswith(b"\r\n") and data.count(b"\r\n") == len(table)
    assert (table.starts[1:] == table.ends[:-1] + 2).all()
    buf = np.frombuffer(data, dtype=np.uint8)
    assert (buf[table.ends] == 13).all() and (buf[table.ends + 1] == 10).all()
    ns, ok, _ = parse_quoted(buf, table.starts, table.ends)
    assert ok.all() and (ns == table.ts).all()
    stamps = [table.row(i)[: table.row(i).index(b",")] for i in range(len(table))]
    assert stamps == format_toa5(table.ts)


def test_offset_shifts_by_exactly_an_hour():
    utc = read_ghg(FIXTURE, utc_offset_hours=0)
    cet = read_ghg(FIXTURE.read_bytes(), utc_offset_hours=1.0)
    assert ((cet.ts - utc.ts) == 3600 * NS).all()
    assert utc.row(0).startswith(b'"2016-12-11 19:00:00",1481482800,0,')
    assert utc.row(0)[utc.row(0).index(b",") :] == cet.row(0)[cet.row(0).index(b",") :]
    assert read_ghg(FIXTURE, utc_offset_hours=5.75).ts[0] == to_ns("2016-12-12 00:45:00")


def test_source_names():
    assert read_ghg(FIXTURE, utc_offset_hours=1).source == str(FIXTURE)
    assert read_ghg(FIXTURE.read_bytes(), utc_offset_hours=1).source == "<bytes>"
    assert read_ghg(str(FIXTURE), utc_offset_hours=1, source="x.ghg").source == "x.ghg"


def test_values_numbers_unquoted_text_quoted():
    t = read_ghg(
        small(
            [
                row(0, co2="nan", note='say "hi"', chk="  7"),
                row(50 * MS, co2="-1.5e-3", note=" a b ", chk="12 "),
                row(100 * MS, co2="+5", note="", chk="3"),
                row(1, co2=".5", note="1-2", chk="4", sec=1),
            ]
        ),
        utc_offset_hours=1,
    )
    assert [t.row(i) for i in range(len(t))] == [
        b'"2016-12-11 20:00:00",1481482800,0,"2016-12-11","20:00:00:000","nan","say ""hi""",7',
        b'"2016-12-11 20:00:00.05",1481482800,50000000,"2016-12-11","20:00:00:050",-1.5e-3,'
        b'"a b",12',
        b'"2016-12-11 20:00:00.1",1481482800,100000000,"2016-12-11","20:00:00:100",+5,"",3',
        b'"2016-12-11 20:00:01.000000001",1481482801,1,"2016-12-11","20:00:01:000",.5,"1-2",4',
    ]
    assert t.header.fields == (
        "TIMESTAMP",
        "Seconds",
        "Nanoseconds",
        "Date",
        "Time",
        "CO2 (umol/mol)",
        "Note",
        "CHK",
    )
    assert t.header.environment[0] == "Test_Site" and t.header.table_name == "AIU-0001"
    assert t.issues == []


def test_broken_rows_are_skipped_and_named():
    good = [row(k * 50 * MS) for k in range(6)]
    lines = [
        good[0],  # line 9
        good[1].rsplit(b"\t", 1)[0],  # line 10: a value short
        good[2].replace(b"\t1481482800\t", b"\t14814828x0\t"),  # line 11: bad Seconds
        b"",  # line 12: empty
        good[3],  # line 13
        b"garbage",  # line 14
        good[4],  # line 15
        good[5].replace(b"\t250000000\t", b"\t2500000000\t"),  # line 16: 10-digit ns
        good[5][:40],  # line 17: truncated, no line end
    ]
    t = read_ghg(small(lines, end=b""), utc_offset_hours=1)
    assert len(t) == 3
    assert t.lines.tolist() == [9, 13, 15]
    assert t.ts.tolist() == [to_ns(f"2016-12-11 20:00:00.{ms:03d}") for ms in (0, 150, 200)]
    found = {(i.line, i.level) for i in t.issues}
    assert found == {
        (10, "error"),
        (11, "error"),
        (12, "warning"),
        (14, "error"),
        (16, "error"),
        (17, "warning"),
    }
    by_line = {i.line: i.message for i in t.issues}
    assert "6 values, DATAH names 7" in by_line[10]
    assert "Seconds/Nanoseconds" in by_line[11] and "Seconds/Nanoseconds" in by_line[16]
    assert "truncated last row" in by_line[17]
    assert all(i.source == "<bytes>" for i in t.issues)
    assert str(t.issues[0]).startswith("<bytes>:10: ")
    # the rows kept render as if the bad ones had never been there
    assert t.data.count(b"\r\n") == 3 and t.row(2).endswith(b",28")


def test_complete_last_row_without_line_end_is_kept():
    t = read_ghg(small([row(0), row(50 * MS)], end=b""), utc_offset_hours=1)
    assert len(t) == 2 and t.issues == []
    t = read_ghg(small([row(0), row(50 * MS)], end=b"\r\n"), utc_offset_hours=1)
    assert len(t) == 2 and t.issues == []


def test_crlf_data_member():
    t = read_ghg(small([row(0), row(50 * MS)]), utc_offset_hours=1)
    data = HEADER + b"DATAH\tSeconds\tNanoseconds\tDate\tTime\tCO2 (umol/mol)\tNote\tCHK\n"
    data = data.replace(b"\n", b"\r\n") + row(0) + b"\r\n" + row(50 * MS) + b"\r\n"
    crlf = read_ghg(ghg({f"{STEM}.data": data, f"{STEM}.metadata": METADATA}), utc_offset_hours=1)
    assert crlf.data == t.data and crlf.lines.tolist() == [9, 10]
    assert crlf.header.environment[1] == "LI-7200 Enclosed CO2/H2O Analyzer"


def test_clock_going_back_is_a_warning():
    t = read_ghg(small([row(0), row(100 * MS), row(50 * MS)]), utc_offset_hours=1)
    assert len(t) == 3
    assert [(i.level, i.line) for i in t.issues] == [("warning", 11)]
    assert "clock went back" in t.issues[0].message


@pytest.mark.parametrize(("hz", "ns"), [("20.0", 50 * MS), ("10", 100 * MS), ("5.0", 200 * MS)])
def test_declared_interval(hz, ns):
    meta = METADATA.replace(b"acquisition_frequency=20.0", b"acquisition_frequency=" + hz.encode())
    t = read_ghg(small([row(0)], meta), utc_offset_hours=1)
    assert t.header.declared_interval_ns == ns


def test_missing_frequency_is_a_warning():
    meta = METADATA.replace(b"acquisition_frequency=20.0\n", b"")
    t = read_ghg(small([row(0)], meta), utc_offset_hours=1)
    assert t.header.declared_interval_ns is None
    assert [(i.level, i.line) for i in t.issues] == [("warning", None)]


def test_biomet_members_are_not_the_data():
    data = HEADER + b"DATAH\tSeconds\tNanoseconds\tDate\tTime\tCO2 (umol/mol)\tNote\tCHK\n" + row(0)
    blob = ghg(
        {
            f"{STEM}.data": data,
            f"{STEM}.metadata": METADATA,
            f"{STEM}-biomet.data": b"DATAH\tSeconds\tNanoseconds\tTA_1_1_1\n",
            f"{STEM}-biomet.metadata": b";GHG_METADATA\n",
        }
    )
    assert len(read_ghg(blob, utc_offset_hours=1)) == 1


def test_header_only_file_has_no_rows():
    t = read_ghg(small([], end=b""), utc_offset_hours=1)
    assert len(t) == 0 and t.data == b"" and t.issues == []
    assert t.header.fields[:3] == ("TIMESTAMP", "Seconds", "Nanoseconds")


def unreadable(blob: bytes) -> UnreadableFragment:
    with pytest.raises(UnreadableFragment) as info:
        read_ghg(blob, utc_offset_hours=1, source="x.ghg")
    assert info.value.source == "x.ghg"
    return info.value


def test_not_a_zip():
    assert "not a zip archive" in unreadable(b'"TOA5","station"\r\n').reason


def test_empty_file(tmp_path):
    assert "empty" in unreadable(b"").reason
    empty = tmp_path / "empty.ghg"
    empty.write_bytes(b"")
    with pytest.raises(UnreadableFragment):
        read_ghg(empty, utc_offset_hours=1)


def test_truncated_zip():
    blob = FIXTURE.read_bytes()
    assert "truncated or corrupt" in unreadable(blob[: len(blob) // 2]).reason


def test_crc_error():
    payload = HEADER + b"DATAH\tSeconds\tNanoseconds\n" + b"DATA\t1481482800\t0\n" * 50
    blob = bytearray(
        ghg({f"{STEM}.data": payload, f"{STEM}.metadata": METADATA}, zipfile.ZIP_STORED)
    )
    at = blob.index(b"DATA\t1481482800\t0\n" * 3)
    blob[at + 5] = ord("2")  # 1481482800 -> 2481482800: same length, wrong CRC-32
    assert "corrupt zip archive" in unreadable(bytes(blob)).reason


def test_zip_without_data_member():
    reason = unreadable(ghg({f"{STEM}.metadata": METADATA})).reason
    assert "expected one .data member, found 0" in reason


def test_zip_without_metadata_member():
    reason = unreadable(ghg({f"{STEM}.data": HEADER})).reason
    assert "expected one .metadata member, found 0" in reason


def test_zip_with_two_data_members():
    blob = ghg({"a.data": b"", "b.data": b"", "a.metadata": METADATA})
    assert "found 2" in unreadable(blob).reason


def test_no_datah_line():
    blob = ghg({f"{STEM}.data": HEADER + row(0) + b"\n", f"{STEM}.metadata": METADATA})
    assert "no DATAH" in unreadable(blob).reason


def test_no_usable_row():
    err = unreadable(small([b"garbage", b"DATA\t1\t2"]))
    assert err.reason == "no readable DATA row" and err.line == 9


def test_bad_metadata():
    blob = ghg({f"{STEM}.data": HEADER, f"{STEM}.metadata": b"acquisition_frequency=20\n"})
    assert ".metadata" in unreadable(blob).reason


def test_unreasonable_offset():
    with pytest.raises(ValueError):
        read_ghg(FIXTURE, utc_offset_hours=float("nan"))


NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def reference_row(line: str, ts: int) -> bytes:
    """The rendering rule, one value at a time: strip, numbers as is, the rest quoted."""
    out = [format_toa5(np.array([ts]))[0].decode()]
    for value in (v.strip(" ") for v in line.split("\t")[1:]):
        number = NUMBER.fullmatch(value) is not None
        out.append(value if number else '"' + value.replace('"', '""') + '"')
    return ",".join(out).encode()


def test_rendering_matches_a_value_by_value_reference():
    rng = random.Random(7)  # noqa: S311 - test data
    pool = ["1", "-2.5", "3e5", "-1E-05", "+7", ".5", "1.", "0", "  12", "4  ", " 8 "]
    pool += ["nan", "NAN", "inf", "", " ", "a b", 'q"x', "2016-12-11", "20:00:00:000", "1e", "-"]
    for _ in range(40):
        names = ["Seconds", "Nanoseconds", *(f"v{i}" for i in range(rng.randint(1, 6)))]
        rng.shuffle(names)
        lines, stamps = [], []
        for r in range(rng.randint(1, 20)):
            sec, ns = 1481482800 + r, rng.choice([0, 1, 50 * MS, 123_456_789, 999_999_999])
            values = {"Seconds": str(sec), "Nanoseconds": str(ns)}
            lines.append("\t".join(["DATA", *(values.get(n) or rng.choice(pool) for n in names)]))
            stamps.append(sec * NS + ns + 3600 * NS)
        data = HEADER + ("\t".join(["DATAH", *names]) + "\n" + "\n".join(lines)).encode()
        t = read_ghg(ghg({"a.data": data, "a.metadata": METADATA}), utc_offset_hours=1)
        assert t.issues == [] and t.ts.tolist() == stamps
        assert [t.row(i) for i in range(len(t))] == [
            reference_row(line, ts) for line, ts in zip(lines, stamps, strict=True)
        ]
