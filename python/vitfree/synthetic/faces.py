"""Rendered synthetic faces: 2.5D heads with exact 5-point landmarks (SYNTHETIC, not people).

Real face data sets cannot be downloaded here, so vitfree draws its own faces, to run the
whole pipeline (pixels -> 5-point alignment -> ViT -> every exit -> protocols) offline and
to train the demo model and exit heads on.

**Identities.** Identity ``i`` of seed ``s`` is a fixed set of parameters drawn from
``numpy.random.default_rng([s, i])``: head proportions, eye placement and size, brows, nose
(length, width, how far it stands out), mouth width and lips, skin tone and its texture,
hair colour and hairline, moles.  The same ``(s, i)`` always gives the same face; distinct
seeds give distinct people (a benchmark made with any seed other than the training seed
holds only unseen identities).

**Rendering with depth.** The head is an ellipsoid and the nose a second, smaller one in
front of it.  Every pixel of the loose crop casts an orthographic ray into the rotated head
(yaw, pitch, roll), finds the nearest surface, and is coloured from where it lands *on the
head*: the eyes, brows, lips, hair and marks are regions of the head's surface, so a head
turn moves and foreshortens them as a head turn does (the nose shifts against the cheek),
not as a 2D warp.  Light is Lambertian from a random direction and colour; the landmarks
(eye centres, nose tip, mouth corners) are the projections of the same 3D points, exact in
crop pixels.  Everything is vectorised numpy over the pixels (no per-pixel Python loop):
several hundred faces per second per core.

**Per-image variation** (:class:`Variation`, presets ``easy``/``medium``/``hard``): pose,
light, expression (mouth open, eyes closed), occlusion (glasses, mask, bars), blur, noise,
scale and position of the face in the loose crop, background clutter.  JPEG quality is the
writers' (:mod:`vitfree.synthetic.sets`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vitfree.errors import InputError

__all__ = [
    "PRESETS",
    "FaceRender",
    "Identity",
    "Variation",
    "aligned_faces",
    "identity",
    "render_face",
    "render_faces",
]


@dataclass(frozen=True)
class Identity:
    """The fixed parameters of one synthetic person (head units: head half-width ~ 1)."""

    head: tuple[float, float, float]  # ellipsoid semi-axes (x, y, z)
    eye_x: float  # eye centre |x|
    eye_y: float  # eye centre y (negative: above the head centre)
    eye_r: tuple[float, float]  # eye half-width, half-height
    iris: tuple[float, float, float]  # iris colour (RGB 0..1)
    brow_dy: float  # brow above the eye centre
    brow_w: float  # brow thickness
    brow_tilt: float
    brow_color: tuple[float, float, float]
    nose_y: float  # nose tip height
    nose: tuple[float, float, float]  # nose ellipsoid semi-axes (x, y, z)
    nose_out: float  # how far the nose centre stands out of the face
    mouth_y: float
    mouth_w: float  # mouth corner |x|
    lip: float  # lip half-thickness
    lip_color: tuple[float, float, float]
    skin: tuple[float, float, float]
    texture: tuple[float, ...]  # 4 phases and 2 frequencies of the skin texture
    hair: tuple[float, float, float]
    hairline: float  # y of the hairline at the centre
    hair_curve: float
    moles: tuple[tuple[float, float], ...]


def identity(seed: int, i: int) -> Identity:
    """Identity ``i`` of ``seed`` (deterministic; any non-negative integers)."""
    if seed < 0 or i < 0:
        raise InputError(f"seed and identity must be >= 0, got seed={seed}, identity={i}")
    r = np.random.default_rng([int(seed), int(i), 0x5EED])

    def n(mu: float, sd: float) -> float:
        return float(mu + sd * r.standard_normal())

    tone = r.uniform(0.25, 1.0)  # dark .. light skin
    base = (0.35 + 0.6 * tone, 0.22 + 0.55 * tone, 0.15 + 0.5 * tone)
    skin = tuple(float(np.clip(c + r.normal(0, 0.03), 0, 1)) for c in base)
    hair_dark = r.uniform(0.02, 0.6)
    hair = tuple(float(np.clip(hair_dark * m + r.normal(0, 0.03), 0, 1)) for m in (1.0, 0.8, 0.6))
    moles = tuple(
        (float(r.uniform(-0.6, 0.6)), float(r.uniform(-0.3, 0.7)))
        for _ in range(int(r.integers(0, 4)))
    )
    return Identity(
        head=(n(1.0, 0.06), n(1.3, 0.07), n(0.95, 0.05)),
        eye_x=n(0.36, 0.009),
        eye_y=n(-0.12, 0.009),
        eye_r=(n(0.14, 0.015), n(0.065, 0.01)),
        iris=tuple(float(x) for x in r.uniform(0.05, 0.55, 3)),  # type: ignore[arg-type]
        brow_dy=n(0.14, 0.03),
        brow_w=n(0.035, 0.01),
        brow_tilt=n(0.0, 0.15),
        brow_color=tuple(float(c * r.uniform(0.6, 1.0)) for c in hair),  # type: ignore[arg-type]
        nose_y=n(0.39, 0.009),  # the tip lands 0.41 below the eyes, as in the template
        nose=(n(0.11, 0.015), n(0.2, 0.006), n(0.22, 0.03)),
        nose_out=n(0.93, 0.03),
        mouth_y=n(0.715, 0.009),
        mouth_w=n(0.3, 0.009),
        lip=n(0.04, 0.01),
        lip_color=(float(skin[0] * 0.85), float(skin[1] * 0.55), float(skin[2] * 0.55)),
        skin=skin,  # type: ignore[arg-type]
        texture=tuple(float(x) for x in (*r.uniform(0, 2 * np.pi, 4), *r.uniform(6, 14, 2))),
        hair=hair,  # type: ignore[arg-type]
        hairline=n(-0.55, 0.1),
        hair_curve=n(0.35, 0.1),
        moles=moles,
    )


@dataclass(frozen=True)
class Variation:
    """Ranges of the per-image variation (angles in degrees, fractions in 0..1)."""

    yaw: float = 30.0
    pitch: float = 15.0
    roll: float = 10.0
    light_min: float = 0.6  # intensity of the directional light
    light_max: float = 1.0
    ambient: float = 0.35
    tint: float = 0.1  # light colour deviation
    mouth_open: float = 0.5  # chance of an open mouth
    eyes_closed: float = 0.1
    glasses: float = 0.1  # chances of each occluder
    mask: float = 0.05
    bar: float = 0.05
    blur: float = 1.0  # max Gaussian sigma (pixels of the loose crop)
    noise: float = 6.0  # max pixel noise sigma (0..255)
    scale: tuple[float, float] = (0.4, 0.5)  # head half-height as a fraction of the crop
    offset: float = 0.05  # max face centre offset, fraction of the crop
    clutter: int = 6  # max background shapes


#: Difficulty presets of :class:`Variation`.
PRESETS: dict[str, Variation] = {
    "easy": Variation(yaw=12, pitch=6, roll=4, light_min=0.8, tint=0.03, mouth_open=0.2,
                      eyes_closed=0.0, glasses=0.0, mask=0.0, bar=0.0, blur=0.4, noise=2.0,
                      scale=(0.45, 0.48), offset=0.02, clutter=2),  # fmt: skip
    "medium": Variation(),
    "hard": Variation(yaw=55, pitch=25, roll=20, light_min=0.3, ambient=0.25, tint=0.2,
                      mouth_open=0.6, eyes_closed=0.2, glasses=0.25, mask=0.15, bar=0.15,
                      blur=2.5, noise=14.0, scale=(0.36, 0.52), offset=0.08, clutter=12),  # fmt: skip
}


@dataclass
class FaceRender:
    """Rendered loose crops and their landmarks.

    Attributes:
        images: (N, S, S, 3) uint8 **BGR** (as ``cv2.imread`` returns, ready for
            ``cv2.imencode``).
        landmarks: (N, 5, 2) float32 (x, y) crop pixels: left eye, right eye, nose tip, left
            mouth corner, right mouth corner (left/right as seen in the image).
        identities: (N,) int64.
    """

    images: npt.NDArray[np.uint8]
    landmarks: npt.NDArray[np.float32]
    identities: npt.NDArray[np.int64]


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry  # head -> camera


def _hit(
    ox: np.ndarray, oy: np.ndarray, oz: np.ndarray, d: np.ndarray, c: np.ndarray, r: np.ndarray
) -> np.ndarray:
    """Front (largest t) intersection of rays o + t d with an axis-aligned ellipsoid (centre
    ``c``, semi-axes ``r``); NaN where a ray misses.  Structure-of-arrays for speed."""
    ax, ay, az = (ox - c[0]) / r[0], (oy - c[1]) / r[1], (oz - c[2]) / r[2]
    dx, dy, dz = d / r
    a = dx * dx + dy * dy + dz * dz
    b = 2.0 * (ax * dx + ay * dy + az * dz)
    cc = ax * ax + ay * ay + az * az - 1.0
    disc = b * b - 4.0 * a * cc
    with np.errstate(invalid="ignore"):
        return (-b + np.sqrt(disc)) / (2.0 * a)  # NaN for disc < 0


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray]] = {}

#: Cast rays only inside the projected bounding spheres of the head and the nose (the same
#: bytes as casting every pixel, faster); False casts every pixel (the reference of the tests
#: and of benches/bench_synthetic.py).
_CULL = True


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel centres (x, y) of a size x size crop, flattened (cached)."""
    if size not in _GRIDS:
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + np.float32(0.5)
        _GRIDS[size] = (xs.ravel(), ys.ravel())
    return _GRIDS[size]


def _surface_z(ident: Identity, x: float, y: float) -> float:
    a, b, c = ident.head
    return c * float(np.sqrt(max(1e-6, 1 - (x / a) ** 2 - (y / b) ** 2)))


def render_face(
    ident: Identity,
    rng: np.random.Generator,
    variation: Variation = PRESETS["medium"],
    size: int = 160,
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """One loose crop (size x size, BGR uint8) of ``ident`` and its 5 landmarks (5, 2)."""
    import cv2

    v = variation
    rot = _rotation(*(rng.uniform(-m, m) for m in (v.yaw, v.pitch, v.roll))).astype(np.float32)
    scale = size * rng.uniform(*v.scale) / ident.head[1]
    cx, cy = size / 2 + rng.uniform(-v.offset, v.offset, 2) * size
    # pixel rays in head space: camera looks along -z, head -> camera is `rot`.  Rays are cast
    # only where they can hit: inside the projected bounding sphere of the head (centre
    # (cx, cy)) and, for the nose, of the nose.  Every ray keeps the arithmetic it had when all
    # pixels were cast, so the bytes do not depend on this culling.
    xs, ys = _grid(size)
    qx_all, qy_all = (xs - cx) / scale, (ys - cy) / scale
    head_r = np.array(ident.head, np.float32)
    reach = float(head_r.max()) * 1.001 + 2.0 / scale
    if not _CULL:
        reach = np.inf
    sel = np.flatnonzero(qx_all * qx_all + qy_all * qy_all <= reach * reach)
    qx, qy = qx_all[sel], qy_all[sel]
    inv = rot.T
    d = inv @ np.array([0, 0, 1.0], np.float32)
    ox = inv[0, 0] * qx + inv[0, 1] * qy - 5.0 * d[0]  # start the rays behind the head
    oy = inv[1, 0] * qx + inv[1, 1] * qy - 5.0 * d[1]
    oz = inv[2, 0] * qx + inv[2, 1] * qy - 5.0 * d[2]
    t_head = _hit(ox, oy, oz, d, np.zeros(3, np.float32), head_r)
    nose_c = np.array([0.0, ident.nose_y - 0.5 * ident.nose[1], ident.nose_out], np.float32)
    nose_r = np.array(ident.nose, np.float32)
    nc = rot @ nose_c.astype(np.float64)  # the nose centre seen from the camera
    nreach = float(nose_r.max()) * 1.001 + 2.0 / scale if _CULL else np.inf
    ns = np.flatnonzero((qx - nc[0]) ** 2 + (qy - nc[1]) ** 2 <= nreach * nreach)
    t_nose = np.full_like(t_head, np.nan)
    t_nose[ns] = _hit(ox[ns], oy[ns], oz[ns], d, nose_c, nose_r)
    use_nose_all = t_nose > np.nan_to_num(t_head, nan=-np.inf)  # NaN compares False
    t_all = np.where(use_nose_all, t_nose, t_head)
    fi = np.flatnonzero(np.isfinite(t_all))  # the pixels of the head: all work is on them
    use_nose = use_nose_all[fi]
    tf = t_all[fi]
    x = ox[fi] + tf * d[0]  # hit points, head space
    y = oy[fi] + tf * d[1]
    z = oz[fi] + tf * d[2]
    fi = sel[fi]  # pixel indexes of the head in the whole crop
    nx = np.where(use_nose, (x - nose_c[0]) / nose_r[0] ** 2, x / head_r[0] ** 2)
    ny = np.where(use_nose, (y - nose_c[1]) / nose_r[1] ** 2, y / head_r[1] ** 2)
    nz = np.where(use_nose, (z - nose_c[2]) / nose_r[2] ** 2, z / head_r[2] ** 2)

    # albedo on the head's surface
    alb = np.empty((x.size, 3), np.float32)
    alb[:] = ident.skin
    ph, fr = ident.texture[:4], ident.texture[4:]
    tex = 0.04 * (np.sin(fr[0] * x + ph[0]) * np.sin(fr[1] * y + ph[1]) + np.sin(fr[1] * (x + y) + ph[2]))
    alb *= (1 + tex)[:, None]
    alb[use_nose] *= 1.03
    front = (z > 0) & ~use_nose
    xf, yf = x[front], y[front]
    fidx = np.flatnonzero(front)
    for mx, my in ident.moles:
        alb[fidx[(xf - mx) ** 2 + (yf - my) ** 2 < 0.0012]] *= 0.45
    mouth_open = rng.random() < v.mouth_open
    eyes_closed = rng.random() < v.eyes_closed
    for sx in (-1, 1):
        ex = sx * ident.eye_x
        near = np.abs(xf - ex) < 1.2 * ident.eye_r[0]
        xe, ye, ie = xf[near], yf[near], fidx[near]
        ell = ((xe - ex) / ident.eye_r[0]) ** 2 + ((ye - ident.eye_y) / ident.eye_r[1]) ** 2
        eye = ell < 1
        if eyes_closed:
            alb[ie[eye]] *= 0.85
            alb[ie[eye & (np.abs(ye - ident.eye_y) < 0.008)]] = 0.15
        else:
            alb[ie[eye]] = (0.92, 0.92, 0.9)
            rr = (xe - ex) ** 2 + (ye - ident.eye_y) ** 2
            alb[ie[eye & (rr < (0.8 * ident.eye_r[1]) ** 2)]] = ident.iris
            alb[ie[eye & (rr < (0.35 * ident.eye_r[1]) ** 2)]] = 0.05
        by = ident.eye_y - ident.brow_dy + ident.brow_tilt * sx * (xe - ex)
        alb[ie[np.abs(ye - by) < ident.brow_w]] = ident.brow_color
    my = ident.mouth_y
    band = np.abs(yf - my) < 2.5 * ident.lip
    xm, ym, im = xf[band], yf[band], fidx[band]
    half = np.clip(1 - (xm / ident.mouth_w) ** 2, 0, None)
    lips = (np.abs(ym - my) < ident.lip * (0.4 + half)) & (half > 0)
    alb[im[lips]] = ident.lip_color
    if mouth_open:
        alb[im[lips & (np.abs(ym - my) < 0.5 * ident.lip * half)]] = (0.12, 0.05, 0.05)
    nostril = use_nose & (y > ident.nose_y - 0.03) & (np.abs(np.abs(x) - 0.045) < 0.025)
    alb[nostril] *= 0.4
    hairline = ident.hairline + ident.hair_curve * x**2
    hair = (y < hairline) | (z < -0.1 * head_r[2]) | ((np.abs(x) > 0.88 * head_r[0]) & (y < 0.1))
    alb[hair & ~use_nose] = ident.hair

    # light
    az, el = rng.uniform(-np.pi / 2, np.pi / 2), rng.uniform(-0.6, 0.9)
    light = np.array([np.sin(az) * np.cos(el), -np.sin(el), np.cos(az) * np.cos(el)], np.float32)
    tint = (1 + rng.uniform(-v.tint, v.tint, 3)).astype(np.float32)
    lh = rot.T @ light  # the light in head space: shade with head-space normals
    dot = (nx * lh[0] + ny * lh[1] + nz * lh[2]) / np.sqrt(nx * nx + ny * ny + nz * nz)
    lam = np.clip(dot, 0, None) * rng.uniform(v.light_min, v.light_max)
    shade = (v.ambient + lam)[:, None] * tint
    rgb = alb * shade
    np.clip(rgb, 0, 1, out=rgb)

    # background clutter, then the head over it
    base = rng.uniform(0.1, 0.9, 3).astype(np.float32)
    ramp = (np.linspace(-0.15, 0.15, size)[:, None, None] * rng.uniform(-1, 1, 3)).astype(np.float32)
    bg = np.repeat(base + ramp, size, axis=1)  # (size, size, 3): each row one colour
    for _ in range(int(rng.integers(0, v.clutter + 1))):
        color = tuple(float(c) for c in rng.uniform(0, 1, 3))
        c0 = tuple(int(c) for c in rng.integers(0, size, 2))
        if rng.random() < 0.5:
            cv2.circle(bg, c0, int(rng.integers(3, size // 4)), color, -1, cv2.LINE_AA)
        else:
            c1 = tuple(int(c) for c in rng.integers(0, size, 2))
            cv2.rectangle(bg, c0, c1, color, -1)
    flat = bg.reshape(-1, 3)
    flat[fi] = rgb
    img: np.ndarray = flat.reshape(size, size, 3)

    # landmarks: projections of the same 3D points
    pts3 = [
        (-ident.eye_x, ident.eye_y, _surface_z(ident, ident.eye_x, ident.eye_y)),
        (ident.eye_x, ident.eye_y, _surface_z(ident, ident.eye_x, ident.eye_y)),
        (0.0, ident.nose_y - 0.5 * ident.nose[1], ident.nose_out + ident.nose[2]),
        (-ident.mouth_w, ident.mouth_y, _surface_z(ident, ident.mouth_w, ident.mouth_y)),
        (ident.mouth_w, ident.mouth_y, _surface_z(ident, ident.mouth_w, ident.mouth_y)),
    ]
    cam = np.array(pts3) @ rot.T
    lmk = np.stack([cam[:, 0] * scale + cx, cam[:, 1] * scale + cy], 1)

    # occluders in the image
    def proj(px: float, py: float) -> tuple[int, int]:
        c = rot @ np.array([px, py, _surface_z(ident, px, py)])
        return int(round(c[0] * scale + cx)), int(round(c[1] * scale + cy))

    if rng.random() < v.glasses:
        color = tuple(float(c) for c in rng.uniform(0, 0.4, 3))
        rad = int(scale * ident.eye_r[0] * 1.5)
        for e in lmk[:2]:
            cv2.circle(img, (int(e[0]), int(e[1])), max(rad, 2), color, max(1, size // 80), cv2.LINE_AA)
        cv2.line(img, tuple(int(c) for c in lmk[0]), tuple(int(c) for c in lmk[1]), color, 1, cv2.LINE_AA)
    if rng.random() < v.mask:
        poly = np.array([proj(sx * 0.8, yy) for sx, yy in ((-1, 0.3), (1, 0.3), (1, 0.95), (-1, 0.95))] +
                        [proj(0, 1.15)], np.int32)  # fmt: skip
        cv2.fillPoly(img, [poly[[0, 1, 2, 4, 3]]], tuple(float(c) for c in rng.uniform(0.5, 1, 3)), cv2.LINE_AA)
    if rng.random() < v.bar:
        x0 = int(rng.integers(0, size))
        cv2.rectangle(img, (x0, 0), (x0 + int(rng.integers(3, size // 8)), size), (0.1, 0.1, 0.1), -1)
    sigma = rng.uniform(0, v.blur)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img *= 255.0
    sd = rng.uniform(0, v.noise)
    if sd > 0.5:  # seeded, float32: cheap on every pixel
        img += sd * rng.standard_normal(img.shape, dtype=np.float32)
    img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)  # a copy in the other channel order
    np.rint(img, out=img)
    np.clip(img, 0, 255, out=img)  # the bounds are integers: clip(rint) == rint(clip)
    return img.astype(np.uint8), lmk.astype(np.float32)


def render_faces(
    identities: Sequence[int] | npt.ArrayLike,
    *,
    seed: int = 0,
    image_seed: int | None = None,
    preset: str | Variation = "medium",
    size: int = 160,
) -> FaceRender:
    """Loose crops of the given identities of ``seed`` (one image per entry, repeats allowed).

    Args:
        identities: identity numbers (>= 0).
        seed: who the identities are (:func:`identity`).
        image_seed: the per-image variation (default: ``seed``); image ``j`` of the call
            uses ``default_rng([image_seed, j, identity])``, so the same call gives the same
            bytes.
        preset: a :data:`PRESETS` name or a :class:`Variation`.
        size: crop side in pixels (>= 64).
    """
    var = _variation(preset)
    if size < 64:
        raise InputError(f"size must be >= 64 pixels, got {size}")
    ids = np.asarray(identities, dtype=np.int64).reshape(-1)
    if ids.size and ids.min() < 0:
        raise InputError("identities must be >= 0")
    iseed = seed if image_seed is None else image_seed
    cache: dict[int, Identity] = {}
    images = np.empty((ids.size, size, size, 3), np.uint8)
    lmks = np.empty((ids.size, 5, 2), np.float32)
    for j, i in enumerate(ids.tolist()):
        ident = cache.get(i) or cache.setdefault(i, identity(seed, i))
        rng = np.random.default_rng([int(iseed), j, i, 0xFACE])
        images[j], lmks[j] = render_face(ident, rng, var, size)
    return FaceRender(images, lmks, ids)


def aligned_faces(
    identities: Sequence[int] | npt.ArrayLike,
    *,
    seed: int = 0,
    image_seed: int | None = None,
    preset: str | Variation = "medium",
    size: int = 160,
) -> npt.NDArray[np.uint8]:
    """:func:`render_faces` aligned with their landmarks: (N, 112, 112, 3) uint8 **RGB**."""
    from vitfree.data.align import align_face

    r = render_faces(identities, seed=seed, image_seed=image_seed, preset=preset, size=size)
    out = np.empty((r.images.shape[0], 112, 112, 3), np.uint8)
    for j in range(out.shape[0]):
        out[j] = align_face(r.images[j], r.landmarks[j])
    return out


def _variation(preset: str | Variation) -> Variation:
    if isinstance(preset, Variation):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise InputError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}") from None


def variation_replace(preset: str | Variation, **changes: float) -> Variation:
    """A preset with some ranges changed (``variation_replace("easy", yaw=0)``)."""
    return dataclasses.replace(_variation(preset), **changes)  # type: ignore[arg-type]
