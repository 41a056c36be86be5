"""smartem_publish end to end with dag.test(): the hours smartem_harvest stored and
smartem_refine refined, published by smartem_publish to the real STA server and the SOS-T
simulator of the demo network; a second run sends nothing; a backfill run checks its
interval against the servers and repairs what one of them lost."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit

import psycopg
import pytest

from stationflow.publish.sos import SosClient
from stationflow.publish.sta import StaClient
from stationflow.sim.sos import SosSim
from tests.influx_server import influxd_binary
from tests.sim_network import running_network

pytestmark = pytest.mark.airflow


@pytest.fixture
def network(tmp_path, monkeypatch, sta):
    influxd_binary()  # skipped without influxd (a failure under CI)
    gen = running_network(tmp_path, monkeypatch)
    net = next(gen)
    url = urlsplit(sta.url)  # the session's real STA server instead of a second one
    monkeypatch.setenv("AIRFLOW_CONN_STA_DEFAULT", json.dumps({
        "conn_type": "http", "host": url.hostname, "port": url.port, "schema": "http",
        "extra": {"path": url.path},
    }))  # fmt: skip
    yield net
    next(gen, None)


RECORD_TABLES = (
    "smartem_raw.timeseries, smartem_raw.harvester_progress,"
    " smartem_refined.timeseries, smartem_publish.observation"
)


@pytest.fixture
def empty_record_chain():
    """The record chain's tables empty before, and left empty after (other DAG tests count
    what their own runs wrote)."""
    with db() as c:
        c.execute(f"TRUNCATE {RECORD_TABLES} CASCADE")
    yield
    with db() as c:
        c.execute(f"TRUNCATE {RECORD_TABLES} CASCADE")


def db() -> psycopg.Connection:
    return psycopg.connect(os.environ["STATIONFLOW_DB_URL"], autocommit=True)


def ledger() -> dict[tuple[str, str], int]:
    with db() as c:
        rows = c.execute(
            "SELECT target, state, count(*) FROM smartem_publish.observation GROUP BY 1, 2"
        ).fetchall()
    return {(t, s): n for t, s, n in rows}


def test_dag_is_scheduled_on_the_refined_asset_and_alerts(dagbag):
    dag = dagbag.dags["smartem_publish"]
    assert dag.max_active_runs == 1 and not dag.catchup
    assert sorted(t.task_id for t in dag.tasks) == [
        "smartemission.publish_sos_sos_default", "smartemission.publish_sta_sta_default",
    ]  # fmt: skip
    assert "smartem_refined.smartemission" in repr(dag.timetable.asset_condition)
    for t in dag.tasks:
        assert t.on_failure_callback, t.task_id


def test_harvest_refine_publish(airflow_db, dagbag, network, sta, empty_record_chain):
    from stationflow.publish.records.tasks import publish_records

    now = datetime.now(UTC)
    network.tick(now)
    at = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)  # see harvest test
    assert dagbag.get_dag("smartem_harvest").test(logical_date=at).state == "success"
    assert dagbag.get_dag("smartem_refine").test(logical_date=at).state == "success"
    with db() as c:
        (refined,) = c.execute("SELECT count(*) FROM smartem_refined.timeseries").fetchone()
    assert refined >= 4 * 47 * 6  # 4 devices x 2 days x their indicators

    dag = dagbag.get_dag("smartem_publish")
    assert dag.test(logical_date=at).state == "success"
    assert ledger() == {("sta:sta_default", "published"): refined,
                        ("sos:sos_default", "published"): refined}  # fmt: skip
    client = StaClient(sta.url)
    counted = client.get("Observations", {"$count": "true", "$top": "1"})["@iot.count"]
    assert counted == refined
    things = {t["name"] for t in client.collection("Things", {"$select": "name"})}
    assert things == {"23", "26", "11820001", "11820002"}
    (sos,) = [s for s in network.servers if isinstance(s, SosSim)]
    assert len(sos.observations()) == refined
    assert {s.procedure for s in sos.sensors()} == {f"station-{t}" for t in things}

    again = dag.test(logical_date=at)
    assert again.state == "success"
    assert client.get("Observations", {"$count": "true", "$top": "1"})["@iot.count"] == refined

    # the SOS lost a day; a backfill run of that day puts it back, and nothing else
    day_end = at.replace(hour=0)
    lost = [o.identifier for o in sos.observations()
            if day_end - timedelta(days=1) < o.result_time <= day_end]  # fmt: skip
    for identifier in lost:
        assert SosClient(sos.url).delete_observation(identifier)
    assert len(sos.observations()) == refined - len(lost) and lost
    run = SimpleNamespace(run_type="backfill")
    summary = publish_records("smartemission", "sos:sos_default", {
        "dag_run": run, "data_interval_start": day_end - timedelta(days=1),
        "data_interval_end": day_end,
    })  # fmt: skip
    assert summary["values"] == len(lost) and summary["failed"] == 0
    held = [o.identifier for o in sos.observations()]
    assert len(held) == len(set(held)) == refined
