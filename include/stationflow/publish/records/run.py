"""One publish run of a sensor network to one target (an STA or SOS-T server): the refined
values the target still needs, batch by batch. Each batch is marked ``sending`` and
committed, sent, then settled with its audit rows in one transaction (ledger.py says why a
crash in between never duplicates a value).

A replay (an interval, from a backfill run) sends nothing blindly: every value of the
interval is checked against what the server holds, missing ones are created again, changed
ones updated, extra copies deleted, and values whose refined row is gone are deleted from
the server.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg

from stationflow.config import SensorNetwork
from stationflow.publish.records import ledger
from stationflow.publish.records.ledger import Outcome, PublishRow
from stationflow.state.audit import RunIds, audit

log = logging.getLogger("stationflow.publish.records")
STEP = "publish"
BATCH = 500  # values per request and transaction
DETAILS_MAX = 50  # failed values listed in one audit row


class Target(Protocol):
    name: str  # the ledger's key: '<kind>:<connection id>'
    kind: str

    def publish(self, rows: Sequence[PublishRow], *, verify: bool = False) -> list[Outcome]: ...

    def delete(self, remote_ids: Sequence[Any]) -> int: ...


@dataclass
class PublishSummary:
    network: str
    target: str
    values: int = 0  # refined values handled
    published: int = 0  # confirmed by the server
    failed: int = 0
    deleted: int = 0  # values gone from the refined table, deleted from the server
    created: dict[str, int] = field(default_factory=dict)  # entities created, per kind
    errors: list[str] = field(default_factory=list)  # the first few

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def publish_network(
    conn: psycopg.Connection,
    net: SensorNetwork,
    target: Target,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch: int = BATCH,
    ids: RunIds | None = None,
) -> PublishSummary:
    """Publish every value the target needs (with [since, until): check every value of that
    interval, a replay). Needs a connection outside a transaction: each batch commits."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("publish_network needs an idle connection (each batch commits)")
    harvesters = [h.harvester for h in net.harvest]
    verify = since is not None and until is not None
    summary = PublishSummary(net.id, target.name)
    devices: set[int] = set()
    after = 0
    while True:
        rows = ledger.pending(conn, target.name, harvesters, limit=batch, after=after,
                              since=since, until=until)  # fmt: skip
        if not rows:
            break
        after = rows[-1].gid
        devices.update(r.device_id for r in rows)
        with conn.transaction():
            ledger.mark_sending(conn, target.name, rows)
        outcomes = target.publish(rows, verify=verify)
        failed = [o for o in outcomes if not o.ok]
        with conn.transaction():
            ledger.settle(conn, target.name, outcomes)
            if failed:
                _audit_failed(conn, net.id, target.name, failed, ids)
        summary.values += len(rows)
        summary.published += len(outcomes) - len(failed)
        summary.failed += len(failed)
        summary.errors += [f"{o.key}: {o.error}" for o in failed][: 5 - len(summary.errors)]
    if verify and devices:
        gone = ledger.orphans(conn, target.name, sorted(devices), since, until)
        if gone:
            summary.deleted = target.delete([rid for _, rid in gone])
            with conn.transaction():
                ledger.forget(conn, target.name, [k for k, _ in gone])
    summary.created = dict(getattr(target, "created", {}))
    if summary.values or summary.deleted:
        with conn.transaction():
            audit(conn, STEP,
                  f"{summary.published} of {summary.values} values published to {target.name}"
                  + (f", {summary.failed} refused" if summary.failed else "")
                  + (f", {summary.deleted} deleted" if summary.deleted else ""),
                  level="WARNING" if summary.failed else "INFO", ids=ids,
                  details={**summary.as_dict(), "replay": verify})  # fmt: skip
        log.info("publish %s -> %s: %s", net.id, target.name, summary.as_dict())
    return summary


def _audit_failed(
    conn: psycopg.Connection,
    network: str,
    target: str,
    failed: Sequence[Outcome],
    ids: RunIds | None,
) -> None:
    reasons = Counter(o.error for o in failed)
    audit(conn, STEP, f"{len(failed)} values refused by {target}: "
          + "; ".join(f"{why} ({n})" for why, n in reasons.most_common(3)),
          level="ERROR", ids=ids, details={
              "network": network, "target": target,
              "values": [{"device_id": o.key[0], "indicator": o.key[1], "day": o.key[2],
                          "hour": o.key[3], "revision": o.revision, "error": o.error}
                         for o in failed[:DETAILS_MAX]],
              "more": max(0, len(failed) - DETAILS_MAX)})  # fmt: skip
