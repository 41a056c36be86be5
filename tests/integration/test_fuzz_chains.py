"""Bad input through the chains' real entry points (hypothesis), not just the readers.

``tests/unit/formats/test_fuzz_readers.py`` fuzzes each reader; here its mutations go in
where the field puts bytes, and come out where the project keeps them:

1. a mutated TOA5 file dropped in a LoggerNet folder -> ``loggernet.scan`` (landing) ->
   ``daily.assemble_stream`` (the daily DAG's assembly, ledger and audit included);
2. a mutated .ghg beside a good one on the SmartFlux FTP simulator -> ``ftp_pull.pull``;
3. a mutated hour document served by the Whale simulator -> ``harvest`` -> ``refine_network``.

The property, the project's standard for bad input: a clear error naming the file, line or
field, recorded in the audit log, and quarantined; never a crash of the whole run, never a
silently wrong output, never the original bytes lost. Only the project's own documented
errors may leave an entry point (``NoFragments`` when nothing usable was collected for the
day). Every example starts from an empty state database (TRUNCATE, not a new database).

FUZZ_SCALE=20 runs 20 times the examples, not derandomized (as test_fuzz_readers.py).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from stationflow.collect.ftp_pull import pull
from stationflow.collect.harvest import harvest
from stationflow.collect.loggernet import header_table, scan
from stationflow.collect.whale import WhaleSource
from stationflow.config import parse_inventory
from stationflow.formats.ghg import read_ghg
from stationflow.formats.timestamps import DAY_NS, to_ns
from stationflow.formats.toa5 import read_toa5
from stationflow.refine.daily import NoFragments, assemble_stream
from stationflow.refine.records.definitions import defs_for
from stationflow.refine.records.refiner import Calibration
from stationflow.refine.records.run import refine_network
from stationflow.sim.smartflux import PERIOD, SmartFluxSim, build_ghg, ghg_name
from stationflow.sim.whale import WhaleSim
from tests.clock import Clock
from tests.unit.formats.test_fuzz_readers import (
    NASTY_VALUES,
    TOA5_FILE,
    TOA5_OPS,
    ghg_archives,
    mutated,
    toa5_seeds,
    whale_bodies,
)

SCALE = int(os.environ.get("FUZZ_SCALE", "1"))


def fuzz(n: int):
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        database=None,
        derandomize=SCALE == 1,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def truncate(conn: psycopg.Connection, *tables: str) -> None:
    conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def error_audits(conn: psycopg.Connection) -> list[str]:
    rows = conn.execute("SELECT message FROM stationflow.audit_log WHERE level = 'ERROR'")
    return [m for (m,) in rows]


def fragment_of(conn: psycopg.Connection, station: str, digest: str):
    """(status, message, path, sha256, rows, first_ts, last_ts) of the bytes, or None."""
    return conn.execute(
        "SELECT status, message, path, sha256, rows, first_ts, last_ts FROM stationflow.fragment"
        " WHERE station = %s AND sha256 = %s",
        (station, digest),
    ).fetchone()


def check_quarantined(conn, row, dropped: bytes, names: list[str]) -> None:
    """A quarantined fragment: its message names the file, its copy holds the dropped bytes
    exactly, and an ERROR audit row names the file too."""
    status, message, path, digest, *_ = row
    assert status == "quarantined"
    assert message and Path(path).name in message, (message, path)
    assert Path(path).read_bytes() == dropped and digest == sha(dropped)
    assert any(any(n in m for n in names) for m in error_audits(conn)), (names, error_audits(conn))


@pytest.fixture
def db(state_db: str) -> Iterator[psycopg.Connection]:
    """Autocommit and idle, as a task's connection (harvest and refine commit per batch)."""
    with psycopg.connect(state_db, autocommit=True) as c:
        yield c


_counter = itertools.count()


def fresh_dir(base: Path) -> Path:
    """A new folder per example (landed copies are read-only: never reused)."""
    d = base / f"ex{next(_counter)}"
    d.mkdir(parents=True)
    return d


# ============================================================ 1. LoggerNet -> landing -> ETC

TABLE = "Rotronics_HC2S3"  # the real file's table (30 s, 2016-12-01 from 00:00:00 local)
DAY = date(2016, 12, 1)
SID = "BM_L01_F01"
LN_FILES = ("CR1000_Rotronics_HC2S3_part.dat", "CR1000_Rotronics_HC2S3.dat")  # bad, good


def ln_inventory(folder: Path):
    return parse_inventory(
        f"""
stations:
  - id: FR-Lam
    utc_offset_hours: 1
    upload: {{connection_id: icos}}
    loggers:
      - id: cr1000
        kind: campbell
        collect: {{method: loggernet, folder: {folder}, tables: [{TABLE}], settle_seconds: 60}}
    files:
      - {{type: BM, logger: cr1000, table: {TABLE}, logger_number: 1, file_number: 1}}
"""
    )


def good_toa5() -> bytes:
    """The real file's header and its rows 37..96 (after the seeds' rows: no overlap)."""
    lines = TOA5_FILE.read_bytes().splitlines(keepends=True)
    return b"".join(lines[:4] + lines[40:100])


@st.composite
def odd_times(draw: st.DrawFn) -> bytes:
    """The real rows, some re-timed around the day's edges, off the grid, out of order,
    repeated with other values; as few as one row (the interval must still be found)."""
    lines = toa5_seeds()[0].splitlines(keepends=True)
    header, rows = lines[:4], lines[4:]
    out = []
    for i in draw(st.lists(st.integers(0, len(rows) - 1), min_size=1, max_size=12)):
        row = rows[i]
        if draw(st.booleans()):
            t = draw(st.datetimes(datetime(2016, 11, 30, 23), datetime(2016, 12, 2, 1)))
            if draw(st.booleans()):
                t = t.replace(microsecond=0)
                if draw(st.booleans()):
                    t = t.replace(second=t.second // 30 * 30)
            stamp = f'"{t:%Y-%m-%d %H:%M:%S}' + (f".{t:%f}".rstrip("0") if t.microsecond else "")
            row = stamp.encode() + b'"' + row[row.index(b",") :]
        out.append(row)
    return b"".join(header + out)


def seed_rows(*stamps: bytes) -> bytes:
    """The real header and first row, once per timestamp given."""
    lines = toa5_seeds()[0].splitlines(keepends=True)
    row = lines[4][lines[4].index(b",") :]
    return b"".join(lines[:4] + [b'"%s"%s' % (t, row) for t in stamps])


@pytest.fixture
def ln_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_db: str) -> Path:
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    monkeypatch.setenv("STATIONFLOW_HOME", str(tmp_path))  # set per example, restored after
    return tmp_path


@fuzz(80)
@given(data=st.one_of(mutated(toa5_seeds(), TOA5_OPS), odd_times()), with_good=st.booleans())
# found by this test: one row gave no interval, and sampling.choose's ValueError crashed
# the assembly (no file named, not audited, retried as transient)
@example(data=seed_rows(b"2016-12-01 00:00:30"), with_good=False)
# found by this test: the day's only row off the detected 1.000001 s grid: no file, and
# no error either (the period's issues were dropped with it)
@example(
    data=seed_rows(b"2016-12-01 00:00:30", b"2016-11-30 23:00:00", b"2016-11-30 23:00:01.000001"),
    with_good=False,
)
def test_loggernet_file_lands_and_assembles_or_is_quarantined(
    db: psycopg.Connection, ln_env: Path, data: bytes, with_good: bool
) -> None:
    home = fresh_dir(ln_env)
    os.environ["STATIONFLOW_HOME"] = str(home)  # restored by monkeypatch (ln_env)
    truncate(
        db,
        "stationflow.fragment",
        "stationflow.output_file",
        "stationflow.source_file",
        "stationflow.audit_log",
    )
    folder = home / "loggernet"
    folder.mkdir()
    dropped = {LN_FILES[0]: data}
    if with_good:
        dropped[LN_FILES[1]] = good_toa5()
    old = datetime.now(UTC).timestamp() - 3600
    for name, blob in dropped.items():
        (folder / name).write_bytes(blob)
        os.utime(folder / name, (old, old))
    inv = ln_inventory(folder)
    st_ = inv.station("FR-Lam")

    summary = scan(db, st_, st_.loggers[0], home=home, landing=home / "landing")

    # the source is never touched
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == dropped
    for name, blob in dropped.items():
        src = str(folder / name)
        if src in summary.ignored:  # its header names another table: not this logger's file
            assert header_table(folder / name) not in (TABLE, None)
            event("ignored: header names another table")
            continue
        if src in summary.unsettled:  # LoggerNet has not written it yet
            assert blob == b""
            event("empty: not taken")
            continue
        row = fragment_of(db, "FR-Lam", sha(blob))
        assert row is not None, f"{name} was neither landed nor ignored: {summary.as_dict()}"
        assert Path(row[2]).read_bytes() == blob  # the landed copy is the dropped bytes
        if row[0] == "quarantined":
            event("landing: quarantined")
            check_quarantined(db, row, blob, [src])
        else:
            event("landing: collected" if row[4] else "landing: collected, no rows")
            assert row[1] is None and len(read_toa5(Path(row[2]))) == row[4]  # readable
            assert name == LN_FILES[0] or row[4] == 60, row  # the good file reads whole

    try:
        ids = assemble_stream(inv, "FR-Lam", SID, DAY)
    except NoFragments as exc:
        assert not with_good, exc  # the good file alone gives rows of the day
        assert "FR-Lam" in str(exc)
        event("assembly: NoFragments")
        ids = []
    event(f"outputs: {len(ids)}")
    check_fragments_and_outputs(db, dropped, with_good, ids)


def check_fragments_and_outputs(db, dropped: dict[str, bytes], with_good: bool, ids) -> None:
    by_sha = {sha(b): b for b in dropped.values()}
    quarantined = set()
    for status, message, path, digest in db.execute(
        "SELECT status, message, path, sha256 FROM stationflow.fragment"
    ):
        assert digest in by_sha  # nothing registered that was not dropped
        if status == "quarantined":
            quarantined.add(digest)
            row = (status, message, path, digest)
            check_quarantined(db, row, by_sha[digest], [Path(path).name, *dropped])
    if with_good:
        assert sha(dropped[LN_FILES[1]]) not in quarantined
        assert ids, "the good file's rows gave no output"
    if not ids:  # rows of the day that made no file are an audited error naming their file
        day0 = to_ns(f"{DAY} 00:00:00")
        for (path,) in db.execute(
            "SELECT path FROM stationflow.fragment WHERE status = 'collected' AND rows > 0"
        ).fetchall():
            ts = read_toa5(Path(path)).ts
            if ((ts > day0) & (ts <= day0 + DAY_NS)).any():
                event("no output from rows of the day")
                named = db.execute(
                    "SELECT count(*) FROM stationflow.audit_log WHERE level = 'ERROR'"
                    " AND step = 'refine.assemble' AND message || details::text LIKE %s",
                    (f"%{Path(path).name}%",),
                ).fetchone()[0]
                assert named, f"rows of {path} in the day, but no file and no error"
    outputs = db.execute(
        "SELECT id, path, sha256, rows_expected, rows_present, rows_filled"
        " FROM stationflow.output_file ORDER BY id"
    ).fetchall()
    assert sorted(o[0] for o in outputs) == sorted(ids)
    for oid, path, digest, expected, present, filled in outputs:
        assert present + filled == expected and present > 0
        blob = Path(path).read_bytes()
        assert sha(blob) == digest
        table = read_toa5(blob, source=path)
        assert len(table) == expected, (len(table), expected)
        assert not [i for i in table.issues if i.level == "error"], table.issues[:3]
        built_from = db.execute(
            "SELECT f.status, f.sha256 FROM stationflow.output_fragment o"
            " JOIN stationflow.fragment f ON f.id = o.fragment_id WHERE o.output_file_id = %s",
            (oid,),
        ).fetchall()
        assert built_from and all(
            s != "quarantined" and d not in quarantined for s, d in built_from
        )


# ============================================================ 2. SmartFlux .ghg over FTP

FTP_CONN = "ftp_fuzz_smartflux"
FTP_T0 = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)
GOOD_GHG = build_ghg(FTP_T0, logger_name="AIU-1359", hz=1)
BAD_NAME = ghg_name(FTP_T0 + PERIOD, "AIU-1359")


@pytest.fixture
def ftp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmartFluxSim]:
    sim = SmartFluxSim(tmp_path / "station", "sf", "sf-secret-1", logger_name="AIU-1359", hz=1)
    sim.start()
    conn = {"conn_type": "ftp", "host": "127.0.0.1", "port": sim.port, "login": "sf"}
    conn["password"] = "sf-secret-1"
    monkeypatch.setenv(f"AIRFLOW_CONN_{FTP_CONN.upper()}", json.dumps(conn))
    yield sim
    sim.stop()


def ftp_station():
    return parse_inventory(
        f"""
stations:
  - id: FR-Aur
    utc_offset_hours: 1
    upload: {{connection_id: icos}}
    loggers:
      - id: smartflux
        kind: smartflux
        collect: {{method: ftp_pull, connection_id: {FTP_CONN}, pattern: "*.ghg",
                   settle_seconds: 60}}
    files:
      - {{type: EC, logger: smartflux, logger_number: 2, file_number: 1, extension: zip}}
"""
    ).station("FR-Aur")


@fuzz(60)
@given(blob=ghg_archives())
def test_smartflux_ghg_is_pulled_and_landed_or_quarantined(
    db: psycopg.Connection, ftp: SmartFluxSim, tmp_path: Path, blob: bytes
) -> None:
    work = fresh_dir(tmp_path / "work")
    truncate(db, "stationflow.fragment", "stationflow.remote_file", "stationflow.audit_log")
    for p in ftp.folder.iterdir():
        p.unlink()
    good_name, good = GOOD_GHG
    old = datetime.now(UTC).timestamp() - 3600
    for name, payload in ((good_name, good), (BAD_NAME, blob)):
        (ftp.folder / name).write_bytes(payload)
        os.utime(ftp.folder / name, (old, old))
    st_ = ftp_station()

    summary = pull(
        db,
        st_,
        st_.loggers[0],
        landing=work / "landing",
        spool=work / "spool",
        now=datetime.now(UTC),
    )

    assert summary["failed"] == 0 and not summary["errors"], summary
    assert (ftp.folder / BAD_NAME).read_bytes() == blob  # nothing changed at the station
    row = fragment_of(db, "FR-Aur", sha(good))  # the good file lands whatever its neighbour
    assert row is not None and row[0] == "collected" and row[4] == 1800, row
    assert Path(row[2]).read_bytes() == good
    if not blob:  # a 0-byte file is one being written: left for later, nothing to lose
        assert summary["skipped_recent"] == 1 and summary["fetched"] == 1
        event("empty: left for later")
        return
    assert summary["fetched"] == 2, summary
    row = fragment_of(db, "FR-Aur", sha(blob))
    assert row is not None, "the mutated file was fetched but not registered"
    assert Path(row[2]).read_bytes() == blob
    remote = db.execute(
        "SELECT f.sha256 FROM stationflow.remote_file r JOIN stationflow.fragment f"
        " ON f.id = r.fragment_id WHERE r.remote_path = %s",
        (f"/{BAD_NAME}",),
    ).fetchall()
    assert remote == [(sha(blob),)]
    if row[0] == "quarantined":
        event("quarantined")
        check_quarantined(db, row, blob, [BAD_NAME])
    else:
        event("collected")
        assert row[1] is None and len(read_ghg(Path(row[2]), utc_offset_hours=1)) == row[4]
        assert (row[5] is None) == (row[6] is None) and (row[5] is None or row[5] <= row[6])


# ============================================================ 3. Whale -> harvest -> refine

TOKEN = "whale-fuzz-token"
DEVICES = [23, 26]
T0 = datetime(2026, 1, 20, 10, 30, tzinfo=UTC)  # hours 8, 9, 10 of 20260120 have ended
BAD = (23, 20260120, 9)
NET = parse_inventory("""
sensor_networks:
  - id: se
    harvest: [{kind: whale, connection_id: whale_api}]
    indicators: [temperature, pressure, humidity, noiseavg, co2, coraw, no2raw, o3raw]
""").network("se")
INDICATORS = defs_for("jose").indicators
JOSE_RAW = defs_for("jose").raw


def whale_seed() -> dict:
    """The simulator's own document for the bad hour, cut to 4 samples."""
    doc = orjson.loads(WhaleSim(DEVICES, clock=lambda: T0).hour_body(*BAD))
    doc["timeseries"] = doc["timeseries"][:4]
    return doc


SEED = whale_seed()
SAMPLE_KEYS = sorted({k for s in SEED["timeseries"] for k in s})
NASTY_JSON = [
    "null", "true", "-1", "0", "1e308", "-1e308", "1e999", "NaN", "Infinity", "-0.0",
    "18446744073709551616", "9" * 400, '""', '"NaN"', '"1e999"', '"-999999999"', '"abc"',
    "[]", "{}", '"2016-13-45T25:61:61Z"', '"9999-12-31T23:59:59Z"', '"0001-01-01T00:00:00Z"',
    '"2026-01-20T08:30:00"', '"\\u0000"', '"\\ud800"', "1.5", "3e38",
]  # fmt: skip


@st.composite
def nasty_samples(draw: st.DrawFn) -> bytes:
    """The seed with some sample fields set to absurd numbers, types or times (raw JSON)."""
    doc = json.loads(json.dumps(SEED))
    marks = {}
    for k in range(draw(st.integers(1, 4))):
        s = doc["timeseries"][draw(st.integers(0, len(doc["timeseries"]) - 1))]
        key = draw(st.sampled_from(SAMPLE_KEYS))
        s[key] = f"@@{k}@@"
        marks[f'"@@{k}@@"'] = draw(st.sampled_from(NASTY_JSON))
    body = json.dumps(doc)
    for mark, value in marks.items():
        body = body.replace(mark, value)
    return body.encode()


WHALE_BODIES = st.one_of(
    whale_bodies(SEED),
    nasty_samples(),
    st.sampled_from(NASTY_VALUES),
    st.binary(max_size=64),
)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def whale(clock: Clock) -> Iterator[WhaleSim]:
    with WhaleSim(DEVICES, token=TOKEN, clock=clock, history_hours=12) as s:
        yield s


@fuzz(90)
@given(body=WHALE_BODIES)
@example(body=json.dumps(SEED).encode())  # a good hour, to show the checks pass
def test_whale_hour_is_harvested_and_refined_or_refused(
    db: psycopg.Connection, whale: WhaleSim, clock: Clock, body: bytes
) -> None:
    truncate(
        db,
        "smartem_raw.timeseries",
        "smartem_raw.harvester_progress",
        "smartem_raw.quarantine",
        "smartem_refined.timeseries",
        "stationflow.audit_log",
    )
    whale.clear_faults()
    whale.override(*BAD, body)
    src = WhaleSource(url=whale.url, connection_id="whale_api", token=TOKEN, backoff=0.01)

    report = harvest(db, src, until=clock.t, now=clock.t, lookback=timedelta(hours=3), workers=2)
    summary = refine_network(db, NET, Calibration())

    assert report.failures == {}, report.failures  # a bad hour never stops its device
    stored = {
        (d, day, h): (data, content_hash, gid)
        for d, day, h, data, content_hash, gid in db.execute(
            "SELECT device_id, day, hour, data::text, content_hash, gid FROM smartem_raw.timeseries"
        )
    }
    others = {(d, 20260120, h) for d in DEVICES for h in (8, 9, 10)} - {BAD}
    assert others <= set(stored), sorted(stored)
    states = dict(db.execute("SELECT raw_gid, status FROM smartem_refined.raw_state").fetchall())
    for key in others:  # the other hours of both devices are refined
        assert states[stored[key][2]] == "refined", (key, summary.as_dict())
    what = f"/devices/{BAD[0]}/timeseries/{BAD[1]}/{BAD[2]}"
    quarantined = db.execute(
        "SELECT source, error, body, sha256 FROM smartem_raw.quarantine"
        " WHERE device_id = %s AND day = %s AND hour = %s",
        BAD,
    ).fetchall()
    if BAD not in stored:  # refused at harvest: kept with the reason naming the URL
        event("refused at harvest")
        assert len(quarantined) == 1, quarantined
        source, error, kept, digest = quarantined[0]
        assert bytes(kept) == body and digest == sha(body)
        assert source.endswith(what) and what in error, error
        assert any(
            f"device {BAD[0]} day {BAD[1]} hour {BAD[2]}" in m and what in m
            for m in error_audits(db)
        )
    else:  # stored verbatim, then refined within range or rejected naming why
        assert not quarantined
        data, content_hash, gid = stored[BAD]
        assert data.encode() == body and content_hash == sha(body)
        status, error = db.execute(
            "SELECT status, error FROM smartem_refined.raw_state WHERE raw_gid = %s", (gid,)
        ).fetchone()
        uid = "-".join(map(str, BAD))
        if status == "rejected":
            event("rejected by the refiner")
            assert error and uid in error, error
            assert any(f"raw hour {uid} rejected" in m for m in error_audits(db))
        else:
            event("refined")
        bad_values = db.execute(
            "SELECT bad_values FROM smartem_refined.raw_state WHERE raw_gid = %s", (gid,)
        ).fetchone()[0]
        if bad_values:  # skipped sample values are audited per hour, field and reason
            event("refined, some sample values skipped")
            audited = db.execute(
                "SELECT details->'hours'->%s FROM stationflow.audit_log"
                " WHERE step = 'refine' AND level = 'WARNING' AND details->'hours' ? %s",
                (uid, uid),
            ).fetchall()
            assert len(audited) == 1, audited
            assert sum(audited[0][0].values()) == bad_values
            assert all(k.split(":")[0] in JOSE_RAW for k in audited[0][0]), audited
    for name, value, lo, hi in db.execute(
        "SELECT name, value, value_min, value_max FROM smartem_refined.timeseries"
    ):
        ind = INDICATORS[name]
        assert all(math.isfinite(v) for v in (value, lo, hi)), (name, value, lo, hi)
        assert ind.min <= value <= ind.max, (name, value)
