"""Template aggregation, pair scoring and the whole 1:1 pipeline against the community code."""

from __future__ import annotations

import numpy as np
import pytest
import vitfree
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import (
    community_image_feats,
    image2template_feature,
    tar_at_most,
    tar_nearest,
    verification,
)
from vitfree.ijb import aggregate_templates, evaluate_verification, score_pairs


def make_ijb(rng, n_images=300, dim=16, n_templates=20, n_medias=40, sparse=True):
    tids = rng.choice(10_000, size=n_templates, replace=False) if sparse else np.arange(n_templates)
    mids = rng.choice(10_000, size=n_medias, replace=False)
    templates = tids[rng.integers(0, n_templates, n_images)]
    templates[:n_templates] = tids  # every template has an image
    medias = mids[rng.integers(0, n_medias, n_images)]
    feats = rng.normal(size=(n_images, dim)).astype(np.float32)
    return feats, templates.astype(np.int64), medias.astype(np.int64)


def test_aggregate_matches_community():
    rng = np.random.default_rng(0)
    feats, templates, medias = make_ijb(rng)
    ours, ids = aggregate_templates(feats, templates, medias)
    ref, ref_ids = image2template_feature(feats, templates, medias)
    assert ours.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("faceness", [False, True])
@pytest.mark.parametrize("normalize_images", [False, True])
def test_aggregate_options_match_community(flip, faceness, normalize_images):
    rng = np.random.default_rng(1)
    feats, templates, medias = make_ijb(rng, n_images=200, dim=8)
    fl = rng.normal(size=feats.shape).astype(np.float32) if flip else None
    fs = rng.uniform(0.1, 1.0, size=feats.shape[0]).astype(np.float32) if faceness else None
    ours, _ = aggregate_templates(feats, templates, medias, fs, flip_feats=fl, normalize_images=normalize_images)
    x = community_image_feats(feats, fl, fs, normalize_images)
    ref, _ = image2template_feature(x, templates, medias)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)


@settings(max_examples=60, deadline=None)
@given(
    n_images=st.integers(1, 80),
    dim=st.integers(1, 40),
    n_templates=st.integers(1, 10),
    n_medias=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
    f64=st.booleans(),
)
def test_aggregate_random_shapes(n_images, dim, n_templates, n_medias, seed, f64):
    rng = np.random.default_rng(seed)
    n_templates = min(n_templates, n_images)
    templates = rng.integers(-50, 50, n_images) * 7
    templates[:n_templates] = np.arange(n_templates) * 1000 + 3
    medias = rng.integers(0, n_medias, n_images) - 5
    feats = rng.normal(size=(n_images, dim)).astype(np.float64 if f64 else np.float32)
    ours, ids = aggregate_templates(feats, templates, medias)
    ref, ref_ids = image2template_feature(feats, templates, medias)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)


def test_score_pairs_matches_community():
    rng = np.random.default_rng(2)
    feats, templates, medias = make_ijb(rng)
    tf, ids = aggregate_templates(feats, templates, medias)
    p1 = rng.choice(ids, 5000)
    p2 = rng.choice(ids, 5000)
    ours = score_pairs(tf, ids, p1, p2)
    ref = verification(tf.astype(np.float64), ids, p1, p2)
    assert ours.dtype == np.float32 and ours.shape == (5000,)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_score_pairs_sparse_ids_fall_back_to_search():
    feats = np.eye(3, dtype=np.float32)
    ids = np.array([-(2**40), 5, 2**50])
    s = score_pairs(feats, ids, [5, 2**50, -(2**40)], [5, -(2**40), -(2**40)])
    np.testing.assert_array_equal(s, [1, 0, 1])


def test_unknown_template_named():
    feats = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match=r"unknown template id 99 in p1 \(pair 2\)"):
        score_pairs(feats, [1, 2], [1, 2, 99], [2, 1, 1])


def test_zero_template_named():
    feats = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="template 17 sums to a zero vector"):
        aggregate_templates(feats, [17, 17, 3], [1, 2, 3])


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(feats=np.zeros((3, 2), np.int32)), TypeError, "feats must be float32 or float64"),
        (dict(feats=np.zeros(3, np.float32)), ValueError, "feats must be a 2-D"),
        (dict(feats=np.zeros((0, 2), np.float32), templates=[], medias=[]), ValueError, "feats is empty"),
        (dict(templates=[1, 2]), ValueError, "templates has 2 entries, expected 3"),
        (dict(medias=[1.5, 2, 3]), TypeError, "medias must hold integer ids"),
        (dict(weights=[1.0, np.nan, 1.0]), ValueError, r"weights\[1\] is nan"),
        (dict(feats=np.array([[1, 0], [np.inf, 0], [0, 1]], np.float32)), ValueError, "image row 1"),
    ],
)
def test_aggregate_bad_input(kwargs, exc, pattern):
    args = dict(
        feats=np.array([[1, 0], [0, 1], [1, 1]], np.float32), templates=[1, 1, 2], medias=[1, 2, 3], weights=None
    )
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        aggregate_templates(**args)


def test_flip_shape_mismatch():
    with pytest.raises(ValueError, match="flip_feats has shape"):
        aggregate_templates(np.ones((2, 3), np.float32), [1, 2], [1, 2], flip_feats=np.ones((2, 4), np.float32))


def test_float64_input_is_not_copied_and_equal():
    rng = np.random.default_rng(3)
    feats, templates, medias = make_ijb(rng)
    a, _ = aggregate_templates(feats.astype(np.float64), templates, medias)
    b, _ = aggregate_templates(feats, templates, medias)
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(4)
    feats, templates, medias = make_ijb(rng, n_images=20_000, dim=64, n_templates=700, n_medias=3000)
    tids = np.unique(templates)
    p1 = rng.choice(tids, 200_000)
    p2 = rng.choice(tids, 200_000)
    labels = (rng.random(200_000) < 0.1).astype(np.uint8)
    before = vitfree.get_num_threads()
    try:
        out = []
        for n in (1, 2, 5):
            vitfree.set_num_threads(n)
            r = evaluate_verification(feats, templates, medias, p1, p2, labels)
            out.append((r.template_feats, r.scores, r.roc.fpr, r.roc.tpr, r.nearest.tar))
        for other in out[1:]:
            for x, y in zip(out[0], other):
                np.testing.assert_array_equal(x, y)
    finally:
        vitfree.set_num_threads(0)
    assert vitfree.get_num_threads() == before


def test_evaluate_verification_matches_community_pipeline():
    rng = np.random.default_rng(5)
    n_subjects, per = 30, 4
    centers = rng.normal(size=(n_subjects, 32))
    templates, medias, feats, subj_of_t = [], [], [], {}
    t = 0
    for s in range(n_subjects):
        for _ in range(per):
            for _ in range(rng.integers(1, 6)):
                templates.append(t)
                medias.append(rng.integers(0, 3) + 10 * t)
                feats.append(centers[s] + rng.normal(scale=1.2, size=32))
            subj_of_t[t] = s
            t += 1
    feats = np.asarray(feats, np.float32)
    flip = feats + rng.normal(scale=0.1, size=feats.shape).astype(np.float32)
    faceness = rng.uniform(0.5, 1, len(feats)).astype(np.float32)
    templates = np.asarray(templates)
    medias = np.asarray(medias)
    p1, p2 = np.triu_indices(t, 1)
    labels = np.array([subj_of_t[a] == subj_of_t[b] for a, b in zip(p1, p2)], np.int64)
    fars = (1e-3, 1e-2, 1e-1)
    r = evaluate_verification(feats, templates, medias, p1, p2, labels, faceness=faceness, flip_feats=flip, fars=fars)
    x = community_image_feats(feats, flip, faceness)
    tf, tids = image2template_feature(x, templates, medias)
    ref_scores = verification(tf, tids, p1, p2)
    np.testing.assert_allclose(r.scores, ref_scores, atol=2e-6)
    # TAR@FAR on the same float32 scores must be exact; on the reference's float64 scores equal
    # unless a score sits within float32 rounding of a decision boundary.
    tar, thr = tar_nearest(labels, r.scores, fars)
    np.testing.assert_array_equal(r.nearest.tar, tar)
    np.testing.assert_array_equal(r.nearest.thresholds, thr)
    np.testing.assert_array_equal(r.at_most.tar, tar_at_most(labels, r.scores, fars))
    np.testing.assert_allclose(r.nearest.tar, tar_nearest(labels, ref_scores, fars)[0], atol=2.0 / labels.sum())
    from sklearn.metrics import roc_auc_score

    assert r.auc == pytest.approx(roc_auc_score(labels, r.scores), abs=1e-12)
    assert r.n_templates == t and r.n_pairs == len(p1) and r.n_genuine == labels.sum()
    assert "nearest" in r.table()


@settings(max_examples=40, deadline=None)
@given(dim=st.integers(1, 100), n_templates=st.integers(1, 50), n_pairs=st.integers(0, 300), seed=st.integers(0, 2**32 - 1))
def test_score_pairs_random_shapes(dim, n_templates, n_pairs, seed):
    rng = np.random.default_rng(seed)
    ids = np.sort(rng.choice(10**6, n_templates, replace=False)).astype(np.int64)
    tf = rng.normal(size=(n_templates, dim)).astype(np.float32)
    tf /= np.linalg.norm(tf, axis=1, keepdims=True)
    p1 = rng.choice(ids, n_pairs)
    p2 = rng.choice(ids, n_pairs)
    ours = score_pairs(tf, ids, p1, p2)
    assert ours.shape == (n_pairs,) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, verification(tf.astype(np.float64), ids, p1, p2), atol=1e-6)


def test_score_pairs_tiled_path_matches_numpy():
    # 2,200 templates x 1,024-d = 9 MB of template features: scored tile by tile
    rng = np.random.default_rng(9)
    ids = np.arange(2200, dtype=np.int64) * 3 + 11
    tf = rng.normal(size=(2200, 1024)).astype(np.float32)
    tf /= np.linalg.norm(tf, axis=1, keepdims=True)
    p1 = np.sort(rng.choice(ids, 60_000))
    p2 = rng.choice(ids, 60_000)
    ours = score_pairs(tf, ids, p1, p2)
    np.testing.assert_allclose(ours, verification(tf.astype(np.float64), ids, p1, p2), atol=1e-6)
    before = vitfree.get_num_threads()
    vitfree.set_num_threads(1)
    try:
        np.testing.assert_array_equal(score_pairs(tf, ids, p1, p2), ours)
    finally:
        vitfree.set_num_threads(0)
    assert vitfree.get_num_threads() == before
    with pytest.raises(ValueError, match=r"unknown template id 12 in p2 \(pair 7\)"):
        bad = p2.copy()
        bad[7] = 12
        score_pairs(tf, ids, p1, bad)


FORK_SCRIPT = """
import os, sys
import numpy as np
from vitfree.ijb import aggregate_templates
feats = np.eye(4, dtype=np.float32)
aggregate_templates(feats, [1, 2, 3, 4], [1, 2, 3, 4])  # the pool exists in the parent
pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        tf, ids = aggregate_templates(feats, [1, 1, 3, 4], [1, 2, 3, 4])
        os._exit(0 if len(ids) == 3 else 1)
    pids.append(pid)
codes = [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in pids]
print(codes)
sys.exit(max(codes))
"""


def test_rust_core_works_in_forked_children():
    # DataLoader workers fork after the pool exists: the child must rebuild it, not hang
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", FORK_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("dim", [16, 512, 37])
def test_template_features_start_on_a_cache_line(dim):
    # The (T, D) result is a writeable C-contiguous float32 view whose first row starts on a
    # 64-byte boundary (score_pairs' 64-byte loads then never straddle two cache lines); the
    # array it views stays alive with it, and sorted and shuffled image orders give the same
    # bits (images are read in row order, summed per media in (media, row) order).
    rng = np.random.default_rng(dim)
    feats, templates, medias = make_ijb(rng, n_images=2000, dim=dim, n_templates=150, n_medias=400)
    ref, ref_ids = image2template_feature(feats, templates, medias)
    for _ in range(4):
        tf, ids = aggregate_templates(feats, templates, medias)
        assert tf.ctypes.data % 64 == 0
        assert tf.dtype == np.float32 and tf.shape == (150, dim)
        assert tf.flags.c_contiguous and tf.flags.writeable
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(tf, ref, atol=2e-6)
    kept = tf.copy()
    del ids
    import gc

    gc.collect()
    np.testing.assert_array_equal(tf, kept)
    order = np.argsort(templates, kind="stable")  # images grouped by template, as IJB lists them
    grouped, _ = aggregate_templates(feats[order], templates[order], medias[order])
    np.testing.assert_array_equal(grouped.view(np.uint32), tf.view(np.uint32))
