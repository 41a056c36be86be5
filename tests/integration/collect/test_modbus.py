"""Polling real Modbus servers: the simulated loggers, over Modbus/TCP and RTU over TCP."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from stationflow.collect.modbus import PollFailed, poll, poll_logger
from stationflow.config import ModbusCollect, load_inventory
from stationflow.formats.toa5 import read_toa5
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.modbus_logger import SimLogger

HOST = "127.0.0.1"
TIMEOUT, RETRIES = 0.3, 1
BOUND = (RETRIES + 1) * TIMEOUT + 0.5  # the longest a failing poll may take, with slack
INVENTORY = load_inventory(PROJECT_ROOT / "config" / "stations.yaml")
LAM = INVENTORY.station("FR-Lam")
SOIL = LAM.logger("cr1000x_soil")  # rtu_over_tcp, CDAB
PROFILE = INVENTORY.station("FR-Aur").logger("cr1000x_profile")  # tcp, ABCD, 16-bit registers


def fast(cfg: ModbusCollect, **update) -> ModbusCollect:
    return cfg.model_copy(update={"timeout_s": TIMEOUT, "retries": RETRIES, **update})


VARIANTS = [
    pytest.param((SOIL, "rtu_over_tcp", "CDAB"), id="soil-rtu-CDAB"),
    pytest.param((SOIL, "tcp", "ABCD"), id="soil-tcp-ABCD"),
    pytest.param((PROFILE, "tcp", "ABCD"), id="profile-tcp-ABCD"),
    pytest.param((PROFILE, "rtu_over_tcp", "CDAB"), id="profile-rtu-CDAB"),
]


@pytest.fixture(params=VARIANTS)
def cfg(request) -> ModbusCollect:
    logger, transport, order = request.param
    return fast(logger.collect, transport=transport, word_order=order)


def test_poll_returns_the_loggers_values(cfg):
    with SimLogger.from_config(cfg, period=None) as sim:
        values = poll(cfg, HOST, sim.port)
        assert values == sim.values()
        assert list(values) == [r.name for r in cfg.registers]
        sim.set_values({cfg.registers[0].name: math.nan, cfg.registers[1].name: -12.5})
        values = poll(cfg, HOST, sim.port)
        assert math.isnan(values[cfg.registers[0].name])
        assert values[cfg.registers[1].name] == -12.5


def test_the_other_word_order_reads_other_values(cfg):
    other = cfg.model_copy(update={"word_order": "ABCD" if cfg.word_order == "CDAB" else "CDAB"})
    with SimLogger.from_config(cfg, period=None) as sim:
        floats = [r.name for r in cfg.registers if r.data_type == "float32"]
        wrong = poll(other, HOST, sim.port)
        assert all(wrong[n] != sim.values()[n] for n in floats)


def test_a_registers_own_word_order_is_honoured():
    regs = [
        r.model_copy(update={"word_order": "ABCD"}) if r.name == "BattV" else r
        for r in SOIL.collect.registers
    ]
    cfg = fast(SOIL.collect, registers=regs)  # the logger says CDAB, BattV says ABCD
    with SimLogger.from_config(cfg, period=None) as sim:
        assert poll(cfg, HOST, sim.port) == sim.values()
        plain = fast(SOIL.collect)
        assert poll(plain, HOST, sim.port)["BattV"] != sim.values()["BattV"]


def test_values_change_over_time(cfg):
    with SimLogger.from_config(cfg, period=0.1) as sim:
        first = poll(cfg, HOST, sim.port)
        assert sim.wait_update(2)
        second = poll(cfg, HOST, sim.port)
        assert first != second
        assert all(math.isfinite(v) for v in (*first.values(), *second.values()))


def test_a_powered_off_logger_fails_within_the_bound_and_comes_back(cfg):
    with SimLogger.from_config(cfg, period=None) as sim:
        port = sim.port
        sim.power_off()
        t0 = time.monotonic()
        with pytest.raises(PollFailed, match=rf"{HOST}:{port} unit {cfg.unit_id}: cannot connect"):
            poll(cfg, HOST, port)
        assert time.monotonic() - t0 < BOUND
        sim.power_on()
        assert sim.port == port
        assert poll(cfg, HOST, port) == sim.values()


def test_a_wrong_unit_id_fails(cfg):
    with SimLogger.from_config(cfg, period=None) as sim:
        wrong = cfg.model_copy(update={"unit_id": cfg.unit_id + 1})
        t0 = time.monotonic()
        with pytest.raises(
            PollFailed, match=rf"{HOST}:{sim.port} unit {wrong.unit_id}, address 0"
        ) as exc:
            poll(wrong, HOST, sim.port)
        assert time.monotonic() - t0 < BOUND
        if cfg.transport == "tcp":  # a gateway's answer; over RTU the bus stays silent
            assert "GATEWAY_NO_RESPONSE" in str(exc.value)
        else:
            assert "no valid answer" in str(exc.value)
        assert poll(cfg, HOST, sim.port) == sim.values()  # the right unit still answers


def test_reading_past_the_logger_variables_is_a_modbus_exception():
    cfg = fast(PROFILE.collect)
    with SimLogger.from_config(cfg, period=None) as sim:
        beyond = cfg.model_copy(
            update={
                "registers": [
                    *cfg.registers,
                    cfg.registers[0].model_copy(update={"name": "X", "address": 20}),
                ]
            }
        )
        with pytest.raises(
            PollFailed,
            match=r"address 20: 2 holding registers from 20: Modbus exception 2 \(ILLEGAL_ADDR",
        ):
            poll(beyond, HOST, sim.port)


def test_nobody_listening_fails_fast():
    with SimLogger.from_config(fast(PROFILE.collect), period=None) as sim:
        port = sim.port
    with pytest.raises(PollFailed, match="cannot connect after 2 attempts: Connection refused"):
        poll(fast(PROFILE.collect), HOST, port)


# --------------------------------------------------------------------- with the ledger


def audit_rows(conn: psycopg.Connection) -> list[tuple[str, str]]:
    return conn.execute(
        "SELECT level, message FROM stationflow.audit_log WHERE step = 'collect.modbus' ORDER BY id"
    ).fetchall()


def fragments(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT source, rows, first_ts, last_ts, path, source_path"
        " FROM stationflow.fragment ORDER BY id"
    ).fetchall()


def test_poll_logger_spools_slots_and_lands_closed_days(conn, tmp_path):
    logger = SOIL.model_copy(update={"collect": fast(SOIL.collect)})
    spool, landing = tmp_path / "spool", tmp_path / "landing"
    # FR-Lam is UTC+1: 22:58:07 UTC is 23:58:07 local, slot 23:58:00
    t0 = datetime(2026, 11, 19, 22, 58, 7, tzinfo=UTC)
    with SimLogger.from_config(logger.collect, period=None) as sim:

        def run(now: datetime) -> dict:
            return poll_logger(
                conn, LAM, logger, now=now, spool=spool, landing=landing, endpoint=(HOST, sim.port)
            )

        first = run(t0)
        assert (
            first["slot"] == "2026-11-19 23:58:00" and first["written"] and first["failed"] is None
        )
        assert first["values"] == 6 and first["landed"] == []
        assert not run(t0 + timedelta(seconds=20))["written"]  # the same slot polled again
        sim.update(time.time() + 3600)  # other values
        assert run(t0 + timedelta(minutes=1))["written"]
        day = spool / "modbus" / "FR-Lam" / "cr1000x_soil" / "Soil_1min_2026-11-19.dat"
        assert first["path"] == str(day)
        table = read_toa5(day)
        assert table.issues == [] and len(table) == 2
        assert [table.row(i).split(b",")[:2] for i in range(2)] == [
            [b'"2026-11-19 23:58:00"', b"0"],
            [b'"2026-11-19 23:59:00"', b"1"],
        ]
        assert fragments(conn) == []  # the day is still open

        # the first poll of the next local day writes there and lands the closed day
        nxt = run(datetime(2026, 11, 19, 23, 0, 5, tzinfo=UTC))
        assert nxt["slot"] == "2026-11-20 00:00:00" and nxt["written"]
        assert len(nxt["landed"]) == 1
        ((source, rows, first_ts, last_ts, path, source_path),) = fragments(conn)
        assert (source, rows) == ("modbus:cr1000x_soil/Soil_1min", 2)
        assert first_ts == datetime(2026, 11, 19, 22, 58, tzinfo=UTC)
        assert last_ts == datetime(2026, 11, 19, 22, 59, tzinfo=UTC)
        assert path == nxt["landed"][0] and source_path == str(day)
        assert Path(path).read_bytes() == day.read_bytes()
        assert path.startswith(str(landing / "FR-Lam" / "cr1000x_soil" / "Soil_1min"))

        again = run(datetime(2026, 11, 19, 23, 1, 5, tzinfo=UTC))
        assert again["written"] and again["landed"] == []
        assert len(fragments(conn)) == 1  # landed once
        assert (spool / "modbus" / "FR-Lam" / "cr1000x_soil" / "Soil_1min_2026-11-20.dat").exists()

    levels = [level for level, _ in audit_rows(conn)]
    assert levels == ["INFO"] * 5
    assert "not written again" in audit_rows(conn)[1][1]


def test_a_failed_poll_leaves_a_visible_hole(conn, state_db, tmp_path):
    logger = PROFILE.model_copy(update={"collect": fast(PROFILE.collect)})
    aur = INVENTORY.station("FR-Aur")
    spool, landing = tmp_path / "spool", tmp_path / "landing"
    t0 = datetime(2026, 11, 20, 9, 0, 7, tzinfo=UTC)
    with SimLogger.from_config(logger.collect, period=None) as sim:
        port = sim.port

        def run(now: datetime, **kw) -> dict:
            return poll_logger(
                conn,
                aur,
                logger,
                now=now,
                spool=spool,
                landing=landing,
                endpoint=(HOST, port),
                **kw,
            )

        assert run(t0)["written"]
        sim.power_off()
        started = time.monotonic()
        failed = run(t0 + timedelta(minutes=1))
        assert time.monotonic() - started < BOUND
        assert failed["failed"] and f"{HOST}:{port}" in failed["failed"] and not failed["written"]
        with pytest.raises(PollFailed, match=f"{HOST}:{port}"):
            run(t0 + timedelta(minutes=2), raise_on_failure=True)
        sim.power_on()
        assert run(t0 + timedelta(minutes=3))["written"]

    table = read_toa5(
        spool / "modbus" / "FR-Aur" / "cr1000x_profile" / "Profile_1min_2026-11-20.dat"
    )
    assert table.issues == []
    assert [table.row(i).split(b",")[:2] for i in range(len(table))] == [
        [b'"2026-11-20 10:00:00"', b"0"],
        [b'"2026-11-20 10:03:00"', b"1"],  # 10:01 and 10:02 are a hole, not made-up values
    ]
    with psycopg.connect(state_db) as other:  # committed, even when the task failed
        rows = audit_rows(other)
    assert [level for level, _ in rows] == ["INFO", "WARNING", "WARNING", "INFO"]
    assert f"poll of {HOST}:{port} failed, no row for 2026-11-20 10:01:00" in rows[1][1]
    assert "Connection refused" in rows[1][1]


def test_values_that_cannot_be_spooled_are_an_error(conn, tmp_path):
    logger = PROFILE.model_copy(update={"collect": fast(PROFILE.collect)})
    spool = tmp_path / "spool"
    spool.write_text("a file where the spool folder should be")
    with SimLogger.from_config(logger.collect, period=None) as sim, pytest.raises(OSError):
        poll_logger(
            conn,
            INVENTORY.station("FR-Aur"),
            logger,
            now=datetime(2026, 11, 20, 9, 0, 7, tzinfo=UTC),
            spool=spool,
            landing=tmp_path / "landing",
            endpoint=(HOST, sim.port),
        )
    ((level, message),) = audit_rows(conn)
    assert level == "ERROR" and "5 values polled for 2026-11-20 10:00:00 but not spooled" in message
