"""The raw table and its sync-state trigger (sql/003), through raw_store.write_batch."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from stationflow.collect.raw_store import (
    RawHour,
    Rejected,
    day_hour,
    hour_start,
    progress,
    write_batch,
)

H = "whale:whale_api"


def raw(device: int, hour: int, body: bytes = b'{"timeseries":[]}', day: int = 20260120) -> RawHour:
    return RawHour(device, day, hour, body, sample_count=body.count(b"{") - 1, harvester=H)


def rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT unique_id, device_id, day, hour, revision, data::text, complete"
        " FROM smartem_raw.timeseries ORDER BY device_id, day, hour"
    ).fetchall()


def test_hour_numbering_is_the_whale_apis() -> None:
    assert hour_start(20260120, 1) == datetime(2026, 1, 20, 0, tzinfo=UTC)
    assert hour_start(20260120, 24) == datetime(2026, 1, 20, 23, tzinfo=UTC)
    assert day_hour(datetime(2026, 1, 20, 23, 59, tzinfo=UTC)) == (20260120, 24)
    assert day_hour(datetime(2026, 1, 21, 0, tzinfo=UTC)) == (20260121, 1)
    with pytest.raises(ValueError, match="hour 0"):
        hour_start(20260120, 0)


def test_new_same_and_changed_hours(conn: psycopg.Connection) -> None:
    first = write_batch(conn, [raw(23, 5), raw(23, 6), raw(26, 5)])
    assert (first.inserted, first.updated, first.unchanged) == (3, 0, 0)
    again = write_batch(conn, [raw(23, 5), raw(23, 6), raw(26, 5)])
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    late = b'{"timeseries":[{"t":1},{"t":2}]}'
    changed = write_batch(conn, [raw(23, 6, late)])
    assert (changed.inserted, changed.updated, changed.unchanged) == (0, 1, 0)
    table = rows(conn)
    assert [r[0] for r in table] == ["23-20260120-5", "23-20260120-6", "26-20260120-5"]
    assert table[1][4:6] == (2, late.decode())  # revision 2, the new bytes verbatim
    assert table[0][4] == 1


def test_the_body_is_kept_byte_for_byte(conn: psycopg.Connection) -> None:
    body = b'{ "id" : "23",\n  "b": 1.50, "a": [1,2] }'  # spacing, key order, 1.50 as sent
    write_batch(conn, [raw(23, 7, body)])
    assert rows(conn)[0][5] == body.decode()


def test_a_batch_with_one_hour_twice_keeps_the_last(conn: psycopg.Connection) -> None:
    result = write_batch(conn, [raw(23, 5), raw(23, 5, b'{"timeseries":[{}]}')])
    assert result.inserted == 1
    assert rows(conn)[0][5] == '{"timeseries":[{}]}'


def test_progress_moves_with_the_data(conn: psycopg.Connection) -> None:
    write_batch(conn, [raw(23, 5), raw(23, 9), raw(26, 2)])
    assert progress(conn, H) == {23: hour_start(20260120, 9), 26: hour_start(20260120, 2)}
    write_batch(conn, [raw(23, 3, b'{"timeseries":[{}]}')])  # an older hour: no step back
    assert progress(conn, H)[23] == hour_start(20260120, 9)
    stats = conn.execute(
        "SELECT hours_stored, hours_changed FROM smartem_raw.harvester_progress"
        " WHERE device_id = 23"
    ).fetchone()
    assert stats == (3, 0)
    write_batch(conn, [raw(23, 9, b'{"timeseries":[{}]}')])
    stats = conn.execute(
        "SELECT hours_stored, hours_changed, last_hour FROM smartem_raw.harvester_progress"
        " WHERE device_id = 23"
    ).fetchone()
    assert stats == (3, 1, 9)
    assert progress(conn, "influxdb:other") == {}


def test_a_failed_batch_leaves_neither_data_nor_progress(conn: psycopg.Connection) -> None:
    write_batch(conn, [raw(23, 5)])
    bad = RawHour(23, 20260120, 6, b'{"timeseries": [', 0, harvester=H)  # not JSON: PG refuses
    with pytest.raises(psycopg.errors.InvalidTextRepresentation):
        write_batch(conn, [raw(23, 7), bad])
    assert [r[0] for r in rows(conn)] == ["23-20260120-5"]
    assert progress(conn, H) == {23: hour_start(20260120, 5)}


def test_rejected_bodies_are_quarantined_once(conn: psycopg.Connection) -> None:
    r = Rejected(H, 26, 20260120, 4, "http://x/26/20260120/4", "not JSON at byte 9", b'{"id": ')
    assert write_batch(conn, [], [r]).quarantined == 1
    assert write_batch(conn, [], [r]).quarantined == 0
    body, error = conn.execute("SELECT body, error FROM smartem_raw.quarantine").fetchone()
    assert (bytes(body), error) == (b'{"id": ', "not JSON at byte 9")
    assert rows(conn) == []


def sets(conn: psycopg.Connection) -> dict[str, tuple]:
    """unique_id -> (content hash matches the row's, fields key, set's xmin)."""
    return {
        uid: (same, key, xmin)
        for uid, same, key, xmin in conn.execute(
            "SELECT t.unique_id, c.content_hash = t.content_hash, c.fields_key, c.xmin::text"
            " FROM smartem_raw.sample_columns c JOIN smartem_raw.timeseries t ON t.gid = c.raw_gid"
        )
    }


def test_sample_columns_are_extracted_once_per_content(conn: psycopg.Connection) -> None:
    from stationflow.refine.records.definitions import defs_for
    from stationflow.refine.records.stored_columns import fields_key

    key = fields_key(defs_for("jose"))
    one = b'{"timeseries":[{"s_barometer":101325}]}'
    write_batch(conn, [raw(23, 5, one), raw(23, 6, one), raw(23, 7, b'{"timeseries":7}')])
    first = sets(conn)
    # hour 7 is no raw hour: no set (the refiner reads its JSON and rejects it by name)
    assert set(first) == {"23-20260120-5", "23-20260120-6"}
    assert all(same and k == key for same, k, _ in first.values())
    write_batch(conn, [raw(23, 5, one), raw(23, 6, one)])  # the look-back fetches again
    assert sets(conn) == first  # same xmin: neither extracted nor written again
    two = b'{"timeseries":[{"s_barometer":101325},{"s_barometer":101300}]}'
    write_batch(conn, [raw(23, 6, two)])  # late data
    after = sets(conn)
    assert after["23-20260120-5"] == first["23-20260120-5"]
    assert (
        after["23-20260120-6"][:2] == (True, key)
        and after["23-20260120-6"] != first["23-20260120-6"]
    )
    # a set under another field list (definitions changed) is replaced on the next fetch
    conn.execute("UPDATE smartem_raw.sample_columns SET fields_key = 'old'")
    write_batch(conn, [raw(23, 5, one)])
    assert sets(conn)["23-20260120-5"][1] == key and sets(conn)["23-20260120-6"][1] == "old"


def test_a_batch_failing_after_its_columns_leaves_none(
    conn: psycopg.Connection, monkeypatch
) -> None:
    from stationflow.collect import raw_store

    def crash(*_):
        raise RuntimeError("disk full")

    monkeypatch.setattr(raw_store, "quarantine", crash)  # runs after the columns are merged
    body = b'{"timeseries":[{"s_barometer":101325}]}'
    gone = Rejected(H, 23, 20260120, 6, "test", "bad", b"x")
    with pytest.raises(RuntimeError, match="disk full"):
        write_batch(conn, [raw(23, 5, body)], [gone])
    assert rows(conn) == [] and sets(conn) == {}
