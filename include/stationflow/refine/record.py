"""Put an assembly's outcome into the ledger and the audit log (one transaction per output)."""

from __future__ import annotations

import psycopg

from stationflow.formats.table import Table
from stationflow.refine.assemble import Fragment, Request, Result
from stationflow.state.audit import RunIds, audit
from stationflow.state.ledger import record_output, upsert_fragment, utc_from_local_ns


def _fragment_id(conn: psycopg.Connection, req: Request, f: Fragment) -> int:
    t: Table | None = f.table
    span = t is not None and len(t) > 0
    return upsert_fragment(
        conn,
        station=req.station,
        source=f"{t.header.format.lower()}:{t.header.table_name}" if t else "unreadable",
        path=str(f.quarantined_to or f.path),
        size=f.size,
        sha256=f.sha256,
        first_ts=utc_from_local_ns(int(t.ts.min()), req.utc_offset_hours) if span else None,
        last_ts=utc_from_local_ns(int(t.ts.max()), req.utc_offset_hours) if span else None,
        rows=len(t) if t is not None else None,
        status="quarantined" if f.quarantined_to else "collected",
        message=f.reason,
        source_path=str(f.path),
    )


def record(conn: psycopg.Connection, req: Request, result: Result, ids: RunIds | None = None):
    """Ledger rows for every output and fragment, plus audit rows; adds version/ids to reports."""
    step = "refine.assemble"
    for f in result.quarantined:
        with conn.transaction():
            _fragment_id(conn, req, f)
            audit(
                conn,
                step,
                f"quarantined {f.path.name}: {f.reason}",
                level="ERROR",
                station=req.station,
                ids=ids,
                details={"path": str(f.path), "moved_to": str(f.quarantined_to)},
            )
    for o in result.outputs:
        with conn.transaction():
            frag_ids = [_fragment_id(conn, req, f) for f in o.fragments]
            out_id, version, new = record_output(
                conn,
                o.report,
                fragment_ids=frag_ids,
                period_start=utc_from_local_ns(o.period_start, req.utc_offset_hours),
                period_end=utc_from_local_ns(o.period_end, req.utc_offset_hours),
            )
            o.report.update(ledger_id=out_id, version=version, new_version=new)
            r = o.report
            audit(
                conn,
                step,
                f"{o.name} v{version}{'' if new else ' (unchanged)'}: {r['rows_present']} of"
                f" {r['rows_expected']} rows present, {r['rows_filled']} filled,"
                f" {r['duplicates_dropped']} duplicates dropped, {r['conflicts']} conflicts",
                level="WARNING" if r["conflicts"] or r.get("warnings") else "INFO",
                station=req.station,
                ids=ids,
                details=r,
            )
    problems = [i for i in result.issues if i.level == "error"]
    if problems:
        with conn.transaction():
            audit(
                conn,
                step,
                f"{len(problems)} input problems",
                level="ERROR",
                station=req.station,
                ids=ids,
                details={"issues": [str(i) for i in problems]},
            )
