"""Airflow-facing entry points of the record chain's refine step (thin: the logic is in
run.py, refiner.py and refined_store.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

from stationflow.collect.tasks import _interval
from stationflow.config import Inventory, SensorNetwork, load_inventory
from stationflow.refine.records.refiner import Calibration
from stationflow.state.audit import RunIds
from stationflow.state.db import connect


def ase_calibration(net: SensorNetwork) -> dict[int, dict[str, dict[str, float]]]:
    """The AirSensEUR boxes' linear gas models from stations.yaml, as the refiner takes them."""
    return {
        d.id: {gas: m.model_dump(exclude_none=True) for gas, m in d.calibration.items()}
        for d in net.devices
        if d.calibration
    }


def calibration_for(conn: psycopg.Connection, net: SensorNetwork) -> Calibration:
    """The newest valid ANN per gas (Josene) and the boxes' linear models (AirSensEUR)."""
    from stationflow.refine.records.calibration import newest_models

    return Calibration(models=newest_models(conn, net.id), ase=ase_calibration(net))


def refine_records(
    network_id: str, context: Mapping[str, Any] | None = None, inv: Inventory | None = None
) -> dict:
    """Refine the network's pending raw hours; a backfill run re-refines its interval."""
    from stationflow.refine.records.run import refine_network

    net = (inv or load_inventory()).network(network_id)
    start, end, backfill = _interval(context)
    with connect(autocommit=True) as conn:
        summary = refine_network(
            conn,
            net,
            calibration_for(conn, net),
            since=start if backfill else None,
            until=end if backfill else None,
            ids=RunIds.from_context(context),
        )
    return summary.as_dict()
