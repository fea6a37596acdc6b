"""Synthetic faces: aligned 112x112 faces per second on one core.

Renders loose crops (2.5D ray casting, shading, clutter, occluders, blur, noise) of the
``medium`` preset and aligns them with their exact landmarks, as ``vitfree train`` and
``vitfree finetune`` do when they generate faces on the fly.  The reference in the same run is
the same renderer casting a ray through every pixel (``faces._CULL = False``), which gives the
same bytes (tests/test_synthetic_faces.py); the shipped renderer casts only the rays that can
hit the head or the nose.

Default run: a smoke test (16 faces).  Real numbers (400 faces, crops of 160 and 128 px)::

    VITFREE_BENCH_FULL=1 pytest benches/bench_synthetic.py --benchmark-enable

The issue asks at least 200 aligned faces per second per core; rates are reported
(``extra_info``), never asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchconfig import FULL
from vitfree.synthetic import faces

N = 400 if FULL else 16


@pytest.fixture(autouse=True)
def _one_core():
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


@pytest.mark.parametrize("size", [160, 128])
@pytest.mark.parametrize("cull", [True, False], ids=["vitfree", "every-pixel"])
def test_aligned_faces_per_second(benchmark, size: int, cull: bool, monkeypatch) -> None:
    monkeypatch.setattr(faces, "_CULL", cull)
    ids = np.arange(N) % 100
    out = benchmark(faces.aligned_faces, ids, seed=1, size=size)
    assert out.shape == (N, 112, 112, 3) and out.dtype == np.uint8
    if benchmark.stats is not None:
        benchmark.extra_info["faces_per_s"] = round(N / benchmark.stats["min"], 1)
