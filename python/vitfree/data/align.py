"""Five-point face alignment to the 112x112 ArcFace template (docs/protocols.md §3).

The community pipeline (insightface ``face_align.norm_crop``) estimates a least-squares
similarity transform with scikit-image's ``SimilarityTransform.estimate`` (Umeyama's method)
from the five detected landmarks to a fixed template, then warps with
``cv2.warpAffine(img, M, (112, 112), borderValue=0.0)`` (bilinear). This module reproduces
that exactly in numpy, so vitfree needs no scikit-image.

Precision (docs/reproduce.md).  The community scripts pass float32 landmarks and a float32
template, and scikit-image then estimates the transform with float32 intermediates (the
means, the cross-covariance, its SVD and the variance) and only assembles the matrix in
float64.  ``dtype="float32"`` repeats that arithmetic step by step, so the crops are
bit-identical to the scripts'; ``dtype="float64"`` (the default of :func:`align_face`)
estimates in float64 throughout.  The two differ by one grey level at about one pixel value
in 25,000.  The scripts also write their templates in float32 (:data:`TEMPLATES`): arcface_torch
``eval_ijbc.py`` as ``[30.2946, ...] + 8`` and ``ijb_evals.py`` with ``70.729904``, which give
the same float32 values; the last x differs from ``float32(70.7299)`` by 7.6e-6.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "ALIGNED_SIZE",
    "ALIGN_DTYPES",
    "ARCFACE_TEMPLATE",
    "EVAL_IJBC_TEMPLATE",
    "IJB_EVALS_TEMPLATE",
    "MIN_INSIDE",
    "TEMPLATES",
    "align_face",
    "estimate_similarity",
    "landmark_problems",
]

#: Least fraction of the aligned crop that must come from inside the image.
MIN_INSIDE = 0.5

#: Side of the aligned face in pixels.
ALIGNED_SIZE: int = 112

#: Destination landmarks (x, y) in the 112x112 crop: left eye, right eye, nose tip,
#: left mouth corner, right mouth corner. float64, shape (5, 2).
ARCFACE_TEMPLATE: npt.NDArray[np.float64] = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
ARCFACE_TEMPLATE.setflags(write=False)


def _eval_ijbc_template() -> npt.NDArray[np.float32]:
    # arcface_torch eval_ijbc.py writes the 96x112 template in float32 and shifts x by 8 in
    # float32: 62.7299 + 8 rounds to 70.72990417..., not to float32(70.7299).
    src = np.array(
        [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
         [62.7299, 92.2041]],
        dtype=np.float32,
    )  # fmt: skip
    src[:, 0] += np.float32(8.0)
    return src


#: arcface_torch ``eval_ijbc.py``'s destination points: float32, shape (5, 2).
EVAL_IJBC_TEMPLATE: npt.NDArray[np.float32] = _eval_ijbc_template()
EVAL_IJBC_TEMPLATE.setflags(write=False)

#: insightface ``_evaluation_/ijb/ijb_evals.py``'s destination points as it writes them
#: (``70.729904``): float32, shape (5, 2); equal to :data:`EVAL_IJBC_TEMPLATE` value for value.
IJB_EVALS_TEMPLATE: npt.NDArray[np.float32] = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
     [70.729904, 92.2041]],
    dtype=np.float32,
)  # fmt: skip
IJB_EVALS_TEMPLATE.setflags(write=False)

#: Templates by name: ``"arcface"`` (docs/protocols.md §3.3 values, float64), ``"eval_ijbc"``
#: and ``"ijb_evals"`` (float32, as each script writes them).
TEMPLATES: dict[str, npt.NDArray[np.floating]] = {
    "arcface": ARCFACE_TEMPLATE,
    "eval_ijbc": EVAL_IJBC_TEMPLATE,
    "ijb_evals": IJB_EVALS_TEMPLATE,
}

#: Arithmetic of the transform estimate: ``"float64"`` throughout, or ``"float32"`` as
#: scikit-image computes it from float32 points (what the community scripts get).
ALIGN_DTYPES = ("float32", "float64")


def _as_points(name: str, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N, 2) with N >= 2, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite coordinates")
    return a


def _check_dtype(dtype: str) -> str:
    d = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    if d not in ALIGN_DTYPES:
        raise ValueError(f"alignment dtype must be 'float32' or 'float64', got {dtype!r}")
    return d


def _umeyama_float32(src: np.ndarray, dst: np.ndarray) -> npt.NDArray[np.float64]:
    """scikit-image's ``SimilarityTransform`` estimate from float32 points, operation for
    operation (NumPy >= 2 promotion rules): float32 means, centred points, cross-covariance,
    determinant, SVD and variance; the matrix assembled in float64 (``d`` and ``T`` are
    float64), so mixed float32/float64 products follow NumPy's promotion.  Returns the
    (3, 3) float64 matrix, NaN when the points give no transform (rank 0)."""
    num, dim = src.shape
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    src_demean = src - src_mean
    dst_demean = dst - dst_mean
    cov = dst_demean.T @ src_demean / num  # float32
    d = np.ones((dim,), dtype=np.float64)
    if np.linalg.det(cov) < 0:
        d[dim - 1] = -1
    t = np.eye(dim + 1, dtype=np.float64)
    u, s, v = np.linalg.svd(cov)  # float32 LAPACK
    # the rank from the singular values, with float64's eps as scikit-image does
    tol = s.max() * np.max(cov.shape) * np.finfo(float).eps
    rank = np.count_nonzero(s > tol)
    if rank == 0:
        return np.full((dim + 1, dim + 1), np.nan)
    if rank == dim - 1:
        if np.linalg.det(u) * np.linalg.det(v) > 0:
            t[:dim, :dim] = u @ v
        else:
            keep = d[dim - 1]
            d[dim - 1] = -1
            t[:dim, :dim] = u @ np.diag(d) @ v
            d[dim - 1] = keep
    else:
        t[:dim, :dim] = u @ np.diag(d) @ v
    scale = 1.0 / src_demean.var(axis=0).sum() * (s @ d)  # float32 reciprocal, float64 product
    t[:dim, dim] = dst_mean - scale * (t[:dim, :dim] @ src_mean.T)
    t[:dim, :dim] *= scale
    return t


def estimate_similarity(
    src: npt.ArrayLike, dst: npt.ArrayLike, *, dtype: str = "float64"
) -> npt.NDArray[np.float64]:
    """Least-squares similarity transform mapping ``src`` points onto ``dst`` points.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point
    patterns", with scale estimation and no reflection — the algorithm behind
    ``skimage.transform.SimilarityTransform.estimate`` that the insightface alignment uses. It
    minimises ``sum_i ||s R src_i + t - dst_i||^2`` over scale ``s``, rotation ``R`` and
    translation ``t``; for non-degenerate points this equals the least-squares solution of the
    4-parameter model ``[[a, -b, tx], [b, a, ty]]``.

    Args:
        src: source points, shape (N, 2), N >= 2 (e.g. 5 detected landmarks, (x, y) pixels).
        dst: destination points, shape (N, 2) (e.g. :data:`ARCFACE_TEMPLATE`).
        dtype: ``"float64"``: the points are taken as float64 and every step is float64.
            ``"float32"``: the points are rounded to float32 and the estimate follows
            scikit-image's arithmetic on float32 arrays step by step (float32 intermediates,
            float64 assembly), so the matrix is bit-identical to
            ``SimilarityTransform.estimate(src_f32, dst_f32).params[:2]`` (NumPy >= 2;
            under NumPy 1's value-based casting the reciprocal of the variance is float64).

    Returns:
        The forward transform as a float64 (2, 3) matrix ``[s R | t]``, ready for
        ``cv2.warpAffine``. A degenerate ``src`` (all points equal) gives the zero scale with
        ``"float64"`` and NaN with ``"float32"`` (scikit-image's answer);
        :func:`align_face` rejects both.
    """
    src_a = _as_points("src", src)
    dst_a = _as_points("dst", dst)
    if src_a.shape != dst_a.shape:
        raise ValueError(
            f"src and dst must have the same shape, got {src_a.shape} and {dst_a.shape}"
        )
    if _check_dtype(dtype) == "float32":
        src32 = np.ascontiguousarray(np.asarray(src, dtype=np.float32))
        dst32 = np.ascontiguousarray(np.asarray(dst, dtype=np.float32))
        return _umeyama_float32(src32, dst32)[:2, :]
    n, dim = src_a.shape
    src_mean = src_a.mean(axis=0)
    dst_mean = dst_a.mean(axis=0)
    src_c = src_a - src_mean
    dst_c = dst_a - dst_mean

    # Eq. (38): cross-covariance; eq. (39): reflection guard.
    cov = dst_c.T @ src_c / n
    d = np.ones(dim, dtype=np.float64)
    if np.linalg.det(cov) < 0:
        d[dim - 1] = -1.0
    u, s, vt = np.linalg.svd(cov)
    rank = np.linalg.matrix_rank(cov)
    transform = np.eye(dim + 1, dtype=np.float64)
    if rank == 0:
        # All points coincide: no rotation or scale can be estimated (scikit-image returns NaN;
        # a zero scale is the least-squares optimum: every point maps to the dst centroid).
        transform[:dim, :dim] = 0.0
    elif rank == dim - 1:
        # Collinear points: the rotation is still determined up to the sign of the last axis.
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            transform[:dim, :dim] = u @ vt
        else:
            keep = d[dim - 1]
            d[dim - 1] = -1.0
            transform[:dim, :dim] = u @ np.diag(d) @ vt
            d[dim - 1] = keep
    else:
        transform[:dim, :dim] = u @ np.diag(d) @ vt

    if rank > 0:
        # Eq. (42): scale = trace(D S) / variance of src.
        src_var = src_c.var(axis=0).sum()
        scale = float(s @ d) / src_var
        transform[:dim, :dim] *= scale
    # Eq. (41): translation.
    transform[:dim, dim] = dst_mean - transform[:dim, :dim] @ src_mean
    return transform[:dim, :]


def align_face(
    img_bgr: npt.NDArray[np.uint8],
    landmarks: npt.ArrayLike,
    *,
    template: npt.ArrayLike = ARCFACE_TEMPLATE,
    size: int = ALIGNED_SIZE,
    dtype: str = "float64",
) -> npt.NDArray[np.uint8]:
    """Align one face to the ArcFace 112x112 crop, exactly as insightface's ``norm_crop``.

    Args:
        img_bgr: the loose crop as read by ``cv2.imread``: uint8, shape (H, W, 3), BGR order.
            A 2-D grayscale image (H, W) is accepted and replicated to three channels.
        landmarks: five (x, y) points in ``img_bgr`` pixels, shape (5, 2): left eye, right eye,
            nose, left mouth corner, right mouth corner.
        template: destination points, shape (5, 2), default :data:`ARCFACE_TEMPLATE`; a
            name of :data:`TEMPLATES` is accepted too.
        size: side of the output square, default 112.
        dtype: arithmetic of the transform estimate (:func:`estimate_similarity`):
            ``"float32"`` gives the community scripts' crops bit for bit (landmarks and
            template rounded to float32, as they pass them to scikit-image).

    Returns:
        The aligned face, uint8, shape (size, size, 3), **RGB** order (converted after the
        warp). Pixels mapped from outside the image are 0.
    """
    import cv2  # imported here: the IJB readers and `eval features` need no OpenCV

    img: np.ndarray = np.asarray(img_bgr)
    if img.dtype != np.uint8:
        raise TypeError(f"img_bgr must be uint8, got {img.dtype}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"img_bgr must have shape (H, W, 3), got {img.shape}")
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise ValueError(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
        template = TEMPLATES[template]
    lmk = _as_points("landmarks", landmarks)
    dst = _as_points("template", template)
    if lmk.shape != dst.shape:
        raise ValueError(f"landmarks must have shape {dst.shape}, got {lmk.shape}")
    if _check_dtype(dtype) == "float32":
        m = estimate_similarity(landmarks, template, dtype="float32")
    else:
        m = estimate_similarity(lmk, dst)
    if not np.all(np.isfinite(m)) or abs(np.linalg.det(m[:, :2])) == 0.0:
        raise ValueError(f"degenerate landmarks (all points equal?): {lmk.tolist()}")
    warped = cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
    rgb = cv2.cvtColor(warped, cv2.COLOR_BGR2RGB)
    return rgb.astype(np.uint8, copy=False)


def landmark_problems(
    landmarks: npt.ArrayLike,
    widths: npt.ArrayLike | None = None,
    heights: npt.ArrayLike | None = None,
    *,
    min_inside: float = MIN_INSIDE,
    template: npt.ArrayLike = ARCFACE_TEMPLATE,
    size: int = ALIGNED_SIZE,
) -> list[tuple[int, str]]:
    """Which 5-point landmark rows cannot give a usable aligned face, and why (vectorised).

    A row is refused when its points are not finite, coincide (all within 1 px), or are
    (nearly) collinear (the mouth lies within 1 px of the eye line: no similarity transform
    is defined), or, when the image size is known, when less than ``min_inside`` of the
    aligned crop would come from inside the image (e.g. landmarks near x=5000 on a 300 px
    crop give a black face).  The transform is the least-squares similarity of
    :func:`estimate_similarity`, in closed form for all rows at once (fast for IJB-C's 469k
    lines).

    Args:
        landmarks: (N, 5, 2) or (N, 10) points (x, y) in image pixels.
        widths, heights: (N,) image sizes in pixels; 0 = unknown (the inside test is skipped).
        min_inside: least fraction of the crop inside the image.
        template, size: the alignment target (as :func:`align_face`).

    Returns:
        ``[(row, problem), ...]`` in row order; empty when every row is usable.
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    n = pts.shape[0]
    out: dict[int, str] = {}
    finite = np.asarray(np.isfinite(pts).all(axis=(1, 2)), dtype=bool)
    for r in np.flatnonzero(~finite):
        out[int(r)] = "landmarks contain NaN or infinite coordinates"
    p = np.where(finite[:, None, None], pts, 0.0)
    spread = np.ptp(p, axis=1).max(axis=1)
    eye = p[:, 1] - p[:, 0]
    eye_len = np.hypot(eye[:, 0], eye[:, 1])
    mouth = 0.5 * (p[:, 3] + p[:, 4]) - 0.5 * (p[:, 0] + p[:, 1])
    cross = np.abs(eye[:, 0] * mouth[:, 1] - eye[:, 1] * mouth[:, 0])
    dist = np.divide(cross, eye_len, out=np.zeros(n), where=eye_len > 0)
    for r in np.flatnonzero(finite & (spread < 1.0)):
        out[int(r)] = "degenerate landmarks: the five points coincide"
    for r in np.flatnonzero(finite & (spread >= 1.0) & ((eye_len < 1.0) | (dist < 1.0))):
        out[int(r)] = "degenerate landmarks: the points are collinear (no face geometry)"
    if widths is not None and heights is not None:
        w = np.asarray(widths, dtype=np.float64).reshape(n)
        h = np.asarray(heights, dtype=np.float64).reshape(n)
        check = finite & (w > 0) & (h > 0) & ~np.isin(np.arange(n), list(out))
        frac = np.ones(n)
        idx = np.flatnonzero(check)
        if idx.size:
            frac[idx] = _inside_fraction(p[idx], w[idx], h[idx], np.asarray(template, np.float64), size)
        for r in np.flatnonzero(check & (frac < min_inside)):
            out[int(r)] = (
                f"the aligned face lies mostly outside the image ({frac[r]:.0%} of the crop "
                f"inside a {int(w[r])}x{int(h[r])} image)"
            )
    return sorted(out.items())


def _inside_fraction(
    src: np.ndarray, w: np.ndarray, h: np.ndarray, dst: np.ndarray, size: int
) -> np.ndarray:
    """Fraction of an 8x8 grid over each aligned crop that maps inside its image."""
    grid = (np.arange(8) + 0.5) * size / 8
    gu, gv = np.meshgrid(grid, grid)
    out = np.empty(src.shape[0])
    for s in range(0, src.shape[0], 65536):  # bounded memory on IJB-C
        p = src[s : s + 65536]
        pc = p - p.mean(axis=1, keepdims=True)
        dc = dst - dst.mean(axis=0)
        den = (pc**2).sum(axis=(1, 2))
        a = (pc[..., 0] * dc[:, 0] + pc[..., 1] * dc[:, 1]).sum(axis=1) / den
        b = (pc[..., 0] * dc[:, 1] - pc[..., 1] * dc[:, 0]).sum(axis=1) / den
        # forward: d = [[a, -b], [b, a]] (x - mean_p) + mean_d; invert for the crop grid
        det = a * a + b * b
        du = gu.ravel()[None, :] - dst[:, 0].mean()
        dv = gv.ravel()[None, :] - dst[:, 1].mean()
        x = (a[:, None] * du + b[:, None] * dv) / det[:, None] + p[:, :, 0].mean(axis=1)[:, None]
        y = (-b[:, None] * du + a[:, None] * dv) / det[:, None] + p[:, :, 1].mean(axis=1)[:, None]
        ws, hs = w[s : s + 65536, None], h[s : s + 65536, None]
        out[s : s + 65536] = ((x >= 0) & (x < ws) & (y >= 0) & (y < hs)).mean(axis=1)
    return out
