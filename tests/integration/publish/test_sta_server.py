"""The real STA v1.1 server (django-ogc-sensorthings in .venv-sta) and its venv stamp logic."""

from __future__ import annotations

import re
import runpy
import threading
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg import sql

from stationflow.sim import sta_server as sta_mod
from stationflow.sim.sta_server import (
    STAMP_NAME,
    StaServer,
    StaServerError,
    ensure_venv,
    needs_build,
    requirements_digest,
    sta_venv,
)
from stationflow.state import embedded

ENTITY_SETS = {
    "Things",
    "Locations",
    "HistoricalLocations",
    "Datastreams",
    "Sensors",
    "ObservedProperties",
    "Observations",
    "FeaturesOfInterest",
}
THING = {
    "name": "Station A",
    "description": "Test station",
    "properties": {"code": "A1"},
    "Locations": [
        {
            "name": "Mast",
            "description": "Mast",
            "encodingType": "application/geo+json",
            "location": {"type": "Point", "coordinates": [8.5, 47.4]},
        }
    ],
}
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def post_thing(url: str, body: dict | None = None) -> str:
    """POST a Thing; its URL from the Location header."""
    r = requests.post(f"{url}/Things", json=body or THING, timeout=10)
    assert r.status_code == 201, r.text
    return r.headers["Location"]


# --- the running server ---------------------------------------------------------------------


def test_service_root_lists_the_entity_sets(sta: StaServer) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/sensorthings/v1\.1", sta.url)
    r = requests.get(sta.url, timeout=10)
    assert r.status_code == 200
    body = r.json()
    sets = {e["name"]: e["url"] for e in body["value"]}
    assert set(sets) == ENTITY_SETS
    assert all(link == f"{sta.url}/{name}" for name, link in sets.items())
    conformance = body["serverSettings"]["conformance"]
    assert "http://www.opengis.net/spec/iot_sensing/1.1/req/create-update-delete" in conformance
    assert "http://www.opengis.net/spec/iot_sensing/1.1/req/data-array" in conformance


def test_thing_post_answers_201_with_a_location_that_reads_back(sta: StaServer) -> None:
    r = requests.post(f"{sta.url}/Things", json=THING, timeout=10)
    assert r.status_code == 201
    location = r.headers["Location"]
    assert re.fullmatch(re.escape(f"{sta.url}/Things('") + UUID_RE + r"'\)", location)

    got = requests.get(location, params={"$expand": "Locations"}, timeout=10)
    assert got.status_code == 200
    thing = got.json()
    assert thing["@iot.selfLink"] == location
    assert location.endswith(f"('{thing['@iot.id']}')")
    assert (thing["name"], thing["description"]) == ("Station A", "Test station")
    assert thing["properties"] == {"code": "A1"}
    assert [loc["location"]["coordinates"] for loc in thing["Locations"]] == [[8.5, 47.4]]

    listed = requests.get(f"{sta.url}/Things", timeout=10).json()["value"]
    assert [t["@iot.id"] for t in listed] == [thing["@iot.id"]]


def test_clear_empties_every_entity_set(sta: StaServer, pg_server: embedded.ServerInfo) -> None:
    location = post_thing(sta.url)
    post_thing(sta.url, {**THING, "name": "Station B"})
    assert len(requests.get(f"{sta.url}/Things", timeout=10).json()["value"]) == 2
    assert len(requests.get(f"{sta.url}/Locations", timeout=10).json()["value"]) == 2

    tables = sta.clear()

    assert "sensorthings_v1_1_django_backend_thing" in tables
    assert all(t.startswith("sensorthings_v1_1_django_backend_") for t in tables)
    for name in ENTITY_SETS:
        r = requests.get(f"{sta.url}/{name}", timeout=10)
        assert (r.status_code, r.json()["value"]) == (200, []), name
    assert requests.get(location, timeout=10).status_code == 404
    # Django's own bookkeeping is kept: the schema stays migrated
    with psycopg.connect(pg_server.url("sta")) as conn:
        applied = conn.execute("SELECT count(*) FROM django_migrations").fetchone()
    assert applied is not None and applied[0] >= 2
    # and the server goes on working
    post_thing(sta.url)
    assert len(requests.get(f"{sta.url}/Things", timeout=10).json()["value"]) == 1


def test_stop_then_start_keeps_url_and_data(pg_server: embedded.ServerInfo, tmp_path: Path) -> None:
    name = f"sta_{uuid.uuid4().hex[:8]}"
    server = StaServer(pg_server.url(name), log_path=tmp_path / "sta.log")
    try:
        assert server.start() is server  # creates the database, migrates, serves
        assert server.start() is server  # idempotent: same process
        pid = server.proc.pid if server.proc else None
        server.start()
        assert server.proc is not None and server.proc.pid == pid
        url = server.url
        location = post_thing(url)

        server.stop()
        assert not server.running
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)
        server.stop()  # idempotent

        server.start()
        assert server.url == url
        got = requests.get(location, timeout=10)
        assert got.status_code == 200
        assert got.json()["name"] == "Station A"
        log = (tmp_path / "sta.log").read_text()
        assert log.count("--- migrated in") == 2
        assert "No migrations to apply." in log
    finally:
        server.stop()
        with psycopg.connect(pg_server.url("postgres"), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_a_server_that_cannot_start_reports_its_log(
    sta_server: StaServer, pg_server: embedded.ServerInfo, tmp_path: Path
) -> None:
    # the session server holds this port: uvicorn exits, and start() says why
    clash = StaServer(pg_server.url("sta"), port=sta_server.port, log_path=tmp_path / "x.log")
    try:
        with pytest.raises(StaServerError, match="exited with") as info:
            clash.start()
    finally:
        clash.stop()
    assert str(tmp_path / "x.log") in str(info.value)
    assert "address already in use" in str(info.value).lower()
    assert not clash.running
    assert requests.get(sta_server.url, timeout=10).status_code == 200


# --- the venv stamp (no real build: that costs ~20 s of installs) ---------------------------


@pytest.fixture
def reqs(tmp_path: Path) -> Path:
    path = tmp_path / "requirements-sta.txt"
    path.write_text("uvicorn==0.54.0\n")
    return path


def fake_venv(venv: Path, stamp: str | None) -> None:
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    if stamp is not None:
        (venv / STAMP_NAME).write_text(stamp + "\n")


def test_needs_build_follows_the_stamp(tmp_path: Path, reqs: Path) -> None:
    venv = tmp_path / "venv"
    assert needs_build(venv, reqs)  # nothing there
    fake_venv(venv, None)
    assert needs_build(venv, reqs)  # no stamp
    (venv / STAMP_NAME).write_text("0" * 64)
    assert needs_build(venv, reqs)  # another requirements file
    (venv / STAMP_NAME).write_text(requirements_digest(reqs) + "\n")
    assert not needs_build(venv, reqs)
    reqs.write_text("uvicorn==0.54.1\n")
    assert needs_build(venv, reqs)  # the pins changed
    (venv / STAMP_NAME).write_text(requirements_digest(reqs))
    (venv / "bin" / "python").unlink()
    assert needs_build(venv, reqs)  # stamped but broken


def test_the_project_venv_is_built_from_requirements_sta(sta_server: StaServer) -> None:
    venv = sta_venv()  # what sta_server runs from (started: built if it was missing)
    assert not needs_build(venv)
    stamp = (venv / STAMP_NAME).read_text().strip()
    assert stamp == requirements_digest(sta_mod.STA_REQUIREMENTS)
    assert ensure_venv(venv) == venv / "bin" / "python"


def test_sta_venv_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATIONFLOW_STA_VENV", str(tmp_path / "v"))
    assert sta_venv() == tmp_path / "v"
    monkeypatch.delenv("STATIONFLOW_STA_VENV")
    assert sta_venv() == sta_mod.PROJECT_ROOT / ".venv-sta"


def test_ensure_venv_builds_once_under_the_lock(
    tmp_path: Path, reqs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "venv"
    builds: list[float] = []

    def slow_build(v: Path, requirements: Path, timeout: float) -> None:
        builds.append(time.monotonic())
        time.sleep(0.3)
        (v / "bin").mkdir(exist_ok=True)
        (v / "bin" / "python").write_text("")
        (v / STAMP_NAME).write_text(requirements_digest(requirements))

    monkeypatch.setattr(sta_mod, "_build", slow_build)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_venv(venv, requirements=reqs)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [venv / "bin" / "python"] * 3
    assert len(builds) == 1  # the others waited on the flock, then found the stamp

    ensure_venv(venv, requirements=reqs)
    assert len(builds) == 1  # up to date: nothing to do
    reqs.write_text("uvicorn==0.54.1\n")
    ensure_venv(venv, requirements=reqs)
    assert len(builds) == 2  # the pins changed


def test_a_failed_build_names_its_log_and_leaves_no_stamp(
    tmp_path: Path, reqs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv = tmp_path / "venv"
    fake_venv(venv, "0" * 64)  # an outdated venv: cleared before the rebuild
    monkeypatch.setattr(sta_mod.sys, "executable", "/bin/false")
    with pytest.raises(StaServerError, match="failed") as info:
        ensure_venv(venv, requirements=reqs)
    assert str(venv / "build.log") in str(info.value)
    assert "-m venv" in (venv / "build.log").read_text()
    assert not (venv / STAMP_NAME).exists()
    assert not (venv / "bin").exists()
    assert needs_build(venv, reqs)


# --- settings.py (run here with runpy: at module level it needs only the standard library) ---


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql://postgres@/sta?host=/tmp/sf-pg&port=5433",
            {"NAME": "sta", "USER": "postgres", "PASSWORD": "", "HOST": "/tmp/sf-pg"},
        ),
        (
            "postgresql://sta%40x:p%2Fw@db.example:6543/sta_db?sslmode=require",
            {"NAME": "sta_db", "USER": "sta@x", "PASSWORD": "p/w", "HOST": "db.example"},
        ),
    ],
)
def test_settings_parse_the_database_url(
    url: str, expected: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STA_DATABASE_URL", url)
    monkeypatch.setenv("STA_SERVICE_URL", "http://127.0.0.1:8123/sensorthings/")
    monkeypatch.setenv("STA_SECRET_KEY", "k" * 50)
    ns = runpy.run_path(str(sta_mod.STA_PROJECT / "settings.py"))
    db = ns["DATABASES"]["default"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert {k: db[k] for k in expected} == expected
    assert db["PORT"] == ("5433" if "5433" in url else "6543")
    assert db["OPTIONS"] == ({"sslmode": "require"} if "sslmode" in url else {})
    assert ns["SENSORTHINGS_V1_1_SERVICE_URL"] == "http://127.0.0.1:8123/sensorthings"
    assert ns["SENSORTHINGS_V1_1_ID_DELIMITER"] == "'"
    assert ns["SECRET_KEY"] == "k" * 50
    assert "127.0.0.1" in ns["ALLOWED_HOSTS"]
