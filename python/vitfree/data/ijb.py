"""IJB-B / IJB-C meta files (docs/protocols.md §3) and 1:N csvs (§4): readers and writers.

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
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from vitfree.errors import IJBFormatError

__all__ = [
    "IJB1N",
    "IJBFormatError",
    "IJBMeta",
    "check_1n",
    "find_meta_dir",
    "load_ijb_1n",
    "load_ijb_meta",
    "meta_paths",
    "read_1n_csv",
    "read_face_tid_mid",
    "read_name_5pts_score",
    "read_template_pair_label",
    "format_int_rows",
    "write_1n_csv",
    "write_ijb_meta",
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
    except IsADirectoryError:
        raise IJBFormatError(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise IJBFormatError(f"cannot read {what} {path}: {e.strerror or e}") from None


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


def check_1n(onen: IJB1N, meta: IJBMeta) -> None:
    """Every template of the 1:N galleries and probes must have images in face_tid_mid.txt.

    Run before extraction, so that a csv of another release fails in seconds, not after an
    hour of features.

    Raises:
        IJBFormatError: names the set (G1/G2/probes), the count and the first missing ids.
    """
    known = np.unique(meta.templates)
    sets = {onen.gallery_names[0]: onen.gallery1, onen.gallery_names[1]: onen.gallery2, "probe": onen.probes}
    for name, (tids, _) in sets.items():
        miss = _missing_ids(np.asarray(tids, dtype=np.int64), known)
        if miss.size:
            shown = ", ".join(str(int(t)) for t in miss[:10]) + (", ..." if miss.size > 10 else "")
            raise IJBFormatError(
                f"{meta.meta_dir}: {miss.size} {name} template ids of the 1:N csvs have no image in "
                f"{meta.dataset.lower()}_face_tid_mid.txt: {shown} (are the csvs from another release?)"
            )


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
# Writers: the same formats, for synthetic sets, tests and benchmarks
# --------------------------------------------------------------------------------------------


def format_int_rows(cols: list[np.ndarray], sep: bytes = b" ") -> bytes:
    """Text of integer columns: one line per row, ``sep`` between fields, ``\\n`` after each.

    Vectorised (no Python loop over rows): each value is written as zero-padded digits into a
    fixed-width byte matrix, then the leading zeros are dropped with one boolean mask. Writes
    the 15.7M-line IJB-C pair file in a few seconds. Values must be >= 0.
    """
    vals = np.stack([np.asarray(c, dtype=np.int64) for c in cols], axis=1)
    if vals.size and vals.min() < 0:
        raise ValueError("format_int_rows writes non-negative integers only")
    n, ncol = vals.shape
    width = max(len(str(int(vals.max()))) if vals.size else 1, 1)
    flat = vals.reshape(-1)
    small = flat.astype(np.int32) if width < 10 else flat  # int32 division is ~2x faster
    # Digit-major (width + 1, n*ncol) so every write is contiguous; transposed once at the end.
    digits = np.empty((width + 1, flat.size), dtype=np.uint8)
    v = small.copy()
    for j in range(width - 1, -1, -1):
        q = v // 10
        digits[j] = (v - q * 10).astype(np.uint8) + 48
        v = q
    digits[width] = sep[0]
    digits[width].reshape(n, ncol)[:, -1] = ord("\n")
    out = np.ascontiguousarray(digits.T)  # (n*ncol, width + 1)
    ndig = np.ones(flat.size, dtype=np.int8)
    p = 10
    for _ in range(width - 1):
        ndig += flat >= p
        p *= 10
    keep = np.arange(width + 1, dtype=np.int8)[None, :] >= (width - ndig)[:, None]
    return out[keep].tobytes()


def write_ijb_meta(
    root: str | os.PathLike[str],
    dataset: str,
    *,
    names: Sequence[str],
    templates: npt.ArrayLike,
    medias: npt.ArrayLike,
    landmarks: npt.ArrayLike,
    faceness: npt.ArrayLike,
    p1: npt.ArrayLike,
    p2: npt.ArrayLike,
    labels: npt.ArrayLike,
    landmark_decimals: int = 3,
    score_decimals: int = 6,
    meta_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Write the three 1:1 meta files of IJB-B/C in the official layout (docs/protocols.md §3).

    Writes ``<root>/<dataset>/meta/<p>_face_tid_mid.txt``, ``<p>_name_5pts_score.txt`` and
    ``<p>_template_pair_label.txt`` (``p`` = ``ijbc`` or ``ijbb``); integer columns are
    written vectorised (:func:`format_int_rows`), so IJB-C's 15.7M pairs take seconds.

    Args:
        root: folder that will hold ``<dataset>/meta``.
        dataset: "IJBC" or "IJBB".
        names: (N,) image file names (relative to ``loose_crop``).
        templates, medias: (N,) non-negative integer ids per image.
        landmarks: (N, 5, 2) or (N, 10) landmark coordinates in the loose crop.
        faceness: (N,) detector scores.
        p1, p2, labels: (P,) template pairs and 1 (genuine) / 0 (impostor).
        landmark_decimals, score_decimals: decimals written.
        meta_dir: write into this folder instead of ``<root>/<dataset>/meta``.

    Returns:
        ``{"face_tid_mid", "name_5pts", "pair_label": path}`` and ``"meta_dir"``.
    """
    ds = _check_dataset(dataset)
    prefix = ds.lower()
    meta = Path(meta_dir) if meta_dir is not None else Path(root) / ds / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    n = len(names)
    lm = np.asarray(landmarks, dtype=np.float64).reshape(n, 10)
    fn = np.asarray(faceness, dtype=np.float64).reshape(n)
    tm = format_int_rows([np.asarray(templates), np.asarray(medias)]).split(b"\n")
    paths = {
        "face_tid_mid": meta / f"{prefix}_face_tid_mid.txt",
        "name_5pts": meta / f"{prefix}_name_5pts_score.txt",
        "pair_label": meta / f"{prefix}_template_pair_label.txt",
        "meta_dir": meta,
    }
    paths["face_tid_mid"].write_bytes(
        b"".join(name.encode() + b" " + line + b"\n" for name, line in zip(names, tm))
    )
    lines = []
    for name, row, score in zip(names, lm.tolist(), fn.tolist()):
        pts = " ".join(f"{v:.{landmark_decimals}f}" for v in row)
        lines.append(f"{name} {pts} {score:.{score_decimals}f}\n")
    paths["name_5pts"].write_text("".join(lines))
    paths["pair_label"].write_bytes(
        format_int_rows([np.asarray(p1), np.asarray(p2), np.asarray(labels)])
    )
    return paths


def write_1n_csv(
    path: str | os.PathLike[str],
    template_ids: npt.ArrayLike,
    subject_ids: npt.ArrayLike,
    filenames: Sequence[str] | None = None,
    extra_columns: Mapping[str, Sequence[Any]] | None = None,
) -> Path:
    """Write an IJB 1:N csv: ``TEMPLATE_ID,SUBJECT_ID,FILENAME[,...]`` with a header row.

    One row per entry as given (the release has one row per image, templates repeated);
    ``filenames`` default to ``"synthetic"``.
    """
    t = np.asarray(template_ids, dtype=np.int64).tolist()
    sj = np.asarray(subject_ids, dtype=np.int64).tolist()
    files = list(filenames) if filenames is not None else ["synthetic"] * len(t)
    extra = dict(extra_columns or {})
    header = ["TEMPLATE_ID", "SUBJECT_ID", "FILENAME", *extra]
    cols = [t, sj, files, *(list(v) for v in extra.values())]
    rows = [",".join(map(str, r)) for r in zip(*cols)]
    p = Path(path)
    p.write_text("\n".join([",".join(header), *rows]) + "\n")
    return p


def __getattr__(name: str) -> Any:
    # IJBCrops (a torch Dataset) moved to vitfree.faces; importing it lazily keeps this
    # module, and so `vitfree eval features`, free of torch and OpenCV.
    if name == "IJBCrops":
        from vitfree.faces import IJBCrops

        return IJBCrops
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
