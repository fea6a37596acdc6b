"""Synthetic IJB-shaped feature sets with identity structure (clearly labelled: not real data).

Real IJB-C features need the licensed dataset and a trained model; neither can be shipped. For
demos, smoke tests and benchmarks at full scale, :func:`ijb_features` generates image features
with the sizes and structure of IJB-C (docs/protocols.md §3): subjects with several templates, templates
made of several media (videos, stills) of several images, a detector score per image, and pair
lists with the real genuine/impostor ratio, ordered by the first template as in the meta file.

An image feature is ``subject centre + media offset + template offset + image noise`` scaled by a
random norm; the defaults put TAR@FAR=1e-4 in the mid-90s, like a good model on IJB-C.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vitfree.data.ijb import write_1n_csv
from vitfree.data.ijb import write_ijb_meta as write_ijb_meta_files

__all__ = ["IJBB_SIZES", "IJBC_SIZES", "SyntheticIJB", "ijb_1n_split", "ijb_features", "write_ijb_meta"]

#: Sizes of IJB-C and IJB-B 1:1 (images, templates, pairs, genuine pairs, subjects).
IJBC_SIZES = dict(images=469_375, templates=23_124, pairs=15_658_489, genuine=19_557, subjects=3_531)
IJBB_SIZES = dict(images=227_630, templates=12_115, pairs=8_010_270, genuine=10_270, subjects=1_845)


@dataclass
class SyntheticIJB:
    """A generated IJB-shaped feature set; rows of ``feats`` follow the image order.

    Attributes:
        feats: (N, D) float32 image embeddings (raw, not normalised).
        flip_feats: (N, D) float32 embeddings of the flipped images, or None.
        faceness: (N,) float32 detector scores.
        templates, medias: (N,) int64 ids.
        p1, p2: (P,) int64 template ids; labels: (P,) int8 1 genuine / 0 impostor.
        template_subjects: {template id: subject id}.
    """

    feats: npt.NDArray[np.float32]
    flip_feats: npt.NDArray[np.float32] | None
    faceness: npt.NDArray[np.float32]
    templates: npt.NDArray[np.int64]
    medias: npt.NDArray[np.int64]
    p1: npt.NDArray[np.int64]
    p2: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int8]
    template_subjects: dict[int, int] = field(default_factory=dict)



def _counts(rng: np.random.Generator, total: int, bins: int, sigma: float) -> np.ndarray:
    """Split ``total`` items into ``bins`` non-empty bins with log-normal sizes."""
    w = rng.lognormal(0.0, sigma, bins)
    extra = rng.multinomial(total - bins, w / w.sum())
    return extra + 1


def ijb_features(
    scale: float = 1.0,
    dim: int = 512,
    seed: int = 0,
    *,
    sizes: dict[str, int] | None = None,
    flip: bool = False,
    noise: float = 2.6,
) -> SyntheticIJB:
    """Generate an IJB-shaped synthetic feature set.

    Args:
        scale: fraction of the IJB-C sizes (1.0 = 469,375 images, 23,124 templates,
            15,658,489 pairs of which 19,557 genuine).
        dim: embedding dimension.
        seed: random seed; the same arguments give the same arrays.
        sizes: override the sizes (keys as :data:`IJBC_SIZES`), e.g. ``IJBB_SIZES``.
        flip: also generate flipped-image features (the image feature plus small noise).
        noise: image noise level relative to the identity signal (higher = harder).
    """
    s = dict(IJBC_SIZES if sizes is None else sizes)
    n_img = max(4, round(s["images"] * scale))
    n_tpl = max(2, min(n_img, round(s["templates"] * scale)))
    n_subj = max(2, min(n_tpl // 2, round(s["subjects"] * scale)))
    n_pairs = max(2, round(s["pairs"] * scale))
    n_gen = max(1, min(n_pairs - 1, round(s["genuine"] * scale)))
    rng = np.random.default_rng(seed)

    # templates -> subjects: every subject has >= 2 templates
    tpl_per_subj = _counts(rng, n_tpl - n_subj, n_subj, 0.5) + 1
    tpl_subject = np.repeat(np.arange(n_subj), tpl_per_subj)
    tpl_ids = np.sort(rng.choice(np.arange(1, 10 * n_tpl + 1), n_tpl, replace=False))
    # images -> templates, templates -> media
    img_per_tpl = _counts(rng, n_img, n_tpl, 1.0)
    img_tpl = np.repeat(np.arange(n_tpl), img_per_tpl)
    media_per_tpl = np.minimum(img_per_tpl, 1 + rng.poisson(2.0, n_tpl))
    media_base = np.concatenate([[0], np.cumsum(media_per_tpl)[:-1]])
    img_media = media_base[img_tpl] + rng.integers(0, 1 << 30, n_img) % media_per_tpl[img_tpl]
    n_media = int(media_per_tpl.sum())

    # features, generated in chunks to bound temporary memory
    centres = rng.standard_normal((n_subj, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    s_img, s_media, s_tpl = noise * 0.55, noise * 0.5, noise * 0.35
    media_off = rng.standard_normal((n_media, dim), dtype=np.float32) * np.float32(s_media / np.sqrt(dim))
    tpl_off = rng.standard_normal((n_tpl, dim), dtype=np.float32) * np.float32(s_tpl / np.sqrt(dim))
    faceness = rng.uniform(0.3, 1.0, n_img).astype(np.float32)
    feats = np.empty((n_img, dim), np.float32)
    flip_feats = np.empty((n_img, dim), np.float32) if flip else None
    step = 65_536
    for a in range(0, n_img, step):
        b = min(n_img, a + step)
        x = rng.standard_normal((b - a, dim), dtype=np.float32)
        # low-quality detections are noisier
        x *= (np.float32(s_img / np.sqrt(dim)) / faceness[a:b])[:, None]
        x += centres[tpl_subject[img_tpl[a:b]]]
        x += media_off[img_media[a:b]]
        x += tpl_off[img_tpl[a:b]]
        x *= rng.uniform(8.0, 30.0, b - a).astype(np.float32)[:, None]  # raw embedding norms
        feats[a:b] = x
        if flip_feats is not None:
            y = rng.standard_normal((b - a, dim), dtype=np.float32)
            y *= np.float32(0.2 / np.sqrt(dim)) * np.linalg.norm(x, axis=1, keepdims=True)
            flip_feats[a:b] = x + y

    # genuine pairs: two templates of one subject; impostors: two subjects
    start = np.concatenate([[0], np.cumsum(tpl_per_subj)[:-1]])
    subj = rng.integers(0, n_subj, n_gen)
    i = rng.integers(0, 1 << 30, n_gen) % tpl_per_subj[subj]
    j = (i + 1 + rng.integers(0, 1 << 30, n_gen) % (tpl_per_subj[subj] - 1)) % tpl_per_subj[subj]
    g1, g2 = start[subj] + i, start[subj] + j
    n_imp = n_pairs - n_gen
    q1 = rng.integers(0, n_tpl, n_imp)
    q2 = rng.integers(0, n_tpl, n_imp)
    same = tpl_subject[q1] == tpl_subject[q2]
    while same.any():
        q2[same] = rng.integers(0, n_tpl, int(same.sum()))
        same = tpl_subject[q1] == tpl_subject[q2]
    a1 = np.concatenate([g1, q1])
    a2 = np.concatenate([g2, q2])
    labels = np.concatenate([np.ones(n_gen, np.int8), np.zeros(n_imp, np.int8)])
    order = np.argsort(a1, kind="stable")
    return SyntheticIJB(
        feats=feats,
        flip_feats=flip_feats,
        faceness=faceness,
        templates=tpl_ids[img_tpl],
        medias=img_media.astype(np.int64) + 1,
        p1=tpl_ids[a1[order]],
        p2=tpl_ids[a2[order]],
        labels=labels[order],
        template_subjects={int(t): int(s_) for t, s_ in zip(tpl_ids, tpl_subject)},
    )


def ijb_1n_split(
    data: SyntheticIJB,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """An IJB-style 1:N split: each subject's first template is its gallery template (even
    subjects in G1, odd in G2); all other templates are probes. Returns (G1, G2, probes) as
    (template_ids, subject_ids) pairs."""
    tids = np.array(sorted(data.template_subjects), dtype=np.int64)
    subj = np.array([data.template_subjects[int(t)] for t in tids], dtype=np.int64)
    _, first = np.unique(subj, return_index=True)
    is_gallery = np.zeros(tids.size, bool)
    is_gallery[first] = True
    g1 = is_gallery & (subj % 2 == 0)
    g2 = is_gallery & (subj % 2 == 1)
    return (tids[g1], subj[g1]), (tids[g2], subj[g2]), (tids[~is_gallery], subj[~is_gallery])


def write_ijb_meta(data: SyntheticIJB, root: str | os.PathLike[str], dataset: str = "IJBC") -> Path:
    """Write ``data`` in the official layout under ``root/<dataset>/meta``.

    Writes ``<p>_face_tid_mid.txt``, ``<p>_template_pair_label.txt``,
    ``<p>_name_5pts_score.txt`` (landmarks of a centred face; the detector score from
    ``data.faceness``) and the 1:N csvs of :func:`ijb_1n_split`, where ``p`` is ``ijbc`` or
    ``ijbb``, with the writers of :mod:`vitfree.data.ijb`.  Returns the meta folder.
    """
    n = data.feats.shape[0]
    names = [f"{i}.jpg" for i in range(1, n + 1)]
    pts = np.array([38.29, 51.69, 73.53, 51.50, 56.02, 71.73, 41.54, 92.36, 70.72, 92.20]) * 1.6
    paths = write_ijb_meta_files(
        root,
        dataset,
        names=names,
        templates=data.templates,
        medias=data.medias,
        landmarks=np.broadcast_to(pts, (n, 10)),
        faceness=data.faceness,
        p1=data.p1,
        p2=data.p2,
        labels=data.labels,
        landmark_decimals=2,
        score_decimals=4,
    )
    meta = paths["meta_dir"]
    prefix = dataset.lower()
    g1, g2, probes = ijb_1n_split(data)
    gnames = ("G1", "G2") if dataset.upper() == "IJBC" else ("S1", "S2")
    for name, (t, sj) in zip(gnames, (g1, g2)):
        write_1n_csv(meta / f"{prefix}_1N_gallery_{name}.csv", t, sj)
    write_1n_csv(meta / f"{prefix}_1N_probe_mixed.csv", *probes)
    return meta
