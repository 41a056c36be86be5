"""A LoggerNet drop folder that writes TOA5 tables the way a station's lab PC does, faults included.

Each table is appended to ``<station>_<table>.dat`` row by row as time passes, with the
failure modes collection must survive (REFERENCE section 2), each at a deterministic
moment so tests and the demo can rely on them:

- skipped scans: rows missing (RECORD keeps counting, the timestamps jump);
- fragments: the file is closed under a unique name and a new one started, as LoggerNet's
  "create unique file name" does;
- a program change: the file becomes ``.backup``, the new file has another column set and
  RECORD restarts at 0;
- a collection hole recovered later: a run of rows withheld, then appended out of order.

State lives in a hidden JSON file in the folder, so a restarted simulator continues.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

CRLF = "\r\n"


@dataclass(frozen=True)
class TableSpec:
    name: str
    interval_ms: int
    columns: tuple[tuple[str, str], ...] = (
        ("TA_1_1_1", "degC"),
        ("RH_1_1_1", "%"),
        ("PA_1_1_1", "kPa"),
        ("SW_IN_1_1_1", "W/m^2"),
        ("WS_1_1_1", "m/s"),
    )


@dataclass(frozen=True)
class Faults:
    """When the faults happen (in rows since the start); 0 disables one."""

    skip_every: int = 997  # a skipped scan every N rows (a prime: never on the same beat)
    fragment_every: int = 720  # start a new unique-named file every N rows
    program_change_at: int = 1500  # the program changes once, at this row
    hole_every: int = 400  # withhold a run of rows every N rows ...
    hole_rows: int = 5  # ... of this many rows ...
    hole_late_by: int = 30  # ... appended this many rows later, out of order
    nan_every: int = 53  # a "NAN" value every N rows


@dataclass
class _State:
    next_ms: int  # local standard time (ms since 1970) of the next row to write
    record: int = 0
    rows: int = 0  # rows generated (written or withheld) since the start
    program: int = 1
    withheld: list[str] = field(default_factory=list)
    release_at: int = 0  # rows count at which the withheld rows are appended
    fragments: int = 0


class LoggerNetSim:
    """Writes one logger's tables into ``folder``; call ``write_until`` as time passes."""

    def __init__(
        self,
        folder: Path,
        *,
        station: str,
        model: str = "CR3000",
        serial: str = "4242",
        tables: list[TableSpec],
        start: datetime,
        faults: Faults | None = None,
    ):
        self.folder = Path(folder)
        self.station, self.model, self.serial = station, model, serial
        self.tables = {t.name: t for t in tables}
        self.faults = faults or Faults()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._state_path = self.folder / f".{station}-loggernet-sim.json"
        self._states = self._load(start)

    # ------------------------------------------------------------------ state
    def _load(self, start: datetime) -> dict[str, _State]:
        saved = {}
        if self._state_path.exists():
            saved = json.loads(self._state_path.read_text())
        states = {}
        for name, spec in self.tables.items():
            if name in saved:
                states[name] = _State(**saved[name])
            else:
                first = _ms(start)
                states[name] = _State(next_ms=first - first % spec.interval_ms + spec.interval_ms)
        return states

    def _save(self) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in self._states.items()}))
        os.replace(tmp, self._state_path)

    # ------------------------------------------------------------------ files
    def current_file(self, table: str) -> Path:
        return self.folder / f"{self.station}_{table}.dat"

    def _columns(self, spec: TableSpec, program: int) -> tuple[tuple[str, str], ...]:
        return spec.columns + ((("TS_1_1_1", "degC"),) if program > 1 else ())

    def _header(self, spec: TableSpec, program: int) -> str:
        cols = self._columns(spec, program)
        lines = [
            [
                "TOA5",
                self.station,
                self.model,
                self.serial,
                "CR3000.Std.32",
                f"CPU:{spec.name}_v{program}.CR3",
                str(40000 + program),
                spec.name,
            ],
            ["TIMESTAMP", "RECORD", *(c for c, _ in cols)],
            ["TS", "RN", *(u for _, u in cols)],
            ["", "", *("Avg" for _ in cols)],
        ]
        return "".join(",".join(f'"{v}"' for v in line) + CRLF for line in lines)

    def _append(self, spec: TableSpec, program: int, text: str) -> None:
        path = self.current_file(spec.name)
        if not path.exists():
            text = self._header(spec, program) + text
        with path.open("a", encoding="ascii", newline="") as f:
            f.write(text)

    def _rotate(self, spec: TableSpec, suffix: str) -> Path | None:
        path = self.current_file(spec.name)
        if not path.exists():
            return None
        target = path.with_name(path.name + suffix)
        n = 1
        while target.exists():
            target = path.with_name(f"{path.name}.{n}{suffix}")
            n += 1
        os.replace(path, target)
        return target

    # ------------------------------------------------------------------ rows
    def _row(self, spec: TableSpec, st: _State, ms: int) -> str:
        cols = self._columns(spec, st.program)
        stamp = _toa5(ms)
        values = []
        for i, (name, _) in enumerate(cols):
            if self.faults.nan_every and (st.rows + i) % self.faults.nan_every == 0:
                values.append('"NAN"')
            else:
                values.append(_fmt(_value(name, ms, i)))
        return f'"{stamp}",{st.record},{",".join(values)}{CRLF}'

    def write_until(self, now_local: datetime) -> list[Path]:
        """Append every row due up to ``now_local`` (station local standard time).

        Returns the files written to (current names, after any rotation)."""
        touched: set[Path] = set()
        end = _ms(now_local)
        f = self.faults
        for name, spec in self.tables.items():
            st = self._states[name]
            buf: list[str] = []

            def flush(spec=spec, st=st, buf=buf) -> None:
                if buf:
                    self._append(spec, st.program, "".join(buf))
                    touched.add(self.current_file(spec.name))
                    buf.clear()

            while st.next_ms <= end:
                ms = st.next_ms
                st.next_ms += spec.interval_ms
                st.rows += 1
                if f.program_change_at and st.rows == f.program_change_at:
                    flush()
                    self._rotate(spec, ".backup")
                    st.program += 1
                    st.record = 0
                elif f.fragment_every and st.rows % f.fragment_every == 0:
                    flush()
                    st.fragments += 1
                    self._rotate(spec, f"_{_compact(ms)}.dat")
                if f.skip_every and st.rows % f.skip_every == 0:
                    st.record += 1  # a skipped scan: the record number moves on
                    continue
                row = self._row(spec, st, ms)
                st.record += 1
                if f.hole_every and st.rows % f.hole_every < f.hole_rows:
                    st.withheld.append(row)  # not collected now: recovered later
                    st.release_at = st.rows + f.hole_late_by
                    continue
                buf.append(row)
                if st.withheld and st.rows >= st.release_at:
                    buf.extend(st.withheld)  # the recovered hole, out of time order
                    st.withheld.clear()
            flush()
        self._save()
        return sorted(touched)


def _ms(when: datetime) -> int:
    return int((when.replace(tzinfo=None) - datetime(1970, 1, 1)) / timedelta(milliseconds=1))


def _toa5(ms: int) -> str:
    t = datetime(1970, 1, 1) + timedelta(milliseconds=ms)
    text = t.strftime("%Y-%m-%d %H:%M:%S")
    frac = ms % 1000
    return text + (f".{frac:03d}".rstrip("0") if frac else "")


def _compact(ms: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(milliseconds=ms)).strftime("%Y%m%d%H%M%S")


def _value(name: str, ms: int, i: int) -> float:
    """A plausible, deterministic reading: a daily cycle plus a little noise."""
    day = (ms % 86_400_000) / 86_400_000
    noise = int.from_bytes(hashlib.blake2b(f"{name}{ms}".encode(), digest_size=2).digest()) / 65535
    base, amp = {"TA": (12, 6), "RH": (70, 20), "PA": (100.5, 0.4), "SW": (200, 250)}.get(
        name[:2], (5 + i, 2)
    )
    value = base + amp * math.sin(2 * math.pi * (day - 0.375)) + (noise - 0.5) * amp * 0.05
    return round(max(value, 0.0) if name.startswith("SW") else value, 3)


def _fmt(v: float) -> str:
    return repr(v) if v != int(v) else str(int(v))
