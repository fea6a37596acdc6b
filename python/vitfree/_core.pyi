"""Type stubs for vitfree's native module (Rust, PyO3). Private: use vitfree.ijb / vitfree.metrics.

All functions take C-contiguous arrays of the dtypes below (float32 or float64 where the
``_Float`` type variable stands, one binding for both), release the GIL and run on vitfree's
thread pool. Bad values, shapes and lengths raise ValueError, wrong dtypes TypeError, and a
panic in Rust raises RuntimeError.
"""

from typing import TypeVar

import numpy as np
import numpy.typing as npt

_Float = TypeVar("_Float", np.float32, np.float64)

__all__ = [
    "__version__",
    "aggregate_templates",
    "count_below",
    "get_num_threads",
    "pick_far",
    "tar_at_far_points",
    "roc_curve",
    "roc_prefix",
    "score_pairs",
    "set_num_threads",
]
__version__: str

def aggregate_templates(
    feats: npt.NDArray[_Float],
    templates: npt.NDArray[np.int64],
    medias: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64] | None = None,
    flip: npt.NDArray[_Float] | None = None,
    normalize_images: bool = False,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """(N, D) float32/float64 image features -> ((T, D) unit template features, (T,) sorted ids).

    flip must have feats' shape and dtype. An all-zero image (features and flip exactly 0) adds
    nothing, with or without normalize_images. Raises TypeError (dtype), ValueError (shapes,
    lengths, NaN/inf, a template summing to zero).
    """

def score_pairs(
    template_feats: npt.NDArray[np.float32],
    template_ids: npt.NDArray[np.int64],
    p1: npt.NDArray[np.int64],
    p2: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32]:
    """(P,) cosine scores of template-id pairs; template_ids sorted ascending and unique.

    Raises ValueError for a template row with NaN/inf values (row and id named), an unknown
    pair id, unsorted template_ids or mismatched lengths.
    """

def roc_curve(
    labels: npt.NDArray[np.uint8], scores: npt.NDArray[_Float], drop_intermediate: bool = True
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[_Float],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
]:
    """sklearn's ROC: (fpr, tpr, thresholds in scores' dtype with +inf first, fps counts, tps counts)."""

def roc_prefix(
    labels: npt.NDArray[np.uint8], scores: npt.NDArray[_Float], max_far: float
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[_Float],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
]:
    """The exact first points of the drop_intermediate ROC, past FPR max_far (TAR@FAR only)."""

def pick_far(
    fpr: npt.NDArray[np.float64], fars: npt.NDArray[np.float64], rule: str
) -> npt.NDArray[np.int64]:
    """Index of the ROC point picked for each FAR ('nearest' or 'at_most')."""

def tar_at_far_points(
    labels: npt.NDArray[np.uint8], scores: npt.NDArray[np.float32] | npt.NDArray[np.float64], fars: npt.NDArray[np.float64], rule: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(index, fpr, tpr, thresholds) of the ROC point picked for each FAR, without the curve."""

def count_below(
    dist: npt.NDArray[np.float64], labels: npt.NDArray[np.uint8], thresholds: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """For each threshold: (# genuine with dist < t, # impostor with dist < t)."""

def set_num_threads(n: int) -> None:
    """Threads used by the kernels (0 = default: VITFREE_NUM_THREADS or all cores)."""

def get_num_threads() -> int:
    """Threads the kernels use now."""
