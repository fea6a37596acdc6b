"""The native module's own errors: one binding per function for float32 and float64, the
binding-level checks (dtype, ndim, contiguity, shape) and the exception type of each kind."""

from __future__ import annotations

import numpy as np
import pytest
from vitfree import _core

LABELS = np.array([0, 1, 1, 0], np.uint8)
SCORES = [0.1, 0.4, 0.35, 0.8]


def _agg_args(dtype=np.float32):
    feats = np.array([[1, 0], [0, 1], [1, 1]], dtype)
    return feats, np.array([1, 1, 2], np.int64), np.array([1, 2, 3], np.int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_binding_per_function_keeps_the_score_dtype(dtype):
    scores = np.array(SCORES, dtype)
    for fpr, tpr, thr, fps, tps in (
        _core.roc_curve(LABELS, scores),
        _core.roc_prefix(LABELS, scores, 0.5),
    ):
        assert thr.dtype == dtype and thr[0] == np.inf
        assert fpr.dtype == tpr.dtype == np.float64
        assert fps.dtype == tps.dtype == np.uint64
    feats, templates, medias = _agg_args(dtype)
    tf, ids = _core.aggregate_templates(feats, templates, medias, flip=feats.copy())
    assert tf.dtype == np.float32 and ids.tolist() == [1, 2]


@pytest.mark.parametrize(
    "scores, exc, pattern",
    [
        (np.array([1, 2, 3, 4], np.int32), TypeError, "scores must be float32 or float64, got dtype int32"),
        (np.array(SCORES, np.float16), TypeError, "got dtype float16"),
        (SCORES, TypeError, "scores must be a numpy array, got list"),
        (np.ones((2, 2)), ValueError, "scores must be a 1-D array, got 2-D"),
        (np.arange(8.0)[::2], ValueError, "scores must be C-contiguous"),
        (np.array([0.1, np.nan, 0.3, 0.4]), ValueError, r"scores\[1\] is nan; scores must be finite"),
        (np.array([0.1, 0.2, 0.3]), ValueError, "labels has 4 entries but scores has 3"),
    ],
)
def test_roc_binding_errors(scores, exc, pattern):
    for call in (lambda: _core.roc_curve(LABELS, scores), lambda: _core.roc_prefix(LABELS, scores, 0.1)):
        with pytest.raises(exc, match=pattern):
            call()


def test_roc_value_errors():
    with pytest.raises(ValueError, match=r"labels\[2\] is 2; labels must be 0 \(impostor\) or 1"):
        _core.roc_curve(np.array([0, 1, 2], np.uint8), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="the ROC needs both classes"):
        _core.roc_curve(np.ones(3, np.uint8), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="labels and scores are empty"):
        _core.roc_curve(np.zeros(0, np.uint8), np.zeros(0))


def test_aggregate_binding_errors():
    feats, templates, medias = _agg_args()
    with pytest.raises(TypeError, match="flip_feats has dtype float64 but feats has float32"):
        _core.aggregate_templates(feats, templates, medias, flip=feats.astype(np.float64))
    with pytest.raises(ValueError, match=r"flip_feats has shape \[3, 3\] but feats has \[3, 2\]"):
        _core.aggregate_templates(feats, templates, medias, flip=np.ones((3, 3), np.float32))
    with pytest.raises(TypeError, match="feats must be float32 or float64, got dtype int64"):
        _core.aggregate_templates(feats.astype(np.int64), templates, medias)
    with pytest.raises(ValueError, match="feats must be a 2-D array, got 1-D"):
        _core.aggregate_templates(feats[:, 0].copy(), templates, medias)
    with pytest.raises(ValueError, match="feats must be C-contiguous"):
        _core.aggregate_templates(np.asfortranarray(feats), templates, medias)
    with pytest.raises(ValueError, match="medias has 2 entries but templates has 3"):
        _core.aggregate_templates(feats, templates, medias[:2])
    with pytest.raises(ValueError, match=r"image row 1 \(template 1\) has NaN or infinite values"):
        bad = feats.copy()
        bad[1, 0] = np.inf
        _core.aggregate_templates(bad, templates, medias)


def test_other_binding_errors():
    feats = np.eye(2, dtype=np.float32)
    ids = np.array([3, 5], np.int64)
    with pytest.raises(ValueError, match=r"unknown template id 4 in p2 \(pair 1\)"):
        _core.score_pairs(feats, ids, np.array([3, 3]), np.array([5, 4]))
    with pytest.raises(ValueError, match=r"template_ids must be sorted ascending and unique \(position 0"):
        _core.score_pairs(feats, ids[::-1].copy(), np.array([3]), np.array([5]))
    with pytest.raises(ValueError, match="rule must be 'nearest' or 'at_most', got \"closest\""):
        _core.pick_far(np.array([0.0, 1.0]), np.array([0.1]), "closest")
    with pytest.raises(ValueError, match=r"FAR target 1.5 is outside \(0, 1\)"):
        _core.pick_far(np.array([0.0, 1.0]), np.array([1.5]), "nearest")
    with pytest.raises(ValueError, match=r"dist\[0\] is not finite \(NaN\)"):
        _core.count_below(np.array([np.nan]), np.array([1], np.uint8), np.array([1.0]))


def test_every_function_is_documented():
    for name in _core.__all__:
        if name != "__version__":
            doc = getattr(_core, name).__doc__
            assert doc and len(doc.strip()) > 20, name
