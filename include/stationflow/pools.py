"""Airflow pools the collection DAGs need, derived from the inventory.

A station's VPN link (a 4G router) carries a few transfers at a time; a serial server
copies its serial traffic to every connected client, so its port has exactly one owner.
"""

from __future__ import annotations

import re

from stationflow.config import Inventory, ModbusCollect


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_")


def station_pool(station_id: str) -> str:
    return f"link_{_slug(station_id)}"


def port_pool(connection_id: str) -> str:
    """One pool per Modbus endpoint (a serial server's port, or a logger's own port)."""
    return f"modbus_{_slug(connection_id)}"


def required_pools(inv: Inventory) -> dict[str, tuple[int, str]]:
    """name -> (slots, description) for every pool a collection task may use."""
    pools: dict[str, tuple[int, str]] = {}
    for st in inv.stations:
        pools[station_pool(st.id)] = (st.link_slots, f"{st.id}: transfers over the station link")
        for lg in st.loggers:
            if isinstance(lg.collect, ModbusCollect):
                pools[port_pool(lg.collect.connection_id)] = (
                    1,
                    f"{st.id}/{lg.id}: one Modbus client at a time on {lg.collect.connection_id}",
                )
    return pools


def ensure_pools(inv: Inventory) -> list[str]:
    """Create missing pools (existing ones keep the slots an operator gave them).

    Runs where Airflow's metadata database is reachable (the demo, a deployment step)."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    created = []
    with create_session() as session:
        existing = {p.pool for p in session.query(Pool).all()}
        for name, (slots, description) in required_pools(inv).items():
            if name not in existing:
                session.add(
                    Pool(pool=name, slots=slots, description=description, include_deferred=False)
                )
                created.append(name)
    return created
