"""Sources of faces -> aligned uint8 batches (image and its mirror), for a torch DataLoader.

Every pipeline that runs a model on faces reads them through here, whatever the source:

* :class:`IJBCrops`: IJB-B/C loose crops, decoded and aligned with their 5 landmarks
  (docs/protocols.md §3) in DataLoader workers;
* :class:`ArrayFaces`: faces already aligned and in memory (``.bin`` sets, pair lists,
  generated faces);
* :class:`FolderFaces`: a folder per identity of aligned faces, or of loose images with a
  landmarks file (training and analysis data; :func:`open_faces` also opens RecordIO);

and :func:`face_batches` turns any of them into :class:`FaceBatch` es: uint8 RGB
``(B, 3, 112, 112)`` images, their horizontal flips, the source rows and an ``ok`` flag per
face (False for an unreadable image that was replaced by zeros).  uint8 keeps the
inter-process traffic at a quarter of float32; :mod:`vitfree.inference` normalises on the
model's device.

This is the one module of the package with torch ``Dataset`` s; the readers in
:mod:`vitfree.data` need no torch.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from vitfree.data.align import ALIGNED_SIZE, align_face, landmark_problems
from vitfree.data.ijb import IJBMeta, load_ijb_meta
from vitfree.data.images import DamagedImageError, decode_image, probe_images
from vitfree.errors import IJBFormatError, InputError
from vitfree.reproduce import FaceInput
from vitfree.runtime import worker_context

__all__ = ["ArrayFaces", "FaceBatch", "FolderFaces", "IJBCrops", "face_batches", "open_faces"]


class _RowError(IJBFormatError):
    """An unusable IJB row; ``reason`` says why without the file name."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class IJBCrops(Dataset):  # type: ignore[type-arg]
    """Aligned IJB faces read from ``loose_crop``, for a torch ``DataLoader``.

    Each item is ``(image, flipped, index)``: ``image`` the aligned face as a CHW tensor
    (RGB, 3x112x112), ``flipped`` its horizontal mirror, ``index`` the row of the image in the
    meta files (an ``int``). With ``normalize=True`` (default) both are float32 in [-1, 1],
    ``(x / 255 - 0.5) / 0.5``; otherwise uint8.

    Images are decoded strictly (:func:`vitfree.data.images.decode_image`): a missing, empty,
    truncated or otherwise damaged file, or a landmark line that cannot give a face, is an
    error naming the file and the meta line.  With ``lenient=True`` damaged files are decoded
    as far as the decoder gets (what the community scripts do) and flagged.

    With ``skip_bad=True`` an unusable image gives zero tensors (the uint8 zero image,
    normalised if asked) instead of an error, and each item becomes
    ``(image, flipped, index, status)`` with ``status`` 1 (ok), 0 (unusable, zeros) or 2
    (damaged, used as decoded: ``lenient`` only), so that the caller learns about bad images
    also from worker processes. The indices skipped in *this* process are also appended to
    :attr:`skipped`.

    The object holds only numpy arrays and strings (no open files), so it pickles for
    DataLoader workers under any start method.

    Args:
        root: as in :func:`load_ijb_meta`; images are read from ``<meta>/../loose_crop``.
        dataset: "IJBC" or "IJBB".
        meta: an already loaded :class:`IJBMeta` (then ``root`` may be None; images come from
            ``meta.image_dir`` unless ``image_dir`` is given).
        image_dir: override the image folder.
        indices: only these rows (the returned ``index`` is still the meta row).
        normalize: return float32 ``(x/255-0.5)/0.5`` instead of uint8.
        skip_bad: substitute zeros for unreadable images instead of raising.
        lenient: use damaged images as decoded (flagged with status 2) instead of refusing.
        face_input: alignment (arithmetic and template) and the pixel scaling of
            ``normalize=True`` (:class:`vitfree.reproduce.FaceInput`; default float64
            alignment to the docs/protocols.md §3.3 template, ``(x/255-0.5)/0.5``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        dataset: str = "IJBC",
        *,
        meta: IJBMeta | None = None,
        image_dir: str | os.PathLike[str] | None = None,
        indices: npt.ArrayLike | None = None,
        normalize: bool = True,
        skip_bad: bool = False,
        lenient: bool = False,
        face_input: FaceInput | None = None,
    ) -> None:
        if meta is None:
            if root is None:
                raise InputError("give root or meta")
            meta = load_ijb_meta(root, dataset, pairs=False)
        self.image_dir = str(image_dir) if image_dir is not None else str(meta.image_dir)
        self.names = meta.names
        self.landmarks = np.ascontiguousarray(meta.landmarks, dtype=np.float32)
        if indices is None:
            self.indices = np.arange(len(meta.names), dtype=np.int64)
        else:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
            if idx.size and (idx.min() < 0 or idx.max() >= len(meta.names)):
                raise IndexError(f"indices must lie in [0, {len(meta.names)})")
            self.indices = idx
        self.normalize = normalize
        self.skip_bad = skip_bad
        self.lenient = lenient
        self.face_input = face_input or FaceInput()
        self.skipped: list[int] = []

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def path(self, row: int) -> str:
        """File path of meta row ``row``."""
        return os.path.join(self.image_dir, str(self.names[row]))

    def load_aligned(self, row: int) -> npt.NDArray[np.uint8]:
        """The aligned RGB face of meta row ``row``: uint8 (112, 112, 3).

        Raises:
            FileNotFoundError: the image file does not exist.
            IJBFormatError: the file is damaged (not with ``lenient``) or cannot be decoded,
                or the landmark line cannot give a face; file and meta row named.
        """
        return self._load(row)[0]

    def _load(self, row: int) -> tuple[npt.NDArray[np.uint8], bool]:
        path = self.path(row)
        try:
            img, damage = decode_image(path, lenient=self.lenient)
        except FileNotFoundError:
            raise FileNotFoundError(f"IJB image not found: {path} (meta row {row})") from None
        except DamagedImageError as e:
            raise IJBFormatError(f"cannot decode IJB image {path} (meta row {row}): {e}") from None
        try:
            fi = self.face_input
            face = align_face(img, self.landmarks[row], template=fi.template, dtype=fi.align_dtype)
        except Exception as e:  # noqa: BLE001 - ValueError for landmarks, cv2.error for odd images
            raise IJBFormatError(
                f"IJB image {path} (meta row {row}, landmark line {row + 1}): {e}"
            ) from None
        return face, damage is not None

    def check(self, rows: npt.ArrayLike | None = None) -> dict[int, str]:
        """Pre-flight of meta rows (default: this dataset's): every problem found without
        decoding, ``{row: problem}``.

        Reads the head and tail of each file (:func:`vitfree.data.images.probe_images`:
        missing, empty, truncated, not an image, pixel size) and checks each landmark line
        against its image (:func:`vitfree.data.align.landmark_problems`).  Seconds for
        IJB-C's 469k images, so a damaged data set is known before any compute.
        """
        idx = self.indices if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)
        probes = probe_images([self.path(int(r)) for r in idx])
        problems = {int(r): pr.problem for r, pr in zip(idx, probes) if pr.problem}
        widths = np.array([pr.width for pr in probes], dtype=np.int64)
        heights = np.array([pr.height for pr in probes], dtype=np.int64)
        for i, why in landmark_problems(self.landmarks[idx], widths, heights):
            r = int(idx[i])
            problems.setdefault(r, f"landmark line {r + 1}: {why}")
        return dict(sorted(problems.items()))

    def diagnose(self, row: int) -> str:
        """Why meta row ``row`` cannot be used ("" if it can): for messages after a worker
        reported a bad image."""
        try:
            self._load(row)
        except (FileNotFoundError, IJBFormatError) as e:
            return str(e)
        return ""

    def _to_tensor(self, rgb: npt.NDArray[np.uint8]) -> torch.Tensor:
        chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        if self.normalize:
            if self.face_input.pixel_scaling == "div128":
                return (chw.to(torch.float32) - 127.5) * 0.0078125
            return (chw.to(torch.float32) / 255.0 - 0.5) / 0.5
        return chw

    def __getitem__(
        self, i: int
    ) -> tuple[torch.Tensor, torch.Tensor, int] | tuple[torch.Tensor, torch.Tensor, int, int]:
        row = int(self.indices[i])
        status = 1
        try:
            rgb, damaged = self._load(row)
            status = 2 if damaged else 1
        except (FileNotFoundError, IJBFormatError):
            if not self.skip_bad:
                raise
            status = 0
            self.skipped.append(row)
            rgb = np.zeros((ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)
        img = self._to_tensor(rgb)
        flipped = torch.flip(img, dims=(2,))
        if self.skip_bad:
            return img, flipped, row, status
        return img, flipped, row


class ArrayFaces(Dataset):  # type: ignore[type-arg]
    """Aligned faces held in memory: uint8 RGB ``(M, H, W, 3)``.

    Items are ``(image, flipped, index, status)`` like :class:`IJBCrops` with ``skip_bad``
    (``status`` is always 1: ok), uint8 CHW tensors.

    Args:
        images: uint8 array (M, H, W, 3), RGB, aligned.
    """

    def __init__(self, images: npt.ArrayLike) -> None:
        arr = np.asarray(images)
        if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
            raise InputError(
                f"expected uint8 RGB faces (M, H, W, 3), got {arr.dtype} {arr.shape}"
            )
        self.images = arr

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        img = torch.from_numpy(np.ascontiguousarray(self.images[i].transpose(2, 0, 1)))
        return img, torch.flip(img, dims=(2,)), int(i), 1


@dataclass
class FaceBatch:
    """A batch of faces from :func:`face_batches`.

    Attributes:
        images: (B, 3, H, W) uint8 RGB tensor.
        flipped: (B, 3, H, W) uint8, the horizontal mirrors.
        rows: (B,) int64 rows of the source (meta rows for IJB, indices for arrays).
        ok: (B,) bool, False where an unusable image was replaced by zeros.
        damaged: (B,) bool, True where a damaged image was used as decoded (``lenient``).
    """

    images: torch.Tensor
    flipped: torch.Tensor
    rows: npt.NDArray[np.int64]
    ok: npt.NDArray[np.bool_]
    damaged: npt.NDArray[np.bool_] = dataclasses.field(default_factory=lambda: np.zeros(0, bool))

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def face_batches(
    faces: Dataset,  # type: ignore[type-arg]
    batch_size: int,
    *,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> Generator[FaceBatch, None, None]:
    """Batches of ``faces`` in order (the last one may be smaller), decoded in workers.

    Args:
        faces: an :class:`IJBCrops` (``normalize=False``), an :class:`ArrayFaces`, or any
            dataset with the same items.
        batch_size: faces per batch.
        num_workers: DataLoader worker processes (0 = this process); started with fork on
            Linux (:func:`vitfree.runtime.worker_context`).
        pin_memory: pin the batches for a fast copy to a GPU.
    """
    from torch.utils.data import DataLoader

    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    loader = DataLoader(
        faces,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        multiprocessing_context=worker_context() if num_workers > 0 else None,
        drop_last=False,
    )
    for item in loader:
        img, flipped, rows_t = item[0], item[1], item[2]
        status = item[3].numpy() if len(item) > 3 else np.ones(len(rows_t), np.int64)
        yield FaceBatch(img, flipped, rows_t.numpy().astype(np.int64), status != 0, status == 2)


class FolderFaces(Dataset):  # type: ignore[type-arg]
    """Faces in ``root/<identity>/*.jpg|png``; labels = sorted folder order.

    The faces are aligned 112x112 crops, or loose images with a landmarks file: when
    ``root/landmarks.txt`` exists (or ``landmarks`` is given), each of its lines is
    ``<identity>/<file> x1 y1 x2 y2 x3 y3 x4 y4 x5 y5`` (left eye, right eye, nose tip, left
    and right mouth corner, in image pixels), and every image is aligned with its points as
    the benchmarks are (:func:`vitfree.data.align.align_face`).  A line that is not 11 fields,
    has non-numeric or unusable points (not finite, coincident, collinear) or names a file
    that is not in the folder, and an image without a line, are errors naming the file and
    line; nothing is dropped silently.
    """

    LANDMARKS = "landmarks.txt"

    def __init__(
        self, root: str | os.PathLike[str], landmarks: str | os.PathLike[str] | None = None
    ) -> None:
        base = Path(root)
        people = sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        if not people:
            raise InputError(f"{root}: expected one sub-folder of faces per identity")
        self.items = [(f, k) for k, p in enumerate(people) for f in sorted(p.iterdir())
                      if f.suffix.lower() in (".jpg", ".jpeg", ".png")]  # fmt: skip
        self.classes = len(people)
        lm_file = Path(landmarks) if landmarks is not None else base / self.LANDMARKS
        self.landmarks: np.ndarray | None = None
        if landmarks is not None or lm_file.is_file():
            self.landmarks = _read_landmarks(lm_file, base, [f for f, _ in self.items])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        f, k = self.items[i]
        img, _ = decode_image(f)
        if self.landmarks is not None:
            return align_face(img, self.landmarks[i]), k
        if img.shape[:2] != (112, 112):
            raise InputError(
                f"{f}: training faces must be aligned 112x112, got {img.shape[1]}x{img.shape[0]} "
                f"(loose images need a {self.LANDMARKS} in the folder)"
            )
        return np.ascontiguousarray(img[:, :, ::-1]), k


def _read_landmarks(path: Path, root: Path, files: list[Path]) -> np.ndarray:
    """(len(files), 5, 2) float32 landmarks of ``files`` from a landmarks file (see
    :class:`FolderFaces`); every problem is an :class:`InputError` naming file and line."""
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file not found: {path}")
    index = {f.relative_to(root).as_posix(): j for j, f in enumerate(files)}
    out = np.full((len(files), 5, 2), np.nan, np.float32)
    seen = np.zeros(len(files), bool)
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        where = f"{path}:{n}"
        if len(parts) != 11:
            raise InputError(f"{where}: expected '<identity>/<file>' and 10 numbers, got "
                             f"{len(parts)} fields")  # fmt: skip
        j = index.get(parts[0])
        if j is None:
            raise InputError(f"{where}: {parts[0]} is not an image of {root}")
        if seen[j]:
            raise InputError(f"{where}: a second line for {parts[0]}")
        try:
            pts = np.array([float(v) for v in parts[1:]], np.float64).reshape(5, 2)
        except ValueError:
            raise InputError(f"{where}: landmarks must be numbers: {' '.join(parts[1:])}") from None
        problems = landmark_problems(pts[None])
        if problems:
            raise InputError(f"{where}: landmarks of {parts[0]} cannot be used: {problems[0][1]}")
        out[j], seen[j] = pts, True
    if not seen.all():
        missing = [files[j].relative_to(root).as_posix() for j in np.flatnonzero(~seen)[:5]]
        raise InputError(f"{path}: no landmarks for {int((~seen).sum())} image(s), e.g. "
                         f"{', '.join(missing)}")  # fmt: skip
    return out


def open_faces(path: str | os.PathLike[str]) -> tuple[Any, str]:
    """A training set on disk: ``(dataset, kind)`` with ``kind`` "recordio" for an insightface
    RecordIO set (``train.rec``, its ``.idx``, or a folder holding ``train.rec``) and "folder"
    for an image folder (one sub-folder of aligned faces per identity).  The dataset gives
    ``(uint8 (112, 112, 3) RGB, int label)`` and has ``classes``.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"training data not found: {p} (give 'synth', an image folder "
                                f"or a train.rec file)")  # fmt: skip
    if p.suffix.lower() in (".rec", ".idx") or (p.is_dir() and (p / "train.rec").is_file()):
        from vitfree.data.recordio import RecordIOFaces

        return RecordIOFaces(p.with_suffix(".rec") if p.suffix.lower() == ".idx" else p), "recordio"
    if p.is_dir():
        return FolderFaces(p), "folder"
    raise InputError(f"--data {p}: expected 'synth', an image folder (one sub-folder per "
                     f"identity) or an insightface train.rec")  # fmt: skip
