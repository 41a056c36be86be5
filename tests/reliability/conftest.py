"""The reliability suite: each test injects one fault, lets the chain recover (retry or
replay) and records what reached the peer in the session's fault matrix.

A row counts, against what the input held (``expected``), what the peer ended up with
(``delivered``, one entry per stored copy): lost = expected keys the peer lacks,
duplicated = copies beyond the first. ``resent`` counts requests sent again because the
answer to one the peer had stored was lost (a timeout, a dropped connection, a killed
process): no protocol without a way to ask "do you have it?" can avoid them; the row says
how many there were and that the peer still kept one copy. ``ledger_ok`` says whether the
ledger's account is true against the peer. The matrix is printed at the end of the run
(and written as JSON when ``STATIONFLOW_FAULT_MATRIX`` names a path).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import asdict, dataclass

import pytest


@dataclass(frozen=True)
class FaultOutcome:
    fault: str
    chain: str
    expected: int
    delivered: int
    lost: int
    duplicated: int
    recovered: bool
    ledger_ok: bool
    resent: int = 0
    note: str = ""

    @property
    def clean(self) -> bool:
        return self.recovered and self.ledger_ok and not self.lost and not self.duplicated


class FaultMatrix:
    def __init__(self) -> None:
        self.rows: list[FaultOutcome] = []

    def record(
        self,
        fault: str,
        *,
        chain: str,
        expected: Iterable[Hashable],
        delivered: Iterable[Hashable],
        recovered: bool,
        ledger_ok: bool,
        resent: int = 0,
        note: str = "",
    ) -> FaultOutcome:
        want = set(expected)
        copies = Counter(delivered)
        if not want:
            raise ValueError(f"{fault}: a fault test with nothing expected proves nothing")
        row = FaultOutcome(
            fault=fault,
            chain=chain,
            expected=len(want),
            delivered=len(copies),
            lost=len(want - set(copies)),
            duplicated=sum(n - 1 for n in copies.values()),
            recovered=recovered,
            ledger_ok=ledger_ok,
            resent=resent,
            note=note,
        )
        self.rows.append(row)
        return row

    def render(self) -> str:
        head = ("fault", "chain", "expected", "lost", "duplicated", "resent", "recovered", "ledger")
        body = [
            (
                r.fault,
                r.chain,
                str(r.expected),
                str(r.lost),
                str(r.duplicated),
                str(r.resent),
                "yes" if r.recovered else "NO",
                "true" if r.ledger_ok else "WRONG",
            )
            for r in self.rows
        ]
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]

        def line(cells) -> str:
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

        out = [line(head), line(["-" * w for w in widths]), *(line(b) for b in body)]
        lost = sum(r.lost for r in self.rows)
        dup = sum(r.duplicated for r in self.rows)
        resent = sum(r.resent for r in self.rows)
        out.append(
            f"{len(self.rows)} faults: {lost} lost, {dup} duplicated"
            f" ({resent} request(s) resent after a lost answer, stored once)"
        )
        return "\n".join(out)


_MATRIX = FaultMatrix()
_FIGURES: list[str] = []  # the load test's figures, printed with the matrix


@pytest.fixture(scope="session")
def fault_matrix() -> FaultMatrix:
    return _MATRIX


@pytest.fixture(scope="session")
def figures() -> list[str]:
    return _FIGURES


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _FIGURES:
        terminalreporter.write_sep("=", "load test (tests/reliability)")
        for line in _FIGURES:
            terminalreporter.write_line(line)
    if not _MATRIX.rows:
        return
    terminalreporter.write_sep("=", "fault matrix (tests/reliability)")
    terminalreporter.write_line(_MATRIX.render())
    target = os.environ.get("STATIONFLOW_FAULT_MATRIX")
    if target:
        with open(target, "w") as f:
            json.dump([asdict(r) for r in _MATRIX.rows], f, indent=2)
