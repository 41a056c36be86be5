"""Bad-input suite: every reader fed mutated real files (hypothesis).

Seeds are the real sample files (a TOA5 .dat, a SmartFlux .ghg, the Whale API answers) and
a TOB1 file built with ``tob1_writer``. Hypothesis cuts, flips, inserts, deletes, duplicates
and drops bytes and lines, mangles header lines, puts huge numbers and non-UTF-8 bytes into
values and, for the Whale JSON, removes, retypes and wrongly nests fields.

The property: a reader either returns a sane result, or raises its own documented error
(``UnreadableFragment`` for logger files, ``WhaleFormatError`` for Whale documents) whose
message names the source it was given. Any other exception (IndexError, struct.error,
UnicodeDecodeError, a numpy ValueError, ...) is a crash, and fails the test.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from stationflow.collect.whale import _last_sample
from stationflow.formats import whale
from stationflow.formats.detect import read_any
from stationflow.formats.ghg import read_ghg
from stationflow.formats.table import Table, UnreadableFragment
from stationflow.formats.timestamps import NS, parse_quoted
from stationflow.formats.toa5 import read_toa5
from stationflow.formats.tob1 import read_tob1
from tests.unit.formats.tob1_writer import Column, time_columns
from tests.unit.formats.tob1_writer import tob1 as make_tob1

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SIM_DATA = Path(__file__).resolve().parents[3] / "include" / "stationflow" / "sim" / "data"
TOA5_FILE = FIXTURES / "loggers" / "CampbellScientific_HC2S3_20161201-000000.dat"
GHG_FILE = FIXTURES / "loggers" / "ghg" / "2016-12-11T200000_AIU-1359.ghg"
SMARTEMISSION = FIXTURES / "smartemission"

# FUZZ_SCALE=20 pytest ... fuzzes 20 times longer (and differently: not derandomized)
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))
FUZZ = settings(
    max_examples=150 * SCALE,
    deadline=None,
    database=None,
    derandomize=SCALE == 1,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# what a mangled value may become: huge numbers, non-UTF-8, NUL, quotes, bad timestamps
NASTY_VALUES = [
    b"",
    b'""',
    b'"',
    b"9" * 400,
    b"-9" * 200,
    b"1e999999",
    b"-1E-999999",
    b"NaN",
    b'"NAN"',
    b"inf",
    b"\xff\xfe\x80",
    b"\x00",
    b"\r",
    b"\t",
    b'"a,b"',
    b'"a""b"',
    b"\xef\xbb\xbf",
    b'"2016-02-30 00:00:00"',
    b'"2016-13-01 00:00:00"',
    b'"1899-12-31 23:59:59"',
    b'"9999-12-31 23:59:59.999999999"',
    b'"2262-04-11 23:47:16.854775807"',
    b'"2016-12-01 24:00:00"',
    b'"2016-12-01 00:00:00.1234567890"',
    b'"2016-12-01 00:00:00."',
    b'"2016-12-01T00:00:00"',
    b"18446744073709551616",
    b"4294967295",
    b"-1",
]


# ----------------------------------------------------------------------------- mutations


def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _truncate(draw: st.DrawFn, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data)))]


def _flip(draw: st.DrawFn, data: bytes) -> bytes:
    if not data:
        return data
    i = draw(st.integers(0, len(data) - 1))
    return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1 :]


def _insert(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data)))
    extra = draw(st.one_of(st.binary(min_size=1, max_size=16), st.sampled_from(NASTY_VALUES)))
    return data[:i] + extra + data[i:]


def _delete(draw: st.DrawFn, data: bytes) -> bytes:
    i = draw(st.integers(0, len(data)))
    return data[:i] + data[i + draw(st.integers(1, 64)) :]


def _duplicate_line(draw: st.DrawFn, data: bytes) -> bytes:
    lines = _lines(data)
    if not lines:
        return data
    i = draw(st.integers(0, len(lines) - 1))
    return b"".join(lines[: i + 1] + lines[i:])


def _remove_line(draw: st.DrawFn, data: bytes) -> bytes:
    lines = _lines(data)
    if not lines:
        return data
    i = draw(st.integers(0, len(lines) - 1))
    return b"".join(lines[:i] + lines[i + 1 :])


def _swap_lines(draw: st.DrawFn, data: bytes) -> bytes:
    lines = _lines(data)
    if len(lines) < 2:
        return data
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    return b"".join(lines)


def _line_ends(draw: st.DrawFn, data: bytes) -> bytes:
    """CRLF to LF, LF to CRLF, or to a lone CR."""
    old, new = draw(st.sampled_from([(b"\r\n", b"\n"), (b"\n", b"\r\n"), (b"\r\n", b"\r")]))
    return data.replace(old, new)


def _mangle_fields(draw: st.DrawFn, line: bytes, sep: bytes) -> bytes:
    """One field of a line replaced, removed, duplicated or unquoted; or a field added."""
    end = line[len(line.rstrip(b"\r\n")) :]
    fields = line[: len(line) - len(end)].split(sep)
    i = draw(st.integers(0, len(fields) - 1))
    how = draw(st.sampled_from(["replace", "remove", "duplicate", "unquote", "add", "random"]))
    if how == "replace":
        fields[i] = draw(st.sampled_from(NASTY_VALUES))
    elif how == "remove":
        del fields[i]
    elif how == "duplicate":
        fields.insert(i, fields[i])
    elif how == "unquote":
        fields[i] = fields[i].replace(b'"', b"")
    elif how == "add":
        fields.insert(i, draw(st.sampled_from([b'"x"', b"1", b"", b'"TIMESTAMP"'])))
    else:
        fields[i] = draw(st.binary(max_size=24))
    return sep.join(fields) + end


def _mangle_header(header_lines: int, sep: bytes):
    def op(draw: st.DrawFn, data: bytes) -> bytes:
        lines = _lines(data)
        if not lines:
            return data
        i = draw(st.integers(0, min(header_lines, len(lines)) - 1))
        lines[i] = _mangle_fields(draw, lines[i], sep)
        return b"".join(lines)

    return op


def _mangle_value(sep: bytes):
    """A field of any line (a data row, mostly) replaced or dropped."""

    def op(draw: st.DrawFn, data: bytes) -> bytes:
        lines = _lines(data)
        if not lines:
            return data
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = _mangle_fields(draw, lines[i], sep)
        return b"".join(lines)

    return op


BYTE_OPS = [_truncate, _flip, _insert, _delete]
LINE_OPS = [_duplicate_line, _remove_line, _swap_lines, _line_ends]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes], ops: list[Callable]) -> bytes:
    """A seed after 1 to 4 mutations; now and then random bytes or nothing at all."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return b""
    if kind == 1:
        return draw(st.binary(max_size=512))
    data = draw(st.sampled_from(seeds))
    for op in draw(st.lists(st.sampled_from(ops), min_size=1, max_size=4)):
        data = op(draw, data)
    return data


# ----------------------------------------------------------------------------- seeds


@cache
def toa5_seeds() -> list[bytes]:
    """The real file's header and first rows (CRLF, as the logger writes), also as LF."""
    lines = _lines(TOA5_FILE.read_bytes())
    head = b"".join(lines[:40])
    return [head, head.replace(b"\r\n", b"\n"), b"".join(lines[:4])]


@cache
def tob1_seeds() -> list[bytes]:
    n = 6
    times, _ = time_columns("2026-11-20 00:30:00", n, NS // 20)
    columns = [
        *times,
        Column("RECORD", "ULONG", list(range(42, 42 + n)), "RN", ""),
        Column("Ux", "IEEE4", [1.1, np.nan, -np.inf, 0.0, 3e38, -1e-30], "m/s"),
        Column("Ts", "FP2", [23.45, -0.001, np.nan, np.inf, 7.999, -1.0], "C", "Avg"),
        Column("diag", "LONG", [-3, 0, 2_147_483_647, -(2**31), 1, 2]),
        Column("flag", "BOOL", [True, False, True, False, True, False]),
        Column("msg", "ASCII(8)", ["ok", 'say "hi"', "", "12345678", "\n", ","]),
        Column("P", "IEEE8", [0.1, 1e-7, 1e21, np.nan, -0.0, 1e308], "kPa"),
    ]
    full = make_tob1(columns)
    lf = full.replace(b"\r\n", b"\n", 5)
    return [full, lf, make_tob1([c for c in columns if c.type != "ASCII(8)"])]


TOB1_TYPE_NAMES = [
    b'"IEEE4"',
    b'"FP2"',
    b'"ASCII(0)"',
    b'"ASCII(999999999999)"',
    b'"ASCII(99999999999999999999999)"',
    b'"ASCII(-1)"',
    b'"SecNano"',
    b'"NSec"',
    b'"ULONG"',
    b'"BOOL4"',
    b'"IEEE8B"',
    b'"FOO"',
]


def _tob1_types(draw: st.DrawFn, data: bytes) -> bytes:
    """A data type on header line 5 changed (to a known, unknown or absurd one)."""
    lines = data.split(b"\n", 5)
    if len(lines) < 6:
        return data
    types = lines[4].rstrip(b"\r").split(b",")
    types[draw(st.integers(0, len(types) - 1))] = draw(st.sampled_from(TOB1_TYPE_NAMES))
    lines[4] = b",".join(types) + (b"\r" if lines[4].endswith(b"\r") else b"")
    return b"\n".join(lines)


@cache
def ghg_members() -> tuple[str, bytes, bytes]:
    """The real archive's stem, its .data cut to 40 lines, and its .metadata."""
    with zipfile.ZipFile(GHG_FILE) as z:
        names = z.namelist()
        data_name = next(n for n in names if n.endswith(".data") and "biomet" not in n)
        meta_name = next(n for n in names if n.endswith(".metadata") and "biomet" not in n)
        data, meta = z.read(data_name), z.read(meta_name)
    head = b"".join(_lines(data)[:40]).rstrip(b"\n")  # SmartFlux: no line end after the last
    return data_name[: -len(".data")], head, meta


def zip_members(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


@cache
def ghg_seeds() -> list[bytes]:
    stem, data, meta = ghg_members()
    members = {f"{stem}.data": data, f"{stem}.metadata": meta}
    return [zip_members(members), zip_members(members, zipfile.ZIP_DEFLATED)]


@st.composite
def ghg_archives(draw: st.DrawFn) -> bytes:
    """Mutated archives: the zip bytes themselves, or a mutated member zipped again."""
    stem, data, meta = ghg_members()
    where = draw(st.sampled_from(["zip", "data", "data", "metadata", "names"]))
    if where == "zip":
        return draw(mutated(ghg_seeds(), BYTE_OPS))
    if where == "data":
        ops = [*BYTE_OPS, *LINE_OPS, _mangle_value(b"\t"), _mangle_header(9, b"\t")]
        data = draw(mutated([data], ops))
    elif where == "metadata":
        meta = draw(mutated([meta], [*BYTE_OPS, *LINE_OPS, _mangle_value(b"=")]))
    members = {f"{stem}.data": data, f"{stem}.metadata": meta}
    if where == "names":
        names = draw(
            st.lists(
                st.sampled_from(
                    [
                        f"{stem}.data",
                        f"{stem}.metadata",
                        f"{stem}-biomet.data",
                        "x.DATA",
                        "dir/",
                        "other.metadata",
                    ]
                ),
                max_size=4,
                unique=True,
            )
        )
        members = {name: draw(st.sampled_from([data, meta, b""])) for name in names}
    return zip_members(members, draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])))


# ----------------------------------------------------------------------------- the property


def read_or_refuse(read: Callable[[], Table], source: str) -> Table | None:
    """The reader's result, or None when it refused with an error naming ``source``.

    Only ``UnreadableFragment`` is caught: any other exception fails the test.
    """
    try:
        table = read()
    except UnreadableFragment as exc:
        assert exc.source == source
        assert source in str(exc), str(exc)
        event(f"refused: {exc.reason[:24]}")
        return None
    event("read, rows" if len(table) else "read, no rows")
    return table


def check_table(table: Table, source: str) -> None:
    """What every returned Table promises, whatever the input was."""
    n = len(table)
    assert n >= 0
    assert table.source == source
    for a in (table.starts, table.ends, table.ts, table.lines):
        assert len(a) == n
        assert np.issubdtype(a.dtype, np.integer)
    h = table.header
    assert h.fields[:1] == ("TIMESTAMP",)
    assert len(h.units) == len(h.fields) == len(h.processing)
    assert all(issue.source == source for issue in table.issues)
    if n == 0:
        return
    assert (table.starts >= 0).all() and (table.starts <= table.ends).all()
    assert (table.ends <= len(table.data)).all()
    assert (table.lines >= 1).all() and (np.diff(table.lines) > 0).all()
    # every kept row opens with a well-formed quoted timestamp: the one in table.ts
    buf = np.frombuffer(table.data, dtype=np.uint8)
    ts, ok, _ = parse_quoted(buf, table.starts, table.ends)
    assert ok.all(), [table.row(i) for i in np.flatnonzero(~ok)[:3]]
    assert (ts == table.ts).all()
    # TOB1 and .ghg rows are rendered: every one is a whole CRLF-terminated line
    if h.format != "TOA5":
        assert table.data[table.ends[-1] :] == b"\r\n"
        assert b"\r\n" not in table.row(0)


# ----------------------------------------------------------------------------- readers

TOA5_OPS = [*BYTE_OPS, *LINE_OPS, _mangle_header(4, b","), _mangle_value(b",")]


@FUZZ
@given(mutated(toa5_seeds(), TOA5_OPS))
def test_toa5_mutations_are_read_or_refused(data: bytes) -> None:
    source = "fuzz-FR-Lam.dat"
    table = read_or_refuse(lambda: read_toa5(data, source=source), source)
    if table is not None:
        check_table(table, source)
        assert table.data is data  # TOA5 rows are ranges of the file itself


def tob1_with_types(*types: bytes) -> bytes:
    """A header-only TOB1 file with the given data types after SECONDS and NANOSECONDS."""
    names = [b'"SECONDS"', b'"NANOSECONDS"', *(b'"v%d"' % i for i in range(len(types)))]
    empty = b",".join([b'""'] * len(names))
    lines = [
        b'"TOB1","FR-Lam"',
        b",".join(names),
        empty,
        empty,
        b'"ULONG","ULONG",' + b",".join(types),
    ]
    return b"".join(line + b"\r\n" for line in lines) + b"\x00" * 100


@FUZZ
@given(mutated(tob1_seeds(), [*BYTE_OPS, *LINE_OPS, _mangle_header(5, b","), _tob1_types]))
# found by this test: numpy raised ValueError for a width beyond a C int, and wrapped the
# record size of three 2 GB strings to a negative number
@example(tob1_with_types(b'"ASCII(999999999999)"'))
@example(tob1_with_types(*[b'"ASCII(2147483647)"'] * 3))
def test_tob1_mutations_are_read_or_refused(data: bytes) -> None:
    source = "fuzz-ts_data.dat"
    table = read_or_refuse(lambda: read_tob1(data, source=source), source)
    if table is not None:
        check_table(table, source)


def ghg_with_frequency(hz: bytes) -> bytes:
    stem, data, meta = ghg_members()
    meta = re.sub(rb"acquisition_frequency=[^\r\n]*", b"acquisition_frequency=" + hz, meta)
    return zip_members({f"{stem}.data": data, f"{stem}.metadata": meta})


@settings(FUZZ, max_examples=200 * SCALE)
@given(ghg_archives(), st.sampled_from([0.0, 1.0, -14.0, 5.75]))
# found by this test: round(1e9 / 1e-320) raised OverflowError
@example(ghg_with_frequency(b"1e-320"), 1.0)
@example(ghg_with_frequency(b"1e308"), 1.0)
def test_ghg_mutations_are_read_or_refused(blob: bytes, utc_offset_hours: float) -> None:
    source = "fuzz-2016-12-11T200000_AIU-1359.ghg"
    table = read_or_refuse(
        lambda: read_ghg(blob, utc_offset_hours=utc_offset_hours, source=source), source
    )
    if table is not None:
        check_table(table, source)


@st.composite
def any_logger_file(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["toa5", "tob1", "ghg", "prefix"]))
    if kind == "toa5":
        return draw(mutated(toa5_seeds(), BYTE_OPS))
    if kind == "tob1":
        return draw(mutated(tob1_seeds(), BYTE_OPS))
    if kind == "ghg":
        return draw(ghg_archives())
    # the sniffed bytes themselves: a magic cut short, or followed by anything
    magic = draw(st.sampled_from([b'"TOA5"', b'"TOB1"', b"PK\x03\x04", b'"TOA', b"PK"]))
    return magic + draw(st.binary(max_size=64))


@settings(FUZZ, max_examples=100 * SCALE)
@given(any_logger_file())
def test_detect_reads_or_refuses_anything(data: bytes) -> None:
    source = "fuzz-any.dat"
    table = read_or_refuse(lambda: read_any(data, source, utc_offset_hours=1.0), source)
    if table is not None:
        check_table(table, source)


# ----------------------------------------------------------------------------- Whale JSON

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["23", "2016-01-08", "20160108", "/sensors/v1/devices/23", "1e999"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON tree (keys of objects, indexes of lists), the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for step in path:
        doc = doc[step]
    return doc


@st.composite
def json_mutated(draw: st.DrawFn, seed: Any) -> Any:
    """The seed with 1 to 4 fields removed, retyped or wrapped in a list or object."""
    doc = json.loads(json.dumps(seed))  # a private deep copy
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(doc)))
        how = draw(st.sampled_from(["remove", "retype", "nest_list", "nest_obj"]))
        old = _get(doc, path)
        new = {
            "retype": lambda: draw(JSON_VALUES),
            "nest_list": lambda old=old: [old],
            "nest_obj": lambda old=old: {"value": old},
            "remove": lambda: None,
        }[how]()
        if not path:
            doc = new
            continue
        parent, last = _get(doc, path[:-1]), path[-1]
        if how == "remove":
            del parent[last]
        else:
            parent[last] = new
    return doc


@st.composite
def whale_bodies(draw: st.DrawFn, seed: Any) -> bytes:
    """JSON of a mutated document; now and then its bytes mutated too (invalid JSON)."""
    body = json.dumps(draw(json_mutated(seed))).encode()  # orjson refuses ints above 2**64
    if draw(st.integers(0, 3)) == 0:
        body = draw(mutated([body], BYTE_OPS))
    return body


@cache
def whale_hour() -> Any:
    """The simulator's real hour of device 23, cut to 3 samples."""
    doc = orjson.loads((SIM_DATA / "whale-hour.json").read_bytes())
    doc["timeseries"] = doc["timeseries"][:3]
    return doc


def whale_sample(name: str) -> Any:
    return orjson.loads((SMARTEMISSION / name).read_bytes())


def refused_or(call: Callable[[], Any], what: str) -> Any:
    """The call's result, or None when it raised ``WhaleFormatError`` naming ``what``."""
    try:
        return call()
    except whale.WhaleFormatError as exc:
        assert what in str(exc), str(exc)
        event("refused")
        return None


@settings(FUZZ, max_examples=200 * SCALE)
@given(whale_bodies(whale_hour()))
def test_whale_hour_document(body: bytes) -> None:
    what = "https://fuzz.example/sensors/v1/devices/23/timeseries/20160108/23"
    doc = refused_or(lambda: whale.hour_doc(body, 23, 20160108, 23, what), what)
    if doc is not None:
        assert doc.sample_count >= 0
        assert (doc.lon is None) == (doc.lat is None)
        for v in (doc.lon, doc.lat):
            assert v is None or (math.isfinite(v) and abs(v) <= 181)


@FUZZ
@given(whale_bodies(whale_sample("devices.json")))
def test_whale_device_list(body: bytes) -> None:
    what = "https://fuzz.example/sensors/v1/devices"
    ids = refused_or(lambda: whale.device_ids(body, what), what)
    assert ids is None or all(isinstance(i, int) for i in ids)


@FUZZ
@given(
    whale_bodies(whale_sample("timeseries.json")),
    whale_bodies(whale_sample("timeseries-hours.json")),
)
def test_whale_day_and_hour_listings(days_body: bytes, hours_body: bytes) -> None:
    what = "https://fuzz.example/sensors/v1/devices/23/timeseries"
    days = refused_or(lambda: whale.days(days_body, what), what)
    assert days is None or all(19700101 <= d <= 29991231 for d in days)
    hours = refused_or(lambda: whale.hours(hours_body, what), what)
    assert hours is None or all(isinstance(h, int) and 1 <= h <= 24 for h in hours)


@cache
def whale_last() -> Any:
    """A ``/devices/23/last`` answer: one real sample with its time."""
    sample = dict(whale_hour()["timeseries"][0])
    sample.update(id="23", time="2016-01-08T22:59:58.000Z")
    return sample


@FUZZ
@given(whale_bodies(whale_last()))
# found while writing this test: a time past 9999-12-31 raised OverflowError
@example(b'{"id": "23", "time": "9999-12-31T23:30:00-01:00"}')
@example(b'{"id": "23", "time": "0001-01-01T00:00:00+01:00"}')
def test_whale_last_sample(body: bytes) -> None:
    what = "https://fuzz.example/sensors/v1/devices/23/last"
    got = refused_or(lambda: _last_sample(body, 23, what), what)
    if got is not None:
        sample, at = got
        assert isinstance(sample, dict) and at.tzinfo is not None
