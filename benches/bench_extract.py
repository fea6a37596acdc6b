"""IJB feature extraction on CPU: images per second at each exit (each image with its flip).

Everything :func:`vitfree.extract.extract_ijb` does is timed: JPEG decoding and 5-point
alignment in DataLoader workers, image + flip in one pass up to the exit, memory-mapped
writes and the resumable manifest, on a synthetic IJB-C folder in the real format.

Default run (``--benchmark-disable`` in pytest's options): a smoke test, vit_t cut to 4 blocks
with random weights, about 20 images.  Real numbers (vit_s, 12 blocks, a few hundred images,
exits 4..12; a few minutes on 2 cores)::

    VITFREE_BENCH_FULL=1 pytest benches/bench_extract.py --benchmark-enable

Before anything is timed, the extracted features of the first images are checked against a
direct per-image computation (OpenCV read, ``align_face``, ``preprocess``, image and flip
through the model separately).  Timings are reported (``extra_info`` and a table at the end),
never asserted.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from benchconfig import FULL, print_uncaptured
from vitfree.data import align_face, load_ijb_meta
from vitfree.extract import _default_workers, extract_ijb
from vitfree.features import exit_filename
from vitfree.models import VisionTransformer, create_model, exit_costs, preprocess

ARCH = "vit_s" if FULL else "vit_t"
DEPTH = 12 if FULL else 4
EXITS = [4, 6, 8, 10, 12] if FULL else [2, 4]
N_SUBJECTS = 40 if FULL else 4
BATCH = 32 if FULL else 8
ROUNDS = 2 if FULL else 1
CHECK_ROWS = 6

# images per second, keyed by benchmark label; filled as the benchmarks run
_RATES: dict[str, float] = {}
_counter = itertools.count()


@pytest.fixture(scope="module")
def model() -> VisionTransformer:
    torch.manual_seed(0)
    m = create_model(ARCH, depth=DEPTH).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, as in a trained model
        for bn in (m.feature[1], m.feature[3]):
            bn.running_mean.normal_(0, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def ijb(ijb_folder) -> Path:
    root, _ = ijb_folder(n_subjects=N_SUBJECTS, max_images_per_template=4, seed=0)
    return root


@pytest.fixture(scope="module")
def checked(model: VisionTransformer, ijb: Path, tmp_path_factory: pytest.TempPathFactory) -> int:
    """Extract every exit once and check the first rows against the per-image reference."""
    out = tmp_path_factory.mktemp("check")
    res = extract_ijb(model, ijb, out, exits=EXITS, batch_size=BATCH, progress=False)
    assert res.complete and res.n_images > CHECK_ROWS
    meta = load_ijb_meta(ijb, pairs=False)
    with torch.inference_mode():
        for i in range(CHECK_ROWS):
            rgb = align_face(cv2.imread(str(meta.image_dir / meta.names[i])), meta.landmarks[i])
            want = model.forward_exits(preprocess(rgb), EXITS)
            want_flip = model.forward_exits(preprocess(np.ascontiguousarray(rgb[:, ::-1])), EXITS)
            for k in EXITS:
                for flip, ref in ((False, want[k][0]), (True, want_flip[k][0])):
                    got = np.load(out / exit_filename(k, flip), mmap_mode="r")[i]
                    scale = float(ref.abs().max())
                    np.testing.assert_allclose(got, ref.numpy(), rtol=0, atol=1e-5 * scale)
    return res.n_images


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest, model: VisionTransformer) -> Iterator[None]:
    """Print the images/s table once all benchmarks of this module have run."""
    yield
    if not _RATES:
        return
    costs = {c.exit: c for c in exit_costs(model, EXITS)}
    full = _RATES.get(f"exit {DEPTH}")
    lines = [
        "",
        f"IJB extraction on CPU ({ARCH}, {DEPTH} blocks, batch {BATCH}, "
        f"{torch.get_num_threads()} torch threads): images/s, each with its flip",
    ]
    if not FULL:
        lines.append("(smoke size, one round: set VITFREE_BENCH_FULL=1 for real numbers)")
    lines.append(f"{'run':<22}{'images/s':>10}{'rel. FLOPs':>12}{'speed-up':>10}")
    for label, rate in _RATES.items():
        k = int(label.split()[1]) if label.startswith("exit ") else None
        rel = f"{costs[k].flop_ratio:.3f}" if k in costs else ""
        up = f"{rate / full:.2f}" if full and k is not None else ""
        lines.append(f"{label:<22}{rate:>10.1f}{rel:>12}{up:>10}")
    print_uncaptured(request, lines)


def _time_extraction(
    benchmark, model, ijb: Path, tmp: Path, n: int, label: str, exits: list[int], workers: int
) -> None:
    def setup():  # a fresh folder per round: nothing to resume
        return (tmp / f"run{next(_counter)}",), {}

    times: list[float] = []

    def run(out: Path) -> None:
        t0 = time.perf_counter()
        res = extract_ijb(
            model, ijb, out, exits=exits, batch_size=BATCH, num_workers=workers, progress=False
        )
        times.append(time.perf_counter() - t0)
        assert res.complete and res.extracted == n

    benchmark.pedantic(run, setup=setup, rounds=ROUNDS, iterations=1)
    # timed here too, so that the table exists also with --benchmark-disable (smoke runs)
    _RATES[label] = n / min(times)
    benchmark.extra_info.update({"images": n, "images_per_s": n / min(times), "exits": exits})


@pytest.mark.parametrize("k", EXITS)
def test_extract_one_exit(benchmark, model, ijb, checked, tmp_path, k: int) -> None:
    benchmark.group = "extract per exit"
    _time_extraction(
        benchmark, model, ijb, tmp_path, checked, f"exit {k}", [k], _default_workers(1)
    )


@pytest.mark.parametrize("workers", [0, _default_workers(1)])
def test_extract_all_exits_one_pass(benchmark, model, ijb, checked, tmp_path, workers) -> None:
    benchmark.group = "extract all exits"
    label = f"all exits, {workers} workers"
    _time_extraction(benchmark, model, ijb, tmp_path, checked, label, EXITS, workers)
