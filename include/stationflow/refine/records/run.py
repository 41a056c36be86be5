"""One refine run of a sensor network: the pending raw hours, batch by batch, each batch
refined and committed with its progress and audit rows in one transaction."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg

from stationflow.config import SensorNetwork
from stationflow.refine.records import refined_store
from stationflow.refine.records.refiner import Calibration, RefineResult, refine
from stationflow.state.audit import RunIds, audit

log = logging.getLogger("stationflow.refine.records")
STEP = "refine"
BATCH = 200  # raw hours per transaction (a Josene hour is ~200 samples)
DETAILS_MAX = 50  # per-record problems listed in one audit row


@dataclass
class RunSummary:
    network: str
    hours: int = 0
    rejected: int = 0
    samples: int = 0
    bad_values: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    out_of_range: int = 0
    skipped: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def refine_network(
    conn: psycopg.Connection,
    net: SensorNetwork,
    calibration: Calibration,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    batch: int = BATCH,
    ids: RunIds | None = None,
) -> RunSummary:
    """Refine every pending raw hour of the network (with [since, until): every hour in
    that interval, a replay). Needs a connection outside a transaction: each batch commits."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RuntimeError("refine_network needs an idle connection (each batch commits)")
    harvesters = [h.harvester for h in net.harvest]
    summary = RunSummary(net.id)
    after = 0
    while True:
        records = refined_store.pending(
            conn, harvesters, limit=batch, after=after, since=since, until=until
        )
        if not records:
            break
        after = records[-1].gid
        result = refine(records, net.indicators, calibration)
        with conn.transaction():
            w = refined_store.write(conn, records, result, net.indicators)
            _audit(conn, net.id, records, result, summary, ids)
        _add(summary, result, w)
    if summary.hours or summary.rejected:
        log.info("refine %s: %s", net.id, summary.as_dict())
    return summary


def _add(summary: RunSummary, result: RefineResult, w: refined_store.WriteResult) -> None:
    summary.hours += w.refined
    summary.rejected += w.rejected
    summary.samples += sum(result.samples.values())
    summary.bad_values += sum(result.bad_samples.values())
    summary.inserted += w.inserted
    summary.updated += w.updated
    summary.unchanged += w.unchanged
    summary.deleted += w.deleted
    summary.out_of_range += len(result.out_of_range)


def _audit(
    conn: psycopg.Connection,
    network: str,
    records: Sequence,
    result: RefineResult,
    summary: RunSummary,
    ids: RunIds | None,
) -> None:
    """Audit rows of one batch, in its transaction: rejected records (ERROR, each), bad
    samples and out-of-range hours (WARNING, counted, the first records listed), indicators
    that could not be computed (WARNING, once a run)."""
    for rec, why in result.rejected:
        audit(conn, STEP, f"raw hour {rec.unique_id} rejected: {why}", level="ERROR",
              details={"network": network, "raw_gid": rec.gid, "revision": rec.revision,
                       "device_id": rec.device_id, "error": why}, ids=ids)  # fmt: skip
    if result.bad_samples:
        per_record: Counter[str] = Counter()
        for (uid, _f, _r), n in result.bad_samples.items():
            per_record[uid] += n
        first = sorted(per_record)[:DETAILS_MAX]
        audit(conn, STEP,
              f"{sum(per_record.values())} sample values skipped in {len(per_record)} hours",
              level="WARNING", ids=ids, details={
                  "network": network, "by_field": result.bad_sample_totals(),
                  "hours": {u: {f"{f}: {r}": n for (uu, f, r), n in result.bad_samples.items()
                                if uu == u} for u in first},
                  "more_hours": max(0, len(per_record) - DETAILS_MAX)})  # fmt: skip
    if result.out_of_range:
        audit(conn, STEP, f"{len(result.out_of_range)} hourly values outside their range dropped",
              level="WARNING", ids=ids, details={
                  "network": network,
                  "values": [{"hour": u, "indicator": n, "value": v}
                             for u, n, v in result.out_of_range[:DETAILS_MAX]]})  # fmt: skip
    new = {k: v for k, v in result.skipped.items() if k not in summary.skipped}
    if new:
        summary.skipped.update(new)
        audit(conn, STEP, "indicators not computed: " + "; ".join(f"{k}: {v}" for k, v in
              sorted(new.items())), level="WARNING", details={"network": network,
              "skipped": new}, ids=ids)  # fmt: skip
