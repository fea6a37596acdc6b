"""Verification metrics: ROC, TAR@FAR and the LFW-style k-fold accuracy (docs/protocols.md §3, §5).

The heavy lifting runs in vitfree's Rust core; these wrappers validate arguments and shape the
results. All functions reproduce the community procedures number for number:

- :func:`roc_curve` returns the same points, thresholds and order as
  ``sklearn.metrics.roc_curve``.
- :func:`tar_at_far` with ``rule="nearest"`` is insightface's IJB pick (the ROC point whose FPR is
  nearest the target, ties to the larger TPR). Note that this point may sit *above* the target
  FAR; ``rule="at_most"`` gives the largest TPR whose FPR does not exceed it.
- :func:`kfold_accuracy` is insightface's ``verification.py`` 10-fold protocol for ``.bin`` sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vitfree import _core
from vitfree._checks import as_features, as_labels, as_scores, check_same_length
from vitfree.errors import InputError

__all__ = [
    "DEFAULT_FARS",
    "FarPoints",
    "KFoldResult",
    "Roc",
    "auc",
    "kfold_accuracy",
    "roc",
    "roc_curve",
    "tar_at_far",
    "tar_at_far_points",
]

#: The FAR grid of the IJB tables: 1e-6 ... 1e-1.
DEFAULT_FARS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)

Rule = Literal["nearest", "at_most"]


@dataclass(frozen=True)
class Roc:
    """A ROC curve as sklearn returns it, plus the integer counts behind it.

    Attributes:
        fpr: (K,) float64, non-decreasing, starting at 0.
        tpr: (K,) float64, non-decreasing, starting at 0.
        thresholds: (K,) same dtype as the scores; ``thresholds[0]`` is ``+inf``.
        fps, tps: (K,) uint64 impostor/genuine counts with score >= threshold.
        n_genuine, n_impostor: class sizes.
        complete: False for a curve that holds only its exact beginning (as
            ``_core.roc_prefix`` returns it: enough for TAR@FAR picks, not for the AUC).
    """

    fpr: npt.NDArray[np.float64]
    tpr: npt.NDArray[np.float64]
    thresholds: np.ndarray
    fps: npt.NDArray[np.uint64]
    tps: npt.NDArray[np.uint64]
    n_genuine: int
    n_impostor: int
    complete: bool = True

    def auc(self) -> float:
        """Area under the curve (trapezoid rule, as ``sklearn.metrics.auc``)."""
        if not self.complete:
            raise InputError("this Roc is only the beginning of the curve; use vitfree.metrics.roc()")
        return auc(self.fpr, self.tpr)


@dataclass(frozen=True)
class FarPoints:
    """The ROC points picked for a list of target FARs.

    Attributes:
        fars: (F,) float64 target FARs.
        tar: (F,) float64 true accept rate at each pick (a fraction, not percent).
        far: (F,) float64 the actual FPR of each pick (with ``rule="nearest"`` it may exceed the target).
        thresholds: (F,) float64 score threshold of each pick (accept when score >= threshold).
        index: (F,) int64 index of each pick in the ROC arrays.
        rule: ``"nearest"`` or ``"at_most"``.
    """

    fars: npt.NDArray[np.float64]
    tar: npt.NDArray[np.float64]
    far: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    index: npt.NDArray[np.int64]
    rule: str


def _check_fars(fars: Sequence[float] | npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.atleast_1d(np.asarray(fars, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"fars must be a non-empty 1-D sequence, got {fars!r}")
    bad = arr[~((arr > 0) & (arr < 1))]
    if bad.size:
        raise InputError(f"FAR target {float(bad[0])} is outside (0, 1)")
    return np.ascontiguousarray(arr)


def roc(labels: npt.ArrayLike, scores: npt.ArrayLike, drop_intermediate: bool = True) -> Roc:
    """The ROC of genuine (1) / impostor (0) ``labels`` against ``scores`` as a :class:`Roc`.

    Args:
        labels: (N,) 0/1 integers or booleans.
        scores: (N,) float32 or float64 similarity scores (higher = more similar), finite.
        drop_intermediate: drop collinear points, as sklearn does by default.
    """
    y = as_labels(labels, "labels")
    s = as_scores(scores, "scores", n=y.shape[0], check_finite=False)  # checked in Rust
    fpr, tpr, thr, fps, tps = _core.roc_curve(y, s, bool(drop_intermediate))
    return Roc(fpr, tpr, thr, fps, tps, int(tps[-1]), int(fps[-1]))


def roc_curve(
    labels: npt.ArrayLike, scores: npt.ArrayLike, drop_intermediate: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], np.ndarray]:
    """``(fpr, tpr, thresholds)`` exactly as ``sklearn.metrics.roc_curve(labels, scores)``.

    Args:
        labels: (N,) 0/1 integers or booleans; both classes must be present.
        scores: (N,) float32 or float64, finite.
        drop_intermediate: drop collinear points (sklearn's default).

    Returns:
        fpr (K,) float64, tpr (K,) float64, thresholds (K,) float64 with
        ``thresholds[0] = +inf``; thresholds decrease.
    """
    r = roc(labels, scores, drop_intermediate)
    return r.fpr, r.tpr, np.asarray(r.thresholds, dtype=np.float64)


def auc(fpr: npt.ArrayLike, tpr: npt.ArrayLike) -> float:
    """Trapezoid area under a ROC with non-decreasing ``fpr`` (``sklearn.metrics.auc``)."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _pick(r: Roc, fars: npt.NDArray[np.float64], rule: str) -> FarPoints:
    index = _core.pick_far(r.fpr, fars, rule)
    return FarPoints(
        fars=fars,
        tar=r.tpr[index],
        far=r.fpr[index],
        thresholds=np.asarray(r.thresholds[index], dtype=np.float64),
        index=index,
        rule=rule,
    )


def tar_at_far_points(
    labels: npt.ArrayLike | Roc,
    scores: npt.ArrayLike | None = None,
    fars: Sequence[float] | npt.ArrayLike = DEFAULT_FARS,
    rule: Rule = "nearest",
) -> FarPoints:
    """TAR, actual FAR and threshold at each target FAR, as a :class:`FarPoints`.

    Pass ``labels, scores`` or a precomputed :class:`Roc` as the first argument.
    ``rule="nearest"`` is the community pick; ``rule="at_most"`` the strict one.
    """
    if rule not in ("nearest", "at_most"):
        raise InputError(f"rule must be 'nearest' or 'at_most', got {rule!r}")
    f = _check_fars(fars)
    if isinstance(labels, Roc):
        if scores is not None:
            raise InputError("pass either a Roc or labels and scores, not both")
        r = labels
        return _pick(r, f, rule)
    if scores is None:
        raise InputError("scores is required when labels is not a Roc")
    # the picks on the exact beginning of the curve, without handing the curve to Python
    y = as_labels(labels, "labels")
    s = as_scores(scores, "scores", n=y.shape[0], check_finite=False)  # checked in Rust
    index, far, tar, thresholds = _core.tar_at_far_points(y, s, f, rule)
    return FarPoints(fars=f, tar=tar, far=far, thresholds=thresholds, index=index, rule=rule)


def tar_at_far(
    labels: npt.ArrayLike,
    scores: npt.ArrayLike,
    fars: Sequence[float] | npt.ArrayLike = DEFAULT_FARS,
    rule: Rule = "nearest",
) -> npt.NDArray[np.float64]:
    """TAR (a fraction) at each target FAR; float64 array aligned with ``fars``.

    Args:
        labels: (N,) 0/1 genuine/impostor labels.
        scores: (N,) similarity scores.
        fars: target FARs, each in (0, 1).
        rule: ``"nearest"`` (insightface's pick on sklearn's ROC: the point whose FPR is nearest the
            target, ties to the larger TPR; it may exceed the target) or ``"at_most"`` (the largest
            TPR with FPR <= target).

    Thresholds and actual FARs: :func:`tar_at_far_points`.
    """
    return tar_at_far_points(labels, scores, fars, rule).tar


# --------------------------------------------------------------------------------------------
# LFW-style k-fold protocol


@dataclass(frozen=True)
class KFoldResult:
    """Result of :func:`kfold_accuracy` (insightface ``verification.py`` semantics).

    Attributes:
        accuracies: (n_folds,) float64 accuracy of each held-out fold.
        mean, std: mean and population std (``np.std``) of ``accuracies``.
        thresholds: (n_folds,) float64 squared-distance threshold chosen on the training folds.
        val: (n_folds,) float64 VAL (TAR) at the FAR target on each held-out fold.
        far: (n_folds,) float64 actual FAR of each fold at its VAL threshold.
        val_mean, val_std, far_mean: their summaries.
        val_thresholds: (n_folds,) float64 thresholds interpolated for the FAR target.
        far_target: the FAR of the VAL metric (1e-3).
    """

    accuracies: npt.NDArray[np.float64]
    mean: float
    std: float
    thresholds: npt.NDArray[np.float64]
    val: npt.NDArray[np.float64]
    far: npt.NDArray[np.float64]
    val_mean: float
    val_std: float
    far_mean: float
    val_thresholds: npt.NDArray[np.float64]
    far_target: float
    extra: dict[str, Any] = field(default_factory=dict)


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    # sklearn.preprocessing.normalize(x) for dense input: einsum norms, zeros left as they are.
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    norms[norms == 0.0] = 1.0
    return x / norms[:, np.newaxis]


def _fold_bounds(n: int, n_folds: int) -> list[tuple[int, int]]:
    # sklearn KFold(n_splits, shuffle=False): contiguous folds, the first n % k one larger.
    sizes = np.full(n_folds, n // n_folds, dtype=np.int64)
    sizes[: n % n_folds] += 1
    stops = np.cumsum(sizes)
    return [(int(s - z), int(s)) for s, z in zip(stops, sizes)]


def _interp_threshold(far_train: np.ndarray, thresholds: np.ndarray, target: float) -> float:
    """Threshold where the training FAR curve reaches ``target``, by linear interpolation.

    FAR(t) is non-decreasing in t and often flat (repeated values), where the community code's
    ``interp1d(far, thresholds, kind="slinear")`` raises on current scipy ("Expect x to not have
    duplicates"). We interpolate between the last grid point whose FAR is below the target and
    the first that reaches it, which is exactly ``interp1d(far, thresholds, kind="linear")``
    (searchsorted-based, accepts repeats) and equals ``slinear`` wherever that one works.
    """
    if float(np.max(far_train)) < target:
        return 0.0
    hi = int(np.argmax(far_train >= target))  # first point that reaches the target
    if hi == 0 or far_train[hi] == target:
        return float(thresholds[hi])
    lo = hi - 1
    f0, f1 = far_train[lo], far_train[hi]
    t0, t1 = thresholds[lo], thresholds[hi]
    return float(t0 + (target - f0) * (t1 - t0) / (f1 - f0))


def kfold_accuracy(
    emb1: npt.ArrayLike,
    emb2: npt.ArrayLike,
    issame: npt.ArrayLike,
    n_folds: int = 10,
    *,
    normalize: bool = True,
    far_target: float = 1e-3,
) -> KFoldResult:
    """The LFW ``.bin`` protocol (docs/protocols.md §5): k-fold accuracy and VAL@FAR.

    Distance = squared Euclidean between the (L2-normalised) embeddings of each pair; "same"
    when distance < threshold. On the k-1 training folds the threshold in 0, 0.01, ..., 3.99 with
    the best accuracy (first maximum) is chosen and applied to the held-out fold; folds are
    contiguous (no shuffle). VAL uses thresholds 0..4 step 0.001 and interpolates the training
    FAR curve to ``far_target`` (see :func:`_interp_threshold` for how repeated FAR values are
    handled robustly).

    Args:
        emb1, emb2: (N, D) float embeddings of the two faces of each pair (image + flip summed).
        issame: (N,) booleans, True for genuine pairs.
        n_folds: number of folds (>= 2).
        normalize: L2-normalise the embeddings first, as the community code does.
        far_target: FAR of the VAL metric.
    """
    e1 = as_features(emb1, "emb1")
    e2 = as_features(emb2, "emb2")
    if e1.shape != e2.shape:
        raise InputError(f"emb1 has shape {e1.shape} but emb2 has {e2.shape}")
    y = as_labels(issame, "issame", n=e1.shape[0])
    check_same_length(emb1=e1, issame=y)
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise InputError(f"n_folds must be an integer >= 2, got {n_folds}")
    n = e1.shape[0]
    if n < n_folds:
        raise InputError(f"{n} pairs cannot be split into {n_folds} folds")
    if not (0.0 < far_target < 1.0):
        raise InputError(f"far_target {far_target} is outside (0, 1)")
    for name, emb in (("emb1", e1), ("emb2", e2)):
        if not np.isfinite(emb).all():
            raise InputError(f"{name} contains NaN or infinite values")
    if y.min() == y.max():
        raise InputError("issame holds a single class; accuracy and VAL need genuine and impostor pairs")
    if normalize:
        e1, e2 = _normalize_rows(e1), _normalize_rows(e2)
    dist = np.sum(np.square(np.subtract(e1, e2)), 1).astype(np.float64)

    acc_grid = np.arange(0, 4, 0.01)
    val_grid = np.arange(0, 4, 0.001)
    bounds = _fold_bounds(n, n_folds)
    acc_counts, val_counts = [], []
    for s, e in bounds:
        acc_counts.append(_core.count_below(dist[s:e], y[s:e], acc_grid))
        val_counts.append(_core.count_below(dist[s:e], y[s:e], val_grid))
    acc_tot = [sum(c[i].astype(np.int64) for c in acc_counts) for i in (0, 1)]
    val_tot = [sum(c[i].astype(np.int64) for c in val_counts) for i in (0, 1)]
    n_neg_all = int(n - y.sum())

    accuracies, best, vals, fars, val_thr = [], [], [], [], []
    for k, (s, e) in enumerate(bounds):
        n_test = e - s
        pos_test = int(y[s:e].sum())
        neg_test = n_test - pos_test
        neg_train = n_neg_all - neg_test
        # accuracy on the training folds: tp + tn = pos below + (negatives not below)
        tp = acc_tot[0] - acc_counts[k][0].astype(np.int64)
        fp = acc_tot[1] - acc_counts[k][1].astype(np.int64)
        correct_train = tp + (neg_train - fp)
        b = int(np.argmax(correct_train))
        best.append(acc_grid[b])
        tp_t = int(acc_counts[k][0][b])
        fp_t = int(acc_counts[k][1][b])
        accuracies.append(float(tp_t + (neg_test - fp_t)) / n_test)
        # VAL@FAR
        fa_train = (val_tot[1] - val_counts[k][1].astype(np.int64)).astype(np.float64)
        far_train = fa_train / neg_train if neg_train else np.zeros_like(fa_train)
        thr = _interp_threshold(far_train, val_grid, far_target)
        val_thr.append(thr)
        ta, fa = _core.count_below(dist[s:e], y[s:e], np.array([thr]))
        vals.append(float(ta[0]) / pos_test if pos_test else float("nan"))
        fars.append(float(fa[0]) / neg_test if neg_test else float("nan"))

    acc = np.asarray(accuracies)
    val = np.asarray(vals)
    far = np.asarray(fars)
    return KFoldResult(
        accuracies=acc,
        mean=float(np.mean(acc)),
        std=float(np.std(acc)),
        thresholds=np.asarray(best),
        val=val,
        far=far,
        val_mean=float(np.mean(val)),
        val_std=float(np.std(val)),
        far_mean=float(np.mean(far)),
        val_thresholds=np.asarray(val_thr),
        far_target=far_target,
    )
