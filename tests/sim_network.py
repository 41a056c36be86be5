"""The demo network on a free block of loopback ports, with its Connections as variables."""

from __future__ import annotations

import json
import os
import random
import secrets
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from stationflow.config import Inventory, load_inventory
from stationflow.settings import PROJECT_ROOT
from stationflow.sim.network import Network, plan

INV = load_inventory(PROJECT_ROOT / "config" / "stations.yaml")


def free_base(inv: Inventory = INV) -> int:
    """A base port whose whole block (push port and peers) is free right now."""
    for _ in range(50):
        base = random.randrange(20000, 60000, 100)  # noqa: S311 - a port, not a secret
        p = plan(inv, base)
        try:
            for port in {p.push_port, *(e.port for e in p.endpoints.values())}:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port block")


def running_network(home: Path, monkeypatch, inv: Inventory = INV) -> Iterator[Network]:
    """Connections as AIRFLOW_CONN_* variables, STATIONFLOW_HOME = ``home``, peers started."""
    base = free_base(inv)
    for ep in plan(inv, base).endpoints.values():
        conn = {
            "conn_type": ep.conn_type,
            "host": "127.0.0.1",
            "port": ep.port,
            "schema": ep.schema,
        }
        if ep.login:
            conn.update(login=ep.login, password=secrets.token_urlsafe(12))
        if ep.extra:
            conn["extra"] = ep.extra
        monkeypatch.setenv(f"AIRFLOW_CONN_{ep.conn_id.upper()}", json.dumps(conn))
    monkeypatch.setenv("STATIONFLOW_HOME", str(home))
    net = Network(inv, home, base).build(datetime.now(UTC))
    net.start()
    try:
        yield net
    finally:
        net.stop()


def age(folder: Path, seconds: float) -> None:
    """Files written ``seconds`` earlier than they were (past the settle time)."""
    for p in folder.iterdir():
        st = p.stat()
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))
