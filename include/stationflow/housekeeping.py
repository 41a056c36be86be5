"""Daily self-check of the foundations: is the inventory valid, is the state schema current?

A station team learns of a broken stations.yaml or a forgotten ``stationflow db up``
from a failed run in the UI and an audit row, not from a chain failing at midnight.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from stationflow.config import load_inventory
from stationflow.errors import PermanentError
from stationflow.settings import load_settings
from stationflow.state.audit import RunIds, audit
from stationflow.state.db import connect, state_db_url
from stationflow.state.migrate import status


class SchemaNotCurrent(PermanentError):
    pass


def inventory_summary(path: Path | None = None) -> dict[str, Any]:
    """Validate the inventory (raises ConfigError) and describe it in a few numbers."""
    path = Path(path or load_settings().config_path)
    inv = load_inventory(path)
    return {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "stations": [s.id for s in inv.stations],
        "etc_files": sum(len(s.files) for s in inv.stations),
        "sensor_networks": [n.id for n in inv.sensor_networks],
        "devices": sum(len(n.devices) for n in inv.sensor_networks),
    }


def check_schema(url: str | None = None) -> list[str]:
    """Names of the applied migrations; raises SchemaNotCurrent when any is pending."""
    settings = load_settings()
    states = status(url or state_db_url(settings), settings.sql_dir)
    pending = [s.migration.path.name for s in states if s.applied_at is None]
    if pending:
        raise SchemaNotCurrent(f"pending migrations {pending}: run `stationflow db up`")
    return [s.migration.path.name for s in states]


def record_check(
    summary: dict[str, Any], migrations: list[str], ids: RunIds, url: str | None = None
) -> int:
    """One audit row describing today's check; returns its id."""
    with connect(url) as conn:
        return audit(
            conn,
            "housekeeping.inventory",
            f"inventory ok: {len(summary['stations'])} stations, {summary['etc_files']} ETC files,"
            f" {summary['devices']} devices; schema at {migrations[-1] if migrations else 'none'}",
            details={**summary, "migrations": migrations},
            ids=ids,
        )
