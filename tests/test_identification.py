"""Open-set 1:N identification (docs/protocols.md §4) against a direct numpy implementation."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vitfree.identification import (
    CURVE_FPIRS,
    RANK_BEYOND,
    identification,
    ijb_identification,
)
from vitfree.search import SearchConfig, build_index

# --------------------------------------------------------------------------------------------
# Reference: docs/protocols.md §4 written out with a full score matrix
# --------------------------------------------------------------------------------------------


def reference(
    probe: np.ndarray,
    probe_subj: np.ndarray,
    gallery: np.ndarray,
    gallery_subj: np.ndarray,
    fpirs: Any,
    ranks: Any,
    exact64: bool = True,
) -> dict[str, Any]:
    if exact64:
        s = probe.astype(np.float64) @ gallery.astype(np.float64).T
    else:
        s = (probe.astype(np.float32) @ gallery.astype(np.float32).T).astype(np.float64)
    subjects = np.unique(gallery_subj)
    # Subject score = best template of the subject.
    ss = np.stack([s[:, gallery_subj == u].max(axis=1) for u in subjects], axis=1)
    n_probe = probe.shape[0]
    mated = np.isin(probe_subj, subjects)
    rank = np.zeros(n_probe, dtype=np.int64)
    mate = np.full(n_probe, np.nan)
    for i in range(n_probe):
        if mated[i]:
            j = int(np.flatnonzero(subjects == probe_subj[i])[0])
            mate[i] = ss[i, j]
            others = np.delete(ss[i], j)
            rank[i] = 1 + int(np.sum(others >= mate[i]))  # ties count against the probe
    neg = np.sort(s[~mated].max(axis=1))[::-1]
    n = neg.size
    n_mated = int(mated.sum())

    def tpir_thr(f: float) -> tuple[float, float]:
        if n == 0:
            return np.nan, np.nan
        thr = neg[max(int(n * f) - 1, 0)]
        if n_mated == 0:
            return np.nan, thr
        return float(np.sum(mated & (rank == 1) & (mate > thr)) / n_mated), float(thr)

    tt = [tpir_thr(f) for f in fpirs]
    curve = [tpir_thr(f)[0] for f in CURVE_FPIRS]
    return {
        "tpir": np.array([t for t, _ in tt]),
        "thr": np.array([h for _, h in tt]),
        "rank": {k: (np.sum(mated & (rank <= k)) / n_mated if n_mated else np.nan) for k in ranks},
        "hits": {k: int(np.sum(mated & (rank <= k))) for k in ranks},
        "n_mated": n_mated,
        "n_nonmated": n,
        "curve": np.array(curve),
        "mated": mated,
        "rank_exact": rank,
        "mate": mate,
        "top": s.max(axis=1),
    }


def check_against_reference(res: Any, ref: dict[str, Any], ranks: Any, exact: bool) -> None:
    assert res.n_mated == ref["n_mated"] and res.n_nonmated == ref["n_nonmated"]
    np.testing.assert_array_equal(res.is_mated, ref["mated"])
    np.testing.assert_array_equal(res.tpir, ref["tpir"])
    np.testing.assert_array_equal(res.curve_tpir, ref["curve"])
    if exact:
        np.testing.assert_array_equal(res.thresholds, ref["thr"])
        np.testing.assert_array_equal(res.top_score, ref["top"])
    else:
        np.testing.assert_allclose(res.thresholds, ref["thr"], atol=1e-6)
        np.testing.assert_allclose(res.top_score, ref["top"], atol=1e-6)
    assert res.rank_hits == ref["hits"]
    for k in ranks:
        np.testing.assert_equal(res.rank[k], ref["rank"][k])
    max_rank = max(ranks)
    want = np.where(ref["rank_exact"] > max_rank, RANK_BEYOND, ref["rank_exact"])
    np.testing.assert_array_equal(res.mate_rank, want)
    within = ref["mated"] & (ref["rank_exact"] <= max_rank)
    if exact:
        np.testing.assert_array_equal(res.mate_score[within], ref["mate"][within])
    assert np.all(np.isnan(res.mate_score[~ref["mated"]]))


# --------------------------------------------------------------------------------------------
# Hand-computed cases
# --------------------------------------------------------------------------------------------


def test_hand_computed_tpir_thresholds_and_ranks() -> None:
    # Gallery: A=(1,0), B=(0,1), C=(-1,0), one template each.
    gallery = np.array([[1, 0], [0, 1], [-1, 0]], np.float32)
    gsub = np.array([10, 20, 30])
    probes = np.array(
        [
            [0.8, 0.6],  # A: A .8, B .6, C -.8       -> mate .8, rank 1
            [0.6, 0.8],  # B: A .6, B .8              -> mate .8, rank 1
            [0.6, 0.8],  # A: A .6 < B .8             -> mate .6, rank 2
            [-0.6, -0.8],  # C: A -.6, B -.8, C .6    -> mate .6, rank 1
            [0.0, -1.0],  # non-mated, top 0
            [0.28, 0.96],  # non-mated, top .96
            [0.7071, 0.7071],  # non-mated, top .7071
            [-0.8, 0.6],  # non-mated, top .8 (C)
        ],
        np.float32,
    )
    psub = np.array([10, 20, 10, 30, 40, 50, 60, 70])
    fpirs = (0.1, 0.25, 0.5, 0.75, 1.0)
    res = identification(probes, psub, gallery, gsub, fpirs, ranks=(1, 2))
    # Non-mated tops sorted: .96, .8, .7071, 0 (n = 4). Threshold index max(int(4 f) - 1, 0):
    # f=.1 -> 0 (.96), .25 -> 0 (.96), .5 -> 1 (.8), .75 -> 2 (.7071), 1 -> 3 (0).
    np.testing.assert_allclose(res.thresholds, [0.96, 0.96, 0.8, 0.7071, 0.0], atol=1e-7)
    # Rank-1 mates: .8, .8, .6 (p3 is rank 2). Above .96: 0; above .8: 0 (a tie is not
    # above); above .7071: 2; above 0: 3. Out of 4 mated probes.
    np.testing.assert_array_equal(res.tpir, [0.0, 0.0, 0.0, 0.5, 0.75])
    assert res.rank == {1: 0.75, 2: 1.0} and res.rank_hits == {1: 3, 2: 4}
    assert (res.n_mated, res.n_nonmated) == (4, 4)
    assert res.mate_rank.tolist() == [1, 1, 2, 1, 0, 0, 0, 0]
    np.testing.assert_allclose(res.mate_score[:4], [0.8, 0.8, 0.6, 0.6], atol=1e-7)
    assert res.tpir_at(0.75) == 0.5
    assert res.curve_fpir.shape == (101,) and res.curve_tpir.shape == (101,)
    assert res.curve_fpir[0] == pytest.approx(1e-4) and res.curve_fpir[-1] == pytest.approx(1.0)
    assert res.curve_tpir[-1] == 0.75


def test_tie_between_mate_and_non_mate_is_not_rank_one() -> None:
    gallery = np.array([[1, 0], [0, 1]], np.float32)
    probes = np.array([[1, 1], [2, 1]], np.float32)
    res = identification(probes, [1, 1], gallery, [1, 2], fpirs=[1.0], ranks=(1, 2))
    assert res.mate_rank.tolist() == [2, 1]
    assert res.rank == {1: 0.5, 2: 1.0}
    assert np.isnan(res.tpir).all() and np.isnan(res.thresholds).all()  # no non-mated probe


def test_several_templates_per_subject_rank_counts_subjects() -> None:
    gallery = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [-1, 0]], np.float32)
    gsub = np.array([1, 1, 2, 2, 3])  # A twice, B twice, C once
    probe = np.array([[0.6, 0.8]], np.float32)  # subject C
    # Scores: A .6/.96, B .8/1.0, C -.6. Subjects ahead of C: A, B -> rank 3 (not 5).
    res = identification(probe, [3], gallery, gsub, fpirs=[0.5], ranks=(1, 2, 3, 5))
    assert res.mate_rank.tolist() == [3]
    assert res.rank == {1: 0.0, 2: 0.0, 3: 1.0, 5: 1.0}
    np.testing.assert_allclose(res.mate_score, [-0.6], atol=1e-7)
    # Subject A's mate score is its best template.
    res = identification(np.array([[0.8, 0.6]], np.float32), [1], gallery, gsub, [0.5], (1,))
    np.testing.assert_allclose(res.mate_score, [1.0], atol=1e-6)
    assert res.mate_rank.tolist() == [1]


# --------------------------------------------------------------------------------------------
# Random cases against the reference
# --------------------------------------------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_hypothesis_ties_sizes_and_multi_template_galleries(data: st.DataObject) -> None:
    # Small integer-valued features: every score is exact in float32, and ties abound.
    dim = data.draw(st.integers(1, 4))
    n_gallery = data.draw(st.integers(1, 14))
    n_probe = data.draw(st.integers(1, 30))
    seed = data.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    gallery = rng.integers(-2, 3, size=(n_gallery, dim)).astype(np.float32)
    probes = rng.integers(-2, 3, size=(n_probe, dim)).astype(np.float32)
    n_subj = data.draw(st.integers(1, 6))
    gsub = rng.integers(0, n_subj, size=n_gallery)
    psub = rng.integers(0, n_subj + 3, size=n_probe)
    fpirs = data.draw(
        st.lists(
            st.sampled_from([1e-4, 0.01, 0.1, 0.2, 0.3333, 0.5, 0.99, 1.0]), min_size=1, max_size=4
        )
    )
    ranks = tuple(sorted(set(data.draw(st.lists(st.integers(1, 8), min_size=1, max_size=3)))))
    res = identification(probes, psub, gallery, gsub, fpirs, ranks)
    ref = reference(probes, psub, gallery, gsub, fpirs, ranks)
    check_against_reference(res, ref, ranks, exact=True)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n_gallery=st.integers(20, 60), dim=st.integers(1, 2))
def test_hypothesis_heavy_ties_force_wider_searches(seed: int, n_gallery: int, dim: int) -> None:
    # Few distinct vectors in a gallery much larger than max(ranks) + templates per subject:
    # the first top-k search is cut inside a block of ties, and must be widened.
    rng = np.random.default_rng(seed)
    gallery = rng.integers(-1, 2, size=(n_gallery, dim)).astype(np.float32)
    gsub = rng.integers(0, n_gallery // 2, size=n_gallery)
    probes = rng.integers(-1, 2, size=(40, dim)).astype(np.float32)
    psub = rng.integers(0, n_gallery // 2 + 5, size=40)
    ranks = (1, 2)
    fpirs = (0.05, 0.5, 1.0)
    res = identification(probes, psub, gallery, gsub, fpirs, ranks)
    ref = reference(probes, psub, gallery, gsub, fpirs, ranks)
    check_against_reference(res, ref, ranks, exact=True)


def test_wider_search_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitfree.search import GalleryIndex

    ks: list[int] = []
    orig = GalleryIndex.search

    def spy(self: GalleryIndex, q: np.ndarray, k: int) -> Any:
        ks.append(k)
        return orig(self, q, k)

    monkeypatch.setattr(GalleryIndex, "search", spy)
    # 1-D features: a probe of 1 scores each gallery entry by its value. Subject 1 has 30
    # templates at .90-.99, subject 2 has 30 at .60-.69, the mate (subject 0) scores .5.
    gallery = np.concatenate([0.9 + 0.003 * np.arange(30), 0.6 + 0.003 * np.arange(30), [0.5]])
    gsub = np.array([1] * 30 + [2] * 30 + [0])
    res = identification(
        np.ones((1, 1), np.float32),
        [0],
        gallery[:, None].astype(np.float32),
        gsub,
        [1.0],
        (1, 2, 3),
    )
    # First k = max(ranks) + 30 = 33 neighbours: two subjects ahead, the 33rd still above the
    # mate, so the search is widened to the whole gallery, which settles rank 3.
    assert ks == [33, 61]
    assert res.mate_rank.tolist() == [3] and res.rank == {1: 0.0, 2: 0.0, 3: 1.0}


def realistic(
    rng: np.random.Generator,
    n_subjects: int,
    n_probe: int,
    dim: int,
    mated_frac: float,
    noise: float = 1.8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unit features: gallery = subject centre + noise, probe = centre + more noise."""
    centers = rng.normal(size=(n_subjects, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    gallery = centers + 0.6 * rng.normal(size=centers.shape) / np.sqrt(dim)
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    n_mated = int(n_probe * mated_frac)
    psub = np.concatenate([rng.integers(0, n_subjects, n_mated), -1 - np.arange(n_probe - n_mated)])
    pc = np.where(
        psub[:, None] >= 0,
        centers[np.maximum(psub, 0)],
        rng.normal(size=(n_probe, dim)) / np.sqrt(dim),
    )
    probes = pc + noise * rng.normal(size=(n_probe, dim)) / np.sqrt(dim)
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return probes.astype(np.float32), psub, gallery.astype(np.float32), np.arange(n_subjects)


def test_realistic_features_match_reference() -> None:
    rng = np.random.default_rng(0)
    probes, psub, gallery, gsub = realistic(rng, 150, 1500, 64, 0.5)
    fpirs = (1e-3, 1e-2, 1e-1, 0.5)
    ranks = (1, 5, 10)
    res = identification(probes, psub, gallery, gsub, fpirs, ranks)
    ref = reference(probes, psub, gallery, gsub, fpirs, ranks, exact64=False)
    check_against_reference(res, ref, ranks, exact=False)
    assert 0.2 < res.rank[1] < 1.0 and res.tpir[-1] > res.tpir[0]


def test_prebuilt_index_and_approximate_search() -> None:
    rng = np.random.default_rng(1)
    probes, psub, gallery, gsub = realistic(rng, 100, 400, 32, 0.5)
    exact = identification(probes, psub, gallery, gsub)
    again = identification(probes, psub, gallery, gsub, search=build_index(gallery))
    np.testing.assert_array_equal(again.tpir, exact.tpir)
    for kind in ("ivf", "hnsw"):
        cfg = SearchConfig(kind=kind, nlist=10, nprobe=10) if kind == "ivf" else kind
        approx = identification(probes, psub, gallery, gsub, search=cfg)
        # Exhaustive IVF and HNSW at this size find the same neighbours.
        np.testing.assert_array_equal(approx.mate_rank, exact.mate_rank)
        assert approx.rank == exact.rank
    with pytest.raises(ValueError, match="the given index holds"):
        identification(probes, psub, gallery[:50], gsub[:50], search=build_index(gallery))


# --------------------------------------------------------------------------------------------
# IJB combination of the two galleries
# --------------------------------------------------------------------------------------------


def test_ijb_identification_combines_g1_g2() -> None:
    rng = np.random.default_rng(2)
    n_subj, dim = 60, 32
    probes, psub, gallery, gsub = realistic(rng, n_subj, 500, dim, 1.0)
    # IJB: every probe subject is in exactly one gallery; template ids are arbitrary ints.
    g1_mask = gsub < 30
    gallery_ids = rng.choice(np.arange(10_000, 20_000), n_subj, replace=False)
    probe_ids = rng.choice(np.arange(20_000, 30_000), len(psub), replace=False)
    all_ids = np.concatenate([gallery_ids, probe_ids])
    all_feats = np.concatenate([gallery, probes])
    perm = rng.permutation(len(all_ids))
    g1 = (gallery_ids[g1_mask], gsub[g1_mask])
    g2 = (gallery_ids[~g1_mask], gsub[~g1_mask])
    fpirs = (1e-2, 0.1, 0.3)
    ranks = (1, 5)
    res = ijb_identification(
        all_feats[perm], all_ids[perm], g1, g2, (probe_ids, psub), fpirs, ranks
    )
    r1 = reference(probes, psub, gallery[g1_mask], gsub[g1_mask], fpirs, ranks, exact64=False)
    r2 = reference(probes, psub, gallery[~g1_mask], gsub[~g1_mask], fpirs, ranks, exact64=False)
    check_against_reference(res.galleries["G1"], r1, ranks, exact=False)
    check_against_reference(res.galleries["G2"], r2, ranks, exact=False)
    np.testing.assert_array_equal(res.tpir, (r1["tpir"] + r2["tpir"]) / 2)
    np.testing.assert_array_equal(res.curve_tpir, (r1["curve"] + r2["curve"]) / 2)
    for k in ranks:
        assert res.rank[k] == (r1["hits"][k] + r2["hits"][k]) / len(psub)
    assert res.n_probes == len(psub)
    assert r1["n_mated"] + r2["n_mated"] == len(psub)


def test_ijb_identification_errors() -> None:
    feats = np.eye(4, dtype=np.float32)
    ids = np.array([1, 2, 3, 4])
    g1 = ([1], [100])
    g2 = ([2], [200])
    probes = ([3, 4], [100, 200])
    ijb_identification(feats, ids, g1, g2, probes)
    with pytest.raises(
        ValueError, match="2 probe template ids have no feature in template_ids: 7, 9"
    ):
        ijb_identification(feats, ids, g1, g2, ([3, 7, 9], [100, 100, 200]))
    with pytest.raises(ValueError, match="1 G2 template ids have no feature.*: 8"):
        ijb_identification(feats, ids, g1, ([8], [200]), probes)
    with pytest.raises(ValueError, match="not unique: \\[3\\]"):
        ijb_identification(feats, [1, 2, 3, 3], g1, g2, probes)
    with pytest.raises(ValueError, match="share 1 subjects"):
        ijb_identification(feats, ids, g1, ([2], [100]), probes)
    with pytest.raises(TypeError, match="must be a pair"):
        ijb_identification(feats, ids, [1], g2, probes)
    with pytest.raises(ValueError, match="one id per row"):
        ijb_identification(feats, ids[:3], g1, g2, probes)


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_identification_input_validation() -> None:
    g = np.eye(3, dtype=np.float32)
    p = np.eye(3, dtype=np.float32)
    s = np.array([1, 2, 3])
    with pytest.raises(TypeError, match="probe_feats must be a float array"):
        identification(p.astype(np.int32), s, g, s)
    with pytest.raises(ValueError, match="gallery_feats must be 2-D"):
        identification(p, s, g[0], s[:1])
    bad = p.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"probe_feats has NaN or infinite values in rows \[1\]"):
        identification(bad, s, g, s)
    with pytest.raises(ValueError, match="probe_subjects has 2 entries but probe_feats has 3"):
        identification(p, s[:2], g, s)
    with pytest.raises(ValueError, match="gallery_subjects has 2 entries"):
        identification(p, s, g, s[:2])
    with pytest.raises(ValueError, match="the gallery is empty"):
        identification(p, s, g[:0], s[:0])
    with pytest.raises(ValueError, match="there are no probes"):
        identification(p[:0], s[:0], g, s)
    with pytest.raises(ValueError, match="dimension 2 but gallery_feats 3"):
        identification(p[:, :2], s, g, s)
    for f in (0.0, -0.1, 1.5, np.nan):
        with pytest.raises(ValueError, match=r"FPIRs must lie in \(0, 1\]"):
            identification(p, s, g, s, fpirs=[1e-2, f])
    with pytest.raises(ValueError, match="ranks must be >= 1"):
        identification(p, s, g, s, ranks=(0, 1))
    with pytest.raises(ValueError, match="probe_subjects contains NaN"):
        identification(p, np.array([1.0, np.nan, 3.0]), g, s)


def test_all_probes_non_mated_and_string_subjects() -> None:
    g = np.eye(3, dtype=np.float32)
    res = identification(g, ["x", "y", "z"], g, ["a", "b", "c"], fpirs=[0.5])
    assert res.n_mated == 0 and res.n_nonmated == 3
    assert np.isnan(res.tpir).all() and res.thresholds.tolist() == [1.0]
    assert all(np.isnan(v) for v in res.rank.values())
    res = identification(g, ["b", "y", "c"], g, ["a", "b", "c"], fpirs=[1.0])
    # The "b" probe is gallery "a"'s vector: a scores 1, b and c tie at 0 -> rank 3.
    assert res.mate_rank.tolist() == [3, 0, 1]
    res = identification(g, ["b", "y", "c"], g, ["a", "b", "c"], fpirs=[1.0], ranks=(1, 2))
    assert res.mate_rank.tolist() == [RANK_BEYOND, 0, 1]
