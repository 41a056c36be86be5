"""What the calibration DAG's tasks call: resolve the inventory and the run's time, then
train one network's gas models with the state database. A plain function, testable
without Airflow (``context`` may be None)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from stationflow.config import Inventory, load_inventory
from stationflow.state.audit import RunIds
from stationflow.state.db import connect


def run_end(context: Mapping[str, Any] | None, now: datetime) -> datetime:
    """Where the training window ends: the run's data interval end (a scheduled run trains
    on the weeks before its slot, so a late or re-run task trains on the same hours), never
    later than now; ``now`` outside Airflow or when the run has no interval."""
    if not context:
        return now
    dag_run = context.get("dag_run")
    end = context.get("data_interval_end") or getattr(dag_run, "data_interval_end", None)
    return min(end, now) if end is not None else now


def calibrate_network(
    network_id: str,
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
    now: datetime | None = None,
) -> dict:
    """Train, store and audit a model per configured gas of one sensor network."""
    from stationflow.refine.records.calibration import train_network

    inv = inv or load_inventory()
    net = inv.network(network_id)
    now = now or datetime.now(UTC)
    with connect() as conn:
        report = train_network(
            conn, net, now=now, end=run_end(context, now), ids=RunIds.from_context(context)
        )
    return report.summary()
