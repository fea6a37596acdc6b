"""The native module's stub stays honest; the package ships its typing marker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import vitfree


def test_stub_matches_native_module():
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "vitfree._core"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_py_typed_and_stub_are_shipped():
    pkg = Path(vitfree.__file__).parent
    assert (pkg / "py.typed").exists()
    assert (pkg / "_core.pyi").exists()


def test_thread_count_roundtrip():
    vitfree.set_num_threads(3)
    try:
        assert vitfree.get_num_threads() == 3
    finally:
        vitfree.set_num_threads(0)
