"""smartem_harvest end to end with dag.test(): the Whale simulator and a real influxd fed by
the AirSensEUR boxes, harvested into smartem_raw.timeseries; the raw Asset gets an event."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.influx_server import influxd_binary
from tests.sim_network import running_network

pytestmark = pytest.mark.airflow


@pytest.fixture
def network(tmp_path, monkeypatch):
    influxd_binary()  # skipped without influxd (a failure under CI)
    yield from running_network(tmp_path, monkeypatch)


def raw_rows() -> dict[str, int]:
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        return dict(
            c.execute(
                "SELECT device_type, count(*) FROM smartem_raw.timeseries GROUP BY device_type"
            ).fetchall()
        )


def test_smartem_harvest_stores_both_harvesters_hours_and_updates_the_asset(
    airflow_db, dagbag, network
):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    now = datetime.now(UTC)
    network.tick(now)  # the boxes write their history into influxd
    # the run of the previous hour: its interval ends before the hour now filling, so the
    # window is the same whenever the run (or a retry) crosses the next hour
    at = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"], autocommit=True) as c:
        c.execute("TRUNCATE smartem_raw.timeseries, smartem_raw.harvester_progress CASCADE")
    dag = dagbag.get_dag("smartem_harvest")
    run = dag.test(logical_date=at)
    assert run.state == "success"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {
        "smartemission.harvest_whale_whale_api": "success",
        "smartemission.harvest_influxdb_influx_ase": "success",
    }
    rows = raw_rows()
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    # 48 h look-back up to the interval's end: 2 Josene devices and 2 ASE boxes
    assert rows == {"jose": 2 * 48, "ase": 2 * 48}, tries
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "smartem_raw.smartemission")
            .order_by(AssetEvent.id)
            .all()
        )
        extras = [e.extra for e in events[-2:]]
    assert {e["harvester"] for e in extras} == {"whale:whale_api", "influxdb:influx_ase"}
    assert all(e["inserted"] == 96 for e in extras)
    again = dag.test(logical_date=at)  # a replay stores nothing new
    assert again.state == "success"
    assert raw_rows() == rows
