"""Airflow-facing entry points of the record chain's publish step (thin: the logic is in
run.py, ledger.py and the two targets).

A target's endpoint and credentials come from its Airflow Connection: host, port, scheme in
``schema`` (default https), login/password for HTTP Basic auth when set, and in ``extra``:
``path`` (the service root: default ``/sensorthings/v1.1`` for STA, ``/service`` for SOS),
``timeout`` (seconds) and ``verify`` (false, or a CA bundle; TLS is verified by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stationflow.collect.tasks import _interval
from stationflow.config import Inventory, PublishTarget, SensorNetwork, load_inventory
from stationflow.connections import get_connection, verify_setting
from stationflow.errors import PermanentError
from stationflow.publish.records.run import Target
from stationflow.state.audit import RunIds
from stationflow.state.db import connect

DEFAULT_PATH = {"sta": "/sensorthings/v1.1", "sos": "/service"}


class ValuesRefused(PermanentError):
    """The server refused some values (each is 'failed' in the ledger, with an audit row,
    and tried again by the next run): the task fails so someone is alerted."""


def target_name(t: PublishTarget) -> str:
    return f"{t.kind}:{t.connection_id}"


def build_target(net: SensorNetwork, t: PublishTarget) -> Target:
    c = get_connection(t.connection_id)
    extra = c.extra_dejson or {}
    scheme = c.schema if c.schema in ("http", "https") else "https"
    port = f":{c.port}" if c.port else ""
    url = f"{scheme}://{c.host}{port}{extra.get('path', DEFAULT_PATH[t.kind])}"
    options = {
        "auth": (c.login, c.password or "") if c.login else None,
        "verify": verify_setting(extra.get("verify", True)),
        "timeout": float(extra.get("timeout", 60)),
    }
    if t.kind == "sta":
        from stationflow.publish.records.sta_target import StaTarget
        from stationflow.publish.sta import StaClient

        return StaTarget(StaClient(url, **options), net, target_name(t))
    from stationflow.publish.records.sos_target import SosTarget
    from stationflow.publish.sos import SosClient

    return SosTarget(SosClient(url, **options), net, target_name(t))


def publish_records(
    network_id: str,
    target: str,
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
) -> dict:
    """Publish the network's refined values the target (``<kind>:<connection id>``) still
    needs; a backfill run checks every value of its interval against the server."""
    from stationflow.publish.records.run import publish_network

    net = (inv or load_inventory()).network(network_id)
    spec = next((t for t in net.publish if target_name(t) == target), None)
    if spec is None:
        raise PermanentError(f"network {network_id!r} has no publish target {target!r}")
    start, end, backfill = _interval(context)
    with connect(autocommit=True) as conn:
        summary = publish_network(
            conn,
            net,
            build_target(net, spec),
            since=start if backfill else None,
            until=end if backfill else None,
            ids=RunIds.from_context(context),
        )
    if summary.failed:
        raise ValuesRefused(
            f"{summary.failed} of {summary.values} values refused by {target}"
            f" (first: {'; '.join(summary.errors[:2])}); see the audit log"
        )
    return summary.as_dict()
