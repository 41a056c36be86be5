"""The ICOS ETC upload simulator against raw HTTP: every rule of REFERENCE section 1."""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from datetime import UTC, date, datetime, timedelta

import pytest
import requests

from stationflow.formats import etc_names
from stationflow.formats.etc_names import EtcName
from stationflow.sim import icos_etc
from stationflow.sim.icos_etc import IcosEtcSim, parse_name

TODAY = date(2026, 11, 20)
PW = {"FR-Lam": "lam-Pass-4411", "FR-Aur": "aur-Pass-9902", "FA-Lso": "p4ssw0rd"}
LAM = ("FR-Lam", PW["FR-Lam"])
BM = "FR-Lam_BM_20261120_L01_F01.dat"
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def sim():
    clock = lambda: datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # noqa: E731
    with IcosEtcSim(PW, today=lambda: TODAY, clock=clock) as s:
        yield s


def put(sim, name, data=b"a,b\r\n1,2\r\n", *, auth=LAM, digest=None, path=None):
    url = f"{sim.url}{path}" if path else f"{sim.url}/upload/etc/{digest or md5(data)}/{name}"
    return requests.put(url, data=data, auth=auth, timeout=10)


def half_hours(day: date, slots=range(48)) -> list[str]:
    """EC half-hour names of ``day``: slot 0 ends 00:30, slot 47 ends 0000 the next day."""
    start = datetime.combine(day, datetime.min.time())
    return [
        f"FR-Lam_EC_{start + timedelta(minutes=30 * (k + 1)):%Y%m%d%H%M}_L01_F01.zip" for k in slots
    ]


# ------------------------------------------------------------------ accepted, receipts


def test_accepted_with_receipt_and_report(sim):
    data = b"TIMESTAMP,TA\r\n202611200030,1.5\r\n"
    r = put(sim, BM, data)
    assert (r.status_code, r.text) == (200, "OK")
    token = r.headers["X-ICOSCP-Receipt"]
    assert token and "WWW-Authenticate" not in r.headers
    got = requests.get(f"{sim.url}/upload/etc/receipt/{token}", timeout=10)
    assert got.status_code == 200
    assert got.text == (
        "ICOS CP ETC logger facade file upload receipt:\n"
        "Upload time:  2026-11-20T10:00:00Z\n"
        f"File name:    {BM}\n"
        f"MD5 checksum: {md5(data)}\n"
    )
    assert sim.receipt(token) == {
        "upload_time": "2026-11-20T10:00:00Z",
        "file_name": BM,
        "md5": md5(data),
    }
    bad = requests.get(f"{sim.url}/upload/etc/receipt/not-a-receipt", timeout=10)
    assert bad.status_code == 400 and bad.text.startswith("Invalid receipt:")


def test_md5_segment_in_any_case(sim):
    data = b"x,y\r\n"
    assert put(sim, BM, data, digest=md5(data).upper()).status_code == 200


def test_chunked_body_is_accepted(sim):
    data = b"a,b\r\n" * 1000
    url = f"{sim.url}/upload/etc/{md5(data)}/{BM}"
    r = requests.put(url, data=iter([data[:10], data[10:]]), auth=LAM, timeout=10)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ authentication


@pytest.mark.parametrize(
    "auth",
    [None, ("FR-Lam", "wrong"), ("XX-Nop", "lam-Pass-4411"), ("FR-Lam", "")],
    ids=["missing", "wrong-password", "unknown-user", "empty-password"],
)
def test_bad_credentials_are_403_never_401(sim, auth):
    r = put(sim, BM, auth=auth)
    assert (r.status_code, r.text) == (403, "Authentication error")
    assert "WWW-Authenticate" not in r.headers


def test_auth_is_checked_before_anything_else(sim):
    wrong = ("FR-Lam", "wrong")
    assert put(sim, "garbage", auth=wrong).text == "Authentication error"
    assert put(sim, BM, auth=wrong, digest="nothex").status_code == 403
    assert put(sim, BM, b"", auth=wrong).status_code == 403  # even the empty-file md5
    assert put(sim, BM, auth=wrong, path="/upload/etc").status_code == 403
    bearer = {"Authorization": "Bearer t"}
    r = requests.put(f"{sim.url}/upload/etc/x/y", headers=bearer, timeout=10)
    assert r.status_code == 403 and "WWW-Authenticate" not in r.headers
    assert sim.objects == {}


# ------------------------------------------------------------------ URL segments


@pytest.mark.parametrize("digest", ["abc", "g" * 32, "0" * 31, "0" * 33, "%20" * 2], ids=str)
def test_md5_segment_not_32_hex_is_400(sim, digest):
    r = put(sim, BM, digest=digest)
    assert r.status_code == 400
    assert r.text == "Expected hex-encoded MD5 sum as URL segment after 'upload/etc'"


def test_no_md5_segment_is_400(sim):
    for path in ("/upload/etc", "/upload/etc/"):
        r = put(sim, BM, path=path)
        assert (r.status_code, r.text) == (
            400,
            "Expected hex-encoded MD5 sum as URL segment after 'upload/etc'",
        )


def test_empty_file_md5_is_400(sim):
    r = put(sim, BM, b"")
    assert (r.status_code, r.text) == (400, "MD5 checksum corresponds to an empty file")
    r = put(sim, BM, b"", digest=EMPTY_MD5.upper())
    assert r.text == "MD5 checksum corresponds to an empty file"


@pytest.mark.parametrize("tail", ["", "/", f"/{BM}/extra", "/a/b"])
def test_file_name_must_be_a_single_segment(sim, tail):
    data = b"1\r\n"
    r = put(sim, BM, data, path=f"/upload/etc/{md5(data)}{tail}")
    assert r.status_code == 400
    assert r.text == "Expected single URL segment with file name after the MD5 segment"


# ------------------------------------------------------------------ file names


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("FR-Lam_BM_20261120_L01_F01", "Wrong file name format"),
        ("FR-Lam_BM_20261120_L01_F01.csv.gz", "Wrong file name format"),
        ("FR-Lam_bm_20261120_L01_F01.dat", "Wrong file name format"),
        ("FR-Lam_BM_2026-11-20_L01_F01.dat", "Wrong file name format"),
        ("FR-Lam_B_20261120_L01_F01.dat", "Wrong file name format"),
        ("FR-Lam_BM_20261120_L01_F01.DAT", "Illegal file extension DAT"),
        ("FR-Lam_BM_20261120_L01_F01.xls", "Illegal file extension xls"),
        ("FRxLam_BM_20261120_L01_F01.dat", "Wrong station id: FRxLam"),
        ("fr-Lam_BM_20261120_L01_F01.dat", "Wrong station id: fr-Lam"),
        ("FR-Lam_MET_20261120_L01_F01.dat", "Unknown data type MET"),
        ("FR-Lam_BM_20261120_L1_F01.dat", "two digits"),
        ("FR-Lam_BM_20261120_L01_F001.dat", "two digits"),
        ("FR-Lam_BM_202611201200_L01_F01.dat", "Only EC and PHEN filenames can contain time"),
        ("FR-Lam_ST_202611201200_L01_F01.dat", "Only EC and PHEN filenames can contain time"),
        ("FR-Lam_EC_20261120_L01_F01.zip", "EC and PHEN filenames must contain time"),
        ("FR-Lam_PHEN_20261120_L01_F01.jpg", "EC and PHEN filenames must contain time"),
        ("FR-Lam_EC_2026112012_L01_F01.zip", "could not be parsed as a time"),
        ("FR-Lam_EC_202611202460_L01_F01.zip", "could not be parsed as a time"),
        ("FR-Lam_BM_20261340_L01_F01.dat", "could not be parsed as a date"),
        ("FR-Lam_BM_2026_L01_F01.dat", "could not be parsed as a date"),
    ],
)
def test_bad_names_are_400_with_the_reason(sim, name, reason):
    r = put(sim, name)
    assert r.status_code == 400, r.text
    assert reason in r.text
    with pytest.raises(icos_etc.PortalNameError, match=reason):
        parse_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "FR-Lam_EC_202611200030_L01_F01.zip",
        "FR-Lam_EC_202611210000_L02_F03.csv",
        "FR-Lam_PHEN_202611201200_L05_F01.jpg",
        "FR-Lam_BM_20261120_L01_F01.csv",
        "FR-Lam_ST_20261120_L01_F02.txt",
        "FR-Lam_SAHEAT_20261120_L03_F01.bin",
    ],
)
def test_every_type_with_its_precision_is_accepted(sim, name):
    r = put(sim, name)
    assert r.status_code == 200, r.text


def test_station_in_the_name_must_be_the_login(sim):
    r = put(sim, "FR-Aur_BM_20261120_L01_F01.dat")
    assert (r.status_code, r.text) == (403, "This file must be uploaded by FR-Aur, not by FR-Lam!")


def test_dates_in_the_future_and_too_far_in_the_past(sim):
    assert put(sim, "FR-Lam_BM_20261121_L01_F01.dat").status_code == 200  # today + 1 day
    assert put(sim, "FR-Lam_EC_202611220000_L01_F01.zip").status_code == 403  # date part
    r = put(sim, "FR-Lam_BM_20261122_L01_F01.dat")
    assert (r.status_code, r.text) == (
        403,
        "File name date 2026-11-22 is in the future, cannot be right",
    )
    r = put(sim, "FR-Lam_BM_20091231_L01_F01.dat")
    assert (r.status_code, r.text) == (403, "File name date 2009-12-31 is too far in the past")
    assert put(sim, "FR-Lam_BM_20100101_L01_F01.dat").status_code == 200


def test_body_md5_mismatch_is_500_and_nothing_is_kept(sim):
    data = b"the bytes\r\n"
    wrong = md5(b"other bytes")
    r = put(sim, BM, data, digest=wrong.upper())
    assert (r.status_code, r.text) == (500, f"Expected MD5 checksum {wrong}, got {md5(data)}")
    assert "X-ICOSCP-Receipt" not in r.headers
    assert sim.objects == {} and sim.history(BM) == [] and sim.staging("FR-Lam") == {}


def test_names_written_by_the_project_are_accepted():
    """etc_names writes what the portal takes, with the same types and extensions."""
    assert etc_names.TYPES == icos_etc.DATA_TYPES and etc_names.EXTENSIONS == icos_etc.EXTENSIONS
    for n in (
        EtcName("FR-Lam", "EC", datetime(2026, 11, 21, 0, 0), 1, 1, "zip"),
        EtcName.daily("FR-Lam", "SAHEAT", date(2026, 11, 20), 12, 3, "csv"),
        EtcName("FA-Lso", "PHEN", datetime(2026, 11, 20, 12, 30), 5, 1, "jpg"),
    ):
        pn = parse_name(str(n))
        assert (pn.station, pn.type, pn.logger, pn.file) == (n.station, n.type, n.logger, n.file)


# ------------------------------------------------------------------ other methods, paths


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/upload/etc/{'0' * 32}/{BM}"),
        ("DELETE", f"/upload/etc/{'0' * 32}/{BM}"),
        ("PATCH", f"/upload/etc/{'0' * 32}/{BM}"),
        ("GET", f"/upload/etc/{'0' * 32}/{BM}"),
        ("GET", "/"),
        ("GET", "/upload/etc"),
        ("PUT", f"/upload/{'0' * 32}/{BM}"),
        ("PUT", f"/objects/{'0' * 32}"),
    ],
)
def test_any_other_method_or_path_is_404(sim, method, path):
    r = requests.request(method, f"{sim.url}{path}", data=b"x", auth=LAM, timeout=10)
    assert r.status_code == 404
    assert "WWW-Authenticate" not in r.headers


# ------------------------------------------------------------------ re-uploads


def test_daily_file_versions_and_same_bytes(sim):
    v1, v2 = b"TA\r\n1\r\n", b"TA\r\n1\r\n2\r\n"
    for data in (v1, v2, v1, v2):
        assert put(sim, BM, data).status_code == 200
    versions = sim.objects[BM]
    assert [(v.version, v.sha256) for v in versions] == [
        (1, hashlib.sha256(v1).hexdigest()),
        (2, hashlib.sha256(v2).hexdigest()),
    ]
    assert [h["object"] for h in sim.history(BM)] == [
        "new object",
        "new version",
        "same bytes: not a new object",
        "same bytes: not a new object",
    ]
    assert sim.staging("FR-Lam") == {}  # a daily file is ingested at once


def test_same_name_replaces_the_staged_file(sim):
    name = half_hours(TODAY, [10])[0]
    assert put(sim, name, b"first").status_code == 200
    assert put(sim, name, b"second").status_code == 200
    staged = sim.staging("FR-Lam")
    assert list(staged) == [name] and staged[name].data == b"second"
    assert [h["replaced"] for h in sim.history(name)] == [False, True]
    assert sim.objects == {}  # a half-hour is not an object by itself


def test_test_station_is_staged_never_published(sim):
    name = "FA-Lso_BM_20261120_L01_F01.dat"
    assert put(sim, name, b"1\r\n", auth=("FA-Lso", "p4ssw0rd")).status_code == 200
    assert name in sim.staging("FA-Lso") and sim.objects == {}


# ------------------------------------------------------------------ EC daily packages


def test_ec_day_is_packed_when_its_48_slots_are_in(sim):
    names = half_hours(TODAY)
    assert names[0].endswith("202611200030_L01_F01.zip")
    assert names[-1].endswith("202611210000_L01_F01.zip")  # midnight: the day's last slot
    for n in names[:47]:
        assert put(sim, n, n.encode()).status_code == 200
    assert sim.packed == [] and len(sim.staging("FR-Lam")) == 47
    assert put(sim, names[47], names[47].encode()).status_code == 200

    (p,) = sim.packed
    daily = "FR-Lam_EC_20261120_L01_F01.zip"
    assert (p.name, p.day, p.forced, p.object, len(p.members)) == (
        daily,
        TODAY,
        False,
        "new object",
        48,
    )
    assert list(p.members) == sorted(names)
    with zipfile.ZipFile(io.BytesIO(p.data)) as zf:
        assert zf.namelist() == sorted(names)
        assert zf.read(names[5]) == names[5].encode()
    assert sim.staging("FR-Lam") == {}  # packed half-hours leave staging
    assert sim.objects[daily][0].sha256 == p.sha256
    assert sim.history(names[47])[0]["packed"] == daily

    late = half_hours(TODAY, [3])[0]  # a re-sent half-hour waits for the forced packing
    assert put(sim, late, b"corrected").status_code == 200
    assert len(sim.packed) == 1
    (again,) = sim.force_pack(TODAY)
    assert again.forced and again.object == "new version" and len(again.members) == 48
    with zipfile.ZipFile(io.BytesIO(again.data)) as zf:
        assert zf.read(late) == b"corrected"
    assert [v.version for v in sim.objects[daily]] == [1, 2]


def test_forced_packing_takes_incomplete_days_before_today(sim):
    yesterday = TODAY - timedelta(days=1)
    for n in half_hours(yesterday, range(0, 47, 2)) + half_hours(TODAY, range(10)):
        assert put(sim, n, n.encode()).status_code == 200
    assert sim.packed == []
    (p,) = sim.force_pack()  # the 04:00 UTC run: days before today only
    assert (p.name, p.day, p.forced, len(p.members)) == (
        "FR-Lam_EC_20261119_L01_F01.zip",
        yesterday,
        True,
        24,
    )
    assert len(sim.staging("FR-Lam")) == 10  # today's half-hours still wait
    (q,) = sim.force_pack(TODAY)
    assert q.name == "FR-Lam_EC_20261120_L01_F01.zip" and len(q.members) == 10
    assert sim.force_pack() == [] and sim.staging("FR-Lam") == {}


def test_packages_are_per_logger_and_file(sim):
    other = [n.replace("_L01_F01", "_L01_F02") for n in half_hours(TODAY)]
    for n in half_hours(TODAY, range(47)) + other:
        assert put(sim, n, n.encode()).status_code == 200
    assert [p.name for p in sim.packed] == ["FR-Lam_EC_20261120_L01_F02.zip"]


# ------------------------------------------------------------------ staging listing


def test_staging_listing_endpoint(sim):
    names = half_hours(TODAY, [0, 1])
    for n in names:
        put(sim, n, n.encode())
    r = requests.get(f"{sim.url}/upload/etc/staging/FR-Lam", auth=LAM, timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    body = r.json()
    assert body["station"] == "FR-Lam"
    assert [(f["name"], f["md5"]) for f in body["files"]] == [(n, md5(n.encode())) for n in names]
    denied = requests.get(
        f"{sim.url}/upload/etc/staging/FR-Lam", auth=("FR-Aur", PW["FR-Aur"]), timeout=10
    )
    assert (denied.status_code, denied.text) == (403, "Authentication error")
    assert requests.get(f"{sim.url}/upload/etc/staging/FR-Lam", timeout=10).status_code == 403


# ------------------------------------------------------------------ fault injection


def test_fail_next_then_normal(sim):
    sim.fail_next(503, times=2, message="busy")
    assert [(r.status_code, r.text) for r in (put(sim, BM), put(sim, BM))] == [(503, "busy")] * 2
    assert put(sim, BM).status_code == 200
    assert [r["status"] for r in sim.puts()] == [503, 503, 200]


def test_corrupt_next_md5_answers_the_mismatch(sim):
    data = b"good bytes\r\n"
    sim.corrupt_next_md5()
    r = put(sim, BM, data)
    assert r.status_code == 500
    assert r.text.startswith(f"Expected MD5 checksum {md5(data)}, got ")
    assert r.text != f"Expected MD5 checksum {md5(data)}, got {md5(data)}"
    assert put(sim, BM, data).status_code == 200


def test_drop_next_closes_without_an_answer(sim):
    sim.drop_next()
    with pytest.raises(requests.ConnectionError):
        put(sim, BM)
    assert put(sim, BM).status_code == 200
    assert [r["status"] for r in sim.puts()] == [None, 200]


def test_request_log_has_no_password(sim):
    put(sim, BM)
    put(sim, BM, auth=("FR-Lam", "wrong"))
    text = repr(sim.requests)
    assert PW["FR-Lam"] not in text and "wrong" not in text
    assert [r["login"] for r in sim.puts()] == ["FR-Lam", None]


def test_drop_next_after_store_keeps_the_file_but_never_answers(sim):
    data = b"stored, never answered\r\n"
    sim.drop_next(after_store=True)
    with pytest.raises(requests.ConnectionError):
        put(sim, BM, data)
    [event] = sim.history(BM)  # the portal has the file and issued a receipt
    assert event["sha256"] == hashlib.sha256(data).hexdigest()
    assert sim.receipt(event["receipt"])["file_name"] == BM
    assert [(r["status"], r["dropped"]) for r in sim.puts()] == [(None, 200)]
    assert put(sim, BM, data).status_code == 200  # the fault was used once
    assert len(sim.history(BM)) == 2 and len(sim.objects[BM]) == 1  # same bytes, one object


def test_delay_next_holds_the_answer_past_a_client_timeout(sim):
    sim.delay_next(0.6)
    with pytest.raises(requests.ReadTimeout):
        requests.put(
            f"{sim.url}/upload/etc/{md5(b'late')}/{BM}", data=b"late", auth=LAM, timeout=(5, 0.2)
        )
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while not sim.history(BM) and datetime.now(UTC) < deadline:
        threading.Event().wait(0.05)
    assert [e["md5"] for e in sim.history(BM)] == [md5(b"late")]  # handled, answered late
    r = put(sim, BM, b"late")  # the next one is not delayed
    assert r.status_code == 200 and r.elapsed.total_seconds() < 0.5
    with pytest.raises(ValueError):
        sim.delay_next(0)


def test_hold_next_holds_the_answer_until_released(sim):
    hold = sim.hold_next()
    out: list[requests.Response] = []
    t = threading.Thread(target=lambda: out.append(put(sim, BM, b"held")))
    t.start()
    assert hold.wait_reached(5)
    assert len(sim.history(BM)) == 1 and not out  # stored, not answered yet
    hold.release()
    t.join(5)
    assert out and out[0].status_code == 200
    assert out[0].headers["X-ICOSCP-Receipt"] == sim.history(BM)[0]["receipt"]
