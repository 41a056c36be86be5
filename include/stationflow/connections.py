"""Endpoints and credentials, from Airflow Connections only (never from the inventory).

Connections resolve the way Airflow resolves them everywhere: ``AIRFLOW_CONN_<ID>``
variables, the configured secrets backend, then the metadata database. The returned object
is Airflow's own Connection (host, port, login, password, schema, extra_dejson).
"""

from __future__ import annotations

from typing import Any

from stationflow.errors import PermanentError


class MissingConnection(PermanentError):
    """A Connection the inventory names does not exist: nothing to retry until it is added."""


def _not_found(exc: Exception) -> bool:
    return "isn't defined" in str(exc) or "not found" in str(exc).lower()


def get_connection(conn_id: str) -> Any:
    """In a task through the Task SDK; in a service of ours (the FTP server, the simulators)
    the SDK sees only variables and backends, so the metadata database is asked next."""
    from airflow.sdk import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException, or the SDK's own not-found error
        if not _not_found(exc):
            raise
        first = exc
    try:
        from airflow.models.connection import Connection

        return Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:
        if not _not_found(exc):
            raise
    raise MissingConnection(
        f"Airflow Connection {conn_id!r} is not defined (the inventory names it)"
    ) from first


def endpoint(conn_id: str, default_port: int | None = None) -> tuple[str, int]:
    """(host, port) of a Connection; a missing host or port is a configuration error."""
    c = get_connection(conn_id)
    port = c.port or default_port
    if not c.host or not port:
        raise MissingConnection(f"Airflow Connection {conn_id!r} needs a host and a port")
    return c.host, int(port)


def verify_setting(value: object) -> bool | str:
    """``verify`` from a Connection's extra (true, false or a CA bundle path): booleans may
    come as strings, and "false" is never taken for a path."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", ""):
            return True
        if lowered in ("false", "0", "no"):
            return False
        return value  # a CA bundle path
    return bool(value)
