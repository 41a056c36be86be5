"""smartem_refine end to end with dag.test(): the hours smartem_harvest stored (Whale
simulator + AirSensEUR boxes in a real influxd) refined into smartem_refined.timeseries;
the refined Asset gets an event; a second run finds nothing pending."""

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


def refined_counts() -> dict[tuple[str, str], int]:
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        rows = c.execute(
            "SELECT device_type, name, count(*) FROM smartem_refined.timeseries"
            " GROUP BY device_type, name"
        ).fetchall()
    return {(t, n): c for t, n, c in rows}


def test_dag_is_scheduled_on_the_raw_asset_and_hourly(dagbag):
    dag = dagbag.dags["smartem_refine"]
    assert dag.max_active_runs == 1 and not dag.catchup
    assert [t.task_id for t in dag.tasks] == ["refine_smartemission"]
    assert "smartem_raw.smartemission" in repr(dag.timetable.asset_condition)


def test_smartem_refine_refines_what_harvest_stored(airflow_db, dagbag, network):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    now = datetime.now(UTC)
    network.tick(now)
    at = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)  # see harvest test
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"], autocommit=True) as c:
        c.execute(
            "TRUNCATE smartem_raw.timeseries, smartem_raw.harvester_progress,"
            " smartem_refined.timeseries CASCADE"
        )
    assert dagbag.get_dag("smartem_harvest").test(logical_date=at).state == "success"
    dag = dagbag.get_dag("smartem_refine")
    run = dag.test()
    assert run.state == "success"
    counts = refined_counts()
    # 48 hours of 2 Josene devices and 2 ASE boxes; Josene gases wait for a trained model
    for name in ("temperature", "pressure", "humidity", "noiseavg", "co2", "coraw"):
        assert counts[("jose", name)] == 96, name
    for name in ("temperature", "co", "no", "no2", "o3", "no2raw"):
        assert counts[("ase", name)] == 96, name
    assert ("jose", "no2") not in counts
    with create_session() as session:
        event = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == "smartem_refined.smartemission")
            .order_by(AssetEvent.id.desc())
            .first()
        )
        assert event.extra["hours"] == 4 * 48 and event.extra["inserted"] == sum(counts.values())
    again = dag.test()
    assert again.state == "success" and refined_counts() == counts
