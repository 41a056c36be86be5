"""Smoke test of bench/gapfill.py at a tiny size: it runs end to end and both outputs agree.

No timing is asserted: a benchmark reports figures, it does not fail on them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gapfill_bench_runs_and_outputs_agree(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "gapfill.py"),
            *("--rows", "20000", "--fragments", "4", "--gaps", "5", "--repeat", "2"),
            *("--workdir", str(tmp_path)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "outputs agree" in proc.stdout, out
    assert "speedup (best of 2) = naive / assemble" in proc.stdout, out
    assert not (tmp_path / "gapfill").exists()  # cleaned up without --keep
