"""ROC, TAR@FAR and k-fold accuracy against scikit-learn and the community code."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import lfw_kfold, tar_at_most, tar_nearest
from sklearn import metrics as skm
from vitfree.metrics import (
    Roc,
    kfold_accuracy,
    roc,
    roc_curve,
    tar_at_far,
    tar_at_far_points,
)


def assert_same_roc(labels, scores, drop):
    ours = roc_curve(labels, scores, drop_intermediate=drop)
    ref = skm.roc_curve(labels, scores, drop_intermediate=drop)
    for a, b, name in zip(ours, ref, ("fpr", "tpr", "thresholds")):
        np.testing.assert_array_equal(a, b, err_msg=name)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 300),
    n_levels=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    f64=st.booleans(),
    drop=st.booleans(),
)
def test_roc_matches_sklearn_with_ties(n, n_levels, seed, f64, drop):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[0], labels[1] = 0, 1
    # few distinct levels -> many ties, including negative zero
    levels = rng.normal(size=n_levels)
    levels[0] = -0.0
    scores = levels[rng.integers(0, n_levels, n)].astype(np.float64 if f64 else np.float32)
    assert_same_roc(labels, scores, drop)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 5000))
def test_roc_continuous_scores(seed, n):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(bool)
    labels[:2] = [True, False]
    scores = (rng.normal(size=n) + labels).astype(np.float32)
    assert_same_roc(labels, scores, True)


def test_roc_large_input_spans_sort_chunks():
    # more than one 4M-score radix chunk, with heavy ties from rounding
    rng = np.random.default_rng(7)
    n = 9_000_000
    labels = (rng.random(n) < 0.002).astype(np.uint8)
    scores = np.round(rng.normal(size=n).astype(np.float32) + 2 * labels, 3)
    assert_same_roc(labels, scores, True)


def test_roc_hand_case_and_counts():
    r = roc([0, 1, 0, 1, 0, 1], [0.5, 0.9, 0.4, 0.7, 0.8, 0.6], drop_intermediate=False)
    np.testing.assert_array_equal(r.tps, [0, 1, 1, 2, 3, 3, 3])
    np.testing.assert_array_equal(r.fps, [0, 0, 1, 1, 1, 2, 3])
    assert r.n_genuine == 3 and r.n_impostor == 3
    assert r.auc() == pytest.approx(skm.roc_auc_score([0, 1, 0, 1, 0, 1], [0.5, 0.9, 0.4, 0.7, 0.8, 0.6]))


FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 3000), levels=st.integers(2, 200))
def test_tar_at_far_matches_community_pick(seed, n, levels):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.2).astype(np.int64)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(size=n) + labels, int(np.log10(levels)) + 1)
    fars = (1e-3, 1e-2, 5e-2, 1e-1, 0.5)
    pts = tar_at_far_points(labels, scores, fars, rule="nearest")
    ref_tar, ref_thr = tar_nearest(labels, scores, fars)
    np.testing.assert_array_equal(pts.tar, ref_tar)
    np.testing.assert_array_equal(pts.thresholds, ref_thr)
    np.testing.assert_array_equal(tar_at_far(labels, scores, fars, rule="at_most"), tar_at_most(labels, scores, fars))
    strict = tar_at_far_points(labels, scores, fars, rule="at_most")
    assert np.all(strict.far <= np.asarray(fars))
    # thresholds reproduce the TAR: accept when score >= threshold
    for t, thr in zip(strict.tar, strict.thresholds):
        assert t == pytest.approx(np.mean(scores[labels == 1] >= thr))


def test_tar_at_far_accepts_a_roc_and_defaults():
    rng = np.random.default_rng(0)
    labels = (rng.random(100_000) < 0.01).astype(np.uint8)
    scores = (rng.normal(size=labels.size) + 3 * labels).astype(np.float32)
    r = roc(labels, scores)
    assert isinstance(r, Roc)
    a = tar_at_far_points(r)
    b = tar_at_far(labels, scores)
    assert a.tar.shape == (6,) and a.tar.dtype == np.float64
    np.testing.assert_array_equal(a.tar, b)
    np.testing.assert_array_equal(b, tar_nearest(labels, scores, FARS)[0])


@pytest.mark.parametrize(
    "labels, scores, fars, pattern",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], (0.1,), "both classes"),
        ([0, 1, 2], [0.1, 0.2, 0.3], (0.1,), r"labels\[2\] is 2"),
        ([0, 1, 1], [0.1, np.nan, 0.3], (0.1,), r"scores\[1\] is nan"),
        ([0, 1, 1], [0.1, np.inf, 0.3], (0.1,), r"scores\[1\] is inf"),
        ([0, 1], [0.1, 0.2, 0.3], (0.1,), "scores has 3 entries, expected 2"),
        ([], [], (0.1,), "labels is empty"),
        ([0, 1], [0.1, 0.2], (0.0,), r"outside \(0, 1\)"),
        ([0, 1], [0.1, 0.2], (1.5,), r"outside \(0, 1\)"),
        ([0, 1], [0.1, 0.2], (), "non-empty"),
    ],
)
def test_metric_errors(labels, scores, fars, pattern):
    with pytest.raises(ValueError, match=pattern):
        tar_at_far(np.asarray(labels), np.asarray(scores), fars)


def test_rule_is_checked():
    with pytest.raises(ValueError, match="rule must be"):
        tar_at_far([0, 1], [0.1, 0.2], rule="closest")  # type: ignore[arg-type]


def lfw_like(rng, n_pairs, dim=16, noise=0.9):
    issame = np.arange(n_pairs) % 2 == 0
    rng.shuffle(issame)
    a = rng.normal(size=(n_pairs, dim)).astype(np.float32)
    other = rng.normal(size=(n_pairs, dim)).astype(np.float32)
    b = np.where(issame[:, None], a + noise * rng.normal(size=a.shape).astype(np.float32), other)
    return a, b.astype(np.float32), issame


@pytest.mark.parametrize("n_pairs, n_folds", [(600, 10), (6000, 10), (437, 10), (90, 3)])
def test_kfold_accuracy_matches_community(n_pairs, n_folds):
    rng = np.random.default_rng(n_pairs)
    a, b, issame = lfw_like(rng, n_pairs)
    res = kfold_accuracy(a, b, issame, n_folds=n_folds)
    acc, best, _ = lfw_kfold(a, b, issame, n_folds)
    np.testing.assert_array_equal(res.accuracies, acc)
    np.testing.assert_array_equal(res.thresholds, best)
    assert res.mean == np.mean(acc) and res.std == np.std(acc)


def test_kfold_val_matches_scipy_linear_interp1d():
    from scipy import interpolate

    rng = np.random.default_rng(11)
    a, b, issame = lfw_like(rng, 20_000, dim=8, noise=1.3)
    res = kfold_accuracy(a, b, issame)
    e1 = a / np.linalg.norm(a, axis=1, keepdims=True)
    e2 = b / np.linalg.norm(b, axis=1, keepdims=True)
    dist = np.sum(np.square(e1 - e2), 1)
    thresholds = np.arange(0, 4, 0.001)
    for k in range(10):
        test = np.zeros(len(dist), bool)
        test[k * 2000 : (k + 1) * 2000] = True
        d, y = dist[~test], issame[~test]
        far_train = np.array([np.sum((d < t) & ~y) / np.sum(~y) for t in thresholds])
        # scipy's searchsorted-based linear interpolation accepts the repeated FAR values
        thr = float(interpolate.interp1d(far_train, thresholds, kind="linear")(1e-3))
        assert res.val_thresholds[k] == pytest.approx(thr, abs=1e-9)
        dt, yt = dist[test], issame[test]
        assert res.val[k] == np.sum((dt < thr) & yt) / yt.sum()
        assert res.far[k] == np.sum((dt < thr) & ~yt) / (~yt).sum()


def test_kfold_val_survives_repeated_far_values():
    # perfectly separable -> the training FAR curve is flat at 0 for a long stretch
    rng = np.random.default_rng(3)
    a = rng.normal(size=(600, 8)).astype(np.float32)
    issame = np.tile([True, False], 300)
    b = np.where(issame[:, None], a, -a)
    res = kfold_accuracy(a, b, issame)
    np.testing.assert_array_equal(res.accuracies, np.ones(10))
    assert np.all(np.isfinite(res.val))


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(emb2=np.ones((5, 3), np.float32)), ValueError, "emb1 has shape"),
        (dict(issame=np.ones(4, bool)), ValueError, "issame has 4 entries"),
        (dict(issame=np.ones(20, bool)), ValueError, "single class"),
        (dict(n_folds=1), ValueError, "n_folds"),
        (dict(n_folds=30), ValueError, "cannot be split"),
        (dict(emb1=np.full((20, 4), np.nan, np.float32)), ValueError, "emb1 contains NaN"),
    ],
)
def test_kfold_bad_input(kwargs, exc, pattern):
    rng = np.random.default_rng(0)
    args = dict(
        emb1=rng.normal(size=(20, 4)).astype(np.float32),
        emb2=rng.normal(size=(20, 4)).astype(np.float32),
        issame=np.tile([True, False], 10),
    )
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        kfold_accuracy(**args)


@pytest.mark.parametrize("decimals", [None, 3, 2])
def test_tar_at_far_from_the_beginning_of_the_roc_equals_the_full_roc(decimals):
    # tar_at_far sorts only the highest impostor scores; it must pick the same points
    rng = np.random.default_rng(21)
    n = 3_000_000
    labels = (rng.random(n) < 0.002).astype(np.uint8)
    scores = (rng.normal(size=n) * 0.15 + 0.5 * labels).astype(np.float32)
    if decimals is not None:
        scores = np.round(scores, decimals)
    full = roc(labels, scores)
    for rule in ("nearest", "at_most"):
        fast = tar_at_far_points(labels, scores, (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 0.3), rule=rule)
        ref = tar_at_far_points(full, fars=fast.fars, rule=rule)
        np.testing.assert_array_equal(fast.tar, ref.tar)
        np.testing.assert_array_equal(fast.far, ref.far)
        np.testing.assert_array_equal(fast.thresholds, ref.thresholds)
        np.testing.assert_array_equal(fast.index, ref.index)


def test_int8_labels_are_viewed_not_copied():
    # 0/1 int8 labels (what IJB meta files give) are read in place: no 15 MB copy at IJB-C size
    from vitfree._checks import as_labels

    labels = np.array([0, 1, 1, 0, 1], np.int8)
    y = as_labels(labels)
    assert y.dtype == np.uint8 and np.shares_memory(y, labels)
    np.testing.assert_array_equal(y, labels)
    with pytest.raises(ValueError, match="must be 0"):
        as_labels(np.array([0, -1], np.int8))
