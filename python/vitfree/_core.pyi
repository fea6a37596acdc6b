"""Type stubs for vitfree's native module (Rust, PyO3). Private: use vitfree.ijb / vitfree.metrics.

All functions take C-contiguous arrays of exactly the dtypes below, release the GIL and run on
vitfree's thread pool; errors raise ValueError, and a panic in Rust raises RuntimeError.
"""

import numpy as np
import numpy.typing as npt

__all__ = [
    "__version__",
    "aggregate_templates_f32",
    "aggregate_templates_f64",
    "count_below",
    "get_num_threads",
    "pick_far",
    "roc_curve_f32",
    "roc_curve_f64",
    "roc_prefix_f32",
    "roc_prefix_f64",
    "score_pairs",
    "set_num_threads",
]
__version__: str

def aggregate_templates_f32(
    feats: npt.NDArray[np.float32],
    templates: npt.NDArray[np.int64],
    medias: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64] | None = None,
    flip: npt.NDArray[np.float32] | None = None,
    normalize_images: bool = False,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """(N, D) image features -> ((T, D) unit template features, (T,) sorted template ids)."""

def aggregate_templates_f64(
    feats: npt.NDArray[np.float64],
    templates: npt.NDArray[np.int64],
    medias: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64] | None = None,
    flip: npt.NDArray[np.float64] | None = None,
    normalize_images: bool = False,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """As aggregate_templates_f32 for float64 features."""

def score_pairs(
    template_feats: npt.NDArray[np.float32],
    template_ids: npt.NDArray[np.int64],
    p1: npt.NDArray[np.int64],
    p2: npt.NDArray[np.int64],
) -> npt.NDArray[np.float32]:
    """(P,) cosine scores of template-id pairs; template_ids sorted ascending and unique."""

def roc_curve_f32(
    labels: npt.NDArray[np.uint8], scores: npt.NDArray[np.float32], drop_intermediate: bool = True
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float32],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
]:
    """sklearn's ROC: (fpr, tpr, thresholds with +inf first, fps counts, tps counts)."""

def roc_curve_f64(
    labels: npt.NDArray[np.uint8], scores: npt.NDArray[np.float64], drop_intermediate: bool = True
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
]:
    """As roc_curve_f32 for float64 scores."""

def roc_prefix_f32(
    labels: npt.NDArray[np.uint8], scores: npt.NDArray[np.float32], max_far: float
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float32],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
]:
    """The exact first points of the drop_intermediate ROC, past FPR max_far (TAR@FAR only)."""

def roc_prefix_f64(
    labels: npt.NDArray[np.uint8], scores: npt.NDArray[np.float64], max_far: float
) -> tuple[
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.float64],
    npt.NDArray[np.uint64],
    npt.NDArray[np.uint64],
]:
    """As roc_prefix_f32 for float64 scores."""

def pick_far(
    fpr: npt.NDArray[np.float64], fars: npt.NDArray[np.float64], rule: str
) -> npt.NDArray[np.int64]:
    """Index of the ROC point picked for each FAR ('nearest' or 'at_most')."""

def count_below(
    dist: npt.NDArray[np.float64], labels: npt.NDArray[np.uint8], thresholds: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    """For each threshold: (# genuine with dist < t, # impostor with dist < t)."""

def set_num_threads(n: int) -> None:
    """Threads used by the kernels (0 = default: VITFREE_NUM_THREADS or all cores)."""

def get_num_threads() -> int:
    """Threads the kernels use now."""
