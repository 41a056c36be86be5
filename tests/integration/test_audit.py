from types import SimpleNamespace

import pytest

from stationflow.state.audit import RunIds, audit, redact


def test_audit_row_carries_airflow_ids_and_details(conn):
    ti = SimpleNamespace(dag_id="d", task_id="t", map_index=-1, try_number=2)
    ids = RunIds.from_context({"ti": ti, "dag_run": SimpleNamespace(run_id="manual__1")})
    assert ids == RunIds("d", "manual__1", "t", None, 2)  # -1 = not mapped
    row_id = audit(
        conn,
        "refine.merge",
        "merged 3 fragments",
        level="warning",
        station="FR-Lam",
        details={"fragments": [1, 2, 3]},
        ids=ids,
    )
    row = conn.execute(
        "SELECT dag_id, run_id, task_id, map_index, try_number, station, step, level, message,"
        " details FROM stationflow.audit_log WHERE id = %s",
        (row_id,),
    ).fetchone()
    assert row == (
        "d",
        "manual__1",
        "t",
        None,
        2,
        "FR-Lam",
        "refine.merge",
        "WARNING",
        "merged 3 fragments",
        {"fragments": [1, 2, 3]},
    )


def test_outside_airflow_ids_are_empty(conn):
    assert RunIds.from_context(None) == RunIds()
    row_id = audit(conn, "cli.upload", "uploaded")
    dag_id, details = conn.execute(
        "SELECT dag_id, details FROM stationflow.audit_log WHERE id = %s", (row_id,)
    ).fetchone()
    assert dag_id is None and details == {}


def test_secrets_never_reach_the_audit_log(conn):
    details = {
        "url": "https://x",
        "password": "hunter2",
        "conn": {"Authorization": "Basic abc", "hops": [{"api_token": "t"}]},
    }
    row_id = audit(conn, "publish.upload", "sent", details=details)
    (stored,) = conn.execute(
        "SELECT details FROM stationflow.audit_log WHERE id = %s", (row_id,)
    ).fetchone()
    assert stored == {
        "url": "https://x",
        "password": "***",
        "conn": {"Authorization": "***", "hops": [{"api_token": "***"}]},
    }
    assert "hunter2" not in str(redact(details))


def test_unknown_level_is_refused(conn):
    with pytest.raises(ValueError, match="level"):
        audit(conn, "x", "y", level="LOUD")
