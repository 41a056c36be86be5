"""Alerts: a failed collection or upload task leaves an ERROR row in the audit log.

The row is what the completeness view and the ledger reconciliation (which also catches
hard-killed tasks, whose callbacks never run) read; the task log carries the same line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("stationflow.alerts")


def on_failure_alert(context: Mapping[str, Any]) -> None:
    """Airflow ``on_failure_callback``: never raises (a callback error would hide the alert)."""
    from stationflow.state.audit import RunIds, audit
    from stationflow.state.db import connect

    ti = context.get("task_instance") or context.get("ti")
    error = context.get("exception")
    params = context.get("params") or {}
    station = (getattr(ti, "task_id", "") or "").split(".")[0] if ti else None
    station = params.get("station") or (station if station and "-" in station else None)
    message = (
        f"ALERT {getattr(ti, 'dag_id', '?')}.{getattr(ti, 'task_id', '?')} failed:"
        f" {type(error).__name__ if error else 'unknown error'}: {error}"
    )
    log.error(message)
    try:
        with connect() as conn:
            audit(
                conn,
                "alert",
                message,
                level="ERROR",
                station=station,
                ids=RunIds.from_context(context),
            )
    except Exception:  # the log line above is the alert of last resort
        log.exception("could not record the alert in the audit log")
