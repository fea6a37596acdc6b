"""score_pairs does not depend on the order of the pairs (issue 11): the scores of shuffled,
sorted or reversed pairs are the same bits, equal to a numpy emulation of the kernel's
arithmetic, for any thread count and in a fresh process.

Below 1,024 pairs the pairs are scored in input order; from 1,024 on they are sorted into tiles
of the template matrix (blocks of about 2 MB of first rows x 256 kB of second rows), so the
tests use both sizes, and dimensions large enough for several tiles with few templates.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import vitfree
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import verification
from vitfree.ijb import score_pairs

LANES = 32


def lanes_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of float32 ``a`` and ``b`` by the Rust kernel's arithmetic, bit for
    bit: lane k sums the products of elements k, k + 32, ... (a float32 multiply, then a float32
    add, never fused); the tail elements are added to the first lanes, then the lanes are
    reduced pairwise (width 16, 8, 4, 2, 1)."""
    a = np.ascontiguousarray(a, np.float32)
    b = np.ascontiguousarray(b, np.float32)
    n = a.shape[1]
    m = n - n % LANES
    acc = np.zeros((a.shape[0], LANES), np.float32)
    for i in range(0, m, LANES):
        acc += a[:, i : i + LANES] * b[:, i : i + LANES]
    acc[:, : n - m] += a[:, m:] * b[:, m:]
    width = LANES // 2
    while width:
        acc[:, :width] += acc[:, width : 2 * width]
        width //= 2
    return acc[:, 0].copy()


def make(seed: int, n_templates: int, dim: int, n_pairs: int, sparse: bool = True):
    """Unit template rows, sorted unique ids (sparse or compact) and random pairs."""
    rng = np.random.default_rng(seed)
    ids = (
        np.sort(rng.choice(10 * n_templates + 10, n_templates, replace=False))
        if sparse
        else np.arange(n_templates)
    )
    ids = ids.astype(np.int64) - 7
    tf = rng.normal(size=(n_templates, dim)).astype(np.float32)
    tf /= np.linalg.norm(tf, axis=1, keepdims=True)
    r1 = rng.integers(0, n_templates, n_pairs)
    r2 = rng.integers(0, n_templates, n_pairs)
    return rng, tf, ids, r1, r2


def bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float32).view(np.uint32)


def assert_order_free(tf, ids, r1, r2, rng) -> np.ndarray:
    """Scores of the pairs as given, shuffled, sorted by (p1, p2) and with sides swapped are the
    same bits (each pair's score where the pair is), equal to :func:`lanes_dot`."""
    p1, p2 = ids[r1], ids[r2]
    scores = score_pairs(tf, ids, p1, p2)
    assert scores.dtype == np.float32 and scores.shape == p1.shape
    np.testing.assert_array_equal(bits(scores), bits(lanes_dot(tf[r1], tf[r2])))
    perm = rng.permutation(len(p1))
    np.testing.assert_array_equal(
        bits(score_pairs(tf, ids, p1[perm], p2[perm])), bits(scores[perm])
    )
    order = np.lexsort((p2, p1))
    np.testing.assert_array_equal(
        bits(score_pairs(tf, ids, p1[order], p2[order])), bits(scores[order])
    )
    np.testing.assert_array_equal(bits(score_pairs(tf, ids, p2, p1)), bits(scores))
    return scores


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_templates=st.integers(1, 120),
    dim=st.sampled_from([1, 5, 31, 32, 33, 100, 512]),
    n_pairs=st.one_of(st.integers(0, 50), st.integers(1000, 4000)),
    sparse=st.booleans(),
)
def test_order_does_not_change_scores(seed, n_templates, dim, n_pairs, sparse):
    rng, tf, ids, r1, r2 = make(seed, n_templates, dim, n_pairs, sparse)
    assert_order_free(tf, ids, r1, r2, rng)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_templates=st.integers(65, 300),
    n_pairs=st.integers(1024, 6000),
)
def test_order_does_not_change_scores_across_tiles(seed, n_templates, n_pairs):
    # 32 kB rows: blocks of 64 first rows and 8 second rows, 4 to 25 buckets of the global sort
    rng, tf, ids, r1, r2 = make(seed, n_templates, 8192, n_pairs)
    assert_order_free(tf, ids, r1, r2, rng)


def test_ijb_like_sizes_match_numpy_in_any_order():
    # 3,000 templates x 512-d (9 buckets, 24 second-row blocks), 200,000 pairs with repeats
    rng, tf, ids, r1, r2 = make(11, 3000, 512, 200_000)
    r1[:500] = r1[500]  # one template in a long run
    scores = assert_order_free(tf, ids, r1, r2, rng)
    ref = verification(tf.astype(np.float64), ids, ids[r1], ids[r2])
    np.testing.assert_allclose(scores, ref, rtol=0, atol=1e-6)


def test_same_bits_for_any_thread_count():
    rng, tf, ids, r1, r2 = make(5, 2000, 256, 120_000)
    perm = rng.permutation(len(r1))
    p1, p2 = ids[r1][perm], ids[r2][perm]
    before = vitfree.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 5):
            vitfree.set_num_threads(threads)
            results.append(bits(score_pairs(tf, ids, p1, p2)))
    finally:
        vitfree.set_num_threads(0)
    assert vitfree.get_num_threads() == before
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_unknown_id_named_in_any_order():
    rng, tf, ids, r1, r2 = make(3, 500, 64, 50_000)
    p1, p2 = ids[r1], ids[r2]
    p2[40_000] = ids.max() + 1
    p1[45_000] = ids.min() - 1
    with pytest.raises(
        ValueError, match=rf"unknown template id {ids.max() + 1} in p2 \(pair 40000\)"
    ):
        score_pairs(tf, ids, p1, p2)
    p1[10] = 10**15
    with pytest.raises(ValueError, match=rf"unknown template id {10**15} in p1 \(pair 10\)"):
        score_pairs(tf, ids, p1, p2)


FIRST_CALL = textwrap.dedent(
    """
    import sys
    import numpy as np
    from vitfree.ijb import score_pairs
    d = np.load(sys.argv[1])
    np.save(sys.argv[2], score_pairs(d["tf"], d["ids"], d["p1"], d["p2"]))
    """
)


def test_first_call_in_a_fresh_process(tmp_path):
    # the first call builds the thread pool and faults in its buffers: same bits
    rng, tf, ids, r1, r2 = make(8, 2500, 512, 150_000)
    perm = rng.permutation(len(r1))
    p1, p2 = ids[r1][perm], ids[r2][perm]
    np.savez(tmp_path / "in.npz", tf=tf, ids=ids, p1=p1, p2=p2)
    env = dict(os.environ, VITFREE_NUM_THREADS="2")
    out = subprocess.run(
        [sys.executable, "-c", FIRST_CALL, str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    first = np.load(tmp_path / "out.npy")
    np.testing.assert_array_equal(bits(first), bits(score_pairs(tf, ids, p1, p2)))
    np.testing.assert_array_equal(bits(first), bits(lanes_dot(tf[r1][perm], tf[r2][perm])))
