"""Register codec, poll slots, request planning and the spool TOA5 writer (no network)."""

from __future__ import annotations

import math
import os
from datetime import UTC, date, datetime, timedelta, timezone

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stationflow.collect.modbus import (
    INT_RANGES,
    append_row,
    closed_files,
    decode,
    encode,
    format_value,
    plan_requests,
    slot_ns,
    spool_path,
    toa5_header,
    write_poll,
)
from stationflow.config import ModbusRegister
from stationflow.formats.timestamps import to_ns
from stationflow.formats.toa5 import read_toa5

ORDERS = ("ABCD", "CDAB")
INT_TYPES = tuple(INT_RANGES)


def reg(data_type="float32", **kw) -> ModbusRegister:
    return ModbusRegister(
        name=kw.pop("name", "X"), address=kw.pop("address", 0), **kw, data_type=data_type
    )


# ----------------------------------------------------------------------------- codec


def test_12_5_as_abcd_and_cdab():
    assert encode(12.5, reg(), "ABCD") == [0x4148, 0x0000]
    assert encode(12.5, reg(), "CDAB") == [0x0000, 0x4148]
    assert decode([0x4148, 0x0000], reg(), "ABCD") == 12.5
    assert decode([0x0000, 0x4148], reg(), "CDAB") == 12.5
    # a register's own word order wins over the logger's
    assert encode(12.5, reg(word_order="ABCD"), "CDAB") == [0x4148, 0x0000]
    assert decode([0x4148, 0x0000], reg(word_order="ABCD"), "CDAB") == 12.5


def test_32_bit_integers_swap_words_16_bit_do_not():
    assert encode(0x12345678, reg("uint32"), "ABCD") == [0x1234, 0x5678]
    assert encode(0x12345678, reg("uint32"), "CDAB") == [0x5678, 0x1234]
    assert encode(-2, reg("int32"), "CDAB") == [0xFFFE, 0xFFFF]
    assert decode([0xFFFE, 0xFFFF], reg("int32"), "CDAB") == -2
    for order in ORDERS:
        assert encode(-2, reg("int16"), order) == [0xFFFE]
        assert decode([0xFFFE], reg("uint16"), order) == 65534


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("data_type", INT_TYPES)
@given(data=st.data())
def test_integers_round_trip(order, data_type, data):
    lo, hi = INT_RANGES[data_type]
    value = data.draw(st.integers(lo, hi))
    r = reg(data_type)
    regs = encode(value, r, order)
    assert len(regs) == r.count and all(0 <= x <= 0xFFFF for x in regs)
    assert decode(regs, r, order) == value


@pytest.mark.parametrize("order", ORDERS)
@given(value=st.floats(width=32, allow_nan=False))
def test_float32_round_trips(order, value):
    regs = encode(value, reg(), order)
    back = decode(regs, reg(), order)
    assert np.float32(back) == np.float32(value)  # the same float32 ...
    assert encode(back, reg(), order) == regs  # ... so the same registers


@pytest.mark.parametrize("order", ORDERS)
@given(words=st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2))
def test_any_float32_registers_decode_and_encode_back(order, words):
    value = decode(words, reg(), order)
    if math.isnan(value):
        assert math.isnan(decode(encode(value, reg(), order), reg(), order))
    else:
        assert encode(value, reg(), order) == words


@pytest.mark.parametrize("order", ORDERS)
def test_float32_is_the_shortest_text_and_nan_stays_nan(order):
    assert decode(encode(0.1, reg(), order), reg(), order) == 0.1  # not 0.10000000149...
    assert math.isnan(decode(encode(math.nan, reg(), order), reg(), order))
    assert decode(encode(-math.inf, reg(), order), reg(), order) == -math.inf


@pytest.mark.parametrize("order", ORDERS)
@given(raw=st.integers(-(2**15), 2**15 - 1))
def test_scale_and_offset_round_trip(order, raw):
    r = reg("int16", scale=0.01, offset=-5)
    value = decode(encode(raw * 0.01 - 5, r, order), r, order)
    assert value == float(f"{raw * 0.01 - 5:.15g}")
    assert encode(value, r, order) == encode(raw * 0.01 - 5, r, order)


def test_scale_and_offset_values():
    r = reg("int16", scale=0.01, unit="l/min")
    assert decode([123], r, "CDAB") == 1.23  # not 1.2300000000000002
    assert encode(1.23, r, "CDAB") == [123]
    r = reg("uint16", scale=0.1, offset=-20)
    assert decode([500], r, "ABCD") == 30.0
    assert encode(30.0, r, "ABCD") == [500]
    assert (
        decode(encode(12.5, reg(scale=2, offset=1), "CDAB"), reg(scale=2, offset=1), "CDAB") == 12.5
    )
    assert encode(12.5, reg(scale=2, offset=1), "ABCD") == encode(5.75, reg(), "ABCD")


def test_values_that_do_not_fit_are_refused():
    with pytest.raises(ValueError, match="does not fit"):
        encode(70000, reg("uint16"), "ABCD")
    with pytest.raises(ValueError, match="does not fit"):
        encode(-1, reg("uint32"), "ABCD")
    with pytest.raises(ValueError, match="does not fit"):
        encode(math.nan, reg("int32"), "ABCD")
    with pytest.raises(ValueError, match="does not fit"):
        encode(1e39, reg(), "ABCD")
    with pytest.raises(ValueError, match="1 registers, expected 2"):
        decode([1], reg(), "ABCD")
    with pytest.raises(ValueError, match="word order"):
        decode([1, 2], reg(), "BADC")


# ---------------------------------------------------------------------- slots, plans


def test_slot_is_local_standard_time_floored_to_the_interval():
    now = datetime(2026, 11, 20, 9, 0, 7, 500_000, tzinfo=UTC)
    assert slot_ns(now, 60_000, 1) == to_ns("2026-11-20 10:00:00")
    assert slot_ns(now, 30 * 60_000, 1) == to_ns("2026-11-20 10:00:00")
    assert slot_ns(now, 1000, 0) == to_ns("2026-11-20 09:00:07")
    assert slot_ns(now, 60_000, -3.5) == to_ns("2026-11-20 05:30:00")
    cet = timezone(timedelta(hours=1))
    assert slot_ns(now.astimezone(cet), 60_000, 1) == to_ns("2026-11-20 10:00:00")
    exact = datetime(2026, 11, 20, 9, 1, tzinfo=UTC)  # on the boundary: that slot
    assert slot_ns(exact, 60_000, 1) == to_ns("2026-11-20 10:01:00")
    with pytest.raises(ValueError, match="aware"):
        slot_ns(datetime(2026, 11, 20, 9), 60_000, 1)


def test_requests_group_near_registers_of_one_type():
    regs = [
        reg(name="a", address=0),
        reg(name="b", address=2),
        reg("uint16", name="c", address=6),  # 2 unused registers before: read through
        reg("int16", name="d", address=7),
        reg(name="e", address=40),  # far: a request of its own
        reg(name="f", address=0, type="input"),  # another function code
    ]
    plan = [
        (r.type, r.address, r.count, [x.name for x in r.registers]) for r in plan_requests(regs)
    ]
    assert plan == [
        ("holding", 0, 8, ["a", "b", "c", "d"]),
        ("holding", 40, 2, ["e"]),
        ("input", 0, 2, ["f"]),
    ]
    many = [reg(name=f"v{i}", address=2 * i) for i in range(100)]  # 200 registers
    assert [(r.address, r.count) for r in plan_requests(many)] == [(0, 124), (124, 76)]
    assert all(r.count <= 125 for r in plan_requests(many, max_gap=0))


# ---------------------------------------------------------------------- spool writer

REGS = [
    reg(name="SWC_1_1_1", address=0, unit="%"),
    reg(name="TS_1_1_1", address=2, unit="degC"),
    reg("uint16", name="Valve", address=4),
]


def header() -> bytes:
    return toa5_header("FR-Lam", "CR1000X", "Soil_1min", REGS)


def test_header_and_rows_as_campbell_writes_them(tmp_path):
    path = tmp_path / "Soil_1min_2026-11-20.dat"
    assert append_row(path, header(), to_ns("2026-11-20 10:00:00"), [12.5, -0.1, 3.0])
    assert append_row(path, header(), to_ns("2026-11-20 10:01:00"), [math.nan, 1e-05, 4])
    assert path.read_bytes() == (
        b'"TOA5","FR-Lam","CR1000X","","","stationflow-modbus","","Soil_1min"\r\n'
        b'"TIMESTAMP","RECORD","SWC_1_1_1","TS_1_1_1","Valve"\r\n'
        b'"TS","RN","%","degC",""\r\n'
        b'"","","Smp","Smp","Smp"\r\n'
        b'"2026-11-20 10:00:00",0,12.5,-0.1,3\r\n'
        b'"2026-11-20 10:01:00",1,"NAN",1e-05,4\r\n'
    )
    assert toa5_header("FR-Lam", None, "T", REGS).startswith(b'"TOA5","FR-Lam","CR1000X",')


def test_value_text():
    assert [format_value(v) for v in (12.5, 3.0, -0.0, 0.1, math.nan, math.inf, -math.inf)] == [
        b"12.5",
        b"3",
        b"0",
        b"0.1",
        b'"NAN"',
        b'"INF"',
        b'"-INF"',
    ]


def test_append_is_idempotent_per_slot(tmp_path):
    path = tmp_path / "t.dat"
    t0 = to_ns("2026-11-20 10:00:00")
    assert append_row(path, header(), t0, [1, 2, 3])
    before = path.read_bytes()
    assert not append_row(path, header(), t0, [9, 9, 9])  # the same slot polled again
    assert not append_row(path, header(), t0 - 60 * 10**9, [9, 9, 9])  # an older one
    assert path.read_bytes() == before
    assert append_row(path, header(), t0 + 120 * 10**9, [4, 5, 6])  # a hole is fine
    assert path.read_bytes().endswith(b'"2026-11-20 10:02:00",1,4,5,6\r\n')
    with pytest.raises(ValueError, match="2 values for 3 columns"):
        append_row(path, header(), t0 + 180 * 10**9, [1, 2])


def test_a_row_cut_by_a_crash_is_repaired_before_appending(tmp_path):
    path = tmp_path / "t.dat"
    t0 = to_ns("2026-11-20 10:00:00")
    append_row(path, header(), t0, [1, 2, 3])
    good = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'"2026-11-20 10:01:00",1,4.5,6\r')  # power lost mid-row
    assert not append_row(path, header(), t0, [1, 2, 3])  # repaired, still idempotent
    assert path.read_bytes() == good
    with path.open("ab") as f:
        f.write(b'"2026-11-20 10:0')
    assert append_row(path, header(), t0 + 60 * 10**9, [4, 5, 6])
    assert path.read_bytes() == good + b'"2026-11-20 10:01:00",1,4,5,6\r\n'


def test_a_header_cut_by_a_crash_is_written_again(tmp_path):
    path = tmp_path / "t.dat"
    path.write_bytes(header()[:30])
    assert append_row(path, header(), to_ns("2026-11-20 10:00:00"), [1, 2, 3])
    assert path.read_bytes() == header() + b'"2026-11-20 10:00:00",0,1,2,3\r\n'
    path.write_bytes(header() + b'"2026-11-20 10:00:00",0,1,')  # only a partial first row
    assert append_row(path, header(), to_ns("2026-11-20 10:00:00"), [1, 2, 3])
    assert path.read_bytes() == header() + b'"2026-11-20 10:00:00",0,1,2,3\r\n'


def test_a_new_register_list_starts_a_new_file(tmp_path):
    path = tmp_path / "Soil_1min_2026-11-20.dat"
    t0 = to_ns("2026-11-20 10:00:00")
    append_row(path, header(), t0, [1, 2, 3])
    other = toa5_header("FR-Lam", "CR1000X", "Soil_1min", REGS[:2])
    assert append_row(path, other, t0 + 60 * 10**9, [4, 5])
    assert path.read_bytes() == other + b'"2026-11-20 10:01:00",0,4,5\r\n'
    aside = tmp_path / "Soil_1min_2026-11-20-1.dat"
    assert aside.read_bytes() == header() + b'"2026-11-20 10:00:00",0,1,2,3\r\n'


def test_spool_files_per_local_day_read_back_as_toa5(tmp_path):
    start = to_ns("2026-11-19 23:57:00")
    for i in range(5):
        ts = start + i * 60 * 10**9
        values = {"SWC_1_1_1": 20 + i / 4, "TS_1_1_1": math.nan if i == 1 else -i, "Valve": i}
        path, written = write_poll(
            tmp_path,
            station="FR-Lam",
            logger="cr1000x_soil",
            model="CR1000X",
            table="Soil_1min",
            registers=REGS,
            ts_ns=ts,
            values=values,
        )
        assert written and path == spool_path(tmp_path, "FR-Lam", "cr1000x_soil", "Soil_1min", ts)
    folder = tmp_path / "modbus" / "FR-Lam" / "cr1000x_soil"
    day1, day2 = folder / "Soil_1min_2026-11-19.dat", folder / "Soil_1min_2026-11-20.dat"
    assert sorted(folder.iterdir()) == [day1, day2]

    table = read_toa5(day1)
    assert table.issues == [] and len(table) == 3
    assert table.header.table_name == "Soil_1min"
    assert table.header.fields == ("TIMESTAMP", "RECORD", "SWC_1_1_1", "TS_1_1_1", "Valve")
    assert list(table.ts) == [start + i * 60 * 10**9 for i in range(3)]
    assert table.row(1) == b'"2026-11-19 23:58:00",1,20.25,"NAN",1'
    table = read_toa5(day2)
    assert table.issues == [] and list(table.ts) == [
        to_ns("2026-11-20 00:00:00"),
        start + 4 * 60 * 10**9,
    ]
    assert table.row(0).split(b",")[1] == b"0"  # RECORD restarts in a new file

    assert closed_files(tmp_path, "FR-Lam", "cr1000x_soil", "Soil_1min", date(2026, 11, 20)) == [
        day1
    ]
    assert closed_files(tmp_path, "FR-Lam", "cr1000x_soil", "Soil_1min", date(2026, 11, 21)) == [
        day1,
        day2,
    ]
    assert closed_files(tmp_path, "FR-Lam", "cr1000x_soil", "Other", date(2026, 11, 21)) == []
    os.rename(day2, folder / "Soil_1min_2026-11-20-1.dat")  # set aside after a header change
    assert (
        len(closed_files(tmp_path, "FR-Lam", "cr1000x_soil", "Soil_1min", date(2026, 11, 20))) == 2
    )
