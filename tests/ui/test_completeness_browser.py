"""The completeness view in a real Airflow API server, seen by a real headless Chromium.

The plugin is loaded from plugins/ by ``airflow api-server``; a user signs in on Airflow's
own login page, opens "Completeness" in the UI and reads the cells the view rendered from
a ledger holding one of every case. Without a login the view answers 401.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import requests

from tests.alert_sinks import free_port
from tests.completeness_ledger import fill
from tests.dags.conftest import airflow_db  # noqa: F401 - the fixture, for the API server

pytestmark = pytest.mark.airflow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
USERS = {"admin": "admin-pw-for-the-browser-test", "ops": "viewer-pw-for-the-browser-test"}
SCREENSHOT = "completeness.png"


def _chromium_or_skip() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian chromium is not installed (.ci/run installs it)")
        pytest.skip("Debian chromium is not installed: apt-get install chromium")


@pytest.fixture(scope="module")
def api_server(airflow_db, pg_server, tmp_path_factory):  # noqa: F811
    """``airflow api-server`` with the plugin, on the session's Airflow DB and a filled ledger."""
    from stationflow.settings import PROJECT_ROOT
    from stationflow.state.db import ensure_database
    from stationflow.state.migrate import migrate

    tmp = tmp_path_factory.mktemp("ui")
    url = pg_server.url("completeness_ui")
    ensure_database(pg_server.url("postgres"), "completeness_ui")
    migrate(url, PROJECT_ROOT / "sql")
    with psycopg.connect(url) as conn:
        conn.execute("TRUNCATE stationflow.fragment, stationflow.audit_log CASCADE")
        conn.execute("TRUNCATE smartem_raw.timeseries CASCADE")
        conn.commit()
        ids = fill(conn, str(tmp / "landing"))
    passwords = tmp / "passwords.json"
    passwords.write_text(json.dumps(USERS))
    port = free_port()
    env = {
        **os.environ,
        "STATIONFLOW_DB_URL": url,
        "STATIONFLOW_HOME": str(tmp),  # landing = <home>/landing
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,ops:viewer",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-jwt-secret-0123456789abcdef",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    log = (tmp / "api-server.log").open("wb")
    proc = subprocess.Popen(
        ["airflow", "api-server", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp / "api-server.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/api/v2/monitor/health", timeout=5).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "api-server did not start in 180 s"
            time.sleep(1)
        yield {"base": base, "ids": ids, "tmp": tmp}
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _token(base: str, user: str) -> str:
    r = requests.post(
        f"{base}/auth/token", json={"username": user, "password": USERS[user]}, timeout=30
    )
    r.raise_for_status()
    return r.json()["access_token"]


def test_the_view_needs_an_airflow_login(api_server):
    base = api_server["base"]
    for path in ("/stationflow/completeness", "/stationflow/api/completeness"):
        assert requests.get(base + path, timeout=30).status_code == 401
        bad = requests.get(base + path, headers={"Authorization": "Bearer nope"}, timeout=30)
        assert bad.status_code in (401, 403)
    for user in USERS:  # a viewer reads it too
        ok = requests.get(
            f"{base}/stationflow/api/completeness",
            params={"days": 4, "end": "2026-11-21"},
            headers={"Authorization": f"Bearer {_token(base, user)}"},
            timeout=60,
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["days"] == ["2026-11-18", "2026-11-19", "2026-11-20", "2026-11-21"]
    plugins = requests.get(
        f"{base}/api/v2/plugins",
        headers={"Authorization": f"Bearer {_token(base, 'admin')}"},
        timeout=30,
    ).json()
    (mine,) = [p for p in plugins["plugins"] if p["name"] == "stationflow_completeness"]
    assert mine["external_views"][0]["href"] == "/stationflow/completeness"


def test_completeness_in_chromium(api_server, request):
    _chromium_or_skip()
    from playwright.sync_api import sync_playwright

    base, ids = api_server["base"], api_server["ids"]
    shots = Path(os.environ.get("STATIONFLOW_SCREENSHOTS", api_server["tmp"]))
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1000})
            # Airflow's own sign-in page, as a person uses it
            page.goto(f"{base}/auth/login/", wait_until="networkidle")
            page.get_by_label("Username").fill("ops")
            page.get_by_label("Password").fill(USERS["ops"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{base}/**", timeout=60_000)
            page.wait_for_function("document.cookie !== undefined")
            # the view inside the UI (nav entry -> /plugin/completeness, an iframe)
            page.goto(f"{base}/plugin/completeness", wait_until="networkidle")
            frame = page.frame_locator("iframe").first
            frame.locator("table#files").wait_for(timeout=60_000)
            # the frame shows today's window; read the scenario's days from the view itself
            view = browser.new_page(viewport={"width": 1500, "height": 900})
            view.context.add_cookies(page.context.cookies())
            view.goto(f"{base}/stationflow/completeness?days=4&end=2026-11-21")
            cells = view.locator('tr[data-station="FR-Lam"][data-stream="BM_L01_F01"] td.cell')
            states = [cells.nth(i).get_attribute("data-state") for i in range(cells.count())]
            assert states == ["uploaded", "failed", "missing", "pending"]
            uploaded = cells.nth(0)
            assert uploaded.inner_text().strip() == "✓ 5%"
            assert uploaded.get_attribute("data-pct-filled") == "5.0"
            colour = uploaded.evaluate("e => getComputedStyle(e).backgroundColor")
            red, green, _ = (int(x) for x in colour[colour.index("(") + 1 : -1].split(",")[:3])
            assert green > red  # 5 % filled: green
            half = cells.nth(1).evaluate("e => getComputedStyle(e).backgroundColor")
            assert half != colour  # 50 % filled: another colour
            assert "HTTP 400" in cells.nth(1).get_attribute("title")
            ec = view.locator('tr[data-station="FR-Lam"][data-stream="EC_L03_F01"] td.cell')
            assert ec.nth(2).inner_text().strip() == "3/48"
            st = view.locator('tr[data-station="FR-Lam"][data-stream="ST_L02_F01"] td.cell')
            assert st.nth(2).get_attribute("data-state") == "quarantined"
            sta = view.locator('tr[data-network="smartemission"][data-step="sta:sta_default"] td')
            assert sta.nth(2).inner_text().strip() == "30/44"
            refined = view.locator('tr[data-network="smartemission"][data-step="refined"] td')
            assert refined.nth(2).inner_text().strip() == "42/44"
            view.screenshot(path=str(shots / SCREENSHOT), full_page=True)
            png = (shots / SCREENSHOT).read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
            # drill down: the failed day -> the file's uploads and audit log
            cells.nth(1).locator("a").click()
            view.wait_for_url(f"**/stationflow/completeness/files/{ids['bm19']}")
            assert view.locator("#etc-name").inner_text() == "FR-Lam_BM_20261119_L01_F01"
            outcomes = view.locator("#uploads tr[data-outcome]")
            assert [outcomes.nth(i).get_attribute("data-outcome") for i in range(2)] == [
                "error",
                "rejected",
            ]
            assert view.locator("#audit tr[data-level]").count() == 3
            view.screenshot(path=str(shots / "completeness-file.png"), full_page=True)
            # and the missing day -> why
            view.go_back()
            cells.nth(2).locator("a").click()
            view.wait_for_url("**/completeness/days/FR-Lam/BM_L01_F01/2026-11-20")
            assert "no fragment collected" in view.locator("#audit").inner_text()
        finally:
            browser.close()
