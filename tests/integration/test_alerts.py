"""A failed task's alert lands in the audit log, and the callback itself never raises."""

from __future__ import annotations

import os
from types import SimpleNamespace

import psycopg

from stationflow.alerts import on_failure_alert


def test_a_failed_health_task_leaves_an_error_row_naming_the_station():
    ti = SimpleNamespace(dag_id="icos_collect", task_id="FR-Lam.health_cr3000_meteo", try_number=1)
    on_failure_alert({"ti": ti, "exception": RuntimeError("device stays down"), "run_id": "r-1"})
    with psycopg.connect(os.environ["STATIONFLOW_DB_URL"]) as c:
        row = c.execute(
            "SELECT level, station, step, message FROM stationflow.audit_log"
            " WHERE step = 'alert' ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert row[:3] == ("ERROR", "FR-Lam", "alert")
    assert "icos_collect.FR-Lam.health_cr3000_meteo" in row[3] and "stays down" in row[3]


def test_the_callback_survives_an_unreachable_database(monkeypatch, caplog):
    monkeypatch.setenv("STATIONFLOW_DB_URL", "postgresql://nobody@127.0.0.1:1/none")
    on_failure_alert({"exception": ValueError("x")})  # must not raise
    assert "ALERT" in caplog.text
