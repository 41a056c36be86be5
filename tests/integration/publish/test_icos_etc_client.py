"""The ETC upload client against the simulator, with the ledger in a real PostgreSQL."""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import socket
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import requests

from stationflow.errors import PermanentError
from stationflow.publish.icos_etc import (
    NOT_IN_LEDGER,
    FileNotAsRecorded,
    UploadFailed,
    UploadRejected,
    normalize_base_url,
    upload_file,
    upload_output,
    verify_receipt,
)
from stationflow.publish.upload_cli import add_upload_parser
from stationflow.sim.icos_etc import IcosEtcSim

TODAY = date(2026, 11, 20)
PASSWORD = "Lam-s3cret-Pw-9f2c"
CONN_ID = "icos_etc_test"
BM = "FR-Lam_BM_20261120_L01_F01.dat"


class FakeSleep:
    def __init__(self):
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sim():
    with IcosEtcSim({"FR-Lam": PASSWORD, "FR-Aur": "aur-Other-771"}, today=lambda: TODAY) as s:
        yield s


@pytest.fixture
def icos_conn(monkeypatch, sim):
    """The Airflow Connection of the endpoint, as an AIRFLOW_CONN_ variable."""
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": sim.port,
        "schema": "http",
        "login": "FR-Lam",
        "password": PASSWORD,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    return CONN_ID


def write_output(conn, folder: Path, data: bytes, name: str = BM, station: str = "FR-Lam") -> int:
    """Write ``data`` as ``name`` and register it as the next output_file version."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    version = conn.execute(
        "SELECT COALESCE(max(version), 0) + 1 FROM stationflow.output_file WHERE etc_name = %s",
        (name,),
    ).fetchone()[0]
    oid = conn.execute(
        "INSERT INTO stationflow.output_file (station, file_type, logger_number, file_number,"
        " period_start, period_end, etc_name, path, size, md5, sha256, rows_expected,"
        " rows_present, rows_filled, interval_ms, version)"
        " VALUES (%s, 'BM', 1, 1, %s, %s, %s, %s, %s, %s, %s, 48, 48, 0, 1800000, %s)"
        " RETURNING id",
        (
            station,
            datetime(2026, 11, 19, 23, tzinfo=UTC),
            datetime(2026, 11, 20, 23, tzinfo=UTC),
            name,
            str(path),
            len(data),
            hashlib.md5(data, usedforsecurity=False).hexdigest(),
            hashlib.sha256(data).hexdigest(),
            version,
        ),
    ).fetchone()[0]
    conn.commit()
    return oid


def uploads(conn, oid: int | None = None) -> list[tuple]:
    sql = "SELECT output_file_id, attempt, outcome, http_status, receipt, message, target"
    sql += " FROM stationflow.upload"
    if oid is not None:
        return conn.execute(sql + " WHERE output_file_id = %s ORDER BY attempt", (oid,)).fetchall()
    return conn.execute(sql + " ORDER BY id").fetchall()


def audits(conn) -> list[tuple]:
    return conn.execute(
        "SELECT level, message, details::text FROM stationflow.audit_log"
        " WHERE step = 'publish.upload' ORDER BY id"
    ).fetchall()


def test_accepted_receipt_recorded_and_verifiable(conn, sim, icos_conn, tmp_path):
    data = b"TIMESTAMP,TA\r\n202611200030,1.5\r\n"
    oid = write_output(conn, tmp_path, data)
    r = upload_output(conn, oid, conn_id=icos_conn)
    assert (r.status, r.http_status, r.attempts, r.output_file_id) == ("accepted", 200, 1, oid)
    assert r.target == sim.url and r.receipt
    [(_, attempt, outcome, status, receipt, message, target)] = uploads(conn, oid)
    assert (attempt, outcome, status, receipt, message, target) == (
        1,
        "accepted",
        200,
        r.receipt,
        None,
        sim.url,
    )
    [(level, msg, _)] = audits(conn)
    assert level == "INFO" and "accepted" in msg and r.receipt in msg
    assert verify_receipt(sim.url, "FR-Lam", PASSWORD, r.receipt) == {
        "upload_time": sim.receipt(r.receipt)["upload_time"],
        "file_name": BM,
        "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
    }
    with pytest.raises(UploadRejected, match="HTTP 400"):
        verify_receipt(sim.url, "FR-Lam", PASSWORD, "forged")


def test_same_bytes_are_never_sent_twice(conn, sim, icos_conn, tmp_path):
    oid = write_output(conn, tmp_path, b"a\r\n")
    first = upload_output(conn, oid, conn_id=icos_conn)
    again = upload_output(conn, oid, conn_id=icos_conn)
    assert again.status == "skipped" and again.attempts == 0
    assert again.receipt == first.receipt and "already accepted" in again.message
    assert len(sim.puts()) == 1  # nothing sent the second time
    assert [u[2] for u in uploads(conn, oid)] == ["accepted"]  # a skip is not an attempt
    assert "already accepted" in audits(conn)[-1][1]


def test_new_bytes_under_the_same_name_are_a_new_upload(conn, sim, icos_conn, tmp_path):
    v1 = write_output(conn, tmp_path, b"a\r\n")
    upload_output(conn, v1, conn_id=icos_conn)
    v2 = write_output(conn, tmp_path, b"a\r\nb\r\n")  # late data: version 2, same path
    r = upload_output(conn, v2, conn_id=icos_conn)
    assert r.status == "accepted"
    assert [(u[0], u[2]) for u in uploads(conn)] == [(v1, "accepted"), (v2, "accepted")]
    assert [v.version for v in sim.objects[BM]] == [1, 2]
    # version 1's bytes are no longer on disk, and version 2 was accepted: v1 is superseded
    assert upload_output(conn, v1, conn_id=icos_conn).status == "skipped"
    assert len(sim.puts()) == 2


def test_an_older_version_is_not_sent_over_a_newer_one(conn, sim, icos_conn, tmp_path):
    v1 = write_output(conn, tmp_path / "v1", b"a\r\n")
    v2 = write_output(conn, tmp_path / "v2", b"a\r\nb\r\n")
    upload_output(conn, v2, conn_id=icos_conn)
    for _ in range(2):
        r = upload_output(conn, v1, conn_id=icos_conn)
        assert r.status == "skipped" and "version 2" in r.message
    assert len(sim.puts()) == 1
    assert [u[2] for u in uploads(conn, v1)] == ["skipped"]  # recorded once


@pytest.mark.parametrize(
    ("name", "status", "text"),
    [
        ("FR-Lam_BM_20261120_L01_F01.DAT", 400, "Illegal file extension DAT"),
        ("FR-Lam_BM_20261125_L01_F01.dat", 403, "is in the future"),
        ("FR-Aur_BM_20261120_L01_F01.dat", 403, "must be uploaded by FR-Aur, not by FR-Lam!"),
    ],
)
def test_refusals_are_permanent_and_sent_once(conn, sim, icos_conn, tmp_path, name, status, text):
    oid = write_output(conn, tmp_path, b"1\r\n", name=name, station=name[:6])
    if name.startswith("FR-Aur"):  # the ledger row says FR-Lam, the name says FR-Aur
        conn.execute("UPDATE stationflow.output_file SET station = 'FR-Lam' WHERE id = %s", (oid,))
        conn.commit()
    sleep = FakeSleep()
    with pytest.raises(UploadRejected, match=text) as err:
        upload_output(conn, oid, conn_id=icos_conn, sleep=sleep)
    assert isinstance(err.value, PermanentError) and err.value.result.http_status == status
    assert len(sim.puts()) == 1 and sleep.calls == []
    [(_, attempt, outcome, got, receipt, message, _)] = uploads(conn, oid)
    assert (attempt, outcome, got, receipt) == (1, "rejected", status, None)
    assert text in message
    assert audits(conn)[-1][0] == "ERROR"


def test_404_is_a_refusal(conn, sim, icos_conn, tmp_path):
    r = upload_file(None, f"{sim.url}/wrong/base", "FR-Lam", PASSWORD, _file(tmp_path))
    assert (r.status, r.http_status, r.attempts) == ("rejected", 404, 1)
    oid = write_output(conn, tmp_path / "o", b"z\r\n")
    sim.fail_next(404, message="Not here")
    with pytest.raises(UploadRejected, match="Not here"):
        upload_output(conn, oid, conn_id=icos_conn, sleep=FakeSleep())
    assert [u[2:4] for u in uploads(conn, oid)] == [("rejected", 404)]


def _file(folder: Path, data: bytes = b"x,y\r\n1,2\r\n", name: str = BM) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(data)
    return folder / name


def test_server_errors_are_retried_with_backoff(conn, sim, icos_conn, tmp_path):
    oid = write_output(conn, tmp_path, b"r\r\n")
    sim.fail_next(503, times=2, message="Service Unavailable")
    sleep = FakeSleep()
    r = upload_output(conn, oid, conn_id=icos_conn, sleep=sleep, backoff=2.0)
    assert (r.status, r.attempts) == ("accepted", 3)
    assert sleep.calls == [2.0, 4.0]
    assert [(u[1], u[2], u[3]) for u in uploads(conn, oid)] == [
        (1, "error", 503),
        (2, "error", 503),
        (3, "accepted", 200),
    ]
    assert [a[0] for a in audits(conn)] == ["WARNING", "WARNING", "INFO"]


def test_server_errors_forever_then_a_later_task_retry(conn, sim, icos_conn, tmp_path):
    oid = write_output(conn, tmp_path, b"f\r\n")
    sim.fail_next(500, times=10, message="Internal Server Error")
    sleep = FakeSleep()
    with pytest.raises(UploadFailed, match="after 4 attempt") as err:
        upload_output(conn, oid, conn_id=icos_conn, sleep=sleep, retries=3)
    assert not isinstance(err.value, PermanentError)
    assert sleep.calls == [2.0, 4.0, 8.0]
    assert [(u[1], u[2], u[3]) for u in uploads(conn, oid)] == [
        (n, "error", 500) for n in (1, 2, 3, 4)
    ]
    assert [a[0] for a in audits(conn)] == ["WARNING"] * 4 + ["ERROR"]
    # Airflow retries the task: attempt numbers go on from the last one
    sim.clear_faults()
    r = upload_output(conn, oid, conn_id=icos_conn, sleep=sleep)
    assert r.status == "accepted" and uploads(conn, oid)[-1][1:3] == (5, "accepted")
    result = upload_output(conn, oid, conn_id=icos_conn, raise_on_failure=False)
    assert result.status == "skipped"


def test_no_answer_is_retried_then_failed(tmp_path, sim):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    sleep = FakeSleep()
    r = upload_file(None, dead, "FR-Lam", PASSWORD, _file(tmp_path), retries=2, sleep=sleep)
    assert (r.status, r.http_status, r.attempts) == ("error", None, 3)
    assert "no answer" in r.message and sleep.calls == [2.0, 4.0]
    sim.drop_next()  # a connection closed without an answer, then the portal is back
    r = upload_file(None, sim.url, "FR-Lam", PASSWORD, _file(tmp_path), sleep=sleep)
    assert (r.status, r.attempts) == ("accepted", 2)


def test_md5_mismatch_rereads_and_retries_once(conn, sim, icos_conn, tmp_path):
    oid = write_output(conn, tmp_path, b"m\r\n")
    sim.corrupt_next_md5()
    sleep = FakeSleep()
    r = upload_output(conn, oid, conn_id=icos_conn, sleep=sleep)
    assert (r.status, r.attempts) == ("accepted", 2) and sleep.calls == []
    first = uploads(conn, oid)[0]
    assert first[2:4] == ("error", 500)
    assert first[5].startswith("Expected MD5 checksum") and "unchanged" in first[5]

    other = write_output(conn, tmp_path / "b", b"n\r\n", name="FR-Lam_BM_20261119_L01_F01.dat")
    sim.corrupt_next_md5(times=2)  # corrupted again: once is all it gets
    with pytest.raises(UploadFailed, match="again"):
        upload_output(conn, other, conn_id=icos_conn, sleep=sleep)
    assert [u[2:4] for u in uploads(conn, other)] == [("error", 500), ("error", 500)]
    assert sleep.calls == []


def rewrite_after_first_answer(path: Path, data: bytes) -> requests.Session:
    """A session that rewrites ``path`` when the first answer arrives (mid-upload)."""
    s = requests.Session()
    done: list[int] = []

    def hook(response, *args, **kwargs):
        if not done:
            done.append(1)
            path.write_bytes(data)

    s.hooks["response"].append(hook)
    return s


def test_md5_mismatch_with_a_file_changed_on_disk(conn, sim, icos_conn, tmp_path):
    path = _file(tmp_path / "free", b"old\r\n")
    sim.corrupt_next_md5()
    s = rewrite_after_first_answer(path, b"new\r\n")
    r = upload_file(s, sim.url, "FR-Lam", PASSWORD, path)
    assert r.status == "accepted" and r.attempts == 2
    assert r.md5 == hashlib.md5(b"new\r\n", usedforsecurity=False).hexdigest()
    assert sim.history(BM)[0]["md5"] == r.md5

    oid = write_output(conn, tmp_path / "ledger", b"ledger\r\n")
    sim.corrupt_next_md5()
    s = rewrite_after_first_answer(tmp_path / "ledger" / BM, b"rewritten\r\n")
    with pytest.raises(FileNotAsRecorded, match="changed on disk"):
        upload_output(conn, oid, conn_id=icos_conn, session=s)
    assert len(sim.puts()) == 3  # the rewritten bytes were not sent
    [(_, attempt, outcome, status, _, message, _)] = uploads(conn, oid)
    assert (attempt, outcome, status) == (1, "error", 500)
    assert "no longer the expected bytes: not sent again" in message


def test_file_not_as_the_ledger_says_is_never_sent(conn, sim, icos_conn, tmp_path):
    oid = write_output(conn, tmp_path, b"ledger bytes\r\n")
    (tmp_path / BM).write_bytes(b"other bytes\r\n")
    with pytest.raises(FileNotAsRecorded, match="not the bytes the ledger describes"):
        upload_output(conn, oid, conn_id=icos_conn)
    (tmp_path / BM).unlink()
    r = upload_output(conn, oid, conn_id=icos_conn, raise_on_failure=False)
    assert r.status == "error" and "cannot be read" in r.message
    assert sim.puts() == []
    assert [(u[2], u[3]) for u in uploads(conn, oid)] == [("error", None), ("error", None)]
    assert [a[0] for a in audits(conn)] == ["ERROR", "ERROR"]


def test_login_must_be_the_station(conn, sim, monkeypatch, tmp_path):
    monkeypatch.setenv(
        "AIRFLOW_CONN_ICOS_ETC_AUR",
        json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": sim.port,
                "schema": "http",
                "login": "FR-Aur",
                "password": "aur-Other-771",
            }
        ),
    )
    oid = write_output(conn, tmp_path, b"1\r\n")
    with pytest.raises(PermanentError, match=r"logs in as 'FR-Aur'.*belongs\s+to FR-Lam"):
        upload_output(conn, oid, conn_id="icos_etc_aur")
    assert sim.requests == [] and uploads(conn) == []


def test_plain_http_only_to_loopback():
    assert normalize_base_url("http://user:pw@127.0.0.1:8099/") == "http://127.0.0.1:8099"
    assert normalize_base_url("https://data.icos-cp.eu/") == "https://data.icos-cp.eu"
    with pytest.raises(ValueError, match="in clear"):
        normalize_base_url("http://data.icos-cp.eu")
    assert normalize_base_url("http://sim:80", allow_http=True) == "http://sim:80"


def test_password_never_leaks(conn, sim, icos_conn, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    oid = write_output(conn, tmp_path / "a", b"1\r\n")
    upload_output(conn, oid, conn_id=icos_conn)
    bad = write_output(conn, tmp_path / "b", b"2\r\n", name="FR-Lam_BM_20261125_L01_F01.dat")
    with pytest.raises(UploadRejected) as e1:
        upload_output(conn, bad, conn_id=icos_conn)
    seen.append(str(e1.value))
    flaky = write_output(conn, tmp_path / "c", b"3\r\n", name="FR-Lam_BM_20261118_L01_F01.dat")
    sim.fail_next(500, times=5, message=f"proxy echoes {PASSWORD}")
    with pytest.raises(UploadFailed) as e2:
        upload_output(conn, flaky, conn_id=icos_conn, retries=1, sleep=FakeSleep())
    seen.append(str(e2.value))
    sim.clear_faults()
    sim.drop_next(3)
    r = upload_file(None, sim.url, "FR-Lam", PASSWORD, tmp_path / "a" / BM, sleep=FakeSleep())
    seen.append(repr(r))
    rows = conn.execute("SELECT u::text FROM stationflow.upload u").fetchall()
    rows += conn.execute("SELECT a::text FROM stationflow.audit_log a").fetchall()
    seen += [x[0] for x in rows]
    seen.append(caplog.text)
    assert len(rows) > 5 and "***" in " ".join(seen)  # the echoed password was masked
    for text in seen:
        assert PASSWORD not in text


# ------------------------------------------------------------------ the CLI handler


def cli(*argv: str) -> int:
    p = argparse.ArgumentParser(prog="stationflow")
    sub = p.add_subparsers(dest="command", required=True)
    add_upload_parser(sub)
    args = p.parse_args(list(argv))
    return args.func(args)


def lines(capsys) -> list[dict]:
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


def test_cli_json_lines_exit_codes_and_skips(conn, sim, state_db, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    monkeypatch.setenv("ICOS_PW", PASSWORD)
    oid = write_output(conn, tmp_path / "known", b"known\r\n")
    known = tmp_path / "known" / BM
    unknown = _file(tmp_path / "free", b"free\r\n", name="FR-Lam_ST_20261120_L01_F01.dat")
    refused = _file(tmp_path / "free", b"no\r\n", name="FR-Lam_BM_20261130_L01_F01.dat")
    base = ["upload", "--station", "FR-Lam", "--url", sim.url, "--password-env", "ICOS_PW"]

    assert cli(*base, str(known), str(unknown), str(refused)) == 1
    a, b, c = lines(capsys)
    assert (a["name"], a["status"], a["http_status"], a["output_file_id"]) == (
        BM,
        "accepted",
        200,
        oid,
    )
    assert a["receipt"] and a["md5"] == hashlib.md5(b"known\r\n", usedforsecurity=False).hexdigest()
    assert (b["status"], b["output_file_id"]) == ("accepted", None)
    assert b["receipt"] and NOT_IN_LEDGER in b["message"]
    assert (c["status"], c["http_status"]) == ("rejected", 403)
    assert "is in the future" in c["message"]
    assert [u[2] for u in uploads(conn)] == ["accepted"]  # only the ledger's file has a row

    assert cli(*base, str(known)) == 0  # already accepted: skipped, nothing sent
    [again] = lines(capsys)
    assert again["status"] == "skipped" and again["receipt"] == a["receipt"]
    assert len(sim.puts()) == 3

    assert cli(*base, "--no-ledger", str(known)) == 0  # no ledger: no skip either
    [free] = lines(capsys)
    assert free["status"] == "accepted" and "no ledger" in free["message"]
    assert len(sim.puts()) == 4 and len(uploads(conn)) == 1


def test_cli_with_a_connection(conn, sim, icos_conn, state_db, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("STATIONFLOW_DB_URL", state_db)
    path = _file(tmp_path, b"via conn\r\n")
    assert cli("upload", "--station", "FR-Lam", "--conn", icos_conn, str(path)) == 0
    [r] = lines(capsys)
    assert r["status"] == "accepted" and r["receipt"]
    # the Connection logs in as FR-Lam: another station is refused before sending
    assert cli("upload", "--station", "FR-Aur", "--conn", icos_conn, str(path)) == 2
    assert "is not the station" in capsys.readouterr().err
    assert len(sim.puts()) == 1


def test_cli_usage_errors(sim, monkeypatch, capsys, tmp_path):
    path = str(_file(tmp_path))
    monkeypatch.delenv("NO_SUCH_PW", raising=False)
    base = ["upload", "--station", "FR-Lam", "--no-ledger"]
    assert cli(*base, "--url", sim.url, "--password-env", "NO_SUCH_PW", path) == 2
    assert "NO_SUCH_PW is not set" in capsys.readouterr().err
    assert cli(*base, "--url", sim.url, path) == 2
    assert "--password-env" in capsys.readouterr().err
    monkeypatch.setenv("PW", PASSWORD)
    assert cli(*base, "--url", "http://example.org", "--password-env", "PW", path) == 2
    assert "in clear" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no password argument exists at all
        cli(*base, "--url", sim.url, "--password", PASSWORD, path)
    capsys.readouterr()
    assert cli(*base, "--url", sim.url, "--password-env", "PW", str(tmp_path / "nope.dat")) == 1
    [missing] = lines(capsys)
    assert missing["status"] == "error" and "cannot read" in missing["message"]
    assert sim.requests == []
    monkeypatch.setenv("PW", "wrong-password")
    assert cli(*base, "--url", sim.url, "--password-env", "PW", path) == 1
    [denied] = lines(capsys)
    assert (denied["status"], denied["http_status"], denied["message"]) == (
        "rejected",
        403,
        "Authentication error; no ledger: uploaded without a ledger row",
    )


def test_requests_session_is_used_and_tls_is_verified(sim, tmp_path):
    s = requests.Session()
    s.verify = False  # a caller's session cannot turn certificate checks off
    seen = []
    s.hooks["response"].append(lambda r, *a, **k: seen.append(r.request))
    original = s.send

    def send(request, **kwargs):
        seen.append(kwargs.get("verify"))
        return original(request, **kwargs)

    s.send = send
    r = upload_file(s, sim.url, "FR-Lam", PASSWORD, _file(tmp_path))
    assert r.status == "accepted"
    verify = [v for v in seen if not isinstance(v, requests.PreparedRequest)]
    assert verify and all(v is True or isinstance(v, str) for v in verify)  # never False
    req = next(x for x in seen if isinstance(x, requests.PreparedRequest))
    assert req.headers["Authorization"].startswith("Basic ")  # sent pre-emptively
    assert [x["status"] for x in sim.puts()] == [200]  # one request, no 401 round trip
