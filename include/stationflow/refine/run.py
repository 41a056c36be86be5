"""Assemble one day the way the CLI and the DAGs both do: inventory defaults, then the ledger.

What the caller says wins; what it leaves out comes from the station's file stream in the
inventory (UTC offset, declared interval, missing code, layout, column map).
"""

from __future__ import annotations

import glob
from datetime import date
from pathlib import Path
from typing import Any

from stationflow.config import Inventory, load_inventory
from stationflow.errors import PermanentError
from stationflow.refine.assemble import Request, Result, assemble
from stationflow.state.audit import RunIds


class BadInput(PermanentError):
    """Some fragments could not be used (quarantined), or nothing usable was found."""


def make_request(
    station: str,
    file_type: str,
    logger: int,
    file: int,
    day: date,
    output_dir: Path,
    *,
    inventory: Inventory | None = None,
    utc_offset: float | None = None,
    interval_s: float | None = None,
    missing: float | None = None,
    layout: str | None = None,
    columns_map: dict[str, str] | None = None,
    extension: str | None = None,
    new_columns: str = "report",
    quarantine_dir: Path | None = None,
) -> Request:
    inv = inventory or load_inventory()  # a broken inventory is an error, never skipped
    try:
        st = inv.station(station)
    except KeyError:
        st = None
    stream = None
    if st is not None:
        stream = next(
            (
                f
                for f in st.files
                if (f.type, f.logger_number, f.file_number) == (file_type, logger, file)
            ),
            None,
        )
    if utc_offset is None:
        if st is None:
            raise ValueError(
                f"{station} is not in the inventory: give its UTC offset (--utc-offset)"
            )
        utc_offset = st.utc_offset_hours
    if missing is None:
        missing = inv.missing_value(stream) if stream else inv.defaults.missing_value
    return Request(
        station=station,
        file_type=file_type,
        logger=logger,
        file=file,
        day=day,
        output_dir=Path(output_dir),
        utc_offset_hours=utc_offset,
        interval_s=interval_s,
        declared_interval_s=stream.interval_ms / 1000 if stream and stream.interval_ms else None,
        missing=missing,
        layout=layout or (stream.layout if stream else "toa5"),
        columns_map=columns_map or (stream.columns if stream else None),
        extension=extension,
        new_columns=new_columns,
        quarantine_dir=quarantine_dir,
    )


def assemble_and_record(
    req: Request, paths: list[Path], *, ledger: bool = True, ids: RunIds | None = None
) -> Result:
    """Assemble, then record outputs, fragments and audit rows in the state database."""
    result = assemble(req, paths)
    if ledger:
        from stationflow.refine.record import record
        from stationflow.state.db import connect

        with connect() as conn:
            record(conn, req, result, ids)
    return result


def run_from_params(params: dict[str, Any], ids: RunIds | None = None) -> list[dict[str, Any]]:
    """The icos_assemble DAG's task: params as the form gives them; a small summary back."""
    from stationflow.settings import load_settings

    paths = sorted(
        {Path(p) for pattern in str(params["fragments"]).split() for p in glob.glob(pattern)}
    )
    if not paths:
        raise BadInput(f"no fragment matches {params['fragments']!r}")
    out = params.get("output_dir") or load_settings().home / "etc" / params["station"]
    req = make_request(
        params["station"],
        params["file_type"],
        int(params["logger"]),
        int(params["file"]),
        date.fromisoformat(params["date"]),
        Path(out),
    )
    result = assemble_and_record(req, paths, ids=ids)
    if result.quarantined or not result.outputs:
        why = "; ".join(str(i) for i in result.issues if i.level == "error") or "no usable row"
        raise BadInput(f"{len(result.outputs)} file(s) written; bad input: {why}")
    return [
        {
            k: o.report[k]
            for k in ("name", "version", "rows_expected", "rows_present", "rows_filled", "md5")
        }
        for o in result.outputs
    ]
