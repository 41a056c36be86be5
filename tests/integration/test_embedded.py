"""The embedded server's lifecycle, on a server of its own (the session one stays up)."""

import psycopg
import pytest

from stationflow.state import embedded
from stationflow.state.db import ensure_database


@pytest.fixture
def pgdata(tmp_path):
    path = tmp_path / "pg"
    yield path
    embedded.stop(path)


def test_start_on_demand_reuse_and_stop(pgdata):
    assert embedded.status(pgdata) is None
    info, started = embedded.ensure_running(pgdata)
    assert started and info.socket_dir
    again, started_again = embedded.ensure_running(pgdata)
    assert not started_again and again.pid == info.pid  # one server per data folder
    assert ensure_database(info.url("postgres"), "stationflow") is True
    assert ensure_database(info.url("postgres"), "stationflow") is False
    with psycopg.connect(info.url("stationflow")) as c:
        assert c.execute("SELECT current_database()").fetchone()[0] == "stationflow"

    assert embedded.stop(pgdata, expected_pid=info.pid + 100_000) is False  # not ours: kept
    assert embedded.status(pgdata) is not None
    assert embedded.stop(pgdata, expected_pid=info.pid) is True
    assert embedded.status(pgdata) is None
    assert embedded.stop(pgdata) is False

    restarted, started = embedded.ensure_running(pgdata)  # data survives a restart
    assert started and restarted.pid != info.pid
    with psycopg.connect(restarted.url("stationflow")) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)


def test_sqlalchemy_url_form(pg_server):
    url = pg_server.url("airflow", driver="postgresql+psycopg2")
    assert url.startswith("postgresql+psycopg2://postgres@/airflow?host=")
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    with engine.connect() as c:
        assert c.execute(sqlalchemy.text("SELECT current_database()")).scalar() == "airflow"
    engine.dispose()
