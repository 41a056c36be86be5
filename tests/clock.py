"""A settable clock for simulators and code under test that ask "what time is it"."""

from __future__ import annotations

from datetime import datetime


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t
