"""The completeness view: a FastAPI app the Airflow plugin mounts on the API server.

It renders HTML on the server (no build step, nothing to ship but templates) and gives the
same data as JSON. Authentication and authorization are the caller's: the plugin passes
Airflow's own dependencies, so the view needs an Airflow login like the rest of the UI.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, date, datetime
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape

from stationflow import completeness as cp
from stationflow.config import load_inventory
from stationflow.settings import load_settings
from stationflow.state.db import connect

_TEMPLATES = Environment(
    loader=PackageLoader("stationflow.ui", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def heat(pct: float | None) -> str:
    """Cell colour by share of filled rows: green (none filled) to red (all filled)."""
    if pct is None:
        return "#e5e7eb"
    return f"hsl({120 * (1 - min(pct, 100.0) / 100):.0f}, 70%, 72%)"


def ratio_heat(done: int, expected: int) -> str:
    if expected <= 0:
        return "#f3f4f6"
    return heat(100.0 * max(0, expected - done) / expected)


def ts(value: datetime | None) -> str:
    """A ledger time for people: UTC, to the second."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


_TEMPLATES.globals.update(heat=heat, ratio_heat=ratio_heat)
_TEMPLATES.filters["ts"] = ts


def _window(days: int, end: date | None) -> list[date]:
    return cp.day_window(end or datetime.now(UTC).date(), days)


def overview(days: int = 7, end: date | None = None) -> dict[str, Any]:
    settings = load_settings()
    inv = load_inventory(settings.config_path)
    window = _window(days, end)
    with connect() as conn:
        files = cp.station_files(conn, inv, window, landing=settings.landing_dir)
        networks = cp.network_hours(conn, inv, window)
    return {"days": window, "files": files, "networks": networks}


def create_app(dependencies: Sequence[Callable[..., Any]] = ()) -> FastAPI:
    app = FastAPI(
        title="stationflow completeness",
        dependencies=[Depends(d) for d in dependencies],
        docs_url=None,
        redoc_url=None,
    )

    @app.get("/completeness", response_class=HTMLResponse)
    def page(
        request: Request,
        days: int = Query(7, ge=1, le=62),
        end: date | None = None,
    ) -> str:
        data = overview(days, end)
        return _TEMPLATES.get_template("completeness.html").render(
            base=request.scope.get("root_path", ""), now=datetime.now(UTC), **data
        )

    @app.get("/completeness/files/{output_file_id}", response_class=HTMLResponse)
    def file_page(request: Request, output_file_id: int) -> str:
        with connect() as conn:
            detail = cp.file_detail(conn, output_file_id)
        if detail is None:
            raise HTTPException(404, f"no output file {output_file_id}")
        return _TEMPLATES.get_template("file.html").render(
            base=request.scope.get("root_path", ""), **detail
        )

    @app.get("/completeness/days/{station}/{stream}/{day}", response_class=HTMLResponse)
    def day_page(request: Request, station: str, stream: str, day: date) -> str:
        settings = load_settings()
        inv = load_inventory(settings.config_path)
        try:
            one = inv.model_copy(update={"stations": [inv.station(station)]})
        except KeyError as exc:
            raise HTTPException(404, str(exc)) from exc
        with connect() as conn:
            rows = cp.station_files(conn, one, [day], landing=settings.landing_dir)
            files = next((r.days[0].files for r in rows if r.stream == stream), None)
            if files is None:
                raise HTTPException(404, f"{station} has no file stream {stream}")
            audit = cp.day_audit(conn, station, stream, day)
        return _TEMPLATES.get_template("day.html").render(
            base=request.scope.get("root_path", ""),
            station=station,
            stream=stream,
            day=day,
            files=files,
            audit=audit,
        )

    @app.get("/api/completeness")
    def api_overview(days: int = Query(7, ge=1, le=62), end: date | None = None) -> dict:
        data = overview(days, end)
        return {
            "days": [d.isoformat() for d in data["days"]],
            "files": [
                {
                    "station": r.station,
                    "stream": r.stream,
                    "days": [
                        {
                            "day": c.day.isoformat(),
                            "state": c.state,
                            "files": len(c.files),
                            "uploaded": c.count(cp.UPLOADED),
                            "failed": c.count(cp.FAILED),
                            "fragments": c.fragments,
                            "quarantined": c.quarantined,
                            "rows_expected": c.rows_expected,
                            "rows_present": c.rows_present,
                            "rows_filled": c.rows_filled,
                            "pct_filled": c.pct_filled,
                            "reason": c.reason,
                            "output_file_ids": [
                                f.output_file_id for f in c.files if f.output_file_id
                            ],
                        }
                        for c in r.days
                    ],
                }
                for r in data["files"]
            ],
            "networks": [asdict(n) for n in data["networks"]],
        }

    @app.get("/api/files/{output_file_id}")
    def api_file(output_file_id: int) -> dict:
        with connect() as conn:
            detail = cp.file_detail(conn, output_file_id)
        if detail is None:
            raise HTTPException(404, f"no output file {output_file_id}")
        return detail

    return app
