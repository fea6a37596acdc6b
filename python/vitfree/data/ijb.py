"""IJB-B / IJB-C readers: meta files (PROTOCOLS §3), 1:N csvs (§4) and aligned crops.

Layout (insightface's release of the benchmarks)::

    <root>/IJBC/loose_crop/<image_name>
    <root>/IJBC/meta/ijbc_face_tid_mid.txt         image_name template_id media_id
    <root>/IJBC/meta/ijbc_template_pair_label.txt  template_id_1 template_id_2 label
    <root>/IJBC/meta/ijbc_name_5pts_score.txt      image_name x1 y1 ... x5 y5 detector_score
    <root>/IJBC/meta/ijbc_1N_gallery_G1.csv        TEMPLATE_ID,SUBJECT_ID,...  (header row)
    <root>/IJBC/meta/ijbc_1N_gallery_G2.csv
    <root>/IJBC/meta/ijbc_1N_probe_mixed.csv

IJB-B uses ``IJBB`` / ``ijbb_`` and galleries ``S1`` / ``S2``. Every reader accepts ``root``
as the folder holding ``IJBC/``, the ``IJBC`` folder itself, or its ``meta`` folder.

Parsing speed: the pair file of IJB-C has 15,658,489 lines (~230 MB). It is cut into chunks of
whole lines, parsed in threads by numpy's C text scanner (``np.fromstring(..., sep=" ")``, which
releases the GIL) straight into contiguous int64 columns, each chunk checked for its field
count, so a malformed line is still reported with its file and line number. Measured on a
shared 2-core machine: 1.3-2.0 s, on par with numpy 2's ``np.loadtxt`` (1.3-1.4 s there,
single-threaded; numpy 1.x's pure-Python loadtxt took minutes); the threads make it scale with
cores. (Rejected: pandas, an extra dependency; numpy 1.x ``np.loadtxt``, far too slow.)
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset

from vitfree.data.align import ALIGNED_SIZE, align_face
from vitfree.errors import IJBFormatError

__all__ = [
    "IJB1N",
    "IJBCrops",
    "IJBFormatError",
    "IJBMeta",
    "find_meta_dir",
    "load_ijb_1n",
    "load_ijb_meta",
    "meta_paths",
    "read_1n_csv",
    "read_face_tid_mid",
    "read_name_5pts_score",
    "read_template_pair_label",
]

Dataset_ = Literal["IJBB", "IJBC"]

_GALLERIES: dict[str, tuple[str, str]] = {"IJBC": ("G1", "G2"), "IJBB": ("S1", "S2")}

# Chunk size for the numeric parser: large enough that numpy's per-call overhead vanishes,
# small enough that a chunk's int64 copy stays small next to the file itself.
_CHUNK_BYTES = 1 << 24


# --------------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------------


def _check_dataset(dataset: str) -> str:
    ds = dataset.upper().replace("-", "")
    if ds not in _GALLERIES:
        raise ValueError(f"dataset must be 'IJBB' or 'IJBC', got {dataset!r}")
    return ds


def find_meta_dir(root: str | os.PathLike[str], dataset: str = "IJBC") -> Path:
    """The ``meta`` folder of ``dataset`` under ``root``.

    ``root`` may be the folder holding ``IJBC/`` (``<root>/IJBC/meta``), the ``IJBC`` folder
    itself (``<root>/meta``), or the ``meta`` folder. The first candidate holding the dataset's
    ``face_tid_mid`` file wins; with none, the first existing ``meta`` folder is returned (so
    that the error names the missing file), else :class:`FileNotFoundError` lists the places
    looked at.
    """
    ds = _check_dataset(dataset)
    r = Path(root)
    candidates = [r / ds / "meta", r / "meta", r]
    probe = f"{ds.lower()}_face_tid_mid.txt"
    for c in candidates:
        if (c / probe).is_file():
            return c
    for c in candidates[:2]:
        if c.is_dir():
            return c
    if r.name == "meta" and r.is_dir():
        return r
    raise FileNotFoundError(
        f"no {ds} meta folder found; looked for {probe} in: "
        + ", ".join(str(c) for c in candidates)
    )


def meta_paths(root: str | os.PathLike[str], dataset: str = "IJBC") -> dict[str, Path]:
    """Paths of every IJB file of ``dataset`` under ``root`` (see :func:`find_meta_dir`).

    Returns a dict with keys ``face_tid_mid``, ``pair_label``, ``name_5pts``, ``gallery1``,
    ``gallery2``, ``probe``, ``meta_dir`` and ``loose_crop`` (the image folder, a sibling of
    ``meta``). Nothing is checked for existence except the meta folder.
    """
    ds = _check_dataset(dataset)
    meta = find_meta_dir(root, ds)
    p = ds.lower()
    g1, g2 = _GALLERIES[ds]
    return {
        "meta_dir": meta,
        "loose_crop": meta.parent / "loose_crop",
        "face_tid_mid": meta / f"{p}_face_tid_mid.txt",
        "pair_label": meta / f"{p}_template_pair_label.txt",
        "name_5pts": meta / f"{p}_name_5pts_score.txt",
        "gallery1": meta / f"{p}_1N_gallery_{g1}.csv",
        "gallery2": meta / f"{p}_1N_gallery_{g2}.csv",
        "probe": meta / f"{p}_1N_probe_mixed.csv",
    }


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path} (looked in {path.parent})") from None


# --------------------------------------------------------------------------------------------
# Fast text parsing
# --------------------------------------------------------------------------------------------


def _check_field(path: Path, lineno: int, field: bytes, kind: str, text: str) -> None:
    """Raise unless ``field`` parses as an int64 (``kind == "integer"``) or a float."""
    try:
        if kind == "integer":
            if not -(2**63) < int(field) < 2**63 - 1:
                raise ValueError
        else:
            float(field)
    except ValueError:
        raise IJBFormatError(
            f"{path}:{lineno}: {field.decode('utf-8', 'replace')!r} is not a valid "
            f"{kind} in line {text!r}"
        ) from None


def _line_error(
    path: Path, data: bytes, start: int, stop: int, line0: int, ncols: int, kind: str
) -> None:
    """Scan ``data[start:stop]`` line by line and raise for the first malformed line.

    ``line0`` is the number of lines before ``start``.
    """
    lineno = line0
    pos = start
    n = stop
    while pos < n:
        end = data.find(b"\n", pos)
        if end < 0:
            end = n
        lineno += 1
        fields = data[pos:end].split()
        pos = end + 1
        if not fields:
            continue
        text = b" ".join(fields).decode("utf-8", "replace")
        if len(fields) != ncols:
            raise IJBFormatError(
                f"{path}:{lineno}: expected {ncols} {kind} fields, got {len(fields)}: {text!r}"
            )
        for f in fields:
            _check_field(path, lineno, f, kind, text)


def _chunk_bounds(data: bytes, chunk_bytes: int) -> list[tuple[int, int]]:
    """Split ``data`` into ``[start, end)`` ranges of whole lines, about ``chunk_bytes`` each."""
    bounds: list[tuple[int, int]] = []
    n = len(data)
    pos = 0
    while pos < n:
        end = min(pos + chunk_bytes, n)
        if end < n:
            nl = data.rfind(b"\n", pos, end)
            if nl < 0:  # a single line longer than the chunk
                nl = data.find(b"\n", end)
                end = n if nl < 0 else nl + 1
            else:
                end = nl + 1
        bounds.append((pos, end))
        pos = end
    return bounds


def _parse_numeric_table(
    data: bytes, ncols: int, dtype: type[np.int64 | np.float64], path: Path
) -> np.ndarray:
    """Parse whitespace-separated numbers, ``ncols`` per non-blank line, column-major.

    Returns an array of shape (ncols, rows), so that each column is a contiguous row.

    Fast path: the file is cut into line-aligned chunks; threads count each chunk's lines,
    then parse it with numpy's C scanner (which releases the GIL) straight into its slice of
    the output. A chunk whose numbers do not come to ``ncols`` per line (a malformed line, or
    just a blank line), or with an int64 value numpy saturated, is rescanned line by line: that
    names the malformed line (file:line), or parses the non-blank lines.
    """
    kind = "integer" if dtype is np.int64 else "number"
    bounds = _chunk_bounds(data, _CHUNK_BYTES)
    workers = min(len(bounds), os.cpu_count() or 1, 8)
    pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def run(fn: Any, items: list[Any]) -> list[Any]:
        return list(pool.map(fn, items)) if pool is not None else [fn(x) for x in items]

    try:
        nlines = run(
            lambda b: data.count(b"\n", b[0], b[1]) + (0 if data[b[1] - 1] == 10 else 1), bounds
        )
        offsets = np.concatenate([[0], np.cumsum(nlines, dtype=np.int64)])
        out = np.empty((ncols, int(offsets[-1])), dtype=dtype)

        def parse(i: int) -> bool:
            start, end = bounds[i]
            try:
                vals = np.fromstring(data[start:end], dtype=dtype, sep=" ")  # type: ignore[call-overload]
            except ValueError:
                return False
            if vals.size != ncols * nlines[i]:
                return False
            if dtype is np.int64 and vals.size:
                info = np.iinfo(np.int64)
                if int(vals.max()) == info.max or int(vals.min()) == info.min:
                    return False  # numpy saturates out-of-range integers instead of failing
            out[:, offsets[i] : offsets[i + 1]] = vals.reshape(-1, ncols).T
            return True

        ok = run(parse, list(range(len(bounds))))
    finally:
        if pool is not None:
            pool.shutdown()
    if all(ok):
        return out
    parts: list[np.ndarray] = []
    for i, ((start, end), good) in enumerate(zip(bounds, ok)):
        if good:
            parts.append(out[:, offsets[i] : offsets[i + 1]])
            continue
        _line_error(path, data, start, end, int(offsets[i]), ncols, kind)
        # No malformed line: only blank lines made the count disagree.
        lines = [ln for ln in data[start:end].split(b"\n") if ln.strip()]
        try:
            vals = np.fromstring(b"\n".join(lines), dtype=dtype, sep=" ")  # type: ignore[call-overload]
        except ValueError:
            raise IJBFormatError(
                f"{path}: lines {int(offsets[i]) + 1}-{int(offsets[i + 1])} hold numbers "
                f"numpy cannot parse"
            ) from None
        parts.append(vals.reshape(-1, ncols).T)
    return np.ascontiguousarray(np.concatenate(parts, axis=1))


# Leading name column of the landmark and face/template/media files.
_NAME_RE = re.compile(rb"^[ \t]*(\S+)", re.MULTILINE)


def _parse_named_table(
    path: Path, what: str, ncols: int, dtype: type[np.int64 | np.float64]
) -> tuple[npt.NDArray[np.str_], np.ndarray]:
    """Parse lines ``name v1 ... v{ncols-1}``: names (N,) str and values (ncols-1, N).

    Fast path: one regex pass collects the names, a second blanks them out (line numbers are
    kept), and :func:`_parse_numeric_table` reads the rest. Any disagreement sends the file
    through :func:`_named_line_error`, which names the malformed line.
    """
    data = _read_bytes(path, what)
    names = _NAME_RE.findall(data)
    rest = _NAME_RE.sub(b"", data)
    try:
        vals = _parse_numeric_table(rest, ncols - 1, dtype, path)
    except IJBFormatError:
        vals = None
    if vals is None or vals.shape[1] != len(names):
        _named_line_error(path, data, ncols, dtype)
        raise IJBFormatError(f"{path}: could not parse")  # pragma: no cover - defensive
    try:
        arr = np.array(names, dtype=np.bytes_).astype(np.str_)
    except UnicodeDecodeError:
        arr = np.array([n.decode("utf-8") for n in names], dtype=np.str_)
    return arr, vals


def _named_line_error(
    path: Path, data: bytes, ncols: int, dtype: type[np.int64 | np.float64]
) -> None:
    """Raise for the first line of ``data`` that is not ``name`` + ``ncols - 1`` numbers."""
    kind = "integer" if dtype is np.int64 else "number"
    for lineno, line in enumerate(data.split(b"\n"), start=1):
        fields = line.split()
        if not fields:
            continue
        text = b" ".join(fields).decode("utf-8", "replace")
        if len(fields) != ncols:
            raise IJBFormatError(
                f"{path}:{lineno}: expected {ncols} fields (a name and {ncols - 1} "
                f"{kind}s), got {len(fields)}: {text!r}"
            )
        for f in fields[1:]:
            _check_field(path, lineno, f, kind, text)


# --------------------------------------------------------------------------------------------
# Individual meta files
# --------------------------------------------------------------------------------------------


def read_face_tid_mid(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Read ``*_face_tid_mid.txt`` (``image_name template_id media_id`` per line).

    Returns:
        names: (N,) str; templates: (N,) int64; medias: (N,) int64.
    """
    p = Path(path)
    names, vals = _parse_named_table(p, "face/template/media file", 3, np.int64)
    return names, vals[0], vals[1]


def read_name_5pts_score(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Read ``*_name_5pts_score.txt`` (``image_name x1 y1 ... x5 y5 detector_score``).

    Returns:
        names: (N,) str; landmarks: (N, 5, 2) float32 in loose-crop pixels (left eye, right
        eye, nose, left mouth, right mouth); faceness: (N,) float32 detector scores.
    """
    p = Path(path)
    names, vals = _parse_named_table(p, "landmark file", 12, np.float64)
    landmarks = np.ascontiguousarray(vals[:10].T, dtype=np.float32).reshape(-1, 5, 2)
    faceness = vals[10].astype(np.float32)
    return names, landmarks, faceness


def read_template_pair_label(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int8]]:
    """Read ``*_template_pair_label.txt`` (``template_id_1 template_id_2 label``).

    Parses the 15.7M lines of IJB-C in 1.3-2 s on 2 cores (numpy's C scanner on line-aligned
    chunks in threads). Labels must be 0 (impostor) or 1 (genuine).

    Returns:
        p1, p2: (M,) int64 template ids; labels: (M,) int8.
    """
    p = Path(path)
    data = _read_bytes(p, "pair file")
    vals = _parse_numeric_table(data, 3, np.int64, p)
    labels = vals[2]
    bad = np.flatnonzero((labels != 0) & (labels != 1))
    if bad.size:
        i = int(bad[0])
        raise IJBFormatError(
            f"{p}:{_line_of_row(data, i, labels.size)}: labels must be 0 or 1, got {int(labels[i])} "
            f"({bad.size} rows have a bad label)"
        )
    return vals[0], vals[1], labels.astype(np.int8)


def _line_of_row(data: bytes, row: int, nrows: int) -> int:
    """1-based line number of the ``row``-th (0-based) of the ``nrows`` non-blank lines."""
    nlines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    if nlines == nrows:  # no blank lines
        return row + 1
    seen = -1
    for lineno, line in enumerate(data.split(b"\n"), start=1):  # error path only
        if line.strip():
            seen += 1
            if seen == row:
                return lineno
    return row + 1  # pragma: no cover - row beyond the data


def _missing_ids(ids: npt.NDArray[np.int64], known: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Sorted unique values of ``ids`` absent from ``known`` (fast for small non-negative ids)."""
    if ids.size == 0:
        return np.empty(0, dtype=np.int64)
    lo = int(min(ids.min(), known.min() if known.size else 0))
    hi = int(max(ids.max(), known.max() if known.size else 0))
    if lo >= 0 and hi < 1 << 27:
        # A lookup table beats the sort inside np.isin by ~10x on 15.7M pairs.
        table = np.zeros(hi + 1, dtype=bool)
        table[known] = True
        miss = ~table[ids]
        if not miss.any():
            return np.empty(0, dtype=np.int64)
        return np.unique(ids[miss])
    u = np.unique(ids)
    return u[~np.isin(u, known)]


# --------------------------------------------------------------------------------------------
# The whole meta folder
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class IJBMeta:
    """The 1:1 meta data of IJB-B or IJB-C, row-aligned as in the files.

    Attributes:
        names: (N,) str, image file names relative to ``loose_crop``.
        templates: (N,) int64 template id of each image.
        medias: (N,) int64 media id of each image.
        landmarks: (N, 5, 2) float32 five points (x, y) in loose-crop pixels.
        faceness: (N,) float32 detector score of each image.
        p1, p2: (M,) int64 template ids of each verification pair (empty if not loaded).
        labels: (M,) int8, 1 genuine, 0 impostor.
        dataset: "IJBB" or "IJBC".
        meta_dir: the meta folder read; ``loose_crop`` is its sibling.
    """

    names: npt.NDArray[np.str_]
    templates: npt.NDArray[np.int64]
    medias: npt.NDArray[np.int64]
    landmarks: npt.NDArray[np.float32]
    faceness: npt.NDArray[np.float32]
    p1: npt.NDArray[np.int64]
    p2: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int8]
    dataset: str = "IJBC"
    meta_dir: Path = field(default_factory=Path)

    @property
    def image_dir(self) -> Path:
        """The ``loose_crop`` folder next to ``meta_dir``."""
        return self.meta_dir.parent / "loose_crop"

    def __len__(self) -> int:
        return int(self.names.shape[0])

    def __repr__(self) -> str:
        return (
            f"IJBMeta(dataset={self.dataset!r}, images={len(self)}, "
            f"templates={np.unique(self.templates).size}, pairs={self.labels.size}, "
            f"genuine={int(np.count_nonzero(self.labels))}, meta_dir='{self.meta_dir}')"
        )


def load_ijb_meta(
    root: str | os.PathLike[str], dataset: str = "IJBC", *, pairs: bool = True
) -> IJBMeta:
    """Read and cross-check the three 1:1 meta files of IJB-B or IJB-C.

    Args:
        root: the folder holding ``IJBC/`` (or ``IJBB/``), the dataset folder itself, or its
            ``meta`` folder.
        dataset: "IJBC" or "IJBB" (selects folder name and file prefix).
        pairs: read the pair file (skip it for 1:N-only work; p1/p2/labels are then empty).

    Raises:
        FileNotFoundError: a file is missing (its path is named).
        IJBFormatError: a malformed line (file:line), face_tid_mid and 5pts files with
            different row counts or different names in some row, labels not 0/1, pair
            template ids absent from face_tid_mid (the first ones are named).
    """
    ds = _check_dataset(dataset)
    paths = meta_paths(root, ds)
    names, templates, medias = read_face_tid_mid(paths["face_tid_mid"])
    names5, landmarks, faceness = read_name_5pts_score(paths["name_5pts"])
    if names.shape[0] != names5.shape[0]:
        raise IJBFormatError(
            f"{paths['face_tid_mid'].name} has {names.shape[0]} rows but "
            f"{paths['name_5pts'].name} has {names5.shape[0]}; they must be row-aligned "
            f"(in {paths['meta_dir']})"
        )
    diff = np.flatnonzero(names != names5)
    if diff.size:
        i = int(diff[0])
        raise IJBFormatError(
            f"{paths['face_tid_mid'].name} and {paths['name_5pts'].name} disagree in "
            f"{diff.size} rows; first at row {i + 1}: {str(names[i])!r} vs {str(names5[i])!r}"
        )
    if pairs:
        p1, p2, labels = read_template_pair_label(paths["pair_label"])
        known = np.unique(templates)
        miss = np.union1d(_missing_ids(p1, known), _missing_ids(p2, known))
        if miss.size:
            shown = ", ".join(str(int(t)) for t in miss[:10])
            more = f" and {miss.size - 10} more" if miss.size > 10 else ""
            raise IJBFormatError(
                f"{paths['pair_label'].name}: {miss.size} template ids have no image in "
                f"{paths['face_tid_mid'].name}: {shown}{more}"
            )
    else:
        p1 = np.empty(0, dtype=np.int64)
        p2 = np.empty(0, dtype=np.int64)
        labels = np.empty(0, dtype=np.int8)
    return IJBMeta(
        names=names,
        templates=templates,
        medias=medias,
        landmarks=landmarks,
        faceness=faceness,
        p1=p1,
        p2=p2,
        labels=labels,
        dataset=ds,
        meta_dir=paths["meta_dir"],
    )


# --------------------------------------------------------------------------------------------
# 1:N csvs
# --------------------------------------------------------------------------------------------


def read_1n_csv(
    path: str | os.PathLike[str],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Read an IJB 1:N csv: header row, column 0 template id, column 1 subject id.

    Further columns (file names, sighting ids, ...) are ignored. The real files have one row
    per image, so a template id repeats; it is reduced to one row per template, in order of
    first appearance.

    Returns:
        template_ids: (T,) int64, unique; subject_ids: (T,) int64.

    Raises:
        FileNotFoundError, IJBFormatError (malformed line, non-integer ids, a template listed
        with two subjects).
    """
    p = Path(path)
    data = _read_bytes(p, "1:N csv")
    lines = data.split(b"\n")
    tids: list[int] = []
    sids: list[int] = []
    header_seen = False
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if not header_seen:
            header_seen = True
            continue
        cols = line.split(b",", 2)
        if len(cols) < 2:
            raise IJBFormatError(
                f"{p}:{lineno}: expected at least 2 comma-separated columns (template id, "
                f"subject id), got {line.decode('utf-8', 'replace')!r}"
            )
        try:
            tids.append(int(cols[0]))
            sids.append(int(cols[1]))
        except ValueError:
            raise IJBFormatError(
                f"{p}:{lineno}: template and subject ids must be integers, got "
                f"{line.decode('utf-8', 'replace')!r}"
            ) from None
    if not header_seen:
        raise IJBFormatError(f"{p}: empty file (expected a header row)")
    t = np.array(tids, dtype=np.int64)
    s = np.array(sids, dtype=np.int64)
    if t.size == 0:
        return t, s
    order = np.lexsort((s, t))
    ts, ss = t[order], s[order]
    same_t = ts[1:] == ts[:-1]
    conflict = np.flatnonzero(same_t & (ss[1:] != ss[:-1]))
    if conflict.size:
        bad = np.unique(ts[conflict])
        k = int(bad[0])
        subj = np.unique(s[t == k])
        raise IJBFormatError(
            f"{p}: {bad.size} template ids map to more than one subject; template {k} has "
            f"subjects {subj.tolist()}"
        )
    _, first = np.unique(t, return_index=True)
    first.sort()
    return t[first], s[first]


@dataclass(frozen=True, eq=False)
class IJB1N:
    """The 1:N identification lists of IJB-B/C (one row per template).

    Attributes:
        gallery1, gallery2: (template_ids (G,) int64, subject_ids (G,) int64) of G1/G2 (IJB-C)
            or S1/S2 (IJB-B).
        probes: (template_ids (P,) int64, subject_ids (P,) int64) of the mixed probe set.
        gallery_names: ("G1", "G2") or ("S1", "S2").
    """

    gallery1: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
    gallery2: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
    probes: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]
    gallery_names: tuple[str, str] = ("G1", "G2")


def load_ijb_1n(root: str | os.PathLike[str], dataset: str = "IJBC") -> IJB1N:
    """Read the two gallery csvs and the mixed probe csv of IJB-B or IJB-C.

    ``root`` as in :func:`load_ijb_meta`. See :func:`read_1n_csv` for the format.
    """
    ds = _check_dataset(dataset)
    paths = meta_paths(root, ds)
    return IJB1N(
        gallery1=read_1n_csv(paths["gallery1"]),
        gallery2=read_1n_csv(paths["gallery2"]),
        probes=read_1n_csv(paths["probe"]),
        gallery_names=_GALLERIES[ds],
    )


# --------------------------------------------------------------------------------------------
# Aligned crops for feature extraction
# --------------------------------------------------------------------------------------------


class IJBCrops(Dataset):  # type: ignore[type-arg]
    """Aligned IJB faces read from ``loose_crop``, for a torch ``DataLoader``.

    Each item is ``(image, flipped, index)``: ``image`` the aligned face as a CHW tensor
    (RGB, 3x112x112), ``flipped`` its horizontal mirror, ``index`` the row of the image in the
    meta files (an ``int``). With ``normalize=True`` (default) both are float32 in [-1, 1],
    ``(x / 255 - 0.5) / 0.5``; otherwise uint8.

    With ``skip_bad=True`` a missing or undecodable image gives zero tensors (the uint8 zero
    image, normalised if asked) instead of an error, and each item becomes
    ``(image, flipped, index, ok)`` with ``ok`` a bool, so that the caller learns about bad
    images also from worker processes. The indices skipped in *this* process are also appended
    to :attr:`skipped`.

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
    ) -> None:
        if meta is None:
            if root is None:
                raise ValueError("give root or meta")
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
            IJBFormatError: the file exists but OpenCV cannot decode it.
        """
        path = self.path(row)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"IJB image not found: {path} (meta row {row})")
            raise IJBFormatError(f"cannot decode IJB image {path} (meta row {row})")
        return align_face(img.astype(np.uint8, copy=False), self.landmarks[row])

    def _to_tensor(self, rgb: npt.NDArray[np.uint8]) -> torch.Tensor:
        chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        if self.normalize:
            return (chw.to(torch.float32) / 255.0 - 0.5) / 0.5
        return chw

    def __getitem__(
        self, i: int
    ) -> tuple[torch.Tensor, torch.Tensor, int] | tuple[torch.Tensor, torch.Tensor, int, bool]:
        row = int(self.indices[i])
        ok = True
        try:
            rgb = self.load_aligned(row)
        except (FileNotFoundError, IJBFormatError):
            if not self.skip_bad:
                raise
            ok = False
            self.skipped.append(row)
            rgb = np.zeros((ALIGNED_SIZE, ALIGNED_SIZE, 3), dtype=np.uint8)
        img = self._to_tensor(rgb)
        flipped = torch.flip(img, dims=(2,))
        if self.skip_bad:
            return img, flipped, row, ok
        return img, flipped, row
