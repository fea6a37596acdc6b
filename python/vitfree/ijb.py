"""IJB-B / IJB-C 1:1 verification from image features (docs/protocols.md §3).

The community pipeline ("N1D1F2" in insightface's ``eval_ijbc.py``), in vitfree's Rust core:

1. per image: feature (+ feature of the flipped image), optionally L2-normalised, times the
   detector score;
2. per template: images of one media averaged, media vectors summed, the sum L2-normalised
   (:func:`aggregate_templates`);
3. per pair: cosine of the two template vectors (:func:`score_pairs`);
4. sklearn's ROC and TAR at each target FAR (:mod:`vitfree.metrics`).

:func:`evaluate_verification` runs all four. Nothing materialises a pairs x dim matrix and the
inputs are read in place (float32/float64 C-contiguous arrays are not copied).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vitfree import _core
from vitfree._checks import as_features, as_ids, as_labels, as_weights
from vitfree.errors import InputError
from vitfree.metrics import DEFAULT_FARS, FarPoints, Roc, _check_fars, roc, tar_at_far_points

__all__ = [
    "VerificationResult",
    "aggregate_templates",
    "evaluate_verification",
    "format_far",
    "score_pairs",
]


def aggregate_templates(
    feats: npt.ArrayLike,
    templates: npt.ArrayLike,
    medias: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    *,
    flip_feats: npt.ArrayLike | None = None,
    normalize_images: bool = False,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Aggregate image features into L2-normalised template features.

    Per image ``v = feats[i] (+ flip_feats[i])``, divided by its norm when ``normalize_images``,
    times ``weights[i]`` (the detector score) when given. Within a template, the images of one
    media are averaged and the media vectors summed; the sum is L2-normalised. Sums run in
    float64 (as the community code's float64 template array).

    An image whose features (and ``flip_feats``, when given) are exactly all zeros, which is
    what ``--skip-bad`` writes for an image that cannot be read, contributes the zero vector
    also with ``normalize_images`` (where the community code would divide by its zero norm and
    get NaN): it adds nothing to its media's sum but still counts in that media's mean, exactly
    as it does without normalisation. A template whose images are all zero still raises (the
    zero-template error below), and NaN/inf values, in any row, stay an error.

    Args:
        feats: (N, D) float32 or float64 image features (not copied when C-contiguous).
        templates: (N,) integer template id of each image (sparse ids, any order); floats
            must be whole numbers inside the int64 range (others are refused, not cast).
        medias: (N,) integer media id of each image (same rule).
        weights: optional (N,) per-image weights (detector scores).
        flip_feats: optional (N, D) features of the horizontally flipped images, added to ``feats``.
        normalize_images: L2-normalise each image vector before weighting.

    Returns:
        ``(template_feats, template_ids)``: float32 (T, D) unit rows and the sorted unique
        template ids, int64 (T,). ``template_feats`` is a C-contiguous, writeable view that
        starts on a 64-byte boundary (its owner is its ``.base``): :func:`score_pairs` reads
        its rows fastest that way.

    Raises:
        TypeError: wrong dtypes. ValueError: wrong shapes, length mismatches, NaN/inf values,
        ids beyond int64, a template whose vector sums to zero (named in the message), or,
        with ``normalize_images``, an image of zero norm that is not all zeros (e.g. flip
        features cancelling the features).
    """
    f = as_features(feats, "feats")
    n = f.shape[0]
    t = as_ids(templates, "templates", n=n)
    m = as_ids(medias, "medias", n=n)
    w = None if weights is None else as_weights(weights, "weights", n)
    fl = None
    if flip_feats is not None:
        fl = as_features(flip_feats, "flip_feats")
        if fl.shape != f.shape:
            raise InputError(f"flip_feats has shape {fl.shape} but feats has {f.shape}")
        if fl.dtype != f.dtype:
            fl = fl.astype(f.dtype)
    return _core.aggregate_templates(f, t, m, w, fl, bool(normalize_images))


def score_pairs(
    template_feats: npt.ArrayLike,
    template_ids: npt.ArrayLike,
    p1: npt.ArrayLike,
    p2: npt.ArrayLike,
) -> npt.NDArray[np.float32]:
    """Cosine score of each template pair, addressed by template id.

    Args:
        template_feats: (T, D) float32 unit template vectors (from :func:`aggregate_templates`).
        template_ids: (T,) int64 ids of the rows, sorted ascending and unique.
        p1, p2: (P,) integer template ids of the two sides of each pair.

    Returns:
        (P,) float32 dot products.

    Raises:
        ValueError: a row of ``template_feats`` with NaN or infinite values (its row and
        template id named; checked once per row, not per pair), an id of ``p1``/``p2`` that
        has no row (named with its pair index), length mismatches, unsorted ``template_ids``,
        ids beyond int64.
    """
    f = as_features(template_feats, "template_feats", allow_f64=False)
    ids = as_ids(template_ids, "template_ids", n=f.shape[0])
    a = as_ids(p1, "p1")
    b = as_ids(p2, "p2", n=a.shape[0])
    return _core.score_pairs(f, ids, a, b)


def format_far(far: float) -> str:
    """``1e-04`` style column label for a FAR value."""
    return f"{far:.0e}"


@dataclass(frozen=True)
class VerificationResult:
    """Everything :func:`evaluate_verification` computes for one exit / one feature set.

    Attributes:
        nearest: TAR@FAR with the community (nearest-FPR) rule.
        at_most: TAR@FAR with the strict rule (FPR <= target).
        roc: the ROC (sklearn's points, ``drop_intermediate=True``).
        auc: area under the ROC.
        scores: (P,) float32 pair scores.
        template_feats: (T, D) float32 unit template features; template_ids: (T,) int64.
        n_images, n_templates, n_pairs, n_genuine: sizes.
    """

    nearest: FarPoints
    at_most: FarPoints
    roc: Roc
    auc: float
    scores: npt.NDArray[np.float32]
    template_feats: npt.NDArray[np.float32]
    template_ids: npt.NDArray[np.int64]
    n_images: int

    @property
    def fars(self) -> npt.NDArray[np.float64]:
        return self.nearest.fars

    @property
    def tar(self) -> npt.NDArray[np.float64]:
        """TAR at each FAR with the community rule (fraction)."""
        return self.nearest.tar

    @property
    def n_templates(self) -> int:
        return int(self.template_ids.shape[0])

    @property
    def n_pairs(self) -> int:
        return int(self.scores.shape[0])

    @property
    def n_genuine(self) -> int:
        return self.roc.n_genuine

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (TAR in percent, as the published tables)."""
        return {
            "fars": [float(f) for f in self.fars],
            "tar_nearest": [round(float(x) * 100, 4) for x in self.nearest.tar],
            "far_nearest": [float(x) for x in self.nearest.far],
            "threshold_nearest": [float(x) for x in self.nearest.thresholds],
            "tar_at_most": [round(float(x) * 100, 4) for x in self.at_most.tar],
            "threshold_at_most": [float(x) for x in self.at_most.thresholds],
            "auc": self.auc,
            "n_images": self.n_images,
            "n_templates": self.n_templates,
            "n_pairs": self.n_pairs,
            "n_genuine": self.n_genuine,
        }

    def table(self, label: str = "") -> str:
        """The TAR@FAR rows of both rules, in percent with two decimals."""
        head = f"{'':<14}" + "".join(f"{format_far(f):>9}" for f in self.fars)
        rows = [head]
        for name, pts in ((f"{label} nearest".strip(), self.nearest), (f"{label} FAR<=".strip(), self.at_most)):
            rows.append(f"{name:<14}" + "".join(f"{t * 100:>9.2f}" for t in pts.tar))
        return "\n".join(rows)


def evaluate_verification(
    img_feats: npt.ArrayLike,
    templates: npt.ArrayLike,
    medias: npt.ArrayLike,
    p1: npt.ArrayLike,
    p2: npt.ArrayLike,
    labels: npt.ArrayLike,
    faceness: npt.ArrayLike | None = None,
    flip_feats: npt.ArrayLike | None = None,
    normalize_images: bool = False,
    fars: Sequence[float] = DEFAULT_FARS,
) -> VerificationResult:
    """The whole IJB 1:1 pipeline from image features to TAR@FAR (community defaults).

    With ``flip_feats`` and ``faceness`` given and ``normalize_images=False`` this is
    insightface's default setting (flip test, norms kept, detector score as weight).

    Args:
        img_feats: (N, D) float32/float64 raw image embeddings, rows in meta-file order.
        templates, medias: (N,) template and media id of each image.
        p1, p2: (P,) template ids of each pair; labels: (P,) 1 genuine / 0 impostor.
        faceness: optional (N,) detector scores, multiplied into the image vectors.
        flip_feats: optional (N, D) embeddings of the flipped images (added to ``img_feats``).
        normalize_images: L2-normalise each image vector first.
        fars: target FARs of the table.

    Returns:
        A :class:`VerificationResult` with both TAR@FAR rules, the ROC, AUC and the scores.
    """
    f = _check_fars(fars)
    y = as_labels(labels, "labels")
    a = as_ids(p1, "p1", n=y.shape[0])
    b = as_ids(p2, "p2", n=y.shape[0])
    tf, tids = aggregate_templates(
        img_feats, templates, medias, faceness, flip_feats=flip_feats, normalize_images=normalize_images
    )
    scores = _core.score_pairs(tf, tids, a, b)
    r = roc(y, scores, drop_intermediate=True)
    return VerificationResult(
        nearest=tar_at_far_points(r, fars=f, rule="nearest"),
        at_most=tar_at_far_points(r, fars=f, rule="at_most"),
        roc=r,
        auc=r.auc(),
        scores=scores,
        template_feats=tf,
        template_ids=tids,
        n_images=int(np.shape(img_feats)[0]),
    )
