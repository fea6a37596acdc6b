"""5-point alignment (docs/protocols.md §3) against independent references.

References: a similarity transform built by hand and recovered exactly; the closed-form
least-squares solution of the 4-parameter similarity model ``[[a, -b, tx], [b, a, ty]]`` by
``np.linalg.lstsq`` (the same optimum as Umeyama without reflection); a direct numpy bilinear
warp with zero border for the pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from vitfree.data.align import ARCFACE_TEMPLATE, align_face, estimate_similarity

TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def similarity(scale: float, theta: float, tx: float, ty: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def lstsq_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least squares over (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty."""
    n = src.shape[0]
    a = np.zeros((2 * n, 4))
    a[0::2] = np.c_[src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)]
    a[1::2] = np.c_[src[:, 1], src[:, 0], np.zeros(n), np.ones(n)]
    sol = np.linalg.lstsq(a, dst.reshape(-1), rcond=None)[0]
    p, q, tx, ty = sol
    return np.array([[p, -q, tx], [q, p, ty]])


def bilinear_warp_reference(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """out(x, y) = img(M^-1 (x, y)), bilinear, pixels outside the image are 0 (float64)."""
    full = np.vstack([m, [0, 0, 1]])
    inv = np.linalg.inv(full)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    x0 = np.floor(sx).astype(int)
    y0 = np.floor(sy).astype(int)
    fx = sx - x0
    fy = sy - y0
    h, w = img.shape[:2]
    out = np.zeros((size, size, img.shape[2]))
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xx = x0 + dx
            yy = y0 + dy
            inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
            vals = np.zeros((size, size, img.shape[2]))
            vals[inside] = img[yy[inside], xx[inside]]
            out += (wx * wy)[..., None] * vals
    return out


def test_template_constant_matches_protocol() -> None:
    np.testing.assert_array_equal(ARCFACE_TEMPLATE, TEMPLATE)
    assert not ARCFACE_TEMPLATE.flags.writeable


def test_recovers_a_known_similarity_exactly() -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, size=(5, 2))
    m = similarity(0.7, np.radians(23.0), -14.5, 31.25)
    est = estimate_similarity(src, apply(m, src))
    np.testing.assert_allclose(est, m, rtol=0, atol=1e-10)


def test_identity_on_the_template() -> None:
    est = estimate_similarity(TEMPLATE, TEMPLATE)
    np.testing.assert_allclose(est, [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_hand_computed_two_points() -> None:
    # (0,0)->(1,1) and (1,0)->(1,3): scale 2, rotation +90 degrees, translation (1,1).
    est = estimate_similarity([[0, 0], [1, 0]], [[1, 1], [1, 3]])
    np.testing.assert_allclose(est, [[0, -2, 1], [2, 0, 1]], atol=1e-12)


def test_reflection_is_not_allowed() -> None:
    # dst is a mirror image of src: the best proper similarity has det > 0 and equals lstsq.
    rng = np.random.default_rng(2)
    src = rng.uniform(0, 100, size=(5, 2))
    dst = src * [-1, 1] + [120, 0]
    est = estimate_similarity(src, dst)
    assert np.linalg.det(est[:, :2]) >= 0
    np.testing.assert_allclose(est, lstsq_similarity(src, dst), atol=1e-9)


def test_noisy_landmarks_match_lstsq() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        lmk = rng.uniform(20, 180, size=(5, 2))
        np.testing.assert_allclose(
            estimate_similarity(lmk, TEMPLATE), lstsq_similarity(lmk, TEMPLATE), atol=1e-9
        )


finite = st.floats(-500, 500, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    src=arrays(np.float64, st.tuples(st.integers(2, 8), st.just(2)), elements=finite),
    data=st.data(),
)
def test_hypothesis_matches_lstsq(src: np.ndarray, data: st.DataObject) -> None:
    dst = data.draw(arrays(np.float64, src.shape, elements=finite))
    # Point sets too close to a single point are ill-conditioned for both methods.
    spread = np.ptp(src, axis=0).max()
    if spread < 1e-3:
        return
    est = estimate_similarity(src, dst)
    ref = lstsq_similarity(src, dst)
    resid_est = np.sum((apply(est, src) - dst) ** 2)
    resid_ref = np.sum((apply(ref, src) - dst) ** 2)
    # Same optimum: equal residuals (the minimiser is unique when src is not a single point).
    assert resid_est <= resid_ref * (1 + 1e-9) + 1e-6
    np.testing.assert_allclose(est, ref, atol=1e-6 * max(1.0, np.abs(ref).max()), rtol=1e-6)


def test_estimate_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="src must have shape"):
        estimate_similarity(np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="same shape"):
        estimate_similarity(np.zeros((4, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        estimate_similarity(np.full((5, 2), np.nan), TEMPLATE)


def _face(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 3) % 256, (yy * 5) % 256, ((xx + yy) * 2) % 256], axis=-1)
    return (img + rng.integers(0, 20, size=img.shape)).clip(0, 255).astype(np.uint8)


def test_align_face_matches_numpy_bilinear_warp_and_is_rgb() -> None:
    rng = np.random.default_rng(4)
    img = _face(rng, 180, 150)
    m_true = similarity(1.6, np.radians(12), 20, 15)
    lmk = apply(m_true, TEMPLATE)  # the face as it sits in the loose crop
    out = align_face(img, lmk)
    assert out.shape == (112, 112, 3) and out.dtype == np.uint8
    m = estimate_similarity(lmk, TEMPLATE)
    ref = bilinear_warp_reference(img, m, 112)[..., ::-1]  # BGR -> RGB
    diff = np.abs(out.astype(np.float64) - ref)
    # cv2 interpolates with 5-bit fixed-point weights: at most ~1 grey level off, rarely 2.
    assert diff.max() <= 2.0
    assert diff.mean() < 0.5


def test_align_face_border_is_zero_and_landmarks_land_on_template() -> None:
    img = np.full((60, 60, 3), 200, np.uint8)
    img[:, :, 0] = 10  # blue channel small: after BGR->RGB it is the last channel
    # Crop pixel (x, y) samples image pixel (x/2 - 10, y/2 - 10): the top-left corner of the
    # crop comes from outside the image.
    lmk = TEMPLATE * 0.5 - 10
    out = align_face(img, lmk)
    assert out[0, 0].tolist() == [0, 0, 0]
    assert out[:18, :18].max() == 0
    assert out[56, 56].tolist() == [200, 200, 10]
    assert out[111, 111].tolist() == [200, 200, 10]
    m = estimate_similarity(lmk, TEMPLATE)
    np.testing.assert_allclose(apply(m, lmk), TEMPLATE, atol=1e-9)


def test_align_face_matches_cv2_pipeline_of_insightface() -> None:
    # insightface norm_crop: M from the similarity estimate, cv2.warpAffine(..., borderValue=0).
    rng = np.random.default_rng(5)
    img = _face(rng, 200, 200)
    lmk = apply(similarity(1.3, np.radians(-8), 30, 25), TEMPLATE) + rng.normal(0, 1, (5, 2))
    m = lstsq_similarity(lmk, TEMPLATE)
    ref = cv2.cvtColor(cv2.warpAffine(img, m, (112, 112), borderValue=0.0), cv2.COLOR_BGR2RGB)
    out = align_face(img, lmk.astype(np.float32))
    # The two estimates agree to ~1e-9, so pixels agree except where a weight rounds across.
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


def test_align_face_grayscale_and_errors() -> None:
    gray = np.full((100, 100), 77, np.uint8)
    out = align_face(gray, TEMPLATE)
    assert out.shape == (112, 112, 3) and out[56, 56].tolist() == [77, 77, 77]
    with pytest.raises(TypeError, match="uint8"):
        align_face(np.zeros((100, 100, 3), np.float32), TEMPLATE)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        align_face(np.zeros((100, 100, 4), np.uint8), TEMPLATE)
    with pytest.raises(ValueError, match="landmarks must have shape"):
        align_face(np.zeros((100, 100, 3), np.uint8), TEMPLATE[:4])
    with pytest.raises(ValueError, match="degenerate"):
        align_face(np.zeros((100, 100, 3), np.uint8), np.ones((5, 2)))
