"""Benchmark of the refine issue: raw Josene samples per second from hour records to rows.

10,000 hour records of 200 Josene samples each (2,000,000 samples) are built from the 198
real samples of device 23 in tests/fixtures, varied deterministically per record and sample
(values differ, the real missing fields stay missing). They are generated batch by batch
(500 records a batch) to bound memory; generating and JSON-encoding are not timed. Every
batch goes through each path ``--repeat`` times, measured in the same run:

(a) stored columns -> rows: ``refiner.refine`` on records as the refine DAG reads them from
    PostgreSQL: each hour's sample columns as the harvester stored them
    (``stored_columns``), no JSON; decoding the sets, the input ranges, bad-sample counts,
    converters, aggregation and range checks are all timed. Extracting the sets is harvest
    work, done once per hour content; it is timed too and printed, outside the target;
(b) decoded records -> rows: ``refiner.refine`` on records whose data is already parsed
    (the record checks, ``combine`` and the compute of (a));
(c) JSON text -> rows: ``refiner.refine`` on the same records as JSON bytes (orjson
    decoding included);
(d) the per-sample loop ``reference_loop.refine_loop`` on the decoded records: the
    baseline, run on the first ``--loop-records`` records only (it is two orders of
    magnitude slower), which the output says.

Prints samples/s per path and round, the ratios to (d), and whether each figure meets the
issue's target of 1,000,000 samples/s (the refine DAG's path is (a)); checks (untimed)
that all paths give the
same rows. It asserts no time.

    .venv/bin/python bench/refine.py                        # 10,000 records, 3 rounds
    .venv/bin/python bench/refine.py --records 1000 --repeat 1
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from stationflow.refine.records.reference_loop import refine_loop  # noqa: E402
from stationflow.refine.records.refiner import RefinedRow, refine  # noqa: E402
from stationflow.refine.records.samples import RawRecord  # noqa: E402
from stationflow.refine.records.stored_columns import extract  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "smartemission"
FIXTURE = FIXTURE / "whale-device23-20160108-h23-as-raw-record.json"
TARGET = 1_000_000  # samples/s
AUDIO = ["v_audio0", *(f"v_audioplus{i}" for i in range(1, 10))]
RESISTANCES = ("s_coresistance", "s_no2resistance", "s_o3resistance")
PATHS = {
    "a": "(a) stored columns -> rows",
    "b": "(b) decoded records -> rows",
    "c": "(c) JSON text -> rows",
    "d": "(d) per-sample loop",
}


# --- generation (not timed) ----------------------------------------------------------------


def base_samples() -> list[dict[str, Any]]:
    """The 198 real samples of device 23, 2016-01-08 hour 23."""
    return json.loads(FIXTURE.read_text())[0]["data"]["timeseries"]


def vary(s: dict[str, Any], k: int, j: int) -> None:
    """Shift sample j of record k by small deterministic amounts, within realistic ranges."""
    d = (k * 31 + j * 7) % 97 - 48  # -48..48
    s["s_temperatureambient"] += 20 * d  # +-1 K
    s["s_temperatureunit"] += 20 * d
    s["s_barometer"] += 3 * d  # +-1.5 hPa
    s["s_humidity"] += 60 * d  # +-3 %RH
    if "s_co2" in s:
        s["s_co2"] += 1000 * (d % 11)
    for name in RESISTANCES:
        if name in s:
            s[name] += 40 * d * (1 + k % 5)
    step = (k + j) % 4 * 65793  # +0..3 dB on each band of each octave
    for name in AUDIO:
        s[name] += step
    s["s_longitude"] += k % 1000  # another millionth of a degree per record
    s["s_latitude"] += k % 997
    s["s_lightsensortop"] += j


def make_batch(base: list[dict[str, Any]], start: int, n: int, per: int) -> list[RawRecord]:
    out = []
    for k in range(start, start + n):
        ts = []
        for j in range(per):
            s = dict(base[(j + k) % len(base)])
            vary(s, k, j)
            ts.append(s)
        device = 1000 + k // 24
        data = {"id": str(device), "date": "2016-01-08", "hour": k % 24 + 1, "timeseries": ts}
        out.append(RawRecord(device, 20160108, k % 24 + 1, data, gid=k))
    return out


# --- measurement ------------------------------------------------------------------------------


@dataclass
class Round:
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PATHS, 0.0))
    samples: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PATHS, 0))

    def rate(self, path: str) -> float:
        return self.samples[path] / self.seconds[path] if self.seconds[path] else 0.0


def with_columns(records: list[RawRecord]) -> list[RawRecord]:
    """The records as the refine DAG gets them: stored sample columns, no JSON."""
    return [replace(r, data=None, columns=extract(r)[1]) for r in records]


def timed(fn: Any, *args: Any) -> tuple[float, float, Any]:
    gc.collect()
    t = time.perf_counter()
    out = fn(*args)
    return t, time.perf_counter(), out


def differing(a: list[RefinedRow], b: list[RefinedRow]) -> int:
    """Rows of a not equal in b (the loop may round an exact .5 mean one unit apart)."""
    return sum(x != y for x, y in zip(a, b, strict=False)) + abs(len(a) - len(b))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=10_000, help="hour records in all")
    ap.add_argument("--samples", type=int, default=200, help="samples per record")
    ap.add_argument("--batch", type=int, default=500, help="records generated at a time")
    ap.add_argument("--loop-records", type=int, default=500, help="records run through (d)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds over every batch")
    args = ap.parse_args(argv)
    if min(args.records, args.samples, args.batch, args.loop_records, args.repeat) < 1:
        ap.error("--records, --samples, --batch, --loop-records and --repeat must be >= 1")
    loop_records = min(args.loop_records, args.records)
    base = base_samples()
    rounds = [Round() for _ in range(args.repeat)]
    gen_s = extract_s = 0.0
    json_bytes = rows = mismatches = loop_mismatches = 0
    for start in range(0, args.records, args.batch):
        n = min(args.batch, args.records - start)
        t = time.perf_counter()
        records = make_batch(base, start, n, args.samples)
        as_json = [replace(r, data=orjson.dumps(r.data)) for r in records]
        in_loop = records[: max(0, loop_records - start)]
        gen_s += time.perf_counter() - t
        json_bytes += sum(len(r.data) for r in as_json)
        count = n * args.samples
        t0, t1, stored = timed(with_columns, records)
        extract_s += t1 - t0
        for rnd in rounds:
            t0, t1, cols = timed(refine, stored)
            rnd.seconds["a"] += t1 - t0
            rnd.samples["a"] += count
            t0, t1, vec = timed(refine, records)
            rnd.seconds["b"] += t1 - t0
            rnd.samples["b"] += count
            t0, t1, from_json = timed(refine, as_json)
            rnd.seconds["c"] += t1 - t0
            rnd.samples["c"] += count
            if in_loop:
                t0, t1, loop = timed(refine_loop, in_loop)
                rnd.seconds["d"] += t1 - t0
                rnd.samples["d"] += len(in_loop) * args.samples
        # untimed checks, on the last round's results
        assert not vec.rejected and sum(vec.samples.values()) == count
        mismatches += differing(vec.rows, from_json.rows) + differing(vec.rows, cols.rows)
        if in_loop:
            loop_mismatches += differing(refine(in_loop).rows, loop)
        rows += len(vec.rows)
        del records, as_json, in_loop, vec, from_json, stored, cols

    total = args.records * args.samples
    print(
        f"{args.records:,} hour records x {args.samples} samples = {total:,} Josene samples"
        f" (from device 23's {len(base)} real samples), batches of {args.batch};"
        f" {json_bytes / 1e6:,.0f} MB of JSON; {rows:,} rows; generation {gen_s:.1f} s"
        " (not timed)"
    )
    print(
        f"(d) runs on the first {loop_records:,} records only"
        f" ({loop_records * args.samples:,} samples)"
        if loop_records < args.records
        else "(d) runs on every record"
    )
    for i, rnd in enumerate(rounds, 1):
        figures = " | ".join(f"{k} {rnd.rate(k):,.0f}/s" for k in PATHS)
        ratios = ", ".join(f"({k})/(d) {rnd.rate(k) / rnd.rate('d'):.1f}x" for k in "abc")
        print(f"round {i}: {figures} | {ratios}")
    print(f"median of {args.repeat} round(s), target {TARGET:,} samples/s:")
    median = {k: statistics.median(r.rate(k) for r in rounds) for k in PATHS}
    for k, label in PATHS.items():
        verdict = "meets the target" if median[k] >= TARGET else "below the target"
        print(f"  {label:30} {median[k]:>13,.0f} samples/s  {verdict}")
    ratios = {k: statistics.median(r.rate(k) / r.rate("d") for r in rounds) for k in "abc"}
    print("  ratios: " + ", ".join(f"({k})/(d) {v:.1f}x" for k, v in ratios.items()))
    print(
        f"harvest-time extraction of the sample columns (once per hour content, not part of"
        f" refining): {total / extract_s:,.0f} samples/s"
    )
    print(
        f"rows: JSON and stored-columns paths vs decoded path differ in {mismatches};"
        f" loop vs vectorized differ in {loop_mismatches} (one unit at exact .5 means)"
    )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
