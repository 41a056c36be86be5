"""What the Last Values DAG's task calls: the network's sources and calibration, then one
refresh of ``smartem_rt.last_device_output``. A plain function, testable without Airflow
(``context`` may be None)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import psycopg

from stationflow.collect.harvest import HarvestError
from stationflow.config import Inventory, SensorNetwork, load_inventory
from stationflow.refine.records.last_values import STEP, LastSource, refresh
from stationflow.refine.records.refiner import Calibration, GasModel
from stationflow.refine.records.tasks import ase_calibration
from stationflow.state.audit import RunIds, audit
from stationflow.state.db import connect

log = logging.getLogger("stationflow.refine.records.last")


def gas_models(conn: psycopg.Connection, net: SensorNetwork) -> Mapping[str, GasModel]:
    """The newest valid Josene ANN per gas; none (gases skipped, with a warning) while the
    calibration module is not installed, so the other indicators still refresh."""
    try:
        from stationflow.refine.records.calibration import newest_models
    except ImportError as exc:
        log.warning("%s: no calibration models (%s): Josene gases are skipped", net.id, exc)
        return {}
    return newest_models(conn, net.id)


def refresh_last(
    network_id: str,
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
    now: datetime | None = None,
) -> dict:
    """Refresh one network's last values at wall-clock ``now`` (a late run still shows
    the present). Sources that cannot be built or read at all are audited and fail the
    task after the others' values are committed, so a dead peer alerts."""
    from stationflow.collect.sources import source_for

    net = (inv or load_inventory()).network(network_id)
    now = now or datetime.now(UTC)
    ids = RunIds.from_context(context)
    sources: list[LastSource] = []
    broken: dict[str, str] = {}
    for cfg in net.harvest:
        try:
            sources.append(source_for(cfg))  # type: ignore[arg-type]
        except Exception as exc:  # a missing Connection: the other sources still refresh
            broken[cfg.harvester] = f"{type(exc).__name__}: {exc}"
    try:
        with connect(autocommit=True) as conn:
            if broken:
                with conn.transaction():
                    for harvester, why in broken.items():
                        message = f"{harvester}: no source: {why}"
                        audit(conn, STEP, message, level="ERROR", station=net.id, ids=ids)
            calibration = Calibration(models=gas_models(conn, net), ase=ase_calibration(net))
            summary = refresh(
                conn,
                net,
                sources,
                now=now,
                calibration=calibration,
                ids=ids,
                workers=max(h.concurrency for h in net.harvest),
            )
    finally:
        for source in sources:
            close = getattr(source, "close", None)
            if close is not None:
                close()
    dead = {**broken, **summary.dead_sources}
    if dead:
        raise HarvestError(
            f"{network_id}: no last values from "
            + "; ".join(f"{h} ({why})" for h, why in sorted(dead.items()))
        )
    return summary.as_dict()
