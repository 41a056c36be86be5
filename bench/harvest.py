"""Benchmark of issue 6: raw rows per second from the Whale simulator into smartem_raw.timeseries.

100 devices x 24 hours (2,400 hour documents of ~200 real Josene samples each), measured in
the same run, alternating, on an emptied table each time:

(a) the harvester: ``stationflow.collect.harvest.harvest`` (devices fetched concurrently,
    batches COPYed and merged in one transaction each, progress by trigger);
(b) the baseline: the original's way - one device after another, one hour after another,
    each row stored by its own INSERT and committed (same fetching and parsing code).

Also the write path alone, on the same 2,400 hours already in memory: ``write_batch`` in
batches of 200 against row-by-row INSERTs. The simulator's bodies are generated once
before timing (a warm-up walk), so both sides read the same cached bytes. Prints figures
and ratios; asserts no time.

    .venv/bin/python bench/harvest.py                   # 100 devices x 24 h, 3 rounds
    .venv/bin/python bench/harvest.py --devices 10 --hours 4 --repeat 1
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from stationflow.collect import raw_store  # noqa: E402
from stationflow.collect.harvest import harvest  # noqa: E402
from stationflow.collect.raw_store import RawHour  # noqa: E402
from stationflow.collect.whale import WhaleSource  # noqa: E402
from stationflow.sim.whale import WhaleSim  # noqa: E402
from stationflow.state import embedded  # noqa: E402
from stationflow.state.db import ensure_database  # noqa: E402
from stationflow.state.migrate import migrate  # noqa: E402

TOKEN = secrets.token_urlsafe(16)  # the simulator and the harvester share it
END = datetime(2026, 1, 20, 0, tzinfo=UTC)  # the window ends at midnight...
NOW = END + timedelta(hours=3)  # ...and every late sample has arrived since
ROW_BY_ROW = (
    "INSERT INTO smartem_raw.timeseries (unique_id, device_id, day, hour, hour_start, data,"
    " content_hash, sample_count, complete, device_type, device_version, harvester, lon, lat)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (device_id, day, hour) DO NOTHING"
)


def empty(conn: psycopg.Connection) -> None:
    conn.execute("TRUNCATE smartem_raw.timeseries, smartem_raw.harvester_progress CASCADE")
    conn.commit()


def source(url: str) -> WhaleSource:
    return WhaleSource(url=url, connection_id="bench", token=TOKEN)


def run_harvester(db: str, url: str, since: datetime, workers: int) -> float:
    with psycopg.connect(db, autocommit=True) as conn:
        empty(conn)
        t = time.perf_counter()
        report = harvest(
            conn, source(url), since=since, until=END, now=NOW, workers=workers, batch_hours=200
        )
        elapsed = time.perf_counter() - t
    assert not report.failures, report.failures
    return elapsed


def run_baseline(db: str, url: str, since: datetime) -> float:
    src = source(url)
    with psycopg.connect(db) as conn:
        empty(conn)
        t = time.perf_counter()
        for device in src.devices():
            for h in src.fetch_device(device, since, END):
                conn.execute(ROW_BY_ROW, h.row())
                conn.commit()
        return time.perf_counter() - t


def fetch_all(url: str, since: datetime) -> list[RawHour]:
    src = source(url)
    return [h for d in src.devices() for h in src.fetch_device(d, since, END)]


def write_batched(db: str, hours: list[RawHour]) -> float:
    with psycopg.connect(db, autocommit=True) as conn:
        empty(conn)
        t = time.perf_counter()
        for i in range(0, len(hours), 200):
            raw_store.write_batch(conn, hours[i : i + 200])
        return time.perf_counter() - t


def write_row_by_row(db: str, hours: list[RawHour]) -> float:
    with psycopg.connect(db) as conn:
        empty(conn)
        t = time.perf_counter()
        for h in hours:
            conn.execute(ROW_BY_ROW, h.row())
            conn.commit()
        return time.perf_counter() - t


def count(db: str) -> int:
    with psycopg.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM smartem_raw.timeseries").fetchone()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--hours", type=int, default=24)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--db", help="a PostgreSQL URL (default: a throw-away embedded server)")
    args = ap.parse_args(argv)
    since = END - timedelta(hours=args.hours)
    expected = args.devices * args.hours

    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        db = args.db
        if db is None:
            info, _ = embedded.ensure_running(Path(tmp) / "pg")
            ensure_database(info.url("postgres"), "bench")
            db = info.url("bench")
        try:
            migrate(db, ROOT / "sql")
            devices = list(range(1001, 1001 + args.devices))
            with WhaleSim(
                devices, token=TOKEN, clock=lambda: NOW, history_hours=args.hours + 4
            ) as sim:
                t = time.perf_counter()
                hours = fetch_all(sim.url, since)  # warm-up: every body generated once
                warm = time.perf_counter() - t
                size = sum(len(h.body) for h in hours)
                samples = sum(h.sample_count for h in hours)
                print(
                    f"{len(hours)} hour documents ({args.devices} devices x {args.hours} h),"
                    f" {samples:,} samples, {size / 1e6:.0f} MB of JSON; warm-up walk {warm:.1f} s"
                )
                assert len(hours) == expected, (len(hours), expected)
                e2e, writes = [], []
                for r in range(1, args.repeat + 1):
                    a = run_harvester(db, sim.url, since, args.workers)
                    assert count(db) == expected
                    b = run_baseline(db, sim.url, since)
                    assert count(db) == expected
                    c = write_batched(db, hours)
                    d = write_row_by_row(db, hours)
                    e2e.append(b / a)
                    writes.append(d / c)
                    print(
                        f"round {r}: harvester {expected / a:,.0f} rows/s ({a:.2f} s),"
                        f" row-by-row {expected / b:,.0f} rows/s ({b:.2f} s): {b / a:.1f}x |"
                        f" write only: batches {expected / c:,.0f} rows/s ({c:.2f} s),"
                        f" row-by-row {expected / d:,.0f} rows/s ({d:.2f} s): {d / c:.1f}x"
                    )
        finally:
            if args.db is None:
                embedded.stop(Path(tmp) / "pg")
    print(
        f"median ratio: end to end {statistics.median(e2e):.1f}x,"
        f" write path {statistics.median(writes):.1f}x (harvester / row-by-row INSERTs)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
