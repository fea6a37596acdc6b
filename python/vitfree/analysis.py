"""Depth analysis of a face ViT (``vitfree analyze``): how patch tokens, attention and exit
embeddings settle across the blocks, the evidence that training-free exits rest on.

Everything is measured from **one forward pass per batch**, stepped block by block
(:meth:`vitfree.models.ViTBackbone.embed`, then each block's
:meth:`~vitfree.models.Block.forward_with_attention`), over a data set streamed in batches:
the accumulators have a fixed size (L x L, L x N, F x F, ...), so memory does not grow with the
number of images (the only exception is one float32 score per exit for each verification pair,
at most ``2 * pairs_per_batch`` pairs per batch).  Per block k = 1..L:

**Patch tokens**, after the model's LayerNorm ``norm`` (as the exits see them: the shared
head's ``norm`` applied to the block's output):

* ``cos_consecutive[k]``: mean cosine between the same token (same image, same patch) at
  blocks k-1 and k (entry 1 is None: block 1 has no previous block);
* ``cos_last[k]``: the same between block k and block L;
* ``cka``: linear CKA (Kornblith et al. 2019) between every pair of blocks, an L x L matrix,
  estimated in a stream as **minibatch CKA** (Nguyen et al. 2021): the unbiased HSIC estimator
  (Song et al. 2012) of each minibatch's Gram matrices, summed over minibatches, then
  ``CKA = sum HSIC(K, L) / sqrt(sum HSIC(K, K) * sum HSIC(L, L))``.  The features of an image
  are its **flattened tokens** (N*D values in the head's token-major order), i.e. exactly the
  vector that the exit head reads; ``cka_features="mean"`` uses mean-pooled tokens (D values)
  instead.  Minibatches of fewer than 4 images cannot be used by the unbiased estimator and
  are left out of the CKA (counted in ``meta``); ``cka_last[k]`` is column L of the matrix.

**Attention**, from the explicit ``softmax(q k^T * scale)`` probabilities (B, heads, N, N):

* ``similarity_consecutive[k]`` / ``similarity_last[k]``: 1 - Jensen-Shannon divergence
  (base 2, so in [0, 1]) between the head-averaged attention rows of the same query at blocks
  k-1 and k / at blocks k and L, averaged over queries and images;
* ``entropy[k]``: Shannon entropy (nats) of each head's attention row, averaged over heads,
  queries and images (a uniform row over N = 144 patches has log 144 = 4.97 nats);
* ``distance[k]``: mean attention distance (Dosovitskiy et al. 2021) in patches: the
  attention-weighted Euclidean distance on the patch grid between query and key,
  averaged over queries, heads and images;
* ``received[k]``: attention received per patch, the column mean of the head-averaged map
  (sums to 1 over the patches), averaged over images; drawn over the average face;
* ``query_maps[k]``: the head-averaged attention row of a few query patches (the patches of
  the alignment template's eyes, nose tip and mouth centre), averaged over images.

**Exits**: the embedding of exit k is the checkpoint's head applied to block k's tokens
(training-free; ``heads="auto"`` uses loaded exit-specific heads); images only, no flip.

* ``cos_final[k]``: mean cosine between the embedding of exit k and of exit L;
* ``agreement[k]``: fraction of verification pairs on which exit k makes the same
  accept/reject decision as exit L when both run at the same FAR: each exit's threshold is
  the (1 - FAR) quantile (numpy method "higher") of its *own* impostor scores and a pair is
  accepted when its cosine is above it; ``tar[k]`` is that exit's TAR at the threshold.
  Pairs come from the data: a ``.bin`` set's own pairs; for labelled data (synthetic faces,
  an image folder, IJB with its 1:N csvs' subject ids) pairs of images *within a batch*:
  genuine = same label, impostor = different labels, each kind sampled (seeded) down to
  ``pairs_per_batch`` per batch;
* ``effective_rank[k]``: Roy & Vetterli (2007) effective rank of the matrix of L2-normalised
  embeddings (images x F, not centred, as in RankMe): ``exp(H(p))`` with ``p`` the singular
  values divided by their sum; streamed through the F x F Gram matrix, whose eigenvalues are
  the squared singular values.

:func:`analyze` is the API (any iterable of uint8 face batches); :func:`open_data` reads the
data kinds of the command line (an IJB-B/C root, a ``.bin`` file, an image folder or
``"synth"``), :func:`analyze_data` runs both and writes ``analysis.json`` and the plots
(:func:`save_analysis`, :func:`plot_analysis`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from vitfree._logging import get_logger
from vitfree.errors import InputError, InputTypeError

__all__ = [
    "Analysis",
    "AnalysisBatch",
    "DataSource",
    "MinibatchCKA",
    "analyze",
    "analyze_data",
    "effective_rank",
    "hsic_unbiased",
    "linear_cka",
    "open_data",
    "plot_analysis",
    "save_analysis",
]

log = get_logger(__name__)

#: Names of the query patches of :attr:`Analysis.query_maps`, at the alignment template's points.
QUERY_NAMES = ("left eye", "right eye", "nose tip", "mouth")

#: Images of each synthetic identity, in a row (so that batches hold genuine pairs).
SYNTH_IMAGES_PER_IDENTITY = 4


# --------------------------------------------------------------------------------------
# CKA and effective rank: the estimators, on plain arrays
# --------------------------------------------------------------------------------------


def _as_float64(x: Any, name: str) -> npt.NDArray[np.float64]:
    arr = np.asarray(x.detach().cpu() if isinstance(x, Tensor) else x, dtype=np.float64)
    if arr.ndim != 2:
        raise InputError(f"{name} must be a 2-D (n, features) matrix, got shape {arr.shape}")
    return arr


def linear_cka(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Linear CKA of two representations of the same n inputs, on the full matrices.

    ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``
    (Kornblith et al. 2019; the biased HSIC estimator).  Invariant to orthogonal transforms
    and isotropic scaling of either representation.

    Args:
        x: (n, p) features; y: (n, q) features of the same n inputs, in the same order.
    """
    a = _as_float64(x, "x")
    b = _as_float64(y, "y")
    if a.shape[0] != b.shape[0]:
        raise InputError(f"x and y must hold the same inputs: {a.shape[0]} vs {b.shape[0]} rows")
    a = a - a.mean(0)
    b = b - b.mean(0)
    den = np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)
    return float(np.linalg.norm(b.T @ a) ** 2 / den) if den > 0 else float("nan")


def _hsic_matrix(grams: Tensor) -> Tensor:
    """Unbiased HSIC of every pair of R Gram matrices (R, n, n) of one minibatch -> (R, R).

    Song et al. (2012): with ``Kt`` the Gram matrix with a zero diagonal,
    ``HSIC_1 = [tr(Kt Lt) + 1'Kt1 1'Lt1 / ((n-1)(n-2)) - 2/(n-2) 1'Kt Lt 1] / (n (n-3))``.
    All pairs at once: ``tr(Kt Lt)`` is the dot product of the (symmetric) flattened matrices
    and ``1'Kt Lt 1`` the dot product of their row sums.
    """
    r, n, _ = grams.shape
    if n < 4:
        raise InputError(f"the unbiased HSIC estimator needs n >= 4 samples, got {n}")
    kt = grams.clone()
    kt.diagonal(dim1=1, dim2=2).zero_()
    flat = kt.reshape(r, n * n)
    trace = flat @ flat.T
    rows = kt.sum(2)
    total = rows.sum(1)
    out = (
        trace + torch.outer(total, total) / ((n - 1) * (n - 2)) - (2.0 / (n - 2)) * (rows @ rows.T)
    )
    return out / (n * (n - 3))


def hsic_unbiased(k: npt.ArrayLike, l: npt.ArrayLike) -> float:  # noqa: E741 - the paper's name
    """Unbiased HSIC estimator (Song et al. 2012) of two (n, n) Gram matrices, n >= 4."""
    a = torch.as_tensor(np.asarray(k, dtype=np.float64))
    b = torch.as_tensor(np.asarray(l, dtype=np.float64))
    if a.dim() != 2 or a.shape[0] != a.shape[1] or a.shape != b.shape:
        raise InputError(
            f"expected two (n, n) Gram matrices, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return float(_hsic_matrix(torch.stack([a, b]))[0, 1])


class MinibatchCKA:
    """Streaming linear CKA between R representations (Nguyen et al. 2021, minibatch CKA).

    Each :meth:`update` adds one minibatch: the unbiased HSIC of every pair of
    representations (:func:`hsic_unbiased` of their linear Gram matrices) is summed;
    :meth:`value` gives ``CKA[a, b] = S[a, b] / sqrt(S[a, a] S[b, b])``.  With one minibatch
    this is the unbiased-HSIC CKA of that batch; over many it converges to the linear CKA of
    the population (the sum of unbiased estimates is unbiased, unlike the sum of biased
    per-batch CKAs).  Accumulated in float64; memory R x R whatever the number of batches.

    Args:
        count: number of representations R.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise InputError(f"count must be >= 1, got {count}")
        self.count = count
        self.sums = torch.zeros(count, count, dtype=torch.float64)
        self.batches = 0
        self.samples = 0

    def update_grams(self, grams: Tensor) -> None:
        """Add one minibatch given as Gram matrices (R, n, n), n >= 4 (any device)."""
        if grams.dim() != 3 or grams.shape[0] != self.count or grams.shape[1] != grams.shape[2]:
            raise InputError(
                f"expected ({self.count}, n, n) Gram matrices, got {tuple(grams.shape)}"
            )
        h = _hsic_matrix(grams.to(torch.float64))
        self.sums = self.sums.to(h.device) + h
        self.batches += 1
        self.samples += int(grams.shape[1])

    def update(self, features: Sequence[Any]) -> None:
        """Add one minibatch given as R feature matrices (n, p_r) of the same n inputs."""
        if len(features) != self.count:
            raise InputError(f"expected {self.count} feature matrices, got {len(features)}")
        mats = [
            f.to(torch.float64).reshape(f.shape[0], -1)
            if isinstance(f, Tensor)
            else torch.as_tensor(np.asarray(f, dtype=np.float64)).reshape(len(f), -1)
            for f in features
        ]
        n = {int(m.shape[0]) for m in mats}
        if len(n) != 1:
            raise InputError(f"the feature matrices hold different numbers of inputs: {sorted(n)}")
        self.update_grams(torch.stack([m @ m.T for m in mats]))

    def value(self) -> npt.NDArray[np.float64]:
        """(R, R) CKA matrix (NaN where a representation has zero estimated HSIC)."""
        if self.batches == 0:
            raise InputError("no minibatch of >= 4 inputs was added; CKA is undefined")
        s = self.sums.cpu().numpy()
        d = np.sqrt(np.clip(np.diag(s), 0.0, None))
        with np.errstate(divide="ignore", invalid="ignore"):
            return s / np.outer(d, d)


def effective_rank(x: npt.ArrayLike, *, gram: bool = False) -> float:
    """Effective rank (Roy & Vetterli 2007): ``exp(-sum p_i log p_i)``, ``p = s / sum(s)``.

    Args:
        x: an (n, F) matrix whose singular values ``s`` are used, or with ``gram=True`` its
            (F, F) Gram matrix ``x^T x`` (the singular values are the square roots of the
            eigenvalues; how :func:`analyze` streams it).
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise InputError(f"expected a 2-D matrix, got shape {a.shape}")
    if gram:
        s = np.sqrt(np.clip(np.linalg.eigvalsh((a + a.T) / 2), 0.0, None))
    else:
        s = np.linalg.svd(a, compute_uv=False)
    total = s.sum()
    if total <= 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


# --------------------------------------------------------------------------------------
# data: what analyze() reads
# --------------------------------------------------------------------------------------


@dataclass
class AnalysisBatch:
    """A batch of aligned faces for :func:`analyze`.

    Attributes:
        images: (B, 3, H, W) uint8 RGB tensor of aligned faces.
        labels: (B,) int64 identity labels (-1: unknown), or None; verification pairs are
            then formed within the batch (genuine: same label, impostor: different labels).
        pairs: (P, 2) int64 rows of this batch forming given verification pairs, or None
            (e.g. a ``.bin`` set's pairs); takes precedence over ``labels``.
        issame: (P,) bool, True for genuine pairs (with ``pairs``).
    """

    images: Tensor
    labels: npt.NDArray[np.int64] | None = None
    pairs: npt.NDArray[np.int64] | None = None
    issame: npt.NDArray[np.bool_] | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _as_batch(item: Any, index: int) -> AnalysisBatch:
    if isinstance(item, AnalysisBatch):
        batch = item
    elif hasattr(item, "images") and hasattr(item, "rows"):  # a vitfree.faces.FaceBatch
        batch = AnalysisBatch(item.images)
    elif isinstance(item, (Tensor, np.ndarray)):
        batch = AnalysisBatch(torch.as_tensor(item))
    else:
        raise InputTypeError(
            f"batch {index}: expected an AnalysisBatch, a FaceBatch or a uint8 (B, 3, H, W) "
            f"tensor, got {type(item).__name__}"
        )
    img = batch.images
    if not isinstance(img, Tensor):
        batch.images = img = torch.as_tensor(img)
    if img.dtype != torch.uint8:
        raise InputTypeError(f"batch {index}: expected uint8 face images, got {img.dtype}")
    if img.dim() != 4 or img.shape[1] != 3:
        raise InputError(
            f"batch {index}: expected (B, 3, H, W) RGB faces (channels first), got shape {tuple(img.shape)}"
        )
    b = int(img.shape[0])
    if batch.pairs is not None:
        p = np.asarray(batch.pairs, dtype=np.int64).reshape(-1, 2)
        same = (
            np.asarray(batch.issame, dtype=bool).reshape(-1) if batch.issame is not None else None
        )
        if same is None or same.shape[0] != p.shape[0]:
            raise InputError(f"batch {index}: pairs need one issame flag each")
        if p.size and (p.min() < 0 or p.max() >= b):
            raise InputError(f"batch {index}: pair rows must lie in [0, {b})")
        batch.pairs, batch.issame = p, same
    if batch.labels is not None:
        lab = np.asarray(batch.labels, dtype=np.int64).reshape(-1)
        if lab.shape[0] != b:
            raise InputError(f"batch {index}: {lab.shape[0]} labels for {b} images")
        batch.labels = lab
    return batch


@dataclass
class DataSource:
    """Faces to analyse, as :func:`open_data` reads them.

    Attributes:
        kind: ``"synth"``, ``"bin"``, ``"ijb"`` or ``"folder"``.
        n_images: how many images :meth:`batches` yields.
        synthetic: SYNTHETIC faces (rendered, not people).
        description: what the data is, for ``analysis.json``.
    """

    kind: str
    n_images: int
    synthetic: bool
    description: dict[str, Any]
    make: Callable[[], Iterator[AnalysisBatch]] = field(repr=False)

    def batches(self) -> Iterator[AnalysisBatch]:
        """The faces, batch after batch (a fresh pass on each call)."""
        return self.make()


def _check_sizes(batch_size: Any, max_images: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise InputTypeError(f"batch_size must be an integer, got {batch_size!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size < 4:
        raise InputError(
            f"batch_size must be >= 4: the unbiased CKA estimator needs 4 images per minibatch, "
            f"got {batch_size}"
        )
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):  # fmt: skip
        raise InputError(f"max_images must be a positive integer or None, got {max_images!r}")


def _synthetic_note(*folders: Path) -> bool:
    return any((f / "SYNTHETIC.txt").is_file() for f in folders)


def open_data(
    data: str | os.PathLike[str],
    *,
    batch_size: int = 64,
    max_images: int | None = None,
    seed: int = 1,
    identities: int = 100,
    preset: str = "medium",
    num_workers: int = 0,
) -> DataSource:
    """The faces of ``--data``: an IJB-B/C root, a ``.bin`` file, an image folder or ``"synth"``.

    * ``"synth"``: SYNTHETIC aligned faces rendered on the fly
      (:func:`vitfree.synthetic.faces.aligned_faces`): identities ``0..identities-1`` of
      ``seed`` in turn, :data:`SYNTH_IMAGES_PER_IDENTITY` images each in a row, ``max_images``
      in all (default 1024); the same arguments give the same images for any batch size.
      Seed 1 (the default) holds no identity of the demo model's training seed (100).
    * a ``.bin`` file (docs/protocols.md §5): its first ``max_images // 2`` pairs; the batch
      size is rounded up to an even number so that every pair lies in one batch.
    * an IJB-B/C root (a folder holding ``IJBC/``/``IJBB/``, the dataset folder or its
      ``meta``): the first ``max_images`` rows of ``face_tid_mid``, aligned with their
      landmarks; labels (for within-batch pairs) are the 1:N csvs' subject ids when those
      files are there.
    * an image folder (one sub-folder of aligned 112x112 faces per identity): the first
      ``max_images`` files in sorted order, labelled by folder.

    Raises:
        InputError: a bad batch size (< 4) or ``max_images``; a path that is none of these
            kinds; FileNotFoundError: a path that does not exist.
    """
    _check_sizes(batch_size, max_images)
    text = os.fspath(data)
    if text == "synth":
        return _synth_source(batch_size, max_images or 1024, seed, identities, preset)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"--data {text}: no such file or folder (expected 'synth', a .bin file, an IJB-B/C "
            f"root or an image folder)"
        )
    if path.is_file():
        if path.suffix.lower() == ".bin":
            return _bin_source(path, batch_size, max_images)
        raise InputError(
            f"--data {text}: unknown kind of data file (expected a .bin verification set); "
            f"other kinds are 'synth', an IJB-B/C root or an image folder"
        )
    from vitfree.data.ijb import find_meta_dir

    for ds in ("IJBC", "IJBB"):
        try:
            find_meta_dir(path, ds)
        except (FileNotFoundError, InputError, ValueError):
            continue
        return _ijb_source(path, ds, batch_size, max_images, num_workers)
    has_people = any(p.is_dir() for p in path.iterdir())
    if has_people:
        return _folder_source(path, batch_size, max_images, num_workers)
    raise InputError(
        f"--data {text}: not an IJB-B/C root (no IJBC/meta or IJBB/meta) nor an image folder "
        f"(no sub-folder per identity); expected 'synth', a .bin file, an IJB-B/C root or an "
        f"image folder"
    )


def _synth_source(batch_size: int, n: int, seed: int, identities: int, preset: str) -> DataSource:
    from vitfree.synthetic.faces import _variation

    if identities < 2:
        raise InputError(
            f"identities must be >= 2 (impostor pairs need two people), got {identities}"
        )
    _variation(preset)
    m = SYNTH_IMAGES_PER_IDENTITY

    def groups() -> Iterator[tuple[npt.NDArray[np.uint8], int]]:
        from vitfree.synthetic.faces import aligned_faces

        g = 0
        while True:
            ident = g % identities
            # group g: images of identity g % identities, seeded by (seed, g): the same for
            # any batch size
            faces = aligned_faces(
                [ident] * m, seed=seed, image_seed=seed * 1_000_003 + g, preset=preset
            )
            for f in faces:
                yield f, ident
            g += 1

    def make() -> Iterator[AnalysisBatch]:
        it = groups()
        done = 0
        while done < n:
            b = min(batch_size, n - done)
            items = [next(it) for _ in range(b)]
            imgs = np.stack([f for f, _ in items]).transpose(0, 3, 1, 2)
            labels = np.array([i for _, i in items], dtype=np.int64)
            yield AnalysisBatch(torch.from_numpy(np.ascontiguousarray(imgs)), labels=labels)
            done += b

    desc = {
        "kind": "synth",
        "label": "SYNTHETIC faces (rendered 2.5D heads, not real people)",
        "seed": seed,
        "identities": identities,
        "images_per_identity": m,
        "preset": preset,
        "pairs": "within-batch, from identity labels",
    }
    return DataSource("synth", n, True, desc, make)


def _bin_source(path: Path, batch_size: int, max_images: int | None) -> DataSource:
    from vitfree.data import load_bin

    ps = load_bin(path)
    n_pairs = len(ps) if max_images is None else min(len(ps), max_images // 2)
    if n_pairs < 1:
        raise InputError(f"--data {path}: no pair to analyse (max_images {max_images} < 2)")
    bs = batch_size + (batch_size % 2)
    if bs != batch_size:
        log.info("batch size %d -> %d: every .bin pair stays in one batch", batch_size, bs)
    images = ps.images[: 2 * n_pairs]
    issame = ps.issame[:n_pairs]

    def make() -> Iterator[AnalysisBatch]:
        for s in range(0, 2 * n_pairs, bs):
            chunk = images[s : s + bs]
            k = chunk.shape[0] // 2
            first = s // 2
            yield AnalysisBatch(
                torch.from_numpy(np.ascontiguousarray(chunk.transpose(0, 3, 1, 2))),
                pairs=np.stack([np.arange(k) * 2, np.arange(k) * 2 + 1], axis=1),
                issame=issame[first : first + k],
            )

    synthetic = _synthetic_note(path.parent)
    desc: dict[str, Any] = {"kind": "bin", "path": str(path), "pairs": n_pairs,
                            "pairs_from": "the .bin set's pairs"}  # fmt: skip
    if synthetic:
        desc["label"] = "SYNTHETIC faces (SYNTHETIC.txt beside the file)"
    return DataSource("bin", 2 * n_pairs, synthetic, desc, make)


def _ijb_source(
    root: Path, dataset: str, batch_size: int, max_images: int | None, num_workers: int
) -> DataSource:
    from vitfree.data.ijb import load_ijb_1n, load_ijb_meta
    from vitfree.faces import IJBCrops, face_batches

    meta = load_ijb_meta(root, dataset, pairs=False)
    n = len(meta) if max_images is None else min(len(meta), max_images)
    labels = np.full(len(meta), -1, dtype=np.int64)
    pairs_from = "none (no 1:N csvs with subject ids)"
    try:
        onen = load_ijb_1n(root, dataset)
    except FileNotFoundError:
        onen = None
    if onen is not None:
        tids = np.concatenate([onen.gallery1[0], onen.gallery2[0], onen.probes[0]])
        sids = np.concatenate([onen.gallery1[1], onen.gallery2[1], onen.probes[1]])
        order = np.argsort(tids, kind="stable")
        tids, sids = tids[order], sids[order]
        pos = np.clip(np.searchsorted(tids, meta.templates), 0, max(tids.size - 1, 0))
        known = tids.size > 0
        hit = (tids[pos] == meta.templates) if known else np.zeros(len(meta), bool)
        labels[hit] = sids[pos[hit]]
        pairs_from = "within-batch, from the 1:N csvs' subject ids"
    crops = IJBCrops(meta=meta, indices=np.arange(n), normalize=False)

    def make() -> Iterator[AnalysisBatch]:
        for fb in face_batches(crops, batch_size, num_workers=num_workers):
            yield AnalysisBatch(fb.images, labels=labels[fb.rows])

    synthetic = _synthetic_note(meta.meta_dir.parent, meta.meta_dir.parent.parent, root)
    desc: dict[str, Any] = {"kind": "ijb", "dataset": dataset, "path": str(root),
                            "meta": str(meta.meta_dir), "pairs": pairs_from}  # fmt: skip
    if synthetic:
        desc["label"] = "SYNTHETIC faces (SYNTHETIC.txt in the data folder)"
    return DataSource("ijb", n, synthetic, desc, make)


def _folder_source(
    root: Path, batch_size: int, max_images: int | None, num_workers: int
) -> DataSource:
    from torch.utils.data import DataLoader, Subset

    from vitfree.faces import FolderFaces
    from vitfree.runtime import worker_context

    faces = FolderFaces(root)
    n = len(faces) if max_images is None else min(len(faces), max_images)
    if n == 0:
        raise InputError(f"--data {root}: no .jpg/.png image in its identity folders")

    def make() -> Iterator[AnalysisBatch]:
        loader = DataLoader(
            Subset(faces, range(n)),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            multiprocessing_context=worker_context() if num_workers > 0 else None,
        )
        for img, lab in loader:
            yield AnalysisBatch(
                img.permute(0, 3, 1, 2).contiguous(), labels=lab.numpy().astype(np.int64)
            )

    synthetic = _synthetic_note(root)
    desc: dict[str, Any] = {"kind": "folder", "path": str(root), "identities": faces.classes,
                            "pairs": "within-batch, from the identity folders"}  # fmt: skip
    if synthetic:
        desc["label"] = "SYNTHETIC faces (SYNTHETIC.txt in the folder)"
    return DataSource("folder", n, synthetic, desc, make)


# --------------------------------------------------------------------------------------
# the analysis
# --------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """What :func:`analyze` measured; lists are per block 1..L (see the module docstring).

    Attributes:
        blocks: [1, ..., L].
        n_images: images analysed.
        token_cos_consecutive, token_cos_last, cka_last: per-block token measures (entry 1 of
            ``token_cos_consecutive`` is None).
        cka: (L, L) float64 minibatch linear CKA of the blocks' tokens.
        attn_similarity_consecutive, attn_similarity_last: 1 - JS divergence (entry 1 of the
            first is None).
        attn_entropy: nats; attn_distance: patches.
        attn_received: (L, N) float64 attention received per patch (rows sum to 1).
        query_patches: token indices of the query patches; query_maps: (L, Q, N) float64.
        exit_cos_final, exit_agreement, exit_agreement_genuine, exit_agreement_impostor,
            exit_tar, exit_threshold: per exit (all but the first None where there are no
            genuine or no impostor pairs); the agreement on all pairs, on the genuine pairs
            alone and on the impostor pairs alone.
        effective_rank: per exit.
        genuine_pairs, impostor_pairs: verification pairs used; far: the matched FAR.
        mean_face: (H, W, 3) float32 average aligned face (RGB, 0..255).
        grid: tokens per side; patch_size: pixels per patch.
        meta: model, data, run settings (written to ``analysis.json``).
    """

    blocks: list[int]
    n_images: int
    token_cos_consecutive: list[float | None]
    token_cos_last: list[float]
    cka: npt.NDArray[np.float64]
    cka_last: list[float]
    attn_similarity_consecutive: list[float | None]
    attn_similarity_last: list[float]
    attn_entropy: list[float]
    attn_distance: list[float]
    attn_received: npt.NDArray[np.float64]
    query_patches: list[int]
    query_maps: npt.NDArray[np.float64]
    exit_cos_final: list[float]
    exit_agreement: list[float | None]
    exit_agreement_genuine: list[float | None]
    exit_agreement_impostor: list[float | None]
    exit_tar: list[float | None]
    exit_threshold: list[float | None]
    effective_rank: list[float]
    genuine_pairs: int
    impostor_pairs: int
    far: float
    mean_face: npt.NDArray[np.float32]
    grid: int
    patch_size: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """The analysed faces are SYNTHETIC."""
        return bool(self.meta.get("synthetic", False))

    def as_dict(self) -> dict[str, Any]:
        """The JSON document of ``analysis.json`` (plain lists and numbers; NaN -> None)."""
        return _clean(
            {
                "format": "vitfree.analysis",
                "version": 1,
                "synthetic": self.synthetic,
                "n_images": self.n_images,
                "blocks": self.blocks,
                "tokens": {
                    "cos_consecutive": self.token_cos_consecutive,
                    "cos_last": self.token_cos_last,
                    "cka_last": self.cka_last,
                },
                "cka": self.cka.tolist(),
                "attention": {
                    "similarity_consecutive": self.attn_similarity_consecutive,
                    "similarity_last": self.attn_similarity_last,
                    "entropy": self.attn_entropy,
                    "distance": self.attn_distance,
                    "received": self.attn_received.tolist(),
                    "query_patches": self.query_patches,
                    "query_names": list(QUERY_NAMES[: len(self.query_patches)]),
                    "query_maps": self.query_maps.tolist(),
                    "grid": self.grid,
                    "patch_size": self.patch_size,
                },
                "exits": {
                    "cos_final": self.exit_cos_final,
                    "agreement": self.exit_agreement,
                    "agreement_genuine": self.exit_agreement_genuine,
                    "agreement_impostor": self.exit_agreement_impostor,
                    "tar": self.exit_tar,
                    "threshold": self.exit_threshold,
                    "far": self.far,
                    "genuine_pairs": self.genuine_pairs,
                    "impostor_pairs": self.impostor_pairs,
                    "effective_rank": self.effective_rank,
                },
                "meta": self.meta,
            }
        )

    def table(self) -> str:
        """A per-block text table of the main measures (what ``vitfree analyze`` prints)."""
        cols = [
            ("block", [str(b) for b in self.blocks]),
            ("tok cos last", _fmt_list(self.token_cos_last)),
            ("CKA last", _fmt_list(self.cka_last)),
            ("attn sim last", _fmt_list(self.attn_similarity_last)),
            ("entropy", _fmt_list(self.attn_entropy, 2)),
            ("distance", _fmt_list(self.attn_distance, 2)),
            ("emb cos final", _fmt_list(self.exit_cos_final)),
            (f"agree@{self.far:g}", _fmt_list(self.exit_agreement)),
            ("eff. rank", _fmt_list(self.effective_rank, 1)),
        ]
        widths = [max(len(h), *(len(v) for v in vals)) for h, vals in cols]
        lines = ["  ".join(h.rjust(w) for (h, _), w in zip(cols, widths))]
        for i in range(len(self.blocks)):
            lines.append("  ".join(vals[i].rjust(w) for (_, vals), w in zip(cols, widths)))
        return "\n".join(lines)


def _fmt_list(xs: Sequence[float | None], digits: int = 3) -> list[str]:
    return ["-" if x is None or not math.isfinite(x) else f"{x:.{digits}f}" for x in xs]


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    return x


def query_patches(grid: int, patch_size: int, img_size: int = 112) -> list[int]:
    """Token indices of the patches holding the alignment template's eyes, nose tip and mouth
    centre (:data:`QUERY_NAMES`), row-major on a ``grid`` x ``grid`` patch grid."""
    from vitfree.data.align import ALIGNED_SIZE, ARCFACE_TEMPLATE

    t = ARCFACE_TEMPLATE * (img_size / ALIGNED_SIZE)
    points = [t[0], t[1], t[2], (t[3] + t[4]) / 2]
    out = []
    for x, y in points:
        r = min(int(y // patch_size), grid - 1)
        c = min(int(x // patch_size), grid - 1)
        out.append(r * grid + c)
    return out


def _grid_distances(grid: int, device: torch.device) -> Tensor:
    """(N, N) Euclidean distance in patches between the grid positions of two tokens."""
    idx = torch.arange(grid * grid, device=device)
    rc = torch.stack([idx // grid, idx % grid], dim=1).to(torch.float32)
    return torch.cdist(rc, rc)


def _js_similarity(p: Tensor, q: Tensor) -> Tensor:
    """1 - Jensen-Shannon divergence (base 2) between rows of p and q (..., N) -> (...)."""
    m = ((p + q) / 2).clamp_min(1e-30)
    js = 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)
    js = js + 0.5 * (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)
    return 1.0 - js / math.log(2.0)


def _within_batch_pairs(
    labels: npt.NDArray[np.int64], rng: np.random.Generator, cap: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Pairs (i < j) of labelled rows: all genuine and all impostor pairs, each kind sampled
    down to ``cap``."""
    i, j = np.triu_indices(labels.shape[0], 1)
    keep = (labels[i] >= 0) & (labels[j] >= 0)
    same = labels[i] == labels[j]
    chosen = []
    for sel in (np.flatnonzero(keep & same), np.flatnonzero(keep & ~same)):
        if sel.size > cap:
            sel = np.sort(rng.choice(sel, cap, replace=False))
        chosen.append(sel)
    idx = np.concatenate(chosen)
    return np.stack([i[idx], j[idx]], axis=1).astype(np.int64), same[idx]


class _Accumulator:
    """The fixed-size running sums of every measure (on the model's device, float64)."""

    def __init__(self, depth: int, grid: int, queries: list[int], device: torch.device) -> None:
        def zeros(*shape: int) -> Tensor:
            return torch.zeros(shape, dtype=torch.float64, device=device)

        L = depth
        self.L = L
        self.n_images = 0
        self.n_tokens = 0
        self.tok_cons = zeros(L)
        self.tok_last = zeros(L)
        self.att_cons = zeros(L)
        self.att_last = zeros(L)
        self.entropy = zeros(L)
        self.distance = zeros(L)
        self.received = zeros(L, grid * grid)
        self.queries = queries
        self.query_maps = zeros(L, len(queries), grid * grid)
        self.exit_cos = zeros(L)
        self.grams: Tensor | None = None  # (L, F, F) of the normalised embeddings
        self.cka = MinibatchCKA(L)
        self.small_batches = 0
        self.scores: list[npt.NDArray[np.float32]] = []  # (P, L) per batch
        self.issame: list[npt.NDArray[np.bool_]] = []
        self.face_sum: Tensor | None = None
        self.dist = _grid_distances(grid, device)


def analyze(
    model: Any,
    batches: Iterable[Any],
    *,
    device: str | torch.device | None = "auto",
    amp: str | None = None,
    far: float = 1e-2,
    cka_features: str = "flatten",
    heads: str = "shared",
    pairs_per_batch: int = 512,
    seed: int = 0,
    total: int | None = None,
    progress: bool = True,
    data_info: dict[str, Any] | None = None,
) -> Analysis:
    """Depth analysis of a face ViT over a stream of face batches (see the module docstring).

    One forward pass per batch, block by block, collecting what every measure needs; the
    running sums have a fixed size, so memory does not grow with the data (per batch it
    holds each block's normalised tokens and head-averaged attention maps).

    Args:
        model: a :class:`vitfree.models.VisionTransformer` (moved to ``device``, eval mode).
        batches: an iterable of :class:`AnalysisBatch`, :class:`vitfree.faces.FaceBatch` or
            uint8 (B, 3, H, W) RGB tensors of aligned faces; every batch of >= 4 images adds
            to the CKA.  :func:`open_data` gives them for the command line's data kinds.
        device, amp: where and in what precision the model runs (:func:`vitfree.runtime.runtime`).
        far: the FAR at which exits' verification decisions are compared, in (0, 1).
        cka_features: ``"flatten"`` (an image's N*D token vector, what the head reads) or
            ``"mean"`` (its mean-pooled token, D values).
        heads: ``"shared"`` (the checkpoint's head at every exit: training-free) or ``"auto"``
            (exit-specific heads where loaded).
        pairs_per_batch: at most this many genuine and this many impostor within-batch pairs
            per batch (labelled data).
        seed: the sampling of within-batch pairs.
        total: number of images, for the progress bar.
        progress: show a progress bar.
        data_info: what the data is (recorded in ``meta``; ``synthetic: True`` labels the
            result SYNTHETIC).

    Returns:
        :class:`Analysis`.

    Raises:
        InputError: no images; bad ``far``, ``cka_features``, ``heads``; no batch of >= 4
            images; InputTypeError: a model or batch of the wrong kind.
    """
    from tqdm.auto import tqdm

    from vitfree.inference import check_face_model
    from vitfree.models import model_fingerprint, preprocess
    from vitfree.runtime import runtime

    check_face_model(model)
    if isinstance(far, bool) or not isinstance(far, (int, float)) or not 0 < far < 1:
        raise InputError(f"far must lie in (0, 1), got {far!r}")
    if cka_features not in ("flatten", "mean"):
        raise InputError(f"cka_features must be 'flatten' or 'mean', got {cka_features!r}")
    if heads not in ("shared", "auto"):
        raise InputError(f"heads must be 'shared' or 'auto', got {heads!r}")
    if (
        isinstance(pairs_per_batch, bool)
        or not isinstance(pairs_per_batch, int)
        or pairs_per_batch < 1
    ):
        raise InputError(f"pairs_per_batch must be a positive integer, got {pairs_per_batch!r}")
    rt = runtime(device, amp)
    model.to(rt.device).eval()
    L = model.depth
    grid = model.config.grid_size
    patch = model.config.patch_size
    queries = query_patches(grid, patch, model.img_size)
    acc = _Accumulator(L, grid, queries, rt.device)
    bar = tqdm(total=total, desc="analyze", unit="img", disable=not progress, dynamic_ncols=True)
    try:
        for index, item in enumerate(batches):
            batch = _as_batch(item, index)
            if len(batch) == 0:
                continue
            _analyze_batch(model, batch, acc, rt, preprocess, cka_features, heads,
                           np.random.default_rng([seed, index]), pairs_per_batch)  # fmt: skip
            bar.update(len(batch))
    finally:
        bar.close()
    if acc.n_images == 0:
        raise InputError("no images to analyse: the data gave no batch with a face")
    if acc.cka.batches == 0:
        raise InputError(
            "no batch of >= 4 images: the unbiased CKA estimator needs 4 images per minibatch "
            "(use a batch size >= 4)"
        )
    info = dict(data_info or {})
    meta = {
        "model": {
            "name": model.arch or f"ViT D={model.embed_dim} depth={model.depth}",
            "arch": model.arch,
            "config": model.config.describe(),
            "fingerprint": model_fingerprint(model),
            "heads": heads,
        },
        "data": info,
        "synthetic": bool(info.get("synthetic", False)),
        "cka_features": cka_features,
        "cka_estimator": "minibatch CKA, unbiased HSIC (Nguyen et al. 2021)",
        "cka_batches": acc.cka.batches,
        "cka_images": acc.cka.samples,
        "batches_left_out_of_cka": acc.small_batches,
        "attention_similarity": "1 - Jensen-Shannon divergence (base 2) of head-averaged rows",
        "attention_entropy_unit": "nats (per head, averaged)",
        "attention_distance_unit": "patches",
        "effective_rank": "Roy & Vetterli, L2-normalised embeddings, not centred",
        "exit_embeddings": "images only (no flip)",
        "device": str(rt.device),
        "amp": rt.amp,
        "pair_seed": seed,
        "pairs_per_batch": pairs_per_batch,
    }
    return _finish(acc, model, far, grid, patch, meta)


def _analyze_batch(
    model: Any,
    batch: AnalysisBatch,
    acc: _Accumulator,
    rt: Any,
    preprocess: Callable[..., Tensor],
    cka_features: str,
    heads: str,
    rng: np.random.Generator,
    cap: int,
) -> None:
    b = len(batch)
    L = acc.L
    imgs = batch.images.to(rt.device, non_blocking=True)
    face = imgs.to(torch.float64).sum(0)
    acc.face_sum = face if acc.face_sum is None else acc.face_sum + face
    x = preprocess(imgs.permute(0, 2, 3, 1), dtype=model.pos_embed.dtype)
    units: list[Tensor] = []  # per block: (B, N, D) unit-length normalised tokens
    maps: list[Tensor] = []  # per block: (B, N, N) head-averaged attention
    outs: list[Tensor] = []  # per block: (B, N, D) block output (for the exit heads)
    grams: list[Tensor] = []
    with torch.inference_mode(), rt.autocast():
        t = model.embed(x)
        for k in range(L):
            t, attn = model.blocks[k].forward_with_attention(t, True)
            outs.append(t)
            z = model.norm(t).float()
            u = torch.nn.functional.normalize(z, dim=-1)
            if units:
                acc.tok_cons[k] += (u * units[-1]).sum(-1).sum(dtype=torch.float64)
            units.append(u)
            f = (z.flatten(1) if cka_features == "flatten" else z.mean(1)).to(torch.float64)
            grams.append(f @ f.T)
            a = attn.float()  # (B, H, N, N)
            acc.entropy[k] += (-torch.xlogy(a, a).sum(-1)).mean((1, 2)).sum(dtype=torch.float64)
            am = a.mean(1)
            acc.distance[k] += (am * acc.dist).sum(-1).mean(-1).sum(dtype=torch.float64)
            acc.received[k] += am.mean(1).sum(0, dtype=torch.float64)
            acc.query_maps[k] += am[:, acc.queries, :].sum(0, dtype=torch.float64)
            if maps:
                acc.att_cons[k] += _js_similarity(am, maps[-1]).mean(-1).sum(dtype=torch.float64)
            maps.append(am)
        for k in range(L):
            acc.tok_last[k] += (units[k] * units[-1]).sum(-1).sum(dtype=torch.float64)
            acc.att_last[k] += _js_similarity(maps[k], maps[-1]).mean(-1).sum(dtype=torch.float64)
        del units, maps
        if b >= 4:
            acc.cka.update_grams(torch.stack(grams))
        else:
            acc.small_batches += 1
        del grams
        embs = _exit_embeddings(model, outs, heads)  # (L, B, F) float32, unit length
    del outs
    acc.exit_cos += (embs * embs[-1]).sum(-1).sum(1, dtype=torch.float64)
    e64 = embs.to(torch.float64)
    g = e64.transpose(1, 2) @ e64
    acc.grams = g if acc.grams is None else acc.grams + g
    if batch.pairs is not None and batch.issame is not None:
        pairs, same = batch.pairs, batch.issame
    elif batch.labels is not None:
        pairs, same = _within_batch_pairs(batch.labels, rng, cap)
    else:
        pairs, same = np.zeros((0, 2), np.int64), np.zeros(0, bool)
    if pairs.shape[0]:
        p = torch.as_tensor(pairs, device=embs.device)
        s = (embs[:, p[:, 0]] * embs[:, p[:, 1]]).sum(-1)  # (L, P)
        acc.scores.append(s.T.cpu().numpy().astype(np.float32))
        acc.issame.append(same)
    acc.n_images += b
    acc.n_tokens += b * model.num_patches


def _exit_embeddings(model: Any, outs: list[Tensor], heads: str) -> Tensor:
    """Every exit's L2-normalised embedding (L, B, F) float32 from the blocks' tokens."""
    L = len(outs)
    use_exit = [heads == "auto" and str(k + 1) in model.exit_heads for k in range(L)]
    embs: list[Tensor | None] = [None] * L
    shared = [k for k in range(L) if not use_exit[k]]
    if shared:
        # one pass of the shared head over all its exits (as forward_exits does)
        out = model.forward_head(torch.cat([outs[k] for k in shared]))
        for k, e in zip(shared, out.chunk(len(shared))):
            embs[k] = e
    for k in range(L):
        if use_exit[k]:
            embs[k] = model.head_at(outs[k], k + 1, "auto")
    stacked = torch.stack([e.float() for e in embs if e is not None])
    return torch.nn.functional.normalize(stacked, dim=-1)


def _finish(
    acc: _Accumulator, model: Any, far: float, grid: int, patch: int, meta: dict[str, Any]
) -> Analysis:
    L = acc.L
    n, nt = acc.n_images, acc.n_tokens
    none_first = lambda v: [None] + [float(x) for x in v[1:]]  # noqa: E731
    tok_cons = (acc.tok_cons / nt).cpu().numpy()
    att_cons = (acc.att_cons / n).cpu().numpy()
    cka = acc.cka.value()
    assert acc.grams is not None and acc.face_sum is not None
    grams = acc.grams.cpu().numpy()
    erank = [effective_rank(grams[k], gram=True) for k in range(L)]
    agreement: list[float | None] = [None] * L
    agreement_gen: list[float | None] = [None] * L
    agreement_imp: list[float | None] = [None] * L
    tar: list[float | None] = [None] * L
    thr: list[float | None] = [None] * L
    n_gen = n_imp = 0
    if acc.scores:
        scores = np.concatenate(acc.scores)
        same = np.concatenate(acc.issame)
        n_gen, n_imp = int(same.sum()), int((~same).sum())
        if n_gen and n_imp:
            imp = scores[~same]
            thresholds = [float(np.quantile(imp[:, k], 1 - far, method="higher")) for k in range(L)]
            accept = scores > np.array(thresholds, dtype=np.float32)[None, :]
            agree = accept == accept[:, -1:]
            agreement = [float(agree[:, k].mean()) for k in range(L)]
            agreement_gen = [float(agree[same, k].mean()) for k in range(L)]
            agreement_imp = [float(agree[~same, k].mean()) for k in range(L)]
            tar = [float(accept[same, k].mean()) for k in range(L)]
            thr[:] = thresholds
            if n_imp * far < 10:
                log.warning(
                    "only %d impostor pairs: FAR %g is matched by %d of them; the thresholds are coarse",
                    n_imp, far, int(n_imp * far),
                )  # fmt: skip
        else:
            log.warning(
                "no %s pairs: exit agreement is undefined", "genuine" if not n_gen else "impostor"
            )
    else:
        log.warning("no verification pairs in the data: exit agreement is undefined")
    face = (acc.face_sum / n).permute(1, 2, 0).cpu().numpy().astype(np.float32)
    return Analysis(
        blocks=list(range(1, L + 1)),
        n_images=n,
        token_cos_consecutive=none_first(tok_cons),
        token_cos_last=[float(x) for x in (acc.tok_last / nt).cpu().numpy()],
        cka=cka,
        cka_last=[float(x) for x in cka[:, -1]],
        attn_similarity_consecutive=none_first(att_cons),
        attn_similarity_last=[float(x) for x in (acc.att_last / n).cpu().numpy()],
        attn_entropy=[float(x) for x in (acc.entropy / n).cpu().numpy()],
        attn_distance=[float(x) for x in (acc.distance / n).cpu().numpy()],
        attn_received=(acc.received / n).cpu().numpy(),
        query_patches=list(acc.queries),
        query_maps=(acc.query_maps / n).cpu().numpy(),
        exit_cos_final=[float(x) for x in (acc.exit_cos / n).cpu().numpy()],
        exit_agreement=agreement,
        exit_agreement_genuine=agreement_gen,
        exit_agreement_impostor=agreement_imp,
        exit_tar=tar,
        exit_threshold=thr,
        effective_rank=erank,
        genuine_pairs=n_gen,
        impostor_pairs=n_imp,
        far=float(far),
        mean_face=face,
        grid=grid,
        patch_size=patch,
        meta=meta,
    )


# --------------------------------------------------------------------------------------
# files: analysis.json and plots
# --------------------------------------------------------------------------------------


def save_analysis(analysis: Analysis, out: str | os.PathLike[str]) -> Path:
    """Write ``out/analysis.json`` (:meth:`Analysis.as_dict`); returns its path."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    path = d / "analysis.json"
    path.write_text(_dumps(analysis.as_dict()) + "\n")
    return path


def _dumps(x: Any, indent: int = 0) -> str:
    """JSON with one line per list of numbers (the matrices stay readable and small)."""
    pad = " " * (indent + 1)
    if isinstance(x, dict):
        if not x:
            return "{}"
        items = [f"{pad}{json.dumps(str(k))}: {_dumps(v, indent + 1)}" for k, v in x.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(x, list) and any(isinstance(v, (dict, list)) for v in x):
        items = [pad + _dumps(v, indent + 1) for v in x]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    if isinstance(x, list):
        return "[" + ", ".join(_dumps(v) for v in x) + "]"
    if isinstance(x, float):
        return json.dumps(float(f"{x:.7g}"))  # 7 significant digits: float32 precision
    return json.dumps(x)


def _title(analysis: Analysis, what: str) -> str:
    arch = analysis.meta.get("model", {}).get("name", "")
    tag = "SYNTHETIC faces, " if analysis.synthetic else ""
    return f"{what}: {arch} ({tag}{analysis.n_images} images)"


def _line(ax: Any, x: list[int], ys: Sequence[float | None], **kw: Any) -> None:
    y = np.array([np.nan if v is None else v for v in ys], dtype=np.float64)
    ax.plot(x, y, marker="o", markersize=3, **kw)


def _overlay(
    ax: Any, analysis: Analysis, values: npt.NDArray[np.float64], vmax: float | None = None
) -> Any:
    """Draw the average face in grey and ``values`` (grid x grid) over its patches."""
    face = analysis.mean_face.mean(-1)
    span = analysis.grid * analysis.patch_size
    ax.imshow(face, cmap="gray", vmin=0, vmax=255, extent=(0, face.shape[1], face.shape[0], 0))
    im = ax.imshow(
        values.reshape(analysis.grid, analysis.grid), cmap="inferno", alpha=0.6,
        extent=(0, span, span, 0), vmin=0, vmax=vmax, interpolation="nearest",
    )  # fmt: skip
    ax.set_xlim(0, face.shape[1])
    ax.set_ylim(face.shape[0], 0)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def _pick_blocks(depth: int, most: int) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(1, depth, min(depth, most))})


def plot_analysis(analysis: Analysis, out: str | os.PathLike[str]) -> list[Path]:
    """Write the PNG plots of an analysis into ``out``; returns their paths.

    * ``analysis_curves.png``: one line per measure against the block;
    * ``analysis_cka.png``: the L x L CKA heatmap;
    * ``analysis_attention.png``: head-averaged attention of the query patches (rows: a few
      blocks; columns: the queries), over the average face;
    * ``analysis_received.png``: attention received per patch over the average face, per block.

    Drawn on ``matplotlib.figure.Figure`` objects (the user's backend is never switched).
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    a = analysis
    x = a.blocks
    paths: list[Path] = []

    fig = Figure(figsize=(11, 7.5))
    axs = fig.subplots(2, 2)
    ax = axs[0, 0]
    _line(ax, x, a.token_cos_last, label="token cosine with last block")
    _line(ax, x, a.token_cos_consecutive, label="token cosine with previous block")
    _line(ax, x, a.cka_last, label="token CKA with last block")
    _line(ax, x, a.attn_similarity_last, label="attention 1-JS with last block")
    _line(ax, x, a.attn_similarity_consecutive, label="attention 1-JS with previous block")
    ax.set_title("patch tokens (after norm) and attention")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    ax.legend(fontsize=7)
    ax = axs[0, 1]
    _line(ax, x, a.exit_cos_final, label="embedding cosine with final exit")
    if any(v is not None for v in a.exit_agreement):
        _line(ax, x, a.exit_agreement, label=f"decision agreement with final exit (FAR {a.far:g})")
        _line(ax, x, a.exit_agreement_genuine, label="agreement on genuine pairs")
        _line(ax, x, a.exit_tar, label=f"TAR at FAR {a.far:g}")
    ax.set_title(f"exits ({a.genuine_pairs} genuine / {a.impostor_pairs} impostor pairs)")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    ax.legend(fontsize=7)
    ax = axs[1, 0]
    _line(ax, x, a.attn_entropy, label="attention entropy (nats)", color="C0")
    ax.set_ylabel("entropy (nats)")
    ax2 = ax.twinx()
    _line(ax2, x, a.attn_distance, label="mean attention distance (patches)", color="C3")
    ax2.set_ylabel("distance (patches)")
    ax.set_title("attention entropy (blue) and mean distance (red)")
    ax = axs[1, 1]
    _line(ax, x, a.effective_rank, label="effective rank", color="C2")
    ax.set_title("effective rank of the exit embeddings")
    for ax in axs.flat:
        ax.set_xlabel("block")
        ax.set_xticks(x if len(x) <= 24 else x[:: max(1, len(x) // 12)])
        ax.grid(alpha=0.3)
    fig.suptitle(_title(a, "Depth analysis"))
    fig.tight_layout()
    paths.append(d / "analysis_curves.png")
    fig.savefig(paths[-1], dpi=80)

    fig = Figure(figsize=(6.4, 5.4))
    ax = fig.subplots()
    im = ax.imshow(a.cka, cmap="magma", vmin=0, vmax=1, origin="lower",
                   extent=(0.5, len(x) + 0.5, 0.5, len(x) + 0.5))  # fmt: skip
    ax.set_xlabel("block")
    ax.set_ylabel("block")
    fig.colorbar(im, ax=ax, label="linear CKA (minibatch, unbiased)")
    ax.set_title(_title(a, "Token CKA"), fontsize=9)
    fig.tight_layout()
    paths.append(d / "analysis_cka.png")
    fig.savefig(paths[-1], dpi=80)

    rows = _pick_blocks(len(x), 6)
    q = len(a.query_patches)
    fig = Figure(figsize=(1.7 * q + 0.6, 1.75 * len(rows) + 0.6))
    axs = np.atleast_2d(fig.subplots(len(rows), q, squeeze=False))
    p = a.patch_size
    for i, blk in enumerate(rows):
        for j, qi in enumerate(a.query_patches):
            ax = axs[i, j]
            vals = a.query_maps[blk - 1, j]
            _overlay(ax, a, vals, vmax=float(vals.max()))
            r, c = divmod(qi, a.grid)
            ax.add_patch(
                Rectangle((c * p, r * p), p, p, fill=False, edgecolor="cyan", linewidth=1.2)
            )
            if i == 0:
                ax.set_title(QUERY_NAMES[j] if j < len(QUERY_NAMES) else f"patch {qi}", fontsize=8)
            if j == 0:
                ax.set_ylabel(f"block {blk}", fontsize=8)
    fig.suptitle(_title(a, "Attention of query patches (cyan)"), fontsize=9)
    fig.tight_layout()
    paths.append(d / "analysis_attention.png")
    fig.savefig(paths[-1], dpi=64)

    shown = _pick_blocks(len(x), 12)
    cols = min(6, len(shown))
    nrow = math.ceil(len(shown) / cols)
    fig = Figure(figsize=(1.7 * cols + 0.6, 1.85 * nrow + 0.6))
    axs = np.atleast_2d(fig.subplots(nrow, cols, squeeze=False))
    for ax in axs.flat:
        ax.set_axis_off()
    for i, blk in enumerate(shown):
        ax = axs[i // cols, i % cols]
        ax.set_axis_on()
        vals = a.attn_received[blk - 1]
        _overlay(ax, a, vals, vmax=float(vals.max()))
        ax.set_title(f"block {blk}", fontsize=8)
    fig.suptitle(_title(a, "Attention received per patch"), fontsize=9)
    fig.tight_layout()
    paths.append(d / "analysis_received.png")
    fig.savefig(paths[-1], dpi=72)
    return paths


# --------------------------------------------------------------------------------------
# the command's library function
# --------------------------------------------------------------------------------------


def analyze_data(
    model: Any,
    data: str | os.PathLike[str] | DataSource,
    out: str | os.PathLike[str] | None = None,
    *,
    batch_size: int = 64,
    max_images: int | None = None,
    seed: int = 1,
    identities: int = 100,
    preset: str = "medium",
    num_workers: int = 0,
    device: str | torch.device | None = "auto",
    amp: str | None = None,
    far: float = 1e-2,
    cka_features: str = "flatten",
    heads: str = "shared",
    model_path: str | os.PathLike[str] | None = None,
    plots: bool = True,
    progress: bool = True,
) -> Analysis:
    """``vitfree analyze``: :func:`open_data` + :func:`analyze`, then ``analysis.json`` and
    the plots in ``out`` (nothing written when ``out`` is None).

    Args:
        model: the face ViT.
        data, batch_size, max_images, seed, identities, preset, num_workers: as in
            :func:`open_data` (``seed`` and ``identities`` for ``"synth"``); ``data`` may
            also be a :class:`DataSource` already opened (then the others are not used).
        device, amp, far, cka_features, heads, progress: as in :func:`analyze`.
        model_path: the checkpoint, recorded in ``meta``.
        plots: write the PNG plots.
    """
    if isinstance(data, DataSource):
        src = data
    else:
        src = open_data(data, batch_size=batch_size, max_images=max_images, seed=seed,
                        identities=identities, preset=preset, num_workers=num_workers)  # fmt: skip
    info = {**src.description, "synthetic": src.synthetic, "images": src.n_images,
            "batch_size": batch_size}  # fmt: skip
    res = analyze(
        model, src.batches(), device=device, amp=amp, far=far, cka_features=cka_features,
        heads=heads, total=src.n_images, progress=progress, data_info=info,
    )  # fmt: skip
    res.meta["model"]["path"] = str(model_path) if model_path is not None else None
    if model_path is not None:
        res.meta["model"]["name"] = Path(model_path).name
    if out is not None:
        files = [save_analysis(res, out)]
        if plots:
            files += plot_analysis(res, out)
        log.info("wrote %s", ", ".join(str(f) for f in files))
    return res
