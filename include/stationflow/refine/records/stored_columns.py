"""The samples of a raw hour as columns, extracted once when the hour is harvested.

Refining reads a handful of fields out of every sample; from JSON that means building a
Python dict of ~80 keys per sample (about 10 us each here), far more than the refining
itself. So the harvester stores, next to the verbatim document, each raw field of the
device type as a float64 column with reason codes for the samples that are not numbers
(``smartem_raw.sample_columns``, keyed by the document's content hash, so a column set
never outlives the bytes it came from). Input ranges are not applied here but when
refining, so changing a range in the definitions needs no re-extraction; adding a field
changes the ``fields_key`` and the refiner reads the JSON until the hour is re-harvested.

The body is a small fixed layout, not Arrow IPC: reading an IPC message costs ~100 us per
hour on this machine (1 s per 10,000 hours, half the refine budget), numpy ~1 us::

    b"SFC1" | u32 header length | header JSON {"fields": [...], "codes": [...]}
    | u32 samples n | float64 LE [fields x n] | int8 [codes x n]
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import orjson

from stationflow.refine.records.definitions import DeviceDefs, defs_for
from stationflow.refine.records.samples import (
    SAMPLES,
    RawRecord,
    SampleColumns,
    document,
    typed,
)

MAGIC = b"SFC1"
_U32 = struct.Struct("<I")


class ColumnsError(ValueError):
    """A stored column set cannot be read (truncated or not of this format)."""


def fields_key(defs: DeviceDefs) -> str:
    """Names the raw field list a column set holds: refining uses only sets with the
    current list of their device type."""
    text = f"{defs.device_type}:{','.join(sorted(defs.raw))}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def current_keys() -> list[str]:
    return [fields_key(defs_for(t)) for t in SAMPLES]


def extract(record: RawRecord) -> tuple[str, bytes]:
    """(fields key, body) of a raw hour's samples: every raw field of its device type.
    Raises RecordError (naming the hour and field) when it is not a raw hour."""
    defs = defs_for(record.device_type)
    fields = sorted(defs.raw)
    kind = SAMPLES[defs.device_type]
    cols = typed([kind.parse(record, document(record), defs, fields)], fields)
    return fields_key(defs), encode(fields, cols)


def encode(fields: Sequence[str], cols: SampleColumns) -> bytes:
    coded = [f for f in fields if f in cols.reasons and cols.reasons[f].any()]
    header = orjson.dumps({"fields": list(fields), "codes": coded})
    n = len(cols.record)
    values = np.vstack([cols.values[f] for f in fields]) if fields else np.zeros((0, n))
    parts = [MAGIC, _U32.pack(len(header)), header, _U32.pack(n)]
    parts.append(values.astype("<f8", copy=False).tobytes())
    parts += [cols.reasons[f].astype(np.int8, copy=False).tobytes() for f in coded]
    return b"".join(parts)


@lru_cache(maxsize=64)
def _rows(fields: tuple[str, ...]) -> dict[str, int]:
    """One dict per field list: sets with the same list are concatenated in one go."""
    return {f: i for i, f in enumerate(fields)}


@lru_cache(maxsize=1024)
def _header(raw: bytes) -> tuple[dict[str, int], dict[str, int]]:
    h = orjson.loads(raw)
    return _rows(tuple(h["fields"])), {f: i for i, f in enumerate(h["codes"])}


def _layout(body: bytes) -> tuple[dict[str, int], dict[str, int], int, int]:
    """(field rows, code rows, samples, offset of the values) of one body."""
    if body[:4] != MAGIC:
        raise ColumnsError("not a stationflow column set")
    (size,) = _U32.unpack_from(body, 4)
    fields, codes = _header(bytes(body[8 : 8 + size]))
    (n,) = _U32.unpack_from(body, 8 + size)
    start = 12 + size
    if len(body) != start + n * (8 * len(fields) + len(codes)):
        raise ColumnsError(f"column set of {len(body)} bytes, not of {n} samples")
    return fields, codes, n, start


def decode(
    records: Sequence[RawRecord], fields: Sequence[str]
) -> tuple[SampleColumns, list[tuple[RawRecord, str]]]:
    """Typed columns (ranges not yet checked) of ``fields`` over the records' stored column
    sets, and the records whose set cannot be read, with why."""
    blocks, counts, coded, bad = [], [], [], []
    layouts = set()
    for r in records:
        try:
            rows, code_rows, n, start = _layout(r.columns)
            missing = [f for f in fields if f not in rows]
            if missing:
                raise ColumnsError(f"no field {', '.join(missing)}")
            block = np.frombuffer(r.columns, "<f8", len(rows) * n, start).reshape(len(rows), n)
        except (ColumnsError, ValueError, struct.error) as e:
            bad.append((r, f"raw record {r.unique_id}: stored columns unreadable: {e}"))
            continue
        if code_rows:
            codes = np.frombuffer(r.columns, np.int8, offset=start + 8 * len(rows) * n)
            coded.append((len(blocks), code_rows, codes.reshape(len(code_rows), n)))
        layouts.add(id(rows))
        blocks.append((rows, block))
        counts.append(n)
    out = SampleColumns(len(blocks), np.repeat(np.arange(len(blocks)), counts))
    if not blocks:
        out.values = {f: np.zeros(0) for f in fields}
        return out, bad
    if len(layouts) == 1:  # the usual case: one copy of every set, then a view per field
        rows = blocks[0][0]
        values = np.concatenate([b for _, b in blocks], axis=1)
        out.values = {f: values[rows[f]] for f in fields}
    else:
        values = np.concatenate([b[[rows[f] for f in fields]] for rows, b in blocks], axis=1)
        out.values = dict(zip(fields, values, strict=True))
    if coded:
        offsets = np.concatenate(([0], np.cumsum(counts)))
        for f in fields:
            having = [(i, c[rows[f]]) for i, rows, c in coded if f in rows]
            if having:
                column = np.zeros(int(offsets[-1]), np.int8)
                for i, codes in having:
                    column[offsets[i] : offsets[i + 1]] = codes
                out.reasons[f] = column
    return out, bad
