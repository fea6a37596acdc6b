"""Nearest-neighbour search of probe features in a gallery, by inner product (faiss).

Three kinds of index:

- ``"flat"``: exact search (``faiss.IndexFlatIP``); on a GPU when faiss was built with GPU
  support and sees one. This is what the IJB 1:N protocol uses by default.
- ``"ivf"``: IVF-Flat (``faiss.IndexIVFFlat``, inner-product k-means coarse quantiser) with
  ``nlist`` lists, ``nprobe`` of them visited per query. Approximate; for large galleries.
- ``"hnsw"``: HNSW graph (``faiss.IndexHNSWFlat``) with ``hnsw_m`` links per node and
  ``ef_search`` candidates per query. Approximate; CPU only.

:func:`recall_at_k` measures how much of the exact top-k an approximate index finds.
Features are expected L2-normalised (then inner product = cosine), but any float vectors work.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from vitfree._checks import as_features
from vitfree.errors import InputError

__all__ = [
    "GalleryIndex",
    "SearchConfig",
    "SearchKind",
    "build_index",
    "gpu_available",
    "recall_at_k",
    "search",
]

SearchKind = Literal["flat", "ivf", "hnsw"]

# faiss GPU flat search supports at most this many neighbours per query.
_GPU_MAX_K = 2048


def gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclass(frozen=True)
class SearchConfig:
    """How to search a gallery.

    Attributes:
        kind: "flat" (exact), "ivf" or "hnsw" (approximate).
        nlist: IVF lists; default ``round(4 * sqrt(G))`` clipped to [1, G].
        nprobe: IVF lists visited per query (clipped to ``nlist``).
        hnsw_m: HNSW links per node.
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (faiss uses at least k).
        use_gpu: None = GPU when available (flat, ivf); True = require it; False = CPU.
        seed: k-means seed of the IVF quantiser (results are reproducible for a given seed).
    """

    kind: SearchKind = "flat"
    nlist: int | None = None
    nprobe: int = 16
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    use_gpu: bool | None = None
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.kind not in ("flat", "ivf", "hnsw"):
            raise InputError(f"kind must be 'flat', 'ivf' or 'hnsw', got {self.kind!r}")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if int(getattr(self, name)) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.nlist is not None and self.nlist < 1:
            raise InputError(f"nlist must be >= 1, got {self.nlist}")


class GalleryIndex:
    """A faiss index over gallery features, searched by inner product.

    Args:
        gallery: (G, d) features (converted to float32, C order), G >= 1.
        config: a :class:`SearchConfig`; keyword arguments override its fields.
    """

    def __init__(
        self, gallery: npt.ArrayLike, config: SearchConfig | None = None, **overrides: Any
    ) -> None:
        cfg = replace(config or SearchConfig(), **overrides)
        g = as_features(gallery, "gallery", dtype=np.float32, finite=True)
        if g.shape[0] == 0:
            raise InputError("gallery is empty")
        if g.shape[1] == 0:
            raise InputError("gallery features have dimension 0")
        self.config = cfg
        self.ntotal = int(g.shape[0])
        self.dim = int(g.shape[1])
        self._gpu_res: Any = None
        want_gpu = cfg.use_gpu if cfg.use_gpu is not None else gpu_available()
        if want_gpu and not gpu_available():
            raise RuntimeError("use_gpu=True but faiss has no GPU support or sees no GPU")
        if cfg.kind == "hnsw":
            want_gpu = False  # faiss has no GPU HNSW
        index: Any
        if cfg.kind == "flat":
            index = faiss.IndexFlatIP(self.dim)
        elif cfg.kind == "ivf":
            nlist = cfg.nlist or round(4 * np.sqrt(self.ntotal))
            nlist = max(1, min(nlist, self.ntotal))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = cfg.seed
            index.cp.min_points_per_centroid = 1  # small galleries are fine; no warning spam
            index.train(g)
            index.nprobe = min(cfg.nprobe, nlist)
            self._quantizer = quantizer  # the IVF index does not own it
            self.nlist = nlist
        else:
            index = faiss.IndexHNSWFlat(self.dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = cfg.ef_construction
            index.hnsw.efSearch = cfg.ef_search
        index.add(g)
        self._cpu_index = index
        self._index = index
        if want_gpu:
            self._gpu_res = faiss.StandardGpuResources()
            self._index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
        self.on_gpu = bool(want_gpu)

    def search(
        self, queries: npt.ArrayLike, k: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """The k best gallery entries of each query.

        Args:
            queries: (n, d) features.
            k: neighbours wanted, >= 1; more than the gallery size gives the whole gallery.

        Returns:
            scores: (n, min(k, G)) float32 inner products, best first; ids: (n, min(k, G))
            int64 gallery rows. Approximate kinds may find fewer than k entries: missing ones
            have id -1 and score -inf.
        """
        q = as_features(queries, "queries", dtype=np.float32, finite=True, dim=self.dim, allow_empty=True)
        if int(k) < 1:
            raise InputError(f"k must be >= 1, got {k}")
        k = min(int(k), self.ntotal)
        if q.shape[0] == 0:
            return np.empty((0, k), np.float32), np.empty((0, k), np.int64)
        index = self._index if (not self.on_gpu or k <= _GPU_MAX_K) else self._cpu_index
        if self.config.kind == "hnsw":
            self._cpu_index.hnsw.efSearch = max(self.config.ef_search, k)
        scores, ids = index.search(q, k)
        scores = np.asarray(scores, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64)
        missing = ids < 0
        if missing.any():
            scores[missing] = -np.inf
        return scores, ids


def build_index(gallery: npt.ArrayLike, kind: SearchKind = "flat", **params: Any) -> GalleryIndex:
    """Build a :class:`GalleryIndex` of ``kind`` over ``gallery`` (G, d).

    ``params`` are :class:`SearchConfig` fields (nlist, nprobe, hnsw_m, ef_search, ...).
    """
    return GalleryIndex(gallery, SearchConfig(kind=kind, **params))


def search(
    queries: npt.ArrayLike,
    gallery: npt.ArrayLike,
    k: int,
    kind: SearchKind = "flat",
    **params: Any,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """One-shot search: the k best of ``gallery`` (G, d) for each of ``queries`` (n, d).

    Returns ``(scores (n, min(k,G)) float32, ids (n, min(k,G)) int64)``, best first.
    """
    return build_index(gallery, kind, **params).search(queries, k)


def recall_at_k(
    queries: npt.ArrayLike,
    gallery: npt.ArrayLike,
    k: int = 10,
    kind: SearchKind = "hnsw",
    **params: Any,
) -> float:
    """Recall of an approximate index against exact search: mean over queries of
    ``|approx top-k ∩ exact top-k| / k`` (k clipped to the gallery size).

    With tied scores at the k-th place, the exact top-k is one of several valid sets, so a
    correct index can score slightly below 1 on data with ties.
    """
    exact = build_index(gallery, "flat", use_gpu=params.get("use_gpu")).search(queries, k)[1]
    approx = build_index(gallery, kind, **params).search(queries, k)[1]
    if exact.shape[0] == 0:
        raise InputError("no queries")
    kk = exact.shape[1]
    hits = 0
    for e, a in zip(exact, approx):
        hits += np.intersect1d(e, a[a >= 0], assume_unique=True).size
    return hits / (exact.shape[0] * kk)
