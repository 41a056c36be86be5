"""Numbered SQL migrations (``sql/NNN_name.sql``), each applied exactly once, in order.

Each file runs in its own transaction together with its row in ``schema_migrations``,
so a failing migration leaves no trace. An advisory lock serialises concurrent runners.
A file edited after it was applied is refused (its checksum changed): write a new one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x5F_A710_F10  # pg_advisory_lock key of the migrator

_BOOTSTRAP = """
CREATE TABLE IF NOT EXISTS public.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   char(64)    NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    migration: Migration
    applied_at: datetime | None


def discover(sql_dir: Path) -> list[Migration]:
    """The migrations in ``sql_dir``, ordered; refuses stray or duplicate numbers."""
    found: dict[int, Migration] = {}
    for path in sorted(Path(sql_dir).glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise MigrationError(f"{path}: migration files are named NNN_lower_snake.sql")
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"{path}: number {version:03d} is also {found[version].path.name}")
        found[version] = Migration(version, m.group(2), path, path.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


def _applied(conn: psycopg.Connection) -> dict[int, tuple[str, datetime]]:
    rows = conn.execute("SELECT version, checksum, applied_at FROM public.schema_migrations")
    return {v: (c, at) for v, c, at in rows}


def _check(migrations: list[Migration], applied: dict[int, tuple[str, datetime]]) -> None:
    known = {m.version: m for m in migrations}
    unknown = sorted(set(applied) - set(known))
    if unknown:
        raise MigrationError(
            f"database has migrations {unknown} that are not in this checkout: code older than DB?"
        )
    for version, (checksum, _) in applied.items():
        m = known[version]
        if checksum != m.checksum:
            raise MigrationError(
                f"{m.path}: changed after it was applied (checksum differs); add a new migration"
            )


def status(url: str, sql_dir: Path) -> list[MigrationStatus]:
    migrations = discover(sql_dir)
    with psycopg.connect(url) as conn:
        exists = conn.execute("SELECT to_regclass('public.schema_migrations')").fetchone()[0]
        applied = _applied(conn) if exists else {}
    _check(migrations, applied)
    return [MigrationStatus(m, applied.get(m.version, (None, None))[1]) for m in migrations]


def migrate(url: str, sql_dir: Path) -> list[Migration]:
    """Apply what is pending; returns the migrations applied now (empty: nothing to do)."""
    migrations = discover(sql_dir)
    done: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute(_BOOTSTRAP)
            applied = _applied(conn)
            _check(migrations, applied)
            for m in migrations:
                if m.version in applied:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(m.sql)
                        conn.execute(
                            "INSERT INTO public.schema_migrations (version, name, checksum)"
                            " VALUES (%s, %s, %s)",
                            (m.version, m.name, m.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(f"{m.path}: {exc}".strip()) from exc
                done.append(m)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return done
