"""The ledger's constraints hold the promises the chains rely on, in the database itself."""

import hashlib
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import sql

T0 = datetime(2026, 11, 20, 23, 0, tzinfo=UTC)  # 2026-11-21 00:00 at UTC+1


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()  # noqa: S324 - the ETC protocol's checksum


def insert(conn, table: str, row: dict) -> int:
    query = sql.SQL("INSERT INTO stationflow.{} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, row)),
        sql.SQL(", ").join(map(sql.Placeholder, row)),
    )
    return conn.execute(query, row).fetchone()[0]


def add_fragment(conn, data: bytes, source="loggernet:cr3000/Meteo", **kw) -> int:
    row = {
        "station": "FR-Lam",
        "source": source,
        "path": f"/landing/{sha(data)}",
        "size": len(data),
        "sha256": sha(data),
        "first_ts": T0,
        "last_ts": T0 + timedelta(hours=1),
        "rows": 3,
        **kw,
    }
    return insert(conn, "fragment", row)


def add_output(conn, data: bytes, version=1, **kw) -> int:
    row = {
        "station": "FR-Lam",
        "file_type": "BM",
        "logger_number": 1,
        "file_number": 1,
        "period_start": T0,
        "period_end": T0 + timedelta(days=1),
        "etc_name": "FR-Lam_BM_20261121_L01_F01.csv",
        "path": "/out/x.csv",
        "size": len(data),
        "md5": md5(data),
        "sha256": sha(data),
        "rows_expected": 48,
        "rows_present": 46,
        "rows_filled": 2,
        "interval_ms": 1_800_000,
        "version": version,
        **kw,
    }
    return insert(conn, "output_file", row)


def upload(conn, out_id: int, attempt: int, outcome: str, status=None, receipt=None):
    conn.execute(
        "INSERT INTO stationflow.upload (output_file_id, target, attempt, outcome, http_status,"
        " receipt) VALUES (%s, 'https://data.icos-cp.eu', %s, %s, %s, %s)",
        (out_id, attempt, outcome, status, receipt),
    )


def test_same_bytes_from_the_same_source_register_once(conn):
    add_fragment(conn, b"a,b\n1,2\n")
    add_fragment(conn, b"a,b\n1,2\n", source="ftp:smartflux")  # another source: its own piece
    add_fragment(conn, b"a,b\n1,2\n3,4\n")  # the file grew: new bytes, new fragment
    with pytest.raises(psycopg.errors.UniqueViolation):
        add_fragment(conn, b"a,b\n1,2\n")


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("sha256", "xyz", psycopg.errors.CheckViolation),
        ("status", "lost", psycopg.errors.CheckViolation),
        ("size", -1, psycopg.errors.CheckViolation),
        ("last_ts", T0 - timedelta(hours=1), psycopg.errors.CheckViolation),
    ],
)
def test_fragment_rejects_nonsense(conn, field, value, error):
    with pytest.raises(error):
        add_fragment(conn, b"x", **{field: value})


def test_output_versions_never_repeat_bytes(conn):
    add_output(conn, b"v1")
    add_output(conn, b"v2", version=2)  # late data: same name, new bytes, new version
    with pytest.raises(psycopg.errors.UniqueViolation):  # identical bytes are not a new version
        add_output(conn, b"v1", version=3)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("file_type", "MET"),
        ("logger_number", 0),
        ("file_number", 100),
        ("md5", "D41D8CD98F00B204E9800998ECF8427E"),
        ("rows_filled", 10),
        ("interval_ms", 0),
        ("period_start", T0 + timedelta(days=2)),
    ],
)
def test_output_file_rejects_nonsense(conn, field, value):
    with pytest.raises(psycopg.errors.CheckViolation):
        add_output(conn, b"x", **{field: value})


def test_an_output_is_accepted_at_most_once_per_target(conn):
    out = add_output(conn, b"day")
    upload(conn, out, 1, "error", 503)
    upload(conn, out, 2, "accepted", 200, "receipt-1")
    with pytest.raises(psycopg.errors.UniqueViolation):
        upload(conn, out, 3, "accepted", 200, "receipt-2")


def test_acceptance_needs_a_receipt_and_attempts_are_unique(conn):
    out = add_output(conn, b"day")
    with pytest.raises(psycopg.errors.CheckViolation), conn.transaction():
        upload(conn, out, 1, "accepted", 200, None)
    upload(conn, out, 1, "rejected", 403)
    with pytest.raises(psycopg.errors.UniqueViolation):
        upload(conn, out, 1, "error", 500)


def test_lineage_links_outputs_to_fragments(conn):
    frag = add_fragment(conn, b"f")
    out = add_output(conn, b"o")
    conn.execute("INSERT INTO stationflow.output_fragment VALUES (%s, %s)", (out, frag))
    with pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("INSERT INTO stationflow.output_fragment VALUES (%s, %s)", (out, 999_999))
