"""faiss search wrappers against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest
from vitfree.search import (
    GalleryIndex,
    SearchConfig,
    build_index,
    gpu_available,
    recall_at_k,
    search,
)


def normed(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(rng: np.random.Generator, centers: np.ndarray, per: int, spread: float) -> np.ndarray:
    pts = np.repeat(centers, per, axis=0) + spread * rng.normal(
        size=(len(centers) * per, centers.shape[1])
    )
    return normed(pts)


def test_flat_matches_numpy_argsort() -> None:
    rng = np.random.default_rng(0)
    g = normed(rng.normal(size=(300, 32)))
    q = normed(rng.normal(size=(50, 32)))
    scores, ids = search(q, g, 7)
    s_ref = q.astype(np.float64) @ g.T.astype(np.float64)
    ref = np.argsort(-s_ref, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(s_ref, ref, 1), atol=1e-5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert recall_at_k(q, g, 7, kind="flat") == 1.0


def test_k_larger_than_gallery_and_empty_queries() -> None:
    rng = np.random.default_rng(1)
    g = normed(rng.normal(size=(5, 8)))
    _scores, ids = build_index(g).search(g, 50)
    assert ids.shape == (5, 5)
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.tile(np.arange(5), (5, 1)))
    np.testing.assert_array_equal(ids[:, 0], np.arange(5))  # each point is its own best match
    s, i = build_index(g).search(np.zeros((0, 8), np.float32), 3)
    assert s.shape == (0, 3) and i.shape == (0, 3)


@pytest.mark.parametrize(
    "kind,params",
    [("ivf", {"nlist": 20, "nprobe": 4}), ("hnsw", {"hnsw_m": 16, "ef_search": 64})],
)
def test_approximate_recall_on_clustered_data(kind: str, params: dict) -> None:
    rng = np.random.default_rng(2)
    centers = normed(rng.normal(size=(20, 32)))
    g = clustered(rng, centers, 100, 0.15)  # queries come from the gallery's clusters
    q = clustered(rng, centers, 5, 0.15)
    r = recall_at_k(q, g, 10, kind=kind, **params)  # type: ignore[arg-type]
    assert 0.9 <= r <= 1.0
    # Visiting every list makes IVF exact.
    if kind == "ivf":
        assert recall_at_k(q, g, 10, kind="ivf", nlist=20, nprobe=20) == 1.0


def test_ivf_defaults_and_small_gallery() -> None:
    rng = np.random.default_rng(4)
    g = normed(rng.normal(size=(10, 8)))
    idx = GalleryIndex(g, SearchConfig(kind="ivf", nlist=100, nprobe=100))
    assert idx.nlist == 10  # clipped to the gallery size
    _, ids = idx.search(g, 1)
    np.testing.assert_array_equal(ids[:, 0], np.arange(10))
    idx = build_index(normed(rng.normal(size=(400, 8))), "ivf")
    assert idx.nlist == 80


def test_input_validation() -> None:
    g = np.eye(4, dtype=np.float32)
    with pytest.raises(ValueError, match="gallery is empty"):
        build_index(np.zeros((0, 4), np.float32))
    with pytest.raises(ValueError, match="must be 2-D"):
        build_index(np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        build_index(np.full((2, 4), np.nan, np.float32))
    with pytest.raises(TypeError, match="real numeric"):
        build_index(np.zeros((2, 4), np.complex64))
    idx = build_index(g)
    with pytest.raises(ValueError, match="queries has dimension 3, expected 4"):
        idx.search(np.zeros((1, 3), np.float32), 1)
    with pytest.raises(ValueError, match="k must be >= 1"):
        idx.search(g, 0)
    with pytest.raises(ValueError, match="kind must be"):
        SearchConfig(kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nprobe must be >= 1"):
        SearchConfig(nprobe=0)
    if not gpu_available():
        with pytest.raises(RuntimeError, match="no GPU"):
            build_index(g, use_gpu=True)


def test_float64_input_is_converted() -> None:
    rng = np.random.default_rng(5)
    g = rng.normal(size=(20, 6))
    _s, i = search(g[:3], g, 1)
    np.testing.assert_array_equal(i[:, 0], np.argmax(g[:3] @ g.T, axis=1))
