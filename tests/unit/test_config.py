from datetime import datetime, timedelta

import pytest

from stationflow.config import (
    ConfigError,
    LoggerNetCollect,
    ModbusCollect,
    load_inventory,
    parse_interval_ms,
    parse_inventory,
)
from stationflow.errors import PermanentError
from stationflow.settings import PROJECT_ROOT

DEFAULT = PROJECT_ROOT / "config" / "stations.yaml"

MINIMAL = """\
version: 1
stations:
  - id: FA-Lso
    utc_offset_hours: 1
    upload: {connection_id: icos_test}
    loggers:
      - id: cr1000
        kind: campbell
        collect: {method: loggernet, folder: lgn, tables: [Meteo]}
    files:
      - {type: BM, logger: cr1000, logger_number: 1, file_number: 1, interval: 30min}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        parse_inventory(text, "inv.yaml")
    return str(exc.value).splitlines()[1:]


def test_default_inventory_is_the_demo_network():
    inv = load_inventory(DEFAULT)
    assert [s.id for s in inv.stations] == ["FR-Lam", "FR-Aur"]
    lam = inv.station("FR-Lam")
    assert lam.icos_class == 1 and inv.station("FR-Aur").icos_class == 3
    # local standard time, no DST: the offset is the same in January and in July
    assert lam.tz.utcoffset(datetime(2026, 1, 1)) == timedelta(hours=1)
    assert lam.tz.utcoffset(datetime(2026, 7, 1)) == timedelta(hours=1)
    assert isinstance(lam.logger("cr3000_meteo").collect, LoggerNetCollect)
    soil = lam.logger("cr1000x_soil").collect
    assert isinstance(soil, ModbusCollect) and soil.transport == "rtu_over_tcp"
    ec = next(f for f in lam.files if f.type == "EC")
    assert ec.half_hourly and ec.interval_ms == 50 and ec.extension == "zip"
    bm = next(f for f in lam.files if f.type == "BM")
    assert not bm.half_hourly and bm.interval_ms == 60_000
    assert inv.missing_value(bm) == -9999
    (net,) = inv.sensor_networks
    assert {d.type for d in net.devices} == {"josene", "ase"}
    assert {h.kind for h in net.harvest} == {"whale", "influxdb"}
    with pytest.raises(KeyError, match="XX-Nop"):
        inv.station("XX-Nop")


def test_minimal_inventory_and_defaults():
    inv = parse_inventory(MINIMAL)
    (st,) = inv.stations
    assert st.id == "FA-Lso" and inv.sensor_networks == []
    assert st.files[0].extension == "csv" and st.files[0].missing_value is None


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30min", 1_800_000),
        ("30s", 30_000),
        ("100ms", 100),
        ("20Hz", 50),
        ("10 hz", 100),
        ("1h", 3_600_000),
        ("0.5s", 500),
    ],
)
def test_interval_parsing(text, ms):
    assert parse_interval_ms(text) == ms


@pytest.mark.parametrize("text", ["3Hz", "0s", "fast", "30", "-1min", "0.0001s"])
def test_interval_parsing_refuses(text):
    with pytest.raises(ValueError, match="interval"):
        parse_interval_ms(text)


def test_bad_station_id_names_file_line_and_path():
    (line,) = problems(MINIMAL.replace("FA-Lso", "France-Lamasquere"))
    assert line.startswith("inv.yaml:3: stations[0].id: String should match pattern")


def test_every_problem_is_listed_with_its_line():
    text = MINIMAL.replace("utc_offset_hours: 1", "utc_offset_hours: 1.1").replace(
        "file_number: 1", "file_number: 100"
    )
    lines = problems(text)
    assert len(lines) == 2
    assert lines[0].startswith("inv.yaml:4: stations[0].utc_offset_hours:")
    assert "quarter hours" in lines[0]
    assert lines[1].startswith("inv.yaml:11: stations[0].files[0].file_number:")


def test_union_member_errors_point_at_the_field_not_the_tag():
    text = MINIMAL.replace(
        "{method: loggernet, folder: lgn, tables: [Meteo]}",
        "{method: modbus, connection_id: m, unit_id: 400, registers: [{name: T, address: 0}]}",
    )
    (line,) = problems(text)
    assert line.startswith("inv.yaml:9: stations[0].loggers[0].collect.unit_id:")


def test_unknown_method_and_unknown_key():
    lines = problems(MINIMAL.replace("method: loggernet", "method: carrier_pigeon"))
    assert "stations[0].loggers[0].collect" in lines[0] and "carrier_pigeon" in lines[0]
    (line,) = problems(MINIMAL.replace("utc_offset_hours: 1", "utc_offset_hours: 1\n    tz: CET"))
    assert line.startswith("inv.yaml:5: stations[0].tz: Extra inputs are not permitted")


def test_missing_key_is_named_on_its_parent_line():
    (line,) = problems(MINIMAL.replace("    upload: {connection_id: icos_test}\n", ""))
    assert line.startswith("inv.yaml:3: stations[0].upload: Field required")


def test_secrets_are_refused_wherever_they_are():
    text = MINIMAL.replace("upload: {connection_id: icos_test}", "upload: {password: hunter2}")
    (line,) = problems(text)
    assert line.startswith("inv.yaml:5: stations[0].upload.password:")
    assert "Airflow Connections" in line
    assert "hunter2" not in line


def test_cross_references_and_duplicates():
    dup_station = MINIMAL + MINIMAL.split("stations:\n", 1)[1]
    assert any("duplicate station id 'FA-Lso'" in p for p in problems(dup_station))
    bad_ref = MINIMAL.replace("logger: cr1000,", "logger: cr9999,")
    (line,) = problems(bad_ref)
    assert line.startswith("inv.yaml:11: stations[0].files[0].logger: no logger 'cr9999'")
    twice = MINIMAL.replace(
        "      - {type: BM, logger: cr1000, logger_number: 1, file_number: 1, interval: 30min}\n",
        "      - {type: BM, logger: cr1000, logger_number: 1, file_number: 1}\n" * 2,
    )
    assert sum("BM L01_F01 twice" in p for p in problems(twice)) == 2


def test_not_yaml_and_not_a_mapping():
    (line,) = problems("stations: [\n  {id: x\n")
    assert line.startswith("inv.yaml:3: (top): not valid YAML: while parsing a flow mapping")
    (line,) = problems("- just\n- a list\n")
    assert "expected a mapping" in line


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_inventory(tmp_path / "missing.yaml")


def test_config_error_is_permanent():
    with pytest.raises(PermanentError):
        parse_inventory("version: 2\n")
