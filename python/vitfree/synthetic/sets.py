"""Synthetic faces written in the real formats (SYNTHETIC data, labelled so in every folder).

Each writer renders faces with :mod:`vitfree.synthetic.faces` and writes them with the
format writers of :mod:`vitfree.data`, so that vitfree's own readers (and the community's)
read them as they read the real sets:

* :func:`write_image_folder`: a training set, one folder per identity, aligned 112x112 JPEGs;
* :func:`write_ijbc`: an IJB-C-format benchmark: ``IJBC/loose_crop/*.jpg``, the three meta
  files (landmarks and detector scores) and the three 1:N csvs; every subject has a gallery
  template and probe templates, each made of several media (stills, and videos of several
  frames), as IJB-C is;
* :func:`write_bin`: an LFW-style ``.bin`` set (aligned JPEGs, the Python-2 pickle of the
  published sets), half genuine pairs;
* :func:`write_pairs`: aligned images and a ``path1 path2 label`` list.

Who the people are is decided by the seed (:func:`vitfree.synthetic.faces.identity`): a
set written with any seed other than the training seed holds only unseen identities.  Every
folder gets a ``SYNTHETIC.txt`` that says what it is and which command wrote it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vitfree.errors import InputError
from vitfree.synthetic.faces import Variation, _variation, aligned_faces, render_faces

__all__ = ["pair_faces", "write_bin", "write_ijbc", "write_image_folder", "write_pairs", "write_recordio_set"]

_NOTE = "SYNTHETIC.txt"


def _encode(img_bgr: np.ndarray, quality: int) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", img_bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _positive(**sizes: int) -> None:
    for name, v in sizes.items():
        if int(v) < 1:
            raise InputError(f"{name} must be >= 1, got {v}")


def _fresh_folder(out: Path, kind: str, overwrite: bool) -> None:
    """Refuse to write into a folder that holds another data set (or any files)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder for the synthetic {kind}")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        note = out / _NOTE
        what = note.read_text().splitlines()[0] if note.is_file() else "files"
        raise InputError(
            f"{out} is not empty (it holds {what}); give an empty or new folder, or overwrite=True"
        )
    out.mkdir(parents=True, exist_ok=True)


def _note(out: Path, kind: str, params: dict[str, Any]) -> None:
    text = (
        f"SYNTHETIC {kind} written by vitfree.synthetic (rendered faces, not real people)\n"
        + json.dumps(params, indent=2, sort_keys=True)
        + "\n"
    )
    (out / _NOTE).write_text(text)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


def write_image_folder(
    out: str | os.PathLike[str],
    identities: int,
    images_per_identity: int = 20,
    *,
    seed: int = 0,
    preset: str | Variation = "medium",
    quality: int = 95,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """A training set: ``out/<identity>/<k>.jpg``, aligned 112x112 RGB faces (JPEG).

    Args:
        out: the folder (created; must be empty unless ``overwrite``).
        identities: number of people (identities 0..identities-1 of ``seed``).
        images_per_identity: images of each person.
        seed: who the people are (and the image variation).
        preset: variation preset or :class:`Variation`.
        quality: JPEG quality.
    """
    _positive(identities=identities, images_per_identity=images_per_identity)
    _variation(preset)
    root = Path(out)
    _fresh_folder(root, "image folder", overwrite)
    for i, faces in _training_faces(identities, images_per_identity, seed, preset, progress):
        folder = root / f"{i:06d}"
        folder.mkdir(exist_ok=True)
        for k, face in enumerate(faces):
            (folder / f"{k:04d}.jpg").write_bytes(_encode(face[:, :, ::-1], quality))
    _note(root, "image folder", {"identities": identities, "images_per_identity": images_per_identity,
                                 "seed": seed, "preset": str(preset)})  # fmt: skip
    return root


def _training_faces(
    identities: int, images_per_identity: int, seed: int, preset: str | Variation, progress: bool
) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """``(identity, (images, 112, 112, 3) uint8 RGB aligned faces)`` of a training set."""
    with _progress(identities * images_per_identity, "synthetic faces", progress) as bar:
        for i in range(identities):
            yield i, aligned_faces(
                [i] * images_per_identity, seed=seed, image_seed=seed * 1_000_003 + i, preset=preset
            )
            bar.update(images_per_identity)


def write_recordio_set(
    out: str | os.PathLike[str],
    identities: int,
    images_per_identity: int = 20,
    *,
    seed: int = 0,
    preset: str | Variation = "medium",
    quality: int = 95,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """The training set of :func:`write_image_folder` (the same faces) as insightface RecordIO:
    ``out/train.rec``, ``out/train.idx`` and ``out/property``, as MS1MV2 or Glint360K come.

    Returns:
        the ``train.rec`` path.
    """
    from vitfree.data.recordio import write_recordio

    _positive(identities=identities, images_per_identity=images_per_identity)
    _variation(preset)
    root = Path(out)
    _fresh_folder(root, "RecordIO training set", overwrite)
    items = (
        (i, _encode(face[:, :, ::-1], quality))
        for i, faces in _training_faces(identities, images_per_identity, seed, preset, progress)
        for face in faces
    )
    written = write_recordio(root / "train.rec", root / "train.idx", items, num_classes=identities)
    _note(root, "RecordIO training set", {"identities": identities,
                                          "images_per_identity": images_per_identity,
                                          "seed": seed, "preset": str(preset)})  # fmt: skip
    return Path(written.rec_path)


def write_ijbc(
    root: str | os.PathLike[str],
    subjects: int = 50,
    *,
    seed: int = 1,
    preset: str | Variation = "medium",
    probe_templates: int = 2,
    media_per_template: tuple[int, int] = (1, 3),
    frames_per_video: tuple[int, int] = (2, 4),
    impostor_ratio: float = 4.0,
    crop_size: int = 160,
    dataset: str = "IJBC",
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """An IJB-C-format benchmark of synthetic people under ``root/IJBC``.

    Every subject has one gallery template (subjects alternate between G1 and G2, which are
    disjoint, as in IJB-C) and ``probe_templates`` probe templates; every template has
    1..3 media, each a still (one image) or a video (2..4 frames of one rendered shot with
    small shifts and noise).  Pairs: every genuine template pair and ``impostor_ratio`` times
    as many impostor pairs.  Detector scores are drawn per image.

    Returns:
        ``{"root", "meta_dir", "images", "templates", "pairs", "genuine"}``.
    """
    import cv2

    from vitfree.data.ijb import write_1n_csv, write_ijb_meta

    _positive(subjects=subjects, probe_templates=probe_templates, crop_size=crop_size)
    var = _variation(preset)
    base = Path(root)
    ds = dataset.upper()
    if ds not in ("IJBC", "IJBB"):
        raise InputError(f"dataset must be 'IJBC' or 'IJBB', got {dataset!r}")
    _fresh_folder(base / ds, f"{ds} benchmark", overwrite)
    rng = np.random.default_rng([seed, 0x1B])
    images = base / ds / "loose_crop"
    images.mkdir(parents=True, exist_ok=True)
    names: list[str] = []
    templates: list[int] = []
    medias: list[int] = []
    landmarks: list[np.ndarray] = []
    faceness: list[float] = []
    tpl_subject: dict[int, int] = {}
    galleries: tuple[list[int], list[int]] = ([], [])
    probes: list[int] = []
    next_tpl, next_media, shot = 1, 1, 0
    n_tpl = subjects * (1 + probe_templates)
    with _progress(n_tpl, f"synthetic {ds} templates", progress) as bar:
        for s in range(subjects):
            for t in range(1 + probe_templates):
                tid = next_tpl
                next_tpl += 1
                tpl_subject[tid] = s
                (galleries[s % 2] if t == 0 else probes).append(tid)
                for _m in range(int(rng.integers(media_per_template[0], media_per_template[1] + 1))):
                    video = rng.random() < 0.5
                    frames = int(rng.integers(frames_per_video[0], frames_per_video[1] + 1)) if video else 1
                    r = render_faces([s], seed=seed, image_seed=seed * 7_000_003 + shot, preset=var,
                                     size=crop_size)  # fmt: skip
                    shot += 1
                    for _f in range(frames):
                        img, lmk = r.images[0], r.landmarks[0].copy()
                        if video:  # one shot, frames moved and noised a little
                            dx, dy = rng.normal(0, 1.5, 2)
                            m = np.array([[1, 0, dx], [0, 1, dy]], np.float32)
                            img = cv2.warpAffine(img, m, (crop_size, crop_size), borderMode=cv2.BORDER_REFLECT)
                            img = np.clip(img + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
                            lmk += np.array([dx, dy], np.float32)
                        name = f"{len(names) + 1}.jpg"
                        (images / name).write_bytes(_encode(img, int(rng.integers(70, 96))))
                        names.append(name)
                        templates.append(tid)
                        medias.append(next_media)
                        landmarks.append(lmk)
                        faceness.append(float(np.round(rng.uniform(0.5, 1.0), 6)))
                    next_media += 1
                bar.update(1)
    tids = sorted(tpl_subject)
    genuine = [(a, b) for i, a in enumerate(tids) for b in tids[i + 1 :] if tpl_subject[a] == tpl_subject[b]]
    n_all = len(tids) * (len(tids) - 1) // 2
    n_imp = min(int(round(impostor_ratio * len(genuine))), n_all - len(genuine))  # all there are
    impostor: set[tuple[int, int]] = set()
    arr = np.array(tids)
    if n_imp >= (n_all - len(genuine)) // 2:  # a large share of all pairs: list them
        pool = [(a, b) for i, a in enumerate(tids) for b in tids[i + 1 :] if tpl_subject[a] != tpl_subject[b]]
        impostor = {pool[k] for k in rng.choice(len(pool), n_imp, replace=False)}
    while len(impostor) < n_imp:
        a, b = (int(x) for x in rng.choice(arr, 2, replace=False))
        if tpl_subject[a] != tpl_subject[b]:
            impostor.add((min(a, b), max(a, b)))
    pairs = [(a, b, 1) for a, b in genuine] + [(a, b, 0) for a, b in sorted(impostor)]
    pairs.sort()  # ordered by the first template, as the real pair file
    p = np.array(pairs, dtype=np.int64).reshape(-1, 3)
    paths = write_ijb_meta(
        base,
        ds,
        names=names,
        templates=templates,
        medias=medias,
        landmarks=np.stack(landmarks),
        faceness=faceness,
        p1=p[:, 0],
        p2=p[:, 1],
        labels=p[:, 2],
    )
    meta = paths["meta_dir"]
    prefix = ds.lower()
    gnames = ("G1", "G2") if ds == "IJBC" else ("S1", "S2")

    def rows_of(tset: list[int]) -> tuple[list[int], list[int], list[str]]:
        keep = set(tset)
        sel = [(t, n) for t, n in zip(templates, names) if t in keep]
        return [t for t, _ in sel], [tpl_subject[t] for t, _ in sel], [f"img/{n}" for _, n in sel]

    for g, tset in zip(gnames, galleries):
        write_1n_csv(meta / f"{prefix}_1N_gallery_{g}.csv", *rows_of(tset))
    write_1n_csv(meta / f"{prefix}_1N_probe_mixed.csv", *rows_of(probes))
    _note(base / ds, f"{ds}-format benchmark", {"subjects": subjects, "seed": seed, "preset": str(preset),
                                                 "images": len(names), "templates": len(tids)})  # fmt: skip
    return {
        "root": base,
        "meta_dir": meta,
        "images": len(names),
        "templates": len(tids),
        "pairs": len(pairs),
        "genuine": len(genuine),
    }


def pair_faces(
    n_pairs: int, seed: int, preset: str | Variation, identities: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """2N aligned faces, pair i = faces 2i and 2i+1, half genuine; and the N flags."""
    _positive(n_pairs=n_pairs)
    rng = np.random.default_rng([seed, 0xB1])
    people = identities or max(2, n_pairs)
    issame = np.arange(n_pairs) % 2 == 0
    rng.shuffle(issame)
    ids = []
    for same in issame:
        a = int(rng.integers(0, people))
        b = a if same else int((a + rng.integers(1, people)) % people)
        ids += [a, b]
    faces = aligned_faces(ids, seed=seed, image_seed=seed * 9_000_011 + 1, preset=preset)
    return faces, issame


def write_bin(
    path: str | os.PathLike[str],
    n_pairs: int = 600,
    *,
    seed: int = 2,
    preset: str | Variation = "medium",
    identities: int | None = None,
    quality: int = 95,
    overwrite: bool = False,
) -> Path:
    """An LFW-style ``.bin`` set of synthetic people (Python-2 pickle, aligned JPEGs)."""
    from vitfree.data.bins import write_bin as write_bin_file

    p = Path(path)
    if p.exists() and not overwrite:
        raise InputError(f"{p} exists; give a new file name, or overwrite=True")
    faces, issame = pair_faces(n_pairs, seed, preset, identities)
    blobs = [_encode(f[:, :, ::-1], quality) for f in faces]
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_bin_file(p, blobs, issame.tolist())


def write_pairs(
    out: str | os.PathLike[str],
    n_pairs: int = 300,
    *,
    seed: int = 3,
    preset: str | Variation = "medium",
    identities: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Aligned PNG faces under ``out/imgs`` and ``out/pairs.txt`` (``path1 path2 label``)."""
    import cv2

    from vitfree.data.bins import write_pair_list

    root = Path(out)
    _fresh_folder(root, "pair list", overwrite)
    faces, issame = pair_faces(n_pairs, seed, preset, identities)
    (root / "imgs").mkdir(exist_ok=True)
    pairs = []
    for i, same in enumerate(issame):
        rel = []
        for j in (0, 1):
            name = f"imgs/{i:05d}_{j}.png"
            cv2.imwrite(str(root / name), faces[2 * i + j][:, :, ::-1])
            rel.append(name)
        pairs.append((rel[0], rel[1], int(same)))
    _note(root, "pair list", {"n_pairs": n_pairs, "seed": seed, "preset": str(preset)})
    return write_pair_list(root / "pairs.txt", pairs)


#: name -> writer, for the command line
WRITERS: dict[str, Callable[..., Any]] = {
    "faces": write_image_folder,
    "rec": write_recordio_set,
    "ijbc": write_ijbc,
    "bin": write_bin,
    "pairs": write_pairs,
}
