"""Which PostgreSQL each part uses, and connections to it.

``STATIONFLOW_DB_URL`` / ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN`` point at any PostgreSQL;
without them both databases live in the embedded server, started on first use.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from stationflow.settings import Settings, load_settings
from stationflow.state import embedded

STATE_DB = "stationflow"
AIRFLOW_DB = "airflow"


def ensure_database(admin_url: str, name: str) -> bool:
    """CREATE DATABASE ``name`` unless it exists; True when created."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def _embedded_url(settings: Settings, database: str, driver: str) -> str:
    info, _ = embedded.ensure_running(settings.pgdata)
    ensure_database(info.url("postgres"), database)
    return info.url(database, driver=driver)


def state_db_url(settings: Settings | None = None) -> str:
    """The stationflow state database (psycopg URL), starting the embedded server if needed."""
    settings = settings or load_settings()
    return settings.state_db_url or _embedded_url(settings, STATE_DB, "postgresql")


def airflow_db_url(settings: Settings | None = None) -> str:
    """Airflow's metadata database (SQLAlchemy URL), starting the embedded server if needed."""
    settings = settings or load_settings()
    return settings.airflow_db_url or _embedded_url(settings, AIRFLOW_DB, "postgresql+psycopg2")


def connect(url: str | None = None, **kwargs) -> psycopg.Connection:
    """A psycopg connection to ``url`` (default: the state database)."""
    return psycopg.connect(url or state_db_url(), **kwargs)
