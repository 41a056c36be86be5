"""Open any supported logger file by what its bytes say, not by its name."""

from __future__ import annotations

from pathlib import Path

from stationflow.formats.table import Table, UnreadableFragment


def read_any(path: Path, *, utc_offset_hours: float) -> Table:
    """TOA5, TOB1 or LI-COR .ghg; UnreadableFragment for anything else."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise UnreadableFragment(str(path), f"cannot read: {exc.strerror}") from exc
    if not head:
        raise UnreadableFragment(str(path), "empty file")
    if head.startswith(b'"TOA5"'):
        from stationflow.formats.toa5 import read_toa5

        return read_toa5(path)
    if head.startswith(b'"TOB1"'):
        from stationflow.formats.tob1 import read_tob1

        return read_tob1(path)
    if head.startswith(b"PK\x03\x04"):
        from stationflow.formats.ghg import read_ghg

        return read_ghg(path, utc_offset_hours=utc_offset_hours)
    raise UnreadableFragment(str(path), f"unknown format (starts with {head!r})", 1)
