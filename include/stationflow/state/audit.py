"""The audit log: every step of every chain leaves a row that says what happened and why.

Rows carry the Airflow ids (dag, run, task, try) when written from a task, so the UI
and the completeness view can link a file to the runs that touched it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_SECRET_WORDS = ("password", "passwd", "secret", "token", "authorization", "api_key", "apikey")
log = logging.getLogger("stationflow.audit")


@dataclass(frozen=True)
class RunIds:
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None

    @classmethod
    def from_context(cls, context: Mapping[str, Any] | None) -> RunIds:
        """From an Airflow task context (``get_current_context()``); empty outside Airflow."""
        if not context:
            return cls()
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        map_index = getattr(ti, "map_index", None)
        return cls(
            dag_id=getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None),
            run_id=getattr(dag_run, "run_id", None) or context.get("run_id"),
            task_id=getattr(ti, "task_id", None),
            map_index=map_index if map_index is not None and map_index >= 0 else None,
            try_number=getattr(ti, "try_number", None),
        )


def redact(value: Any) -> Any:
    """Mask values under secret-looking keys, so details never carry a credential."""
    if isinstance(value, Mapping):
        return {
            k: "***" if any(w in str(k).lower() for w in _SECRET_WORDS) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


def audit(
    conn: psycopg.Connection,
    step: str,
    message: str,
    *,
    level: str = "INFO",
    station: str | None = None,
    details: Mapping[str, Any] | None = None,
    ids: RunIds | None = None,
) -> int:
    """Insert one audit row (in the caller's transaction) and mirror it to the log."""
    level = level.upper()
    if level not in LEVELS:
        raise ValueError(f"audit level must be one of {LEVELS}, got {level!r}")
    ids = ids or RunIds()
    clean = redact(dict(details or {}))
    row = conn.execute(
        "INSERT INTO stationflow.audit_log"
        " (dag_id, run_id, task_id, map_index, try_number, station, step, level, message, details)"
        " VALUES (%(dag_id)s, %(run_id)s, %(task_id)s, %(map_index)s, %(try_number)s,"
        " %(station)s, %(step)s, %(level)s, %(message)s, %(details)s) RETURNING id",
        {
            **asdict(ids),
            "station": station,
            "step": step,
            "level": level,
            "message": message,
            "details": Jsonb(clean),
        },
    ).fetchone()
    log.log(
        logging.getLevelName(level), "[%s%s] %s", step, f" {station}" if station else "", message
    )
    return row[0]
