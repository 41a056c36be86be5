"""Migrations against a real PostgreSQL: once each, in order, atomically, checksummed."""

import shutil
import threading
from pathlib import Path

import psycopg
import pytest

from stationflow.settings import PROJECT_ROOT
from stationflow.state.migrate import MigrationError, discover, migrate, status

SQL = PROJECT_ROOT / "sql"
LEDGER_TABLES = {"fragment", "output_file", "output_fragment", "upload", "audit_log"}


def tables(url: str, schema: str) -> set[str]:
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return {r[0] for r in rows}


def columns(url: str, table: str) -> set[str]:
    with psycopg.connect(url) as c:
        rows = c.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'stationflow' AND table_name = %s",
            (table,),
        )
        return {r[0] for r in rows}


@pytest.fixture
def sql_dir(tmp_path: Path) -> Path:
    d = tmp_path / "sql"
    shutil.copytree(SQL, d)
    return d


def test_the_project_migrations_are_well_named_and_ordered():
    ms = discover(SQL)
    assert ms and ms[0].version == 1 and ms[0].name == "ledger"
    assert [m.version for m in ms] == sorted({m.version for m in ms})


def test_migrate_creates_the_ledger_and_is_idempotent(fresh_db):
    applied = migrate(fresh_db, SQL)
    assert [m.path.name for m in applied] == [p.name for p in sorted(SQL.glob("*.sql"))]
    assert tables(fresh_db, "stationflow") >= LEDGER_TABLES
    assert {
        "station",
        "source",
        "path",
        "size",
        "sha256",
        "first_ts",
        "last_ts",
        "rows",
        "collected_at",
        "status",
    } <= columns(fresh_db, "fragment")
    assert {
        "station",
        "file_type",
        "period_start",
        "etc_name",
        "md5",
        "sha256",
        "rows_expected",
        "rows_present",
        "rows_filled",
        "interval_ms",
        "version",
        "created_at",
    } <= columns(fresh_db, "output_file")
    assert {
        "output_file_id",
        "target",
        "attempt",
        "http_status",
        "receipt",
        "message",
        "at",
    } <= columns(fresh_db, "upload")
    assert {
        "at",
        "dag_id",
        "run_id",
        "task_id",
        "station",
        "step",
        "level",
        "message",
        "details",
    } <= columns(fresh_db, "audit_log")

    assert migrate(fresh_db, SQL) == []  # second run: nothing to do
    with psycopg.connect(fresh_db) as c:
        assert c.execute("SELECT count(*) FROM public.schema_migrations").fetchone()[0] == len(
            applied
        )
    assert all(s.applied_at is not None for s in status(fresh_db, SQL))


def test_status_before_and_after(fresh_db, sql_dir):
    assert [s.applied_at for s in status(fresh_db, sql_dir)] == [None] * len(discover(sql_dir))
    migrate(fresh_db, sql_dir)
    (sql_dir / "900_extra.sql").write_text("CREATE TABLE stationflow.extra (id int);")
    pending = [s.migration.name for s in status(fresh_db, sql_dir) if s.applied_at is None]
    assert pending == ["extra"]
    assert [m.name for m in migrate(fresh_db, sql_dir)] == ["extra"]


def test_a_failing_migration_leaves_no_trace(fresh_db, sql_dir):
    migrate(fresh_db, sql_dir)
    (sql_dir / "901_half.sql").write_text(
        "CREATE TABLE stationflow.half (id int);\nSELECT no_such_function();\n"
    )
    with pytest.raises(MigrationError, match=r"901_half\.sql.*no_such_function"):
        migrate(fresh_db, sql_dir)
    assert "half" not in tables(fresh_db, "stationflow")  # rolled back with the failure
    (sql_dir / "901_half.sql").write_text("CREATE TABLE stationflow.half (id int);\n")
    assert [m.name for m in migrate(fresh_db, sql_dir)] == ["half"]  # fixed: applies cleanly


def test_an_applied_migration_must_not_change(fresh_db, sql_dir):
    migrate(fresh_db, sql_dir)
    first = sorted(sql_dir.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate(fresh_db, sql_dir)


def test_a_database_ahead_of_the_code_is_refused(fresh_db, sql_dir):
    (sql_dir / "902_later.sql").write_text("SELECT 1;")
    migrate(fresh_db, sql_dir)
    (sql_dir / "902_later.sql").unlink()
    with pytest.raises(MigrationError, match=r"\[902\].*not in this checkout"):
        migrate(fresh_db, sql_dir)


@pytest.mark.parametrize("name", ["1_short.sql", "001-dash.sql", "001_Upper.sql"])
def test_badly_named_files_are_refused(sql_dir, name):
    (sql_dir / name).write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="NNN_lower_snake"):
        discover(sql_dir)


def test_duplicate_numbers_are_refused(sql_dir):
    (sql_dir / "001_again.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="also"):
        discover(sql_dir)


def test_concurrent_runners_apply_each_migration_once(fresh_db, sql_dir):
    (sql_dir / "903_slow.sql").write_text(
        "SELECT pg_sleep(0.5);\nCREATE TABLE stationflow.slow (id int);"
    )
    results, errors = [], []

    def run():
        try:
            results.append(migrate(fresh_db, sql_dir))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = sorted(len(r) for r in results)
    assert applied == [0, 0, len(discover(sql_dir))]  # one runner did all, the others nothing
