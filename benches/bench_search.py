"""Large-gallery 1:N: approximate faiss indexes (IVF, HNSW) against exact search.

Full size (VITFREE_BENCH_FULL=1): 1,000,000 synthetic distractors + 3,531 mated gallery
templates (512-d), 2,000 probes (1,000 mated). IVF-Flat at the full gallery; HNSW (slow to
build on 2 cores) at 200,000 distractors. Default: 5,000 distractors. Embeddings are synthetic
with a low-rank structure (64 main directions plus noise), as real face embeddings are far from
isotropic. Each benchmark times the search only (the index is built once) and reports recall@10
against exact search and rank-1 of mated probes; figures are printed for the README.
"""

from __future__ import annotations

import numpy as np
import pytest
from benchconfig import FULL
from vitfree.search import GalleryIndex, SearchConfig

DIM = 512
N_DISTRACTORS = 1_000_000 if FULL else 5_000
N_HNSW = 200_000 if FULL else 5_000
N_MATES = 3_531 if FULL else 500
N_PROBES = 2_000 if FULL else 400
K = 10


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _faces(rng, n, basis):
    # face embeddings are far from isotropic: most variance lies in a few dozen directions
    # (uniform random 512-d points are a worst case no approximate index handles well)
    out = np.empty((n, DIM), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        z = rng.standard_normal((b - a, basis.shape[0]), dtype=np.float32)
        x = z @ basis + 0.25 * rng.standard_normal((b - a, DIM), dtype=np.float32) / np.sqrt(DIM)
        out[a:b] = _unit(x)
    return out


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    basis = _unit(rng.standard_normal((64, DIM), dtype=np.float32)) / np.float32(np.sqrt(64))
    mates = _faces(rng, N_MATES, basis)
    distractors = _faces(rng, N_DISTRACTORS, basis)
    gallery = np.concatenate([mates, distractors])
    # half the probes are noisy views of a mate (cosine ~0.5), half belong to nobody
    n_mated = N_PROBES // 2
    which = rng.choice(N_MATES, n_mated, replace=False)
    mated = _unit(mates[which] + 0.5 * (_faces(rng, n_mated, basis) - mates[which].mean(0)))
    others = _faces(rng, N_PROBES - n_mated, basis)
    probes = np.concatenate([mated, others])
    return gallery, probes, which


def _exact(gallery, probes):
    return GalleryIndex(gallery, SearchConfig(kind="flat", use_gpu=False)).search(probes, K)


@pytest.fixture(scope="module")
def exact(data):
    gallery, probes, _ = data
    return _exact(gallery, probes)[1]


@pytest.fixture(scope="module")
def exact_hnsw(data):
    gallery, probes, _ = data
    return _exact(gallery[: N_MATES + N_HNSW], probes)[1]


def _report(name, ids, exact_ids, which, seconds):
    recall = np.mean([np.intersect1d(a, e).size / K for a, e in zip(ids, exact_ids)])
    rank1 = np.mean(ids[: len(which), 0] == which)
    print(f"\n{name}: recall@{K} vs exact {recall:.4f}, rank-1 of mated probes {rank1:.4f}")
    return recall, rank1


def test_search_exact(benchmark, data, exact):
    benchmark.group = f"1:N search, {N_DISTRACTORS:,} distractors"
    gallery, probes, which = data
    index = GalleryIndex(gallery, SearchConfig(kind="flat", use_gpu=False))
    scores, ids = benchmark.pedantic(index.search, args=(probes, K), rounds=1)
    np.testing.assert_array_equal(ids, exact)
    _, rank1 = _report("exact", ids, exact, which, 0)
    assert rank1 > 0.95


def test_search_ivf(benchmark, data, exact):
    benchmark.group = f"1:N search, {N_DISTRACTORS:,} distractors"
    gallery, probes, which = data
    nlist = 1024 if FULL else 128
    index = GalleryIndex(gallery, SearchConfig(kind="ivf", nlist=nlist, nprobe=32, use_gpu=False))
    scores, ids = benchmark.pedantic(index.search, args=(probes, K), rounds=1)
    recall, rank1 = _report(f"IVF-Flat nlist={nlist} nprobe=32", ids, exact, which, 0)
    assert 0.0 <= recall <= 1.0 and rank1 > 0.5


def test_search_hnsw(benchmark, data, exact_hnsw):
    benchmark.group = f"1:N search, {N_HNSW:,} distractors (HNSW)"
    gallery, probes, which = data
    index = GalleryIndex(gallery[: N_MATES + N_HNSW], SearchConfig(kind="hnsw", hnsw_m=16, ef_construction=64, ef_search=128))
    scores, ids = benchmark.pedantic(index.search, args=(probes, K), rounds=1)
    recall, rank1 = _report("HNSW M=16 efSearch=128", ids, exact_hnsw, which, 0)
    assert 0.0 <= recall <= 1.0 and rank1 > 0.5


def test_search_exact_hnsw_size(benchmark, data, exact_hnsw):
    benchmark.group = f"1:N search, {N_HNSW:,} distractors (HNSW)"
    gallery, probes, _ = data
    index = GalleryIndex(gallery[: N_MATES + N_HNSW], SearchConfig(kind="flat", use_gpu=False))
    _, ids = benchmark.pedantic(index.search, args=(probes, K), rounds=1)
    np.testing.assert_array_equal(ids, exact_hnsw)
