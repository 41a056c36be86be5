"""Secrets stay in Connections: a harvest through dag.test() (the Whale bearer token and the
InfluxDB password are Connection passwords), a harvest refused for a wrong token, and a
publish with HTTP Basic auth leave no password in the task logs, XComs or the audit log."""

from __future__ import annotations

import json
import logging
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


def passwords() -> list[str]:
    """Every password of the Connections the demo network defines (AIRFLOW_CONN_*)."""
    found = []
    for key, value in os.environ.items():
        if key.startswith("AIRFLOW_CONN_") and value.startswith("{"):
            password = json.loads(value).get("password")
            if password:
                found.append(password)
    return found


def stored_text(run_id: str) -> str:
    """The audit log and the run's XComs, as text."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        audit = c.execute("SELECT message, details::text FROM stationflow.audit_log").fetchall()
    with create_session() as session:
        xcoms = session.query(XComModel).filter(XComModel.run_id == run_id).all()
        values = [repr(x.value) for x in xcoms]
    assert values, "the run pushed no XCom: the check would prove nothing"
    return "\n".join([*(f"{m} {d}" for m, d in audit), *values])


def test_no_password_in_logs_xcoms_or_audit(airflow_db, dagbag, network, caplog, capfd,
                                            monkeypatch):  # fmt: skip
    from stationflow.collect.tasks import harvest_source

    caplog.set_level(logging.DEBUG)
    now = datetime.now(UTC)
    network.tick(now)
    at = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    secrets = passwords()
    assert len(secrets) >= 7  # portal accounts, FTP, relays, Whale token, influxd

    run = dagbag.get_dag("smartem_harvest").test(logical_date=at)
    assert run.state == "success"

    # a token the Whale API refuses: the failure is audited and raised, the token nowhere
    wrong = "wrong-token-3f9a1c77b2"
    conn = json.loads(os.environ["AIRFLOW_CONN_WHALE_API"])
    monkeypatch.setenv("AIRFLOW_CONN_WHALE_API", json.dumps({**conn, "password": wrong}))
    with pytest.raises(Exception) as refused:
        harvest_source("smartemission", "whale:whale_api")
    assert "401" in str(refused.value) or "403" in str(refused.value), refused.value
    secrets.append(wrong)

    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        errors = c.execute(
            "SELECT count(*) FROM stationflow.audit_log WHERE level = 'ERROR'"
        ).fetchone()[0]
    assert errors >= 1  # the refusal was audited (and is scanned below)
    out, err = capfd.readouterr()
    texts = {
        "task logs": "\n".join(r.getMessage() for r in caplog.records) + out + err,
        "XComs and audit log": stored_text(run.run_id) + str(refused.value),
    }
    assert len(texts["task logs"]) > 1000  # the runs did log (what is checked is real)
    for where, text in texts.items():
        leaked = sum(s in text for s in secrets)  # a count: a failure must not print them
        assert leaked == 0, f"{leaked} password(s) in the {where}"
