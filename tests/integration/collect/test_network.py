"""The demo network, simulated on loopback, collected by the same task functions the DAGs run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stationflow.collect import tasks
from stationflow.sim.network import HISTORY_DAYS
from tests.sim_network import INV, age, running_network


@pytest.fixture
def network(tmp_path, monkeypatch, state_db):
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    yield from running_network(tmp_path, monkeypatch)


def test_loggernet_modbus_and_health_of_the_demo_network(network, tmp_path, state_db):
    import psycopg

    now = datetime.now(UTC)
    network.tick(now)
    for st in INV.stations:  # LoggerNet folders: two hours of rows, faults included
        for lg in st.loggers:
            if lg.collect.method == "loggernet":
                folder = tmp_path / lg.collect.folder
                assert any(folder.glob("*.dat")), folder
                age(folder, 120)
                got = tasks.scan_loggernet(st.id, lg.id, inv=INV)
                assert got["landed"] and not got["unsettled"], got
                assert tasks.scan_loggernet(st.id, lg.id, inv=INV)["landed"] == []
            elif lg.collect.method == "modbus":
                got = tasks.poll_modbus(st.id, lg.id, inv=INV, now=now)
                assert got["written"] and not got["failed"], got
                again = tasks.poll_modbus(st.id, lg.id, inv=INV, now=now)
                assert not again["written"]  # the same slot is never written twice
            if lg.health_connection_id:
                health = tasks.check_health(st.id, lg.id, inv=INV)
                assert health["status"] == "up", health
    with psycopg.connect(state_db) as conn:
        sources = {r[0] for r in conn.execute("SELECT source FROM stationflow.fragment")}
    assert sources == {
        "loggernet:cr3000_meteo/Meteo_1min",
        "loggernet:cr1000_meteo/Meteo_30s",
        # yesterday's polls (the demo starts with them) landed by the first poll of today
        "modbus:cr1000x_soil/Soil_1min",
        "modbus:cr1000x_profile/Profile_1min",
    }
    spooled = sorted(p.parent.name for p in (tmp_path / "spool" / "modbus").rglob("*.dat"))
    # from 23:50 before the history's first day: those last minutes, the history days, today
    days = HISTORY_DAYS + 2
    assert spooled == ["cr1000x_profile"] * days + ["cr1000x_soil"] * days


def test_the_relay_brings_a_dead_logger_back(network, state_db):
    """FR-Lam's soil logger (behind the serial server) stops answering; three failed health
    checks later the relay power-cycles it and it answers again."""
    import psycopg

    st = INV.station("FR-Lam")
    logger = st.logger("cr1000x_soil")
    sim = network.devices[logger.health_connection_id]
    sim.power_off()
    for _ in range(logger.relay.after_failures - 1):
        assert tasks.check_health(st.id, logger.id, inv=INV)["status"] == "down"
    # the demo relay powers the logger back after 5 s; the check waits wait_seconds (60)
    from stationflow.collect import health

    sleeps = []
    with psycopg.connect(state_db) as conn:
        out = health.check_device(
            conn,
            st,
            logger,
            now=datetime.now(UTC) + timedelta(seconds=1),
            sleep=lambda s: (sleeps.append(s), sim.power_on()),
        )
    assert out["status"] == "up" and out["reset"], out
    assert sleeps == [logger.relay.wait_seconds]


def test_smartflux_files_pulled_and_pushed(network, tmp_path, state_db):
    import psycopg

    from stationflow.collect.ftp_push import (
        ServerThread,
        accounts_from_inventory,
        build_server,
        land_received,
    )

    server = build_server(
        accounts_from_inventory(INV),
        host="127.0.0.1",
        port=network.plan.push_port,
        spool=tmp_path / "spool",
        on_received=land_received(lambda: psycopg.connect(state_db), tmp_path / "landing", INV),
    )
    thread = ServerThread(server)
    thread.start()
    try:
        network.tick(datetime.now(UTC))  # half-hours of the day so far: published and pushed
        pulled = tasks.pull_ftp("FR-Aur", "smartflux", inv=INV)
        assert pulled["fetched"] >= 1 and not pulled["failed"], pulled
        assert tasks.pull_ftp("FR-Aur", "smartflux", inv=INV)["fetched"] == 0
    finally:
        thread.stop()
    with psycopg.connect(state_db) as conn:
        rows = dict(
            conn.execute(
                "SELECT source, count(*) FROM stationflow.fragment"
                " WHERE status = 'collected' GROUP BY source"
            ).fetchall()
        )
    assert rows["ftp_pull:smartflux"] == pulled["fetched"]
    pushed = next(n for s, n in rows.items() if s.startswith("ftp_push:FR-Lam/"))
    assert pushed == len(list((tmp_path / "sim" / "smartflux-push" / "FR-Lam").rglob("*.ghg")))
