"""Benchmark settings: smoke sizes by default, realistic sizes with VITFREE_BENCH_FULL=1.

Run for real:  VITFREE_BENCH_FULL=1 .venv/bin/python -m pytest benches --benchmark-enable

The benches reuse the helper modules of tests/ (reference.py, ijb_fixtures.py): ``pythonpath``
in pyproject.toml's ``[tool.pytest.ini_options]`` puts that folder on ``sys.path``.
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("VITFREE_BENCH_FULL", "") not in ("", "0")


def print_uncaptured(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """Print a report from a module fixture's teardown, past pytest's output capture
    (teardown output is captured otherwise)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:  # pragma: no cover - running with -p no:capture
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():
        print("\n".join(lines))
