"""icos_reconcile's task: files owed and not accepted fail it (red in the UI) after alerting."""

from __future__ import annotations

import psycopg
import pytest

from stationflow.errors import PermanentError
from stationflow.publish.tasks import reconcile_all


def test_nothing_uploaded_fails_the_reconciliation_with_the_count(monkeypatch, state_db):
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    with pytest.raises(PermanentError, match=r"\d+ expected file\(s\) not accepted"):
        reconcile_all(days=1)
    with psycopg.connect(state_db) as c:
        rows = c.execute(
            "SELECT station, level FROM stationflow.audit_log WHERE step = 'reconcile'"
        ).fetchall()
    assert {r[0] for r in rows} == {"FR-Lam", "FR-Aur"} and {r[1] for r in rows} == {"WARNING"}
