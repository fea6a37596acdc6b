"""Writers of small test data sets in the exact on-disk formats of the real benchmarks.

- :func:`write_ijb`: an IJB-C (or IJB-B) folder: ``loose_crop/*.jpg`` (real JPEGs written with
  ``cv2.imencode``), the three space-separated meta txt files and the three 1:N csvs (header row,
  one row per image as in the real release).
- :func:`write_bin`: an insightface ``.bin`` verification set, either a genuine Python-2 pickle
  (protocol 2, ``str`` = byte strings, which Python 3 reads only with ``encoding="bytes"``) or
  a Python-3 pickle.
- :func:`write_pair_list`: aligned images and a ``path1 path2 label`` list.
- :func:`format_int_rows`, :func:`py2_pickle_bytes`: re-exported from :mod:`vitfree.data`,
  whose format writers these helpers use; the helpers add the random faces and ids.

Everything is deterministic for a given seed and returns what a reader should find.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from vitfree.data import format_int_rows, py2_pickle_bytes, write_1n_csv, write_ijb_meta
from vitfree.data import write_bin as write_bin_file
from vitfree.data import write_pair_list as write_pair_list_file

ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)

__all__ = [
    "ARCFACE_TEMPLATE",
    "aligned_face_image",
    "encode_jpeg",
    "face_image",
    "format_int_rows",
    "py2_pickle_bytes",
    "write_bin",
    "write_ijb",
    "write_pair_list",
]


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


def face_image(
    rng: np.random.Generator, height: int, width: int, landmarks: np.ndarray
) -> np.ndarray:
    """A face-like BGR uint8 (height, width, 3) image with features at ``landmarks`` (5, 2).

    Smooth background gradient, a skin-coloured ellipse around the points, dark eyes, a nose
    mark and a mouth line, plus mild noise, so that alignment errors are visible in pixels.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, size=3).astype(np.float32)
    grad = rng.uniform(-0.3, 0.3, size=(2, 3)).astype(np.float32)
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    img = np.clip(img, 0, 255).astype(np.uint8)
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_dist = float(np.linalg.norm(lm[1] - lm[0]))
    center = lm.mean(axis=0)
    skin = tuple(int(v) for v in rng.uniform(90, 230, size=3))
    axes = (max(int(eye_dist * 1.1), 2), max(int(eye_dist * 1.5), 2))
    angle = float(np.degrees(np.arctan2(lm[1, 1] - lm[0, 1], lm[1, 0] - lm[0, 0])))
    cv2.ellipse(img, (int(center[0]), int(center[1])), axes, angle, 0, 360, skin, -1)
    r = max(int(eye_dist * 0.12), 1)
    for p in lm[:2]:
        cv2.circle(img, (round(p[0]), round(p[1])), r, (30, 20, 10), -1)
    cv2.circle(img, (round(lm[2, 0]), round(lm[2, 1])), r, (60, 60, 120), -1)
    cv2.line(
        img,
        (round(lm[3, 0]), round(lm[3, 1])),
        (round(lm[4, 0]), round(lm[4, 1])),
        (40, 30, 150),
        max(r // 2, 1),
    )
    noise = rng.integers(-6, 7, size=img.shape)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def aligned_face_image(rng: np.random.Generator, size: int = 112) -> np.ndarray:
    """A face-like BGR uint8 (size, size, 3) image whose features sit on the ArcFace template."""
    return face_image(rng, size, size, ARCFACE_TEMPLATE * (size / 112.0))


def encode_jpeg(img_bgr: np.ndarray, quality: int = 95) -> bytes:
    """JPEG bytes of a BGR image (``cv2.imencode``)."""
    ok, buf = cv2.imencode(".jpg", img_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def _random_landmarks(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Template points under a random similarity (scale, rotation, shift) inside the image."""
    scale = rng.uniform(1.2, 1.8)
    theta = np.radians(rng.uniform(-20, 20))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = (ARCFACE_TEMPLATE - 56.0) @ rot.T * scale
    center = np.array([width / 2, height / 2]) + rng.uniform(-8, 8, size=2)
    pts = pts + center + rng.normal(0, 1.0, size=pts.shape)
    return pts.astype(np.float32)


# --------------------------------------------------------------------------------------------
# IJB folder
# --------------------------------------------------------------------------------------------


def write_ijb(
    root: str | Path,
    dataset: str = "IJBC",
    *,
    n_subjects: int = 6,
    probe_templates_per_subject: int = 2,
    max_images_per_template: int = 3,
    n_impostor_pairs: int | None = None,
    seed: int = 0,
    layout: str = "root",
) -> dict[str, Any]:
    """Write a small IJB-B/C folder in the real format and return what it contains.

    Each subject has one gallery template (half of the subjects in gallery 1, the rest in
    gallery 2, as in IJB: disjoint galleries) and ``probe_templates_per_subject`` probe
    templates. Every template has 1..``max_images_per_template`` images spread over one or
    two media. Pairs: every genuine template pair and ``n_impostor_pairs`` random impostor
    pairs (default: as many as genuine), in random order.

    Args:
        root: output folder.
        dataset: "IJBC" or "IJBB" (folder name, file prefix, gallery names G1/G2 or S1/S2).
        layout: "root" writes ``<root>/<dataset>/{meta,loose_crop}``; "dataset" writes
            ``<root>/{meta,loose_crop}`` (root is the dataset folder itself).

    Returns:
        dict with keys: names (list[str]), templates, medias (N,) int64, landmarks (N,5,2)
        float32, faceness (N,) float32, p1, p2 (M,) int64, labels (M,) int8, gallery1,
        gallery2, probes ((ids (T,) int64, subjects (T,) int64), one row per template, first
        appearance order), template_subject {template: subject}, meta_dir, image_dir, paths
        {kind: Path}, dataset_dir.
    """
    rng = np.random.default_rng(seed)
    ds = dataset.upper()
    prefix = ds.lower()
    g_names = ("G1", "G2") if ds == "IJBC" else ("S1", "S2")
    dataset_dir = Path(root) / ds if layout == "root" else Path(root)
    meta_dir = dataset_dir / "meta"
    image_dir = dataset_dir / "loose_crop"
    meta_dir.mkdir(parents=True, exist_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)

    subjects = rng.choice(np.arange(1000, 100000), size=n_subjects, replace=False).astype(np.int64)
    n_templates = n_subjects * (1 + probe_templates_per_subject)
    template_ids = rng.choice(np.arange(1, 200000), size=n_templates, replace=False)
    template_ids = template_ids.astype(np.int64)
    template_subject: dict[int, int] = {}
    gallery_of: list[list[int]] = [[], []]
    probe_list: list[int] = []
    t = 0
    for si, s in enumerate(subjects):
        g = 0 if si < (n_subjects + 1) // 2 else 1
        gallery_of[g].append(int(template_ids[t]))
        template_subject[int(template_ids[t])] = int(s)
        t += 1
        for _ in range(probe_templates_per_subject):
            probe_list.append(int(template_ids[t]))
            template_subject[int(template_ids[t])] = int(s)
            t += 1

    names: list[str] = []
    templates: list[int] = []
    medias: list[int] = []
    landmarks: list[np.ndarray] = []
    faceness: list[float] = []
    next_media = 50000
    image_no = 1
    order = rng.permutation(template_ids)  # images of a template are contiguous, templates mixed
    for tid in order:
        n_img = int(rng.integers(1, max_images_per_template + 1))
        media_a = next_media
        media_b = next_media + 1
        next_media += 2
        for j in range(n_img):
            name = f"{image_no}.jpg"
            image_no += 1
            h, w = int(rng.integers(140, 220)), int(rng.integers(140, 220))
            lm = _random_landmarks(rng, h, w)
            img = face_image(rng, h, w, lm)
            (image_dir / name).write_bytes(encode_jpeg(img))
            names.append(name)
            templates.append(int(tid))
            medias.append(media_a if j % 2 == 0 else media_b)
            landmarks.append(np.round(lm, 3))
            faceness.append(float(np.round(rng.uniform(0.3, 1.0), 6)))
    lm_arr = np.stack(landmarks).astype(np.float32)
    fn_arr = np.array(faceness, dtype=np.float32)

    # Pairs: all genuine template pairs + random impostor pairs.
    tids = list(template_subject)
    genuine = [
        (a, b)
        for i, a in enumerate(tids)
        for b in tids[i + 1 :]
        if template_subject[a] == template_subject[b]
    ]
    n_imp = len(genuine) if n_impostor_pairs is None else n_impostor_pairs
    impostor: set[tuple[int, int]] = set()
    while len(impostor) < n_imp:
        a, b = (int(x) for x in rng.choice(template_ids, size=2, replace=False))
        if template_subject[a] != template_subject[b]:
            impostor.add((a, b))
    pairs = [(a, b, 1) for a, b in genuine] + [(a, b, 0) for a, b in sorted(impostor)]
    perm = rng.permutation(len(pairs))
    pairs = [pairs[i] for i in perm]
    p1 = np.array([p[0] for p in pairs], dtype=np.int64)
    p2 = np.array([p[1] for p in pairs], dtype=np.int64)
    labels = np.array([p[2] for p in pairs], dtype=np.int8)
    write_ijb_meta(
        dataset_dir.parent,
        ds,
        meta_dir=meta_dir,
        names=names,
        templates=templates,
        medias=medias,
        landmarks=np.stack(landmarks),
        faceness=faceness,
        p1=p1,
        p2=p2,
        labels=labels,
    )

    # 1:N csvs: one row per image (template repeated), extra columns as in the release.
    def write_csv(path: Path, tlist: list[int]) -> tuple[np.ndarray, np.ndarray]:
        tset = set(tlist)
        rows = [(tid, n) for n, tid in zip(names, templates) if tid in tset]
        sightings = [int(rng.integers(1, 9999)) for _ in rows]
        write_1n_csv(
            path,
            [t for t, _ in rows],
            [template_subject[t] for t, _ in rows],
            filenames=[f"img/{n}" for _, n in rows],
            extra_columns={"SIGHTING_ID": sightings},
        )
        seen = list(dict.fromkeys(t for t, _ in rows))
        return (
            np.array(seen, dtype=np.int64),
            np.array([template_subject[x] for x in seen], dtype=np.int64),
        )

    paths = {
        "face_tid_mid": meta_dir / f"{prefix}_face_tid_mid.txt",
        "name_5pts": meta_dir / f"{prefix}_name_5pts_score.txt",
        "pair_label": meta_dir / f"{prefix}_template_pair_label.txt",
        "gallery1": meta_dir / f"{prefix}_1N_gallery_{g_names[0]}.csv",
        "gallery2": meta_dir / f"{prefix}_1N_gallery_{g_names[1]}.csv",
        "probe": meta_dir / f"{prefix}_1N_probe_mixed.csv",
    }
    gallery1 = write_csv(paths["gallery1"], gallery_of[0])
    gallery2 = write_csv(paths["gallery2"], gallery_of[1])
    probes = write_csv(paths["probe"], probe_list)

    return {
        "dataset": ds,
        "names": names,
        "templates": np.array(templates, dtype=np.int64),
        "medias": np.array(medias, dtype=np.int64),
        "landmarks": lm_arr,
        "faceness": fn_arr,
        "p1": p1,
        "p2": p2,
        "labels": labels,
        "gallery1": gallery1,
        "gallery2": gallery2,
        "probes": probes,
        "gallery_names": g_names,
        "template_subject": template_subject,
        "dataset_dir": dataset_dir,
        "meta_dir": meta_dir,
        "image_dir": image_dir,
        "paths": paths,
    }


# --------------------------------------------------------------------------------------------
# .bin sets and pair lists
# --------------------------------------------------------------------------------------------


def write_bin(
    path: str | Path,
    n_pairs: int = 4,
    *,
    protocol: int = 2,
    seed: int = 0,
    size: int = 112,
    blob_type: str = "bytes",
) -> dict[str, Any]:
    """Write an insightface-format ``.bin`` with ``n_pairs`` pairs of face-like JPEGs.

    Args:
        protocol: 2 writes a genuine Python-2 pickle (:func:`py2_pickle_bytes`); 3 or higher a
            Python-3 ``pickle.dump`` of ``(list of bytes, list of bool)``.
        size: image side (112 for a valid set; other sizes test the size check).
        blob_type: "bytes", or "ndarray" (uint8 arrays, as some converted sets hold; Python-3
            pickles only).

    Returns:
        dict with ``images`` (2N, size, size, 3) uint8 RGB as decoded by ``cv2.imdecode``,
        ``issame`` (N,) bool, ``jpegs`` list[bytes], ``path``.
    """
    rng = np.random.default_rng(seed)
    jpegs = [encode_jpeg(aligned_face_image(rng, size)) for _ in range(2 * n_pairs)]
    issame = [bool(x) for x in rng.integers(0, 2, size=n_pairs)]
    if protocol == 2 and blob_type != "bytes":
        raise ValueError("Python-2 pickles hold byte strings")
    blobs: list[Any] = (
        jpegs if blob_type == "bytes" else [np.frombuffer(j, np.uint8).copy() for j in jpegs]
    )
    write_bin_file(path, blobs, issame, protocol=protocol)
    decoded = (
        np.stack(
            [
                cv2.cvtColor(
                    cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
                )
                for j in jpegs
            ]
        )
        if jpegs
        else np.empty((0, size, size, 3), np.uint8)
    )
    return {
        "images": decoded,
        "issame": np.array(issame, dtype=bool),
        "jpegs": jpegs,
        "path": Path(path),
    }


def write_pair_list(
    folder: str | Path, n_pairs: int = 3, *, seed: int = 0, size: int = 112, ext: str = ".jpg"
) -> dict[str, Any]:
    """Write aligned face images under ``folder/imgs/`` and ``folder/pairs.txt``.

    The list uses relative paths (``imgs/a_0.jpg imgs/b_0.jpg 1``), a comment line and a blank
    line. Returns ``images`` (2N, size, size, 3) uint8 RGB as decoded, ``issame`` (N,) bool and
    ``path`` of the list.
    """
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    pairs: list[tuple[str, str, int]] = []
    images = []
    issame = []
    for i in range(n_pairs):
        pair = []
        for tag in ("a", "b"):
            img = aligned_face_image(rng, size)
            rel = f"imgs/{tag}_{i}{ext}"
            if ext == ".png":
                _ok, buf = cv2.imencode(".png", img)
                (folder / rel).write_bytes(buf.tobytes())
            else:
                (folder / rel).write_bytes(encode_jpeg(img))
            back = cv2.imread(str(folder / rel), cv2.IMREAD_COLOR)
            images.append(cv2.cvtColor(back, cv2.COLOR_BGR2RGB))
            pair.append(rel)
        lab = int(rng.integers(0, 2))
        issame.append(bool(lab))
        pairs.append((pair[0], pair[1], lab))
    path = write_pair_list_file(folder / "pairs.txt", pairs)
    # a blank line after the comment too, which readers must skip
    path.write_text(path.read_text().replace("\n", "\n\n", 1))
    return {
        "images": np.stack(images) if images else np.empty((0, size, size, 3), np.uint8),
        "issame": np.array(issame, dtype=bool),
        "path": path,
    }
