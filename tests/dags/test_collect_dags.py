"""icos_collect and icos_poll end to end with dag.test() against the simulated network."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from tests.sim_network import INV, age, running_network

pytestmark = pytest.mark.airflow


@pytest.fixture
def network(tmp_path, monkeypatch):
    yield from running_network(tmp_path, monkeypatch)


def fragments(since_id: int) -> dict[str, int]:
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        return dict(
            c.execute(
                "SELECT source, count(*) FROM stationflow.fragment WHERE id > %s GROUP BY source",
                (since_id,),
            ).fetchall()
        )


def last_fragment() -> int:
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        return c.execute("SELECT COALESCE(max(id), 0) FROM stationflow.fragment").fetchone()[0]


def test_icos_collect_lands_loggernet_and_smartflux_files_and_checks_health(
    airflow_db, dagbag, network, tmp_path
):
    from datetime import UTC, datetime

    network.tick(datetime.now(UTC))
    for st in INV.stations:
        for lg in st.loggers:
            if lg.collect.method == "loggernet":
                age(tmp_path / lg.collect.folder, 120)
    before = last_fragment()
    dag = dagbag.get_dag("icos_collect")
    run = dag.test()
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, states
    assert "FR-Lam.scan_cr3000_meteo" in states and "FR-Aur.pull_smartflux" in states
    assert "FR-Lam.health_cr1000x_soil" in states
    got = fragments(before)
    assert got["loggernet:cr3000_meteo/Meteo_1min"] >= 1
    assert got["loggernet:cr1000_meteo/Meteo_30s"] >= 1
    assert got["ftp_pull:smartflux"] >= 1
    assert Path(tmp_path / "landing" / "FR-Aur" / "smartflux" / "ghg").is_dir()


def spool_rows(tmp_path) -> dict[str, int]:
    return {
        p.name: p.read_bytes().count(b"\r\n")
        for p in (tmp_path / "spool" / "modbus").rglob("*.dat")
    }


def test_icos_poll_appends_a_row_per_modbus_logger(airflow_db, dagbag, network, tmp_path):
    before = spool_rows(tmp_path)  # the demo network starts with polls since yesterday
    run = dagbag.get_dag("icos_poll").test()
    assert run.state == "success"
    after = spool_rows(tmp_path)
    grown = sorted(n.split("_20")[0] for n in after if after[n] != before.get(n, 0))
    assert grown == ["Profile_1min", "Soil_1min"]
    assert all(after[n] - before.get(n, 4) == 1 for n in after if after[n] != before.get(n, 0))


def test_a_silent_logger_fails_its_poll_and_leaves_a_hole(airflow_db, dagbag, network, tmp_path):
    before = spool_rows(tmp_path)
    soil = network.devices["fr_lam_serial_server"]
    soil.power_off()
    run = dagbag.get_dag("icos_poll").test()
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["poll_FR-Aur_cr1000x_profile"] == "success"
    assert states["poll_FR-Lam_cr1000x_soil"] in ("failed", "up_for_retry")
    assert {n: r for n, r in spool_rows(tmp_path).items() if n.startswith("Soil")} == {
        n: r for n, r in before.items() if n.startswith("Soil")
    }  # the hole: no row for the silent logger
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        (n,) = c.execute(
            "SELECT count(*) FROM stationflow.audit_log WHERE step = 'collect.modbus'"
            " AND level = 'WARNING' AND run_id = %s",
            (run.run_id,),
        ).fetchone()
    assert n >= 1
