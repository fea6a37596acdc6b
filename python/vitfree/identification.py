"""Open-set 1:N identification (IJB-B / IJB-C protocol, docs/protocols.md §4).

For one gallery, every probe is searched:

- A **mated** probe (its subject has a template in the gallery) has a *mate score*: the best
  score among its subject's gallery templates. Its *rank* is 1 + the number of other gallery
  subjects whose best template scores at least the mate score. So rank 1 means the mate
  strictly outranks every non-mate; a tie counts against the probe (the pessimistic reading,
  which no tie-breaking order can flatter). With one template per subject (as in IJB), this is
  the position of the mate in the score-sorted gallery; with several, ranks count distinct
  subjects.
- A **non-mated** probe contributes its top score (best score over the whole gallery).

The threshold at FPIR ``f`` is element ``max(int(n * f) - 1, 0)`` of the ``n`` non-mated top
scores sorted in descending order; ``TPIR(f)`` is the fraction of mated probes whose mate is at
rank 1 and scores strictly above that threshold. So at most ``int(n*f) - 1`` non-mated probes
score above it: the realised FPIR never exceeds ``f``. Closed-set rank-k accuracy is the
fraction of mated probes with rank <= k.

For IJB-B/C (:func:`ijb_identification`) this is done for each of the two disjoint galleries
(G1, G2 / S1, S2) with all probes; the reported TPIR is the mean over the two galleries, and
the rank-k accuracy is (hits in G1 + hits in G2) / number of probes, each probe counted
against the gallery that holds its subject.

Search is faiss ``IndexFlatIP`` by default (exact; GPU when available); ``search=`` selects an
approximate index (:mod:`vitfree.search`) for very large galleries.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vitfree._checks import as_features, ids_to_int64
from vitfree.errors import InputError, InputTypeError
from vitfree.search import GalleryIndex, SearchConfig, SearchKind

__all__ = [
    "CURVE_FPIRS",
    "DEFAULT_FPIRS",
    "DEFAULT_RANKS",
    "RANK_BEYOND",
    "IJBIdentificationResult",
    "IdentificationResult",
    "identification",
    "ijb_identification",
    "tpir_at_fpir",
]

DEFAULT_FPIRS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1)
DEFAULT_RANKS: tuple[int, ...] = (1, 5, 10)

#: ``mate_rank`` of a mated probe whose mate is beyond ``max(ranks)`` (not resolved further).
RANK_BEYOND: int = int(np.iinfo(np.int64).max)

#: FPIR grid of the 101-point curve: 10^-4 .. 1, log-spaced.
CURVE_FPIRS: npt.NDArray[np.float64] = np.logspace(-4.0, 0.0, 101)
CURVE_FPIRS.setflags(write=False)


@dataclass(frozen=True, eq=False)
class IdentificationResult:
    """Open-set identification of P probes against one gallery.

    Attributes:
        fpirs: (F,) float64 target FPIRs.
        tpir: (F,) float64 TPIR at each FPIR (NaN without mated or without non-mated probes).
        thresholds: (F,) float64 score thresholds (NaN without non-mated probes).
        rank: {k: fraction of mated probes whose mate is within rank k} (NaN if none mated).
        rank_hits: {k: number of mated probes whose mate is within rank k}.
        n_mated, n_nonmated: probe counts.
        curve_fpir: (101,) float64, :data:`CURVE_FPIRS`.
        curve_tpir: (101,) float64 TPIR on that grid.
        is_mated: (P,) bool.
        mate_rank: (P,) int64; 0 for non-mated probes, :data:`RANK_BEYOND` when beyond
            ``max(ranks)``.
        mate_score: (P,) float32 mate score when the mate was found within the searched
            neighbours (always for rank <= max(ranks)), else NaN (and NaN for non-mated).
        top_score: (P,) float32 best gallery score of each probe.
    """

    fpirs: npt.NDArray[np.float64]
    tpir: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    rank: dict[int, float]
    rank_hits: dict[int, int]
    n_mated: int
    n_nonmated: int
    curve_fpir: npt.NDArray[np.float64]
    curve_tpir: npt.NDArray[np.float64]
    is_mated: npt.NDArray[np.bool_] = field(repr=False)
    mate_rank: npt.NDArray[np.int64] = field(repr=False)
    mate_score: npt.NDArray[np.float32] = field(repr=False)
    top_score: npt.NDArray[np.float32] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON form of one gallery's results (percent, 4 decimals)."""
        return {
            "tpir": [round(float(t) * 100, 4) for t in self.tpir],
            "rank": {str(k): round(float(v) * 100, 4) for k, v in self.rank.items()},
            "n_mated": self.n_mated,
            "n_nonmated": self.n_nonmated,
        }

    def tpir_at(self, fpir: float) -> float:
        """TPIR at any FPIR in (0, 1], by the same rule."""
        t, _ = tpir_at_fpir(
            self.mate_score,
            self.mate_rank,
            self.top_score[~self.is_mated],
            [fpir],
            self.is_mated,
        )
        return float(t[0])


@dataclass(frozen=True, eq=False)
class IJBIdentificationResult:
    """IJB-B/C 1:N: per-gallery results and the reported combination.

    Attributes:
        galleries: {name: IdentificationResult} for the two galleries (e.g. "G1", "G2").
        fpirs: (F,) float64.
        tpir: (F,) float64 mean of the two galleries' TPIR.
        rank: {k: (hits in G1 + hits in G2) / n_probes}.
        curve_fpir, curve_tpir: (101,) float64, mean of the two curves.
        n_probes: number of probe templates.
    """

    galleries: dict[str, IdentificationResult]
    fpirs: npt.NDArray[np.float64]
    tpir: npt.NDArray[np.float64]
    rank: dict[int, float]
    curve_fpir: npt.NDArray[np.float64]
    curve_tpir: npt.NDArray[np.float64]
    n_probes: int

    def as_dict(self) -> dict[str, Any]:
        """JSON form (percent, 4 decimals), as in ``results.json``."""
        return {
            "fpirs": [float(f) for f in self.fpirs],
            "tpir": [round(float(t) * 100, 4) for t in self.tpir],
            "rank": {str(k): round(float(v) * 100, 4) for k, v in self.rank.items()},
            "galleries": {name: g.as_dict() for name, g in self.galleries.items()},
            "n_probes": self.n_probes,
        }


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


_SUBJECT_KINDS = {"i": "integers", "U": "strings", "S": "bytes"}


def _subjects(name: str, x: npt.ArrayLike, n: int | None = None, n_name: str = "") -> np.ndarray:
    """Subject ids in one canonical form: int64 for numbers, str or bytes arrays as given.

    Integer, unsigned, boolean and float ids become int64; floats must be finite and whole
    numbers inside the int64 range and uint64 ids must fit in int64 (each refused naming the
    argument), so that no two distinct ids can merge and ids of different numeric dtypes
    compare exactly.
    """
    a = np.asarray(x)
    if a.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {a.shape}")
    if n is not None and a.shape[0] != n:
        raise InputError(f"{name} has {a.shape[0]} entries but {n_name} has {n} rows")
    if a.dtype.kind in "US":
        return a
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise InputError(f"{name} contains NaN or infinite values")
    if a.dtype.kind not in "iubf":
        raise InputTypeError(f"{name} must hold integer (or string) subject ids, got {a.dtype}")
    return ids_to_int64(a, name, allow_bool=True)


def _same_kind(*named: tuple[str, np.ndarray]) -> None:
    """Refuse subject ids of different kinds (integers, strings, bytes) on the two sides.

    numpy compares a string with an integer as unequal, so mixing them would leave every probe
    non-mated and every result NaN, without an error. Empty arrays have no kind.
    """
    present = [(name, a) for name, a in named if a.size]
    for name, a in present[1:]:
        first, f = present[0]
        if a.dtype.kind != f.dtype.kind:
            raise InputError(
                f"{first} holds {_SUBJECT_KINDS[f.dtype.kind]} (e.g. {f[0].item()!r}) but "
                f"{name} holds {_SUBJECT_KINDS[a.dtype.kind]} (e.g. {a[0].item()!r}): subject "
                f"ids must be of one kind on both sides; convert one of them (e.g. with "
                f".astype(str) or .astype(int))"
            )


def _fpirs(fpirs: Any) -> npt.NDArray[np.float64]:
    f = np.atleast_1d(np.asarray(fpirs, dtype=np.float64))
    if f.ndim != 1:
        raise InputError(f"fpirs must be a sequence of numbers, got shape {f.shape}")
    bad = f[~((f > 0) & (f <= 1))]
    if bad.size:
        raise InputError(f"FPIRs must lie in (0, 1], got {bad.tolist()}")
    return f


def _ranks(ranks: Any) -> tuple[int, ...]:
    r = tuple(int(k) for k in ranks)
    if any(k < 1 for k in r):
        raise InputError(f"ranks must be >= 1, got {list(r)}")
    return r


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


def tpir_at_fpir(
    mate_score: npt.ArrayLike,
    mate_rank: npt.ArrayLike,
    nonmated_top: npt.ArrayLike,
    fpirs: Any,
    is_mated: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """TPIR and thresholds at each FPIR from per-probe outcomes (docs/protocols.md §4 rule).

    Args:
        mate_score: (P,) mate scores (only entries with mate_rank == 1 matter).
        mate_rank: (P,) ranks (1 = rank one).
        nonmated_top: (n,) top scores of the non-mated probes.
        fpirs: (F,) values in (0, 1].
        is_mated: (P,) bool mask of the mated probes (default: all P are mated).

    Returns:
        tpir (F,) float64 (NaN if no mated or no non-mated probe), thresholds (F,) float64
        (NaN if no non-mated probe).
    """
    f = _fpirs(fpirs)
    ms = np.asarray(mate_score, dtype=np.float64)
    mr = np.asarray(mate_rank)
    mated = np.ones(ms.shape, bool) if is_mated is None else np.asarray(is_mated, bool)
    neg = np.sort(np.asarray(nonmated_top, dtype=np.float64))[::-1]
    n = neg.size
    n_mated = int(np.count_nonzero(mated))
    tpir = np.full(f.shape, np.nan)
    thr = np.full(f.shape, np.nan)
    if n == 0:
        return tpir, thr
    idx = np.array([max(int(n * fi) - 1, 0) for fi in f], dtype=np.int64)
    thr = neg[idx]
    if n_mated == 0:
        return tpir, thr
    # Rank-1 mate scores, sorted: TPIR = count(score > thr) / n_mated.
    r1 = np.sort(ms[mated & (mr == 1)])
    above = r1.size - np.searchsorted(r1, thr, side="right")
    return above / n_mated, thr


def _search_outcomes(
    index: GalleryIndex,
    probes: npt.NDArray[np.float32],
    probe_code: npt.NDArray[np.int64],
    gallery_code: npt.NDArray[np.int64],
    max_rank: int,
    k0: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Mate rank, mate score and top score of each probe from a top-k search.

    ``probe_code`` is the gallery subject code of each probe, -1 for non-mated probes.
    The search is repeated with a doubled k for the probes whose outcome the k retrieved
    neighbours do not settle (ties at the k-th place, or several templates per subject),
    each time recomputing those probes from their new neighbours only, so that every
    comparison uses scores of one faiss call.
    """
    n_probe = probes.shape[0]
    n_gallery = index.ntotal
    mate_rank = np.zeros(n_probe, dtype=np.int64)
    mate_score = np.full(n_probe, np.nan, dtype=np.float32)
    top_score = np.full(n_probe, np.nan, dtype=np.float32)
    todo = np.arange(n_probe)
    k = min(max(k0, 1), n_gallery)
    while todo.size:
        scores, ids = index.search(probes[todo], k)
        valid = ids >= 0
        subj = np.where(valid, gallery_code[np.maximum(ids, 0)], -2)
        code = probe_code[todo]
        mated = code >= 0
        top_score[todo] = scores[:, 0]

        is_mate = valid & (subj == code[:, None]) & mated[:, None]
        found = is_mate.any(axis=1)
        ms = np.where(is_mate, scores, -np.inf).max(axis=1)
        # Non-mate subjects with a retrieved score >= the mate score (all retrieved non-mates
        # when the mate was not retrieved: their scores are >= the k-th >= the mate's).
        counted = valid & ~is_mate & (scores >= ms[:, None])
        c = _distinct_per_row(np.where(counted, subj, -1))
        exhausted = (k >= n_gallery) | ~valid[:, -1]
        settled = ~mated | exhausted | (c >= max_rank)
        settled |= found & (scores[:, -1] < ms)

        done = todo[settled]
        d_mated = mated[settled]
        d_found = found[settled]
        d_c = c[settled]
        rank = np.where(d_c >= max_rank, RANK_BEYOND, d_c + 1)
        rank = np.where(d_found, rank, RANK_BEYOND)  # exhausted without the mate (approximate)
        mate_rank[done] = np.where(d_mated, rank, 0)
        mate_score[done] = np.where(d_mated & d_found, ms[settled], np.nan)
        todo = todo[~settled]
        if k >= n_gallery:
            break  # pragma: no cover - every probe is settled once k covers the gallery
        k = min(2 * k, n_gallery)
    return mate_rank, mate_score, top_score


def _distinct_per_row(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Number of distinct values >= 0 in each row of ``codes`` (n, k)."""
    if codes.shape[1] == 0:
        return np.zeros(codes.shape[0], dtype=np.int64)
    s = np.sort(codes, axis=1)
    new = s >= 0
    new[:, 1:] &= s[:, 1:] != s[:, :-1]
    return new.sum(axis=1).astype(np.int64)


def _as_index(
    gallery: npt.NDArray[np.float32], search: SearchKind | SearchConfig | GalleryIndex | None
) -> GalleryIndex:
    if isinstance(search, GalleryIndex):
        if search.ntotal != gallery.shape[0] or search.dim != gallery.shape[1]:
            raise InputError(
                f"the given index holds {search.ntotal} x {search.dim} features, the gallery "
                f"is {gallery.shape[0]} x {gallery.shape[1]}"
            )
        return search
    if search is None:
        return GalleryIndex(gallery, SearchConfig())
    if isinstance(search, SearchConfig):
        return GalleryIndex(gallery, search)
    return GalleryIndex(gallery, SearchConfig(kind=search))


def identification(
    probe_feats: npt.ArrayLike,
    probe_subjects: npt.ArrayLike,
    gallery_feats: npt.ArrayLike,
    gallery_subjects: npt.ArrayLike,
    fpirs: Any = DEFAULT_FPIRS,
    ranks: Any = DEFAULT_RANKS,
    *,
    search: SearchKind | SearchConfig | GalleryIndex | None = None,
) -> IdentificationResult:
    """Open-set 1:N identification of probes against one gallery (docs/protocols.md §4).

    Args:
        probe_feats: (P, d) float template features, L2-normalised (float32 used).
        probe_subjects: (P,) subject id of each probe: integers or strings (see below).
        gallery_feats: (G, d) float template features, G >= 1.
        gallery_subjects: (G,) subject id of each gallery template; a subject may have several
            templates (its best-scoring one counts).

            Subject ids of both sides must be of one kind: all numbers (integer, unsigned,
            boolean or float dtypes, compared exactly as int64: ``7``, ``np.uint8(7)`` and
            ``7.0`` are one subject) or all strings (or all bytes). Strings are never compared
            with numbers (``"7"`` and ``7`` are different kinds, not one subject): mixing them
            raises ``InputError`` rather than silently finding no mated probe. Float ids must
            be finite whole numbers inside the int64 range, and uint64 ids must fit in int64,
            so that no two distinct ids can merge.
        fpirs: target FPIRs, each in (0, 1].
        ranks: closed-set ranks k >= 1 to report.
        search: "flat" (default, exact), "ivf", "hnsw", a :class:`~vitfree.search.SearchConfig`
            or a prebuilt :class:`~vitfree.search.GalleryIndex` over ``gallery_feats``.
            Approximate kinds give approximate results.

    Returns:
        :class:`IdentificationResult`.

    Raises:
        TypeError/ValueError: non-float features, wrong shapes, NaN/inf, mismatched lengths,
        dimension mismatch, empty gallery or probe set, FPIRs outside (0, 1], ranks < 1,
        subject ids of mixed kinds, float ids that are not whole numbers or beyond int64.
    """
    pf = as_features(probe_feats, "probe_feats", dtype=np.float32, finite=True, allow_empty=True)
    gf = as_features(gallery_feats, "gallery_feats", dtype=np.float32, finite=True, allow_empty=True)
    ps = _subjects("probe_subjects", probe_subjects, pf.shape[0], "probe_feats")
    gs = _subjects("gallery_subjects", gallery_subjects, gf.shape[0], "gallery_feats")
    _same_kind(("probe_subjects", ps), ("gallery_subjects", gs))
    if gf.shape[0] == 0:
        raise InputError("the gallery is empty")
    if pf.shape[0] == 0:
        raise InputError("there are no probes")
    if pf.shape[1] != gf.shape[1]:
        raise InputError(
            f"probe_feats have dimension {pf.shape[1]} but gallery_feats {gf.shape[1]}"
        )
    f = _fpirs(fpirs)
    rk = _ranks(ranks)
    max_rank = max(rk) if rk else 1

    subjects, gallery_code = np.unique(gs, return_inverse=True)
    gallery_code = gallery_code.astype(np.int64).reshape(-1)
    pos = np.searchsorted(subjects, ps)
    pos_c = np.minimum(pos, subjects.size - 1)
    is_mated = subjects[pos_c] == ps
    probe_code = np.where(is_mated, pos_c, -1).astype(np.int64)
    max_templates = int(np.bincount(gallery_code).max())

    index = _as_index(gf, search)
    mate_rank, mate_score, top_score = _search_outcomes(
        index, pf, probe_code, gallery_code, max_rank, k0=max_rank + max_templates
    )

    n_mated = int(np.count_nonzero(is_mated))
    nonmated_top = top_score[~is_mated]
    tpir, thr = tpir_at_fpir(mate_score, mate_rank, nonmated_top, f, is_mated)
    curve_tpir, _ = tpir_at_fpir(mate_score, mate_rank, nonmated_top, CURVE_FPIRS, is_mated)
    hits = {k: int(np.count_nonzero(is_mated & (mate_rank <= k))) for k in rk}
    rank = {k: (h / n_mated if n_mated else float("nan")) for k, h in hits.items()}
    return IdentificationResult(
        fpirs=f,
        tpir=tpir,
        thresholds=thr,
        rank=rank,
        rank_hits=hits,
        n_mated=n_mated,
        n_nonmated=int(nonmated_top.size),
        curve_fpir=np.array(CURVE_FPIRS),
        curve_tpir=curve_tpir,
        is_mated=is_mated,
        mate_rank=mate_rank,
        mate_score=mate_score,
        top_score=top_score,
    )


def _rows_of(
    name: str, ids: npt.ArrayLike, sorted_ids: np.ndarray, order: np.ndarray
) -> npt.NDArray[np.int64]:
    q = np.asarray(ids)
    if q.ndim != 1:
        raise InputError(f"{name} template ids must be 1-D, got shape {q.shape}")
    if q.size == 0 and q.dtype.kind not in "iuf":
        q = q.astype(np.int64)
    q = ids_to_int64(q, f"{name} template_ids")
    pos = np.minimum(np.searchsorted(sorted_ids, q), sorted_ids.size - 1)
    ok = sorted_ids[pos] == q
    if not ok.all():
        missing = np.unique(q[~ok])
        shown = ", ".join(str(t) for t in missing[:10].tolist())
        more = f" and {missing.size - 10} more" if missing.size > 10 else ""
        raise InputError(
            f"{missing.size} {name} template ids have no feature in template_ids: {shown}{more}"
        )
    return order[pos].astype(np.int64)


def _pair(name: str, x: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        ids, subjects = x
    except (TypeError, ValueError):
        raise InputTypeError(f"{name} must be a pair (template_ids, subject_ids)") from None
    ids = np.asarray(ids)
    subjects = np.asarray(subjects)
    if ids.ndim != 1 or subjects.shape != ids.shape:
        raise InputError(
            f"{name}: template_ids and subject_ids must be 1-D of equal length, got "
            f"{ids.shape} and {subjects.shape}"
        )
    return ids, _subjects(f"{name} subject_ids", subjects)


def ijb_identification(
    template_feats: npt.ArrayLike,
    template_ids: npt.ArrayLike,
    gallery1: Any,
    gallery2: Any,
    probes: Any,
    fpirs: Any = DEFAULT_FPIRS,
    ranks: Any = DEFAULT_RANKS,
    *,
    gallery_names: tuple[str, str] = ("G1", "G2"),
    search: SearchKind | SearchConfig | None = None,
) -> IJBIdentificationResult:
    """IJB-B/C 1:N identification from template features (docs/protocols.md §4).

    Args:
        template_feats: (T, d) float L2-normalised template features.
        template_ids: (T,) int template id of each row (unique); integer arrays, or floats
            holding whole numbers inside the int64 range (others are refused, not cast).
        gallery1, gallery2: (template_ids (G,), subject_ids (G,)) of the two galleries (e.g.
            from :func:`vitfree.data.ijb.load_ijb_1n`); their subjects must be disjoint.
        probes: (template_ids (P,), subject_ids (P,)) of the probe templates. The subject ids
            of the galleries and the probes must be of one kind, as in :func:`identification`.
        fpirs, ranks, search: as in :func:`identification`.
        gallery_names: names of the two galleries in the result.

    Returns:
        :class:`IJBIdentificationResult`: per-gallery results; TPIR and the curve averaged
        over the two galleries; rank-k = (hits in gallery 1 + hits in gallery 2) / P.

    Raises:
        ValueError: unknown template ids (named), duplicate template_ids, template or subject
        ids that int64 cannot hold exactly, subject ids of mixed kinds, galleries sharing a
        subject, and everything :func:`identification` rejects.
    """
    feats = as_features(template_feats, "template_feats", dtype=np.float32, finite=True)
    tids = np.asarray(template_ids)
    if tids.ndim != 1 or tids.shape[0] != feats.shape[0]:
        raise InputError(
            f"template_ids must be 1-D with one id per row of template_feats "
            f"({feats.shape[0]}), got shape {tids.shape}"
        )
    if tids.size == 0:
        raise InputError("template_feats is empty")
    tids = ids_to_int64(tids, "template_ids")
    order = np.argsort(tids, kind="stable")
    sorted_ids = tids[order]
    dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if dup.size:
        raise InputError(f"template_ids are not unique: {np.unique(dup)[:10].tolist()}")
    g = [_pair(gallery_names[0], gallery1), _pair(gallery_names[1], gallery2)]
    p_ids, p_subj = _pair("probe", probes)
    _same_kind(
        (f"{gallery_names[0]} subject_ids", g[0][1]),
        (f"{gallery_names[1]} subject_ids", g[1][1]),
        ("probe subject_ids", p_subj),
    )
    shared = np.intersect1d(g[0][1], g[1][1])
    if shared.size:
        raise InputError(
            f"galleries {gallery_names[0]} and {gallery_names[1]} share {shared.size} subjects "
            f"(e.g. {shared[:10].tolist()}); IJB galleries are disjoint"
        )
    probe_feats = feats[_rows_of("probe", p_ids, sorted_ids, order)]
    gallery_rows = [
        _rows_of(name, ids, sorted_ids, order) for name, (ids, _) in zip(gallery_names, g)
    ]
    results: dict[str, IdentificationResult] = {}
    for name, rows, (_, subj) in zip(gallery_names, gallery_rows, g):
        results[name] = identification(
            probe_feats, p_subj, feats[rows], subj, fpirs, ranks, search=search
        )
    r1, r2 = results[gallery_names[0]], results[gallery_names[1]]
    n_probes = int(p_ids.shape[0])
    rank = {k: (r1.rank_hits[k] + r2.rank_hits[k]) / n_probes for k in r1.rank_hits}
    return IJBIdentificationResult(
        galleries=results,
        fpirs=r1.fpirs,
        tpir=(r1.tpir + r2.tpir) / 2.0,
        rank=rank,
        curve_fpir=r1.curve_fpir,
        curve_tpir=(r1.curve_tpir + r2.curve_tpir) / 2.0,
        n_probes=n_probes,
    )
