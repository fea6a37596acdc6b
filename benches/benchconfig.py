"""Benchmark settings: smoke sizes by default, realistic sizes with VITFREE_BENCH_FULL=1.

Run for real:  VITFREE_BENCH_FULL=1 .venv/bin/python -m pytest benches --benchmark-enable
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

FULL = os.environ.get("VITFREE_BENCH_FULL", "") not in ("", "0")

# the benches reuse the independent reference implementations of the tests
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
