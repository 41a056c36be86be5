"""Raw hour records -> one column per raw field over all their samples.

A sample value is valid when it is a number within the field's [min, max]; otherwise the
column holds NaN and a reason code says why (missing key, null, not a number, out of
range), so bad samples are counted and skipped, never fatal. A record that is not a raw
hour at all (no sample list, a sample that is not an object) is rejected whole, with a
message naming the record and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

from stationflow.refine.records.definitions import DeviceDefs, RawField

OK, MISSING, NULL, NOT_A_NUMBER, OUT_OF_RANGE = range(5)
REASONS = ("ok", "missing", "null", "not a number", "out of range")
ASE_BUCKET_S = 60  # AirSensEUR channels sampled within the same minute form one sample
_NUMBER_TYPES_OR_NONE = {int, float, type(None)}


class RecordError(ValueError):
    """This raw record cannot be refined at all; the message names it and the field."""


@dataclass(frozen=True)
class RawRecord:
    """One raw hour as stored by the harvesters (a ``smartem_raw.timeseries`` row)."""

    device_id: int
    day: int  # yyyymmdd
    hour: int  # 1..24: hour h covers (h-1):00 - (h-1):59 UTC
    data: Any  # the document: parsed, or its JSON text
    device_type: str = "jose"
    gid: int | None = None
    revision: int | None = None
    columns: bytes | None = None  # its samples as stored at harvest (stored_columns)

    @property
    def unique_id(self) -> str:
        return f"{self.device_id}-{self.day}-{self.hour}"

    @property
    def hour_end(self) -> datetime:
        """The end of the hour, the time a refined value is stamped with."""
        d = self.day
        return datetime(d // 10000, d // 100 % 100, d % 100, tzinfo=UTC) + timedelta(
            hours=self.hour
        )


@dataclass
class SampleColumns:
    """The samples of a batch of records: ``record[i]`` is sample i's record index."""

    n_records: int
    record: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    reasons: dict[str, np.ndarray] = field(default_factory=dict)  # only fields with problems

    def checked(self, defs: DeviceDefs) -> SampleColumns:
        """These typed columns with each field's input range applied."""
        out = SampleColumns(self.n_records, self.record)
        for name, col in self.values.items():
            col, codes = in_range(col, self.reasons.get(name), defs.raw[name])
            out.values[name] = col
            if codes is not None:
                out.reasons[name] = codes
        return out

    @staticmethod
    def concat(parts: Sequence[SampleColumns], fields: Sequence[str]) -> SampleColumns:
        """The parts' records one after the other (their fields: ``fields``)."""
        parts = [p for p in parts if p.n_records]
        if len(parts) == 1:
            return parts[0]
        offsets = np.cumsum([0, *(p.n_records for p in parts)])
        out = SampleColumns(
            int(offsets[-1]),
            np.concatenate([p.record + o for p, o in zip(parts, offsets, strict=False)]),
        )
        for name in fields:
            out.values[name] = np.concatenate([p.values[name] for p in parts])
            if any(name in p.reasons for p in parts):
                out.reasons[name] = np.concatenate(
                    [p.reasons.get(name, np.zeros(len(p.record), np.int8)) for p in parts]
                )
        return out

    def problem_counts(self) -> dict[tuple[int, str, str], int]:
        """(record index, field, reason) -> number of samples."""
        out: dict[tuple[int, str, str], int] = {}
        for name, codes in self.reasons.items():
            bad = codes != OK
            if not bad.any():
                continue
            key = self.record[bad].astype(np.int64) * len(REASONS) + codes[bad]
            counts = np.bincount(key)
            for k in np.flatnonzero(counts):
                out[(int(k) // len(REASONS), name, REASONS[k % len(REASONS)])] = int(counts[k])
        return out


def document(record: RawRecord) -> Mapping[str, Any]:
    """The record's document, parsed when it came as text."""
    data = record.data
    if isinstance(data, str | bytes | bytearray | memoryview):
        try:
            data = orjson.loads(data)
        except orjson.JSONDecodeError as e:
            raise RecordError(f"raw record {record.unique_id}: data is not JSON: {e}") from None
    if not isinstance(data, Mapping):
        raise RecordError(f"raw record {record.unique_id}: data must be an object")
    return data


def typed_column(
    values: list[Any], present: Sequence[bool] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """A column of sample values -> float64 (NaN where not a number; +inf beyond float
    range) and reason codes (None when every value is a number). ``present`` tells a
    missing key from a null. Ranges are checked later, by ``in_range``."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES_OR_NONE:  # None -> NaN, in C
        try:
            col = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float range: out of range, not fatal
            col = np.array(
                [np.nan if v is None else v if abs(v) < 1e308 else np.inf for v in values],
                dtype=np.float64,
            )
        codes = None
        if type(None) in types:
            codes = np.zeros(len(values), dtype=np.int8)
            # None only: a NaN float is a number out of range, whatever else the column holds
            none = np.fromiter((v is None for v in values), bool, len(values))
            if present is None:
                codes[none] = NULL
            else:
                codes[none] = np.where(np.asarray(present, dtype=bool)[none], NULL, MISSING)
        return col, codes
    col = np.full(len(values), np.nan)
    codes = np.zeros(len(values), dtype=np.int8)
    for i, v in enumerate(values):
        t = type(v)
        if t is int or t is float:
            col[i] = v if abs(v) < 1e308 else np.inf
        elif v is None:
            codes[i] = NULL if present is None or present[i] else MISSING
        else:  # strings, booleans, objects: never numbers, whatever they spell
            codes[i] = NOT_A_NUMBER
    return col, codes


def in_range(
    col: np.ndarray, codes: np.ndarray | None, raw: RawField
) -> tuple[np.ndarray, np.ndarray | None]:
    """Values outside the field's [min, max] (or not finite) become NaN, coded out of range
    unless they already have a reason."""
    bad = ~np.isfinite(col)
    if raw.min is not None:
        bad |= col < raw.min
    if raw.max is not None:
        bad |= col > raw.max
    if bad.any():
        col = np.where(bad, np.nan, col)
        codes = np.zeros(len(col), dtype=np.int8) if codes is None else codes.copy()
        codes[bad & (codes == OK)] = OUT_OF_RANGE
    return col, codes


def typed(parsed: Sequence[Sequence[Mapping[str, Any]]], fields: Sequence[str]) -> SampleColumns:
    """Typed columns (ranges not yet checked) of ``fields`` over the parsed records' samples
    (each sample a mapping of field -> value)."""
    samples = [s for rec in parsed for s in rec]
    out = SampleColumns(len(parsed), np.repeat(np.arange(len(parsed)), [len(r) for r in parsed]))
    for name in fields:
        values = [s.get(name) for s in samples]
        present = [name in s for s in samples] if None in values else None
        col, codes = typed_column(values, present)
        out.values[name] = col
        if codes is not None:
            out.reasons[name] = codes
    return out


class JoseneSamples:
    """Josene: each element of ``timeseries`` is one sample holding every field."""

    @staticmethod
    def parse(
        record: RawRecord, doc: Mapping[str, Any], defs: DeviceDefs, fields: Sequence[str]
    ) -> list[dict]:
        ts = doc.get("timeseries")
        if not isinstance(ts, list):
            raise RecordError(f"raw record {record.unique_id}: 'timeseries' must be a list")
        if set(map(type, ts)) - {dict}:
            i = next(i for i, s in enumerate(ts) if type(s) is not dict)
            raise RecordError(f"raw record {record.unique_id}: timeseries[{i}] must be an object")
        return ts

    @staticmethod
    def combine(
        parsed: Sequence[list[dict]], defs: DeviceDefs, fields: Sequence[str]
    ) -> SampleColumns:
        return typed(parsed, fields).checked(defs)


def _time_s(value: Any) -> float:
    """InfluxDB times: RFC 3339 text or epoch nanoseconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1e9
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    raise ValueError(f"time {value!r} is neither RFC 3339 text nor a number")


class AseSamples:
    """AirSensEUR: each InfluxDB point is one channel's sample; the channels read within
    the same minute form one sample (the last point of a channel in it counts)."""

    @staticmethod
    def parse(
        record: RawRecord, doc: Mapping[str, Any], defs: DeviceDefs, fields: Sequence[str]
    ) -> list[dict[str, Any]]:
        uid = record.unique_id
        columns, rows = doc.get("columns"), doc.get("values")
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise RecordError(f"raw record {uid}: 'columns' and 'values' must be lists")
        if "time" not in columns:
            raise RecordError(f"raw record {uid}: no 'time' column")
        t_at = columns.index("time")
        name_at = columns.index("name") if "name" in columns else None
        wanted = [(name, defs.raw[name]) for name in fields]
        buckets: dict[int, dict[str, Any]] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != len(columns):
                raise RecordError(
                    f"raw record {uid}: values[{i}] must be a list of {len(columns)} values"
                )
            try:
                bucket = math.floor(_time_s(row[t_at]) / ASE_BUCKET_S)
            except ValueError as e:
                raise RecordError(f"raw record {uid}: values[{i}]: {e}") from None
            slot = buckets.setdefault(bucket, {})
            channel = row[name_at] if name_at is not None else None
            for name, raw in wanted:
                if raw.channel is not None and raw.channel != channel:
                    continue
                col = raw.column or name
                if col in columns:
                    slot[name] = row[columns.index(col)]
        return [buckets[k] for k in sorted(buckets)]

    @staticmethod
    def combine(
        parsed: Sequence[list[dict[str, Any]]], defs: DeviceDefs, fields: Sequence[str]
    ) -> SampleColumns:
        return typed(parsed, fields).checked(defs)


SAMPLES = {"jose": JoseneSamples, "ase": AseSamples}


def records_from_rows(rows: Any, source: str = "<input>") -> list[RawRecord]:
    """Raw-table rows as JSON gives them (a list of objects with device_id, day, hour, data
    and optionally device_type, gid, revision) -> records; errors name the row and field."""
    if not isinstance(rows, list):
        raise ValueError(f"{source}: expected a list of raw rows")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ValueError(f"{source}: row {i} is not an object")
        for key in ("device_id", "day", "hour"):
            if type(row.get(key)) is not int:
                raise ValueError(f"{source}: row {i}: {key!r} must be an integer")
        if "data" not in row:
            raise ValueError(f"{source}: row {i}: no 'data'")
        out.append(RawRecord(
            device_id=row["device_id"], day=row["day"], hour=row["hour"], data=row["data"],
            device_type=str(row.get("device_type") or "jose"), gid=row.get("gid"),
            revision=row.get("revision"),
        ))  # fmt: skip
    return out
