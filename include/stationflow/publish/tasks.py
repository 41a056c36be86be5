"""What the publishing DAGs' tasks call: upload ledger outputs, verify receipts, reconcile.

Tasks receive and return ledger ids (never file contents); every attempt is in the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from stationflow.config import Inventory, load_inventory
from stationflow.state.audit import RunIds, audit
from stationflow.state.db import connect


def upload_outputs(
    station_id: str,
    output_ids: list[int],
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
) -> list[int]:
    """Upload each output (skipped when these bytes were accepted already); returns the ids
    accepted or skipped. The first refusal or exhausted retry is raised after the others
    were tried, so one bad file does not hold back the rest of the day."""
    from stationflow.publish.icos_etc import upload_output

    station = (inv or load_inventory()).station(station_id)
    done, first_error = [], None
    with connect() as conn:
        for oid in output_ids:
            try:
                result = upload_output(
                    conn,
                    oid,
                    conn_id=station.upload.connection_id,
                    ids=RunIds.from_context(context),
                )
            except Exception as exc:  # recorded by upload_output; raised below
                first_error = first_error or exc
                continue
            if result.status in ("accepted", "skipped"):
                done.append(oid)
    if first_error is not None:
        raise first_error
    return done


def verify_receipts(
    station_id: str,
    output_ids: list[int],
    context: Mapping[str, Any] | None = None,
    inv: Inventory | None = None,
) -> list[str]:
    """Ask the portal about each accepted upload's receipt: name and md5 must match."""
    from stationflow.errors import PermanentError
    from stationflow.publish.icos_etc import endpoint_from_connection, verify_receipt

    station = (inv or load_inventory()).station(station_id)
    endpoint, allow_http = endpoint_from_connection(station.upload.connection_id)
    verified = []
    with connect() as conn:
        for oid in output_ids:
            row = conn.execute(
                "SELECT o.etc_name, o.md5, u.receipt FROM stationflow.output_file o"
                " JOIN stationflow.upload u ON u.output_file_id = o.id"
                " WHERE o.id = %s AND u.outcome = 'accepted' ORDER BY u.id DESC LIMIT 1",
                (oid,),
            ).fetchone()
            if row is None:
                continue  # a superseded version, skipped on purpose
            name, md5, token = row
            got = verify_receipt(
                endpoint.base_url,
                endpoint.login,
                endpoint.password,
                token,
                allow_http=allow_http,
            )
            if got.get("file_name") != name or str(got.get("md5", "")).lower() != md5:
                raise PermanentError(f"receipt {token} certifies {got}, not {name} with md5 {md5}")
            audit(
                conn,
                "publish.verify",
                f"{name}: receipt {token} verified",
                station=station_id,
                ids=RunIds.from_context(context),
                details={"output_file_id": oid, **got},
            )
            verified.append(token)
        conn.commit()
    return verified


def reconcile_all(context: Mapping[str, Any] | None = None, days: int = 2) -> dict:
    """The daily check of every expected file; raises (an alert by the task) when any is
    missing, after the mail and the audit rows are out."""
    from stationflow.errors import PermanentError
    from stationflow.publish.reconcile import reconcile

    with connect() as conn:
        summary = reconcile(
            conn,
            load_inventory(),
            now=datetime.now(UTC),
            days=days,
            ids=RunIds.from_context(context),
        )
        conn.commit()
    if summary["missing"]:
        raise PermanentError(
            f"{summary['missing']} expected file(s) not accepted by their deadline"
            f" (alert sent: {', '.join(summary.get('alert') or []) or 'no channel'})"
        )
    return {s: r["accepted"] for s, r in summary["stations"].items()}
