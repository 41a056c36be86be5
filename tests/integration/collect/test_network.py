"""The demo network, simulated on loopback, collected by the same task functions the DAGs run."""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stationflow.collect import tasks
from stationflow.config import load_inventory
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.network import Network, plan

INV = load_inventory(PROJECT_ROOT / "config" / "stations.yaml")


def free_base() -> int:
    """A base port whose whole block (push port and peers) is free right now."""
    for _ in range(50):
        base = random.randrange(20000, 60000, 100)  # noqa: S311 - a port, not a secret
        ports = [plan(INV, base).push_port] + [e.port for e in plan(INV, base).endpoints.values()]
        try:
            for port in set(ports):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port block")


@pytest.fixture
def network(tmp_path, monkeypatch, state_db):
    base = free_base()
    for ep in plan(INV, base).endpoints.values():
        conn = {"conn_type": ep.conn_type, "host": "127.0.0.1", "port": ep.port}
        if ep.login:
            conn.update(login=ep.login, password=secrets.token_urlsafe(12))
        monkeypatch.setenv(f"AIRFLOW_CONN_{ep.conn_id.upper()}", json.dumps(conn))
    monkeypatch.setenv("STATIONFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    net = Network(INV, tmp_path, base).build(datetime.now(UTC))
    net.start()
    yield net
    net.stop()


def age(folder: Path, seconds: float) -> None:
    """LoggerNet wrote these a while ago (the settle time has passed)."""
    for p in folder.iterdir():
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


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
        assert sources == {"loggernet:cr3000_meteo/Meteo_1min", "loggernet:cr1000_meteo/Meteo_30s"}
        spooled = list((tmp_path / "spool" / "modbus").rglob("*.dat"))
        assert len(spooled) == 2  # FR-Lam soil (RTU via serial server), FR-Aur profile (TCP)


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
