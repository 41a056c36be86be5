from datetime import date, datetime

import pytest

from stationflow.formats.etc_names import EtcName, EtcNameError, parse


def test_names_as_the_portal_expects():
    assert str(EtcName.daily("FR-Lam", "BM", date(2026, 11, 20), 2, 1, "dat")) == (
        "FR-Lam_BM_20261120_L02_F01.dat"
    )
    ec = EtcName("FR-Lam", "EC", datetime(2026, 11, 20, 12, 30), 1, 1, "zip")
    assert str(ec) == "FR-Lam_EC_202611201230_L01_F01.zip" and ec.stem == str(ec)[:-4]
    midnight = parse("FR-Lam_EC_202611210000_L01_F01.zip")  # the day's last half-hour
    assert midnight.time == datetime(2026, 11, 21) and midnight.type == "EC"
    assert parse("FA-Lso_SAHEAT_20261120_L03_F12.csv").file == 12


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("FR-Lam_EC_20261121_L01_F01.zip", "YYYYMMDDHHMM"),
        ("FR-Lam_BM_202611210030_L01_F01.csv", "YYYYMMDD"),
        ("FR-Lam_MET_20261121_L01_F01.csv", "unknown file type"),
        ("FR-Lam_BM_20261121_L1_F01.csv", "two digits"),
        ("FR-Lam_BM_20261321_L01_F01.csv", "not a valid time"),
        ("FR-Lam_BM_20261121_L01_F01.xlsx", "does not match"),
        ("FR-Lam_BM_20261121_L01_F01.CSV", "extension"),
        ("FR-Lam_EC_202611211215_L01_F01.zip", "half-hour"),
        ("France_BM_20261121_L01_F01.csv", "is not like FR-Lam"),
    ],
)
def test_bad_names_are_refused_with_the_reason(name, why):
    with pytest.raises(EtcNameError, match=why):
        parse(name)
