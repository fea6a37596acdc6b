"""insightface RecordIO training sets (``train.rec`` + ``train.idx`` + ``property``), read and
written without mxnet (docs/protocols.md §7).

MS1MV2/MS1MV3, Glint360K and the insightface WebFace sets are distributed in this form.  The
layout, from dmlc-core's ``recordio`` and mxnet's ``recordio.pack``:

* ``train.rec``: records one after another, each ``uint32 magic 0xced7230a``, ``uint32
  lrecord`` (bits 29-31: the part flag ``cflag``, bits 0-28: the length), the payload, zero
  bytes up to a multiple of 4.  dmlc's writer never lets the magic appear at a 4-aligned
  position inside a record: where the payload holds it, the record is cut there into parts
  (``cflag`` 1 = first, 2 = middle, 3 = last; 0 = a whole record) and the magic itself is
  dropped; a reader joins the parts with the magic put back.  :class:`RecordIO` does that.
* payload of an image record: the 24-byte header ``struct.pack("<IfQQ", flag, label, id,
  id2)`` (:class:`IRHeader`); if ``flag > 0``, ``flag`` float32 labels follow (the header's
  ``label`` is then 0 and the class is the first of them); then the encoded image.
* ``train.idx``: text lines ``key<TAB>byte offset`` of each record in ``train.rec``.
* record 0 of an insightface set: a header with ``flag > 0`` whose labels are ``(end of the
  images, end of the identity records)``: the images are keys ``1 .. label[0] - 1`` (what
  insightface's ``dataset.py`` uses); keys ``label[0] .. label[1] - 1`` hold each identity's
  ``[first, end)`` image range.  Without such a header every key is an image.
* ``property``: text ``num_classes,height,width``.

Everything is read with :mod:`struct` and numpy (nothing is unpickled), and every offset
and length is checked against the file before it is used: a damaged file or an index that
does not belong to it raises :class:`RecordIOFormatError` naming the file and the key,
never a wrong image.  No torch here: :class:`RecordIOFaces` is a map-style dataset (``len``
and ``[i]``), which a torch ``DataLoader`` takes as it is.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import struct
import threading
import warnings
from collections.abc import Iterable, Sized
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from vitfree._logging import get_logger
from vitfree.data.images import DamagedImageError, decode_bytes
from vitfree.errors import FormatError, InputError

__all__ = [
    "MAGIC",
    "IRHeader",
    "RecordIO",
    "RecordIOFaces",
    "RecordIOFormatError",
    "WrittenRecordIO",
    "class_label",
    "decode_face",
    "find_recordio",
    "pack",
    "read_property",
    "scan_index",
    "unpack",
    "write_recordio",
]

log = get_logger(__name__)

#: The dmlc RecordIO magic number (little-endian ``0a 23 d7 ce`` in the file).
MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_FRAME = struct.Struct("<II")  # magic, lrecord
_IR = struct.Struct("<IfQQ")  # flag, label, id, id2: 24 bytes
_LEN_MASK = (1 << 29) - 1
_MAX_LABEL = 1 << 24  # float32 holds every integer up to here exactly
_SAMPLED = 64  # records whose frame RecordIO checks when it opens a file


class RecordIOFormatError(FormatError):
    """A ``.rec``/``.idx``/``property`` file that does not follow the format (file and key named)."""


class IRHeader(NamedTuple):
    """The 24-byte header of an image record (mxnet's ``IRHeader``).

    Attributes:
        flag: 0 for a single label in ``label``; else the number of float32 labels that
            follow the header (then ``label`` holds them as a float32 array of that length).
        label: the label, a float, or a float32 array (flag,) when ``flag > 0``.
        id, id2: record ids (insightface stores the record's key in ``id``).
    """

    flag: int
    label: float | npt.NDArray[np.float32]
    id: int
    id2: int


def _brief(b: bytes, limit: int = 40) -> str:
    text = repr(b[:limit])
    return text + ("..." if len(b) > limit else "")


# --------------------------------------------------------------------------- payloads


def pack(header: IRHeader, image: bytes) -> bytes:
    """The payload of one record: ``header`` and ``image``, as mxnet's ``recordio.pack``.

    A scalar ``header.label`` is stored in the header (flag 0); an array label of n values
    is stored after it (flag n, the header's label 0), whatever ``header.flag`` says.
    """
    label = header.label
    if isinstance(label, (np.ndarray, list, tuple)):
        arr = np.asarray(label, dtype="<f4").reshape(-1)
        if arr.size == 0:
            raise InputError("pack: an array label needs at least one value")
        return _IR.pack(arr.size, 0.0, header.id, header.id2) + arr.tobytes() + bytes(image)
    return _IR.pack(0, float(label), header.id, header.id2) + bytes(image)


def unpack(payload: bytes, *, source: str = "record") -> tuple[IRHeader, bytes]:
    """Split a record's payload into its :class:`IRHeader` and the encoded image.

    Args:
        payload: the record's bytes (what :meth:`RecordIO.read` returns).
        source: how to name the record in errors ("<file> key <k>").

    Returns:
        ``(header, image_bytes)``; ``header.label`` is a float when ``header.flag == 0``,
        else a float32 array (flag,).

    Raises:
        RecordIOFormatError: the payload is shorter than its header says.
    """
    if len(payload) < _IR.size:
        raise RecordIOFormatError(
            f"{source}: payload of {len(payload)} bytes, shorter than the 24-byte image header"
        )
    flag, label, id1, id2 = _IR.unpack_from(payload, 0)
    end = _IR.size + 4 * flag
    if flag == 0:
        return IRHeader(0, float(label), id1, id2), bytes(payload[_IR.size :])
    if end > len(payload):
        raise RecordIOFormatError(
            f"{source}: the header announces {flag} labels ({4 * flag} bytes) but the payload "
            f"has {len(payload) - _IR.size} bytes after the header"
        )
    labels = np.frombuffer(payload, dtype="<f4", count=flag, offset=_IR.size).astype(np.float32)
    return IRHeader(flag, labels, id1, id2), bytes(payload[end:])


def class_label(header: IRHeader, *, source: str = "record", num_classes: int | None = None) -> int:
    """The class index of an image record: ``label`` (flag 0) or ``label[0]`` (flag > 0).

    Raises:
        RecordIOFormatError: the label is not a whole number >= 0 (e.g. 3.5, NaN, -1), or
            not below ``num_classes`` when that is given.
    """
    value = float(header.label[0]) if isinstance(header.label, np.ndarray) else float(header.label)
    return _check_label(value, source, num_classes)


def _check_label(value: float, source: str, num_classes: int | None) -> int:
    if not math.isfinite(value) or value != math.floor(value) or value < 0:
        raise RecordIOFormatError(
            f"{source}: label {value!r} is not a class index (a whole number >= 0)"
        )
    if value >= _MAX_LABEL:
        raise RecordIOFormatError(
            f"{source}: label {value:g} is too large for a class index (float32 labels hold "
            "whole numbers exactly only below 2^24)"
        )
    if num_classes is not None and value >= num_classes:
        raise RecordIOFormatError(
            f"{source}: label {int(value)} is not below the {num_classes} classes of the "
            "property file"
        )
    return int(value)


def decode_face(data: bytes, *, source: str = "image") -> npt.NDArray[np.uint8]:
    """Decode an encoded image (JPEG/PNG bytes) to RGB uint8 (H, W, 3), strictly, by the
    rules of :func:`vitfree.data.images.decode_bytes`.

    Raises:
        DamagedImageError: empty, truncated or undecodable (``source`` named).
    """
    bgr, _ = decode_bytes(data, source)
    return np.ascontiguousarray(bgr[:, :, ::-1])


# --------------------------------------------------------------------------- property, index


def read_property(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(num_classes, height, width)`` from an insightface ``property`` file
    (``num_classes,height,width``, e.g. ``85742,112,112``).

    Raises:
        FileNotFoundError: no such file.
        RecordIOFormatError: not three whole numbers > 0 separated by commas.
    """
    p = Path(path)
    try:
        text = p.read_bytes().decode("ascii")
    except FileNotFoundError:
        raise FileNotFoundError(f"property file not found: {p}") from None
    except UnicodeDecodeError:
        raise RecordIOFormatError(
            f"{p}: not a property file (expected text 'num_classes,height,width')"
        ) from None
    fields = [f.strip() for f in text.strip().split(",")]
    try:
        values = [int(f) for f in fields]
    except ValueError:
        values = []
    if len(values) != 3 or min(values) <= 0:
        raise RecordIOFormatError(
            f"{p}: expected 'num_classes,height,width' (three whole numbers > 0), got "
            f"{text.strip()[:80]!r}"
        )
    return values[0], values[1], values[2]


def _parse_idx(path: str) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(keys, offsets) of an ``.idx`` file, in file order; errors name the line."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"index file not found: {path}") from None
    arr: npt.NDArray[np.int64] | None = None
    if text.strip():  # the fast path: numpy's C parser (any error: line by line, below)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = np.loadtxt(io.BytesIO(text), dtype=np.int64, ndmin=2, comments=None)
        except (ValueError, OverflowError):
            arr = None
        if arr is not None and arr.shape[1] != 2:
            arr = None
    if arr is None:  # line by line, to name the line that is wrong
        pairs: list[tuple[int, int]] = []
        for no, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            try:
                key, offset = (int(x) for x in parts) if len(parts) == 2 else (None, None)
                if key is None or offset is None or max(abs(key), abs(offset)) >= 1 << 62:
                    raise ValueError
                pairs.append((key, offset))
            except ValueError:
                raise RecordIOFormatError(
                    f"{path}, line {no}: expected 'key<TAB>offset' (two whole numbers), got "
                    f"{_brief(line)}"
                ) from None
        if not pairs:
            raise RecordIOFormatError(f"{path}: no records (an empty index)")
        arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    return np.ascontiguousarray(arr[:, 0]), np.ascontiguousarray(arr[:, 1])


def scan_index(
    rec_path: str | os.PathLike[str], *, progress: bool = False
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Index a ``.rec`` file by walking its record frames (no ``.idx`` needed).

    Keys are the records' positions in the file (0, 1, 2, ...), which is how insightface's
    writers number them; every frame is checked (magic, part flags, lengths within the file).

    Returns:
        ``(keys, offsets)``: int64 (N,) each.

    Raises:
        RecordIOFormatError: a frame without the magic, a bad part sequence, or a record
            that runs past the end of the file (offset and record number named).
    """
    from tqdm.auto import tqdm

    p = str(rec_path)
    size = os.path.getsize(p)
    offsets: list[int] = []
    with (
        open(p, "rb") as f,
        tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            desc=f"index {Path(p).name}",
            disable=not progress,
        ) as bar,
    ):
        pos = 0
        while pos < size:
            start = pos
            what = f"{p} record {len(offsets)} (byte {start})"
            first = True
            while True:
                f.seek(pos)
                head = f.read(8)
                length, cflag = _check_frame(head, pos, size, first, what)
                pos += 8 + ((length + 3) & ~3)
                first = False
                if cflag in (0, 3):
                    break
            offsets.append(start)
            bar.update(pos - start)
    if not offsets:
        raise RecordIOFormatError(f"{p}: no records (an empty file)")
    return np.arange(len(offsets), dtype=np.int64), np.asarray(offsets, dtype=np.int64)


def _check_frame(head: bytes, pos: int, size: int, first: bool, what: str) -> tuple[int, int]:
    """(length, cflag) of the frame header ``head`` read at byte ``pos`` of a file of
    ``size`` bytes, checked: magic, part flag in sequence, payload within the file."""
    if len(head) < 8:
        raise RecordIOFormatError(
            f"{what}: truncated file: {len(head)} of the 8 bytes of a record frame at byte "
            f"{pos} (the file has {size} bytes)"
        )
    magic, lrec = _FRAME.unpack(head)
    if magic != MAGIC:
        where = "the index offset" if first else "the next part"
        raise RecordIOFormatError(
            f"{what}: no record at byte {pos} ({where}): found {magic:#010x} where the magic "
            f"{MAGIC:#010x} should be; the .idx does not belong to this .rec, or the file is "
            "damaged"
        )
    cflag, length = lrec >> 29, lrec & _LEN_MASK
    if (first and cflag not in (0, 1)) or (not first and cflag not in (2, 3)):
        expected = "0 or 1 (a record's first part)" if first else "2 or 3 (a following part)"
        raise RecordIOFormatError(
            f"{what}: part flag {cflag} at byte {pos}, expected {expected}; the file is damaged"
        )
    if pos + 8 + length > size:
        raise RecordIOFormatError(
            f"{what}: truncated file: a record part of {length} bytes at byte {pos} runs past "
            f"the end of the file ({size} bytes)"
        )
    return length, cflag


# --------------------------------------------------------------------------- reader


class RecordIO:
    """Random access to the records of a ``.rec`` file through its ``.idx``.

    The file is opened on first use in each process (the object holds no open file when
    pickled, and a forked DataLoader worker opens its own), and read with ``os.pread``, so
    threads may share one object.  On opening, every index entry is checked against the file
    size (offset, 4-byte alignment) and the frames of up to 64 records spread over the file,
    the first and the last included, are checked (magic, lengths); each :meth:`read` checks
    the frames it reads.

    Args:
        rec_path: the ``.rec`` file.
        idx_path: its index (default: the ``.rec`` path with ``.idx``); when that default
            does not exist the records are indexed by walking the file (:func:`scan_index`,
            keys 0, 1, 2, ... in file order; a warning says so).
        check: run the checks on opening (reads are checked either way).

    Attributes:
        rec_path, idx_path: the files (``idx_path`` None when the file was scanned).
        size: bytes of the ``.rec`` file when opened.

    Raises:
        FileNotFoundError: no ``.rec`` file, or no ``.idx`` at an explicit ``idx_path``.
        RecordIOFormatError: a malformed index line, a repeated key, or an index entry that
            does not point at a record of this file (file and key named).
    """

    def __init__(
        self,
        rec_path: str | os.PathLike[str],
        idx_path: str | os.PathLike[str] | None = None,
        *,
        check: bool = True,
    ) -> None:
        self.rec_path = str(rec_path)
        if not os.path.isfile(self.rec_path):
            raise FileNotFoundError(f"RecordIO file not found: {self.rec_path}")
        self.size = os.path.getsize(self.rec_path)
        if idx_path is None and not os.path.isfile(str(Path(self.rec_path).with_suffix(".idx"))):
            log.warning(
                "%s has no .idx beside it: indexing its records in file order (keys 0, 1, ...)",
                self.rec_path,
            )
            self.idx_path: str | None = None
            keys, offsets = scan_index(self.rec_path)
        else:
            self.idx_path = str(idx_path or Path(self.rec_path).with_suffix(".idx"))
            keys, offsets = _parse_idx(self.idx_path)
        order = np.argsort(keys, kind="stable")
        self._keys = np.ascontiguousarray(keys[order])
        self._offsets = np.ascontiguousarray(offsets[order])
        n = len(self._keys)
        repeated = np.diff(self._keys) == 0
        if repeated.any():
            dup = int(self._keys[1:][repeated][0])
            raise RecordIOFormatError(f"{self._idx_name}: key {dup} appears more than once")
        self._dense = bool(n and self._keys[0] == 0 and self._keys[-1] == n - 1)
        self._fd: int | None = None
        self._pid = -1
        self._lock = threading.Lock()
        if check:
            self._check_index()

    # -- index

    @property
    def _idx_name(self) -> str:
        return self.idx_path or f"{self.rec_path} (scanned)"

    @property
    def keys(self) -> npt.NDArray[np.int64]:
        """Every key of the index, ascending: int64 (N,) (a read-only view)."""
        view = self._keys.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        try:
            self._position(int(key))  # type: ignore[call-overload]
        except (KeyError, TypeError, ValueError):
            return False
        return True

    def _position(self, key: int) -> int:
        n = len(self._keys)
        if self._dense:
            if 0 <= key < n:
                return key
        else:
            i = int(np.searchsorted(self._keys, key))
            if i < n and self._keys[i] == key:
                return i
        raise KeyError(f"{self.rec_path}: no record with key {key} in {self._idx_name}")

    def offset(self, key: int) -> int:
        """Byte offset of record ``key`` in the ``.rec`` file (KeyError if not indexed)."""
        return int(self._offsets[self._position(int(key))])

    def offsets_of(self, keys: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Byte offsets of many keys: int64 (M,) (KeyError naming the first missing key)."""
        k = np.asarray(keys, dtype=np.int64).reshape(-1)
        if self._dense:
            bad = (k < 0) | (k >= len(self._keys))
            pos = k
        else:
            pos = np.minimum(np.searchsorted(self._keys, k), max(len(self._keys) - 1, 0))
            bad = self._keys[pos] != k
        if bad.any():
            self._position(int(k[bad][0]))  # raises the KeyError with the message
        return self._offsets[pos]

    def _check_index(self) -> None:
        """Cheap checks of the index against the file: every offset, a sample of frames."""
        where = self._idx_name
        if len(self._keys) == 0:
            raise RecordIOFormatError(f"{where}: no records")
        off = self._offsets
        for bad, why in (
            (off < 0, "is negative"),
            (off % 4 != 0, "is not a multiple of 4 (records are 4-byte aligned)"),
            (off + 8 > self.size, f"lies beyond the end of {self.rec_path} ({self.size} bytes)"),
        ):
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise RecordIOFormatError(
                    f"{where}: the offset {int(off[i])} of key {int(self._keys[i])} {why}; "
                    f"{int(bad.sum())} of {len(off)} entries are like this: the index does not "
                    "belong to this .rec file, or the .rec is truncated"
                )
        by_offset = np.argsort(off, kind="stable")
        sample = np.unique(np.linspace(0, len(off) - 1, min(_SAMPLED, len(off))).astype(np.int64))
        for j in sample:
            i = int(by_offset[j])
            self._frames(int(off[i]), f"{self.rec_path} key {int(self._keys[i])} (from {where})")

    # -- reading

    def _open(self) -> int:
        pid = os.getpid()
        if self._fd is None or self._pid != pid:
            if self._fd is not None:  # inherited through fork: the parent keeps its own
                try:
                    os.close(self._fd)
                except OSError:
                    pass
            self._fd = os.open(self.rec_path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self._pid = pid
            self._lock = threading.Lock()
        return self._fd

    def _pread(self, n: int, pos: int) -> bytes:
        fd = self._open()
        if hasattr(os, "pread"):
            return os.pread(fd, n, pos)
        with self._lock:  # no pread (Windows): seek and read under a lock
            os.lseek(fd, pos, os.SEEK_SET)
            return os.read(fd, n)

    def _frames(self, pos: int, what: str, *, data: bool = False) -> bytes:
        """Walk the parts of the record at byte ``pos`` (checking each frame); with ``data``
        return the payload, parts joined with the magic put back."""
        parts: list[bytes] = []
        first = True
        while True:
            length, cflag = _check_frame(self._pread(8, pos), pos, self.size, first, what)
            if data:
                chunk = self._pread(length, pos + 8)
                if len(chunk) < length:  # the file shrank since it was opened
                    raise RecordIOFormatError(
                        f"{what}: truncated file: {len(chunk)} of {length} bytes at byte {pos + 8}"
                    )
                parts.append(chunk)
            pos += 8 + ((length + 3) & ~3)
            first = False
            if cflag in (0, 3):
                return _MAGIC_BYTES.join(parts)

    def read(self, key: int) -> bytes:
        """The payload of record ``key`` (multi-part records joined).

        Raises:
            KeyError: ``key`` is not in the index.
            RecordIOFormatError: no record at the indexed offset, or a truncated record
                (file, key and byte named).
        """
        k = int(key)
        return self._frames(self.offset(k), f"{self.rec_path} key {k}", data=True)

    def read_header(self, key: int) -> IRHeader:
        """The :class:`IRHeader` of record ``key`` (reads the header, not the image)."""
        k = int(key)
        what = f"{self.rec_path} key {k}"
        pos = self.offset(k)
        length, cflag = _check_frame(self._pread(8, pos), pos, self.size, True, what)
        head = self._pread(min(length, _IR.size), pos + 8)
        if cflag == 0 and len(head) == _IR.size:
            flag = _IR.unpack(head)[0]
            if _IR.size + 4 * flag <= length:
                head = self._pread(_IR.size + 4 * flag, pos + 8)
                return unpack(head, source=what)[0]
        return unpack(self.read(k), source=what)[0]

    def first_labels(
        self, keys: npt.ArrayLike, *, progress: bool = False, chunk: int = 1 << 16
    ) -> npt.NDArray[np.float32]:
        """The (first) label of each record in ``keys``, reading headers only: float32 (M,).

        Vectorised over a memory map of the file, a few seconds for millions of records;
        frames are checked as in :meth:`read` (records in several parts are read whole).
        """
        from tqdm.auto import tqdm

        k = np.asarray(keys, dtype=np.int64).reshape(-1)
        out = np.empty(len(k), dtype=np.float32)
        if len(k) == 0:
            return out
        offs = self.offsets_of(k)
        mm = np.memmap(self.rec_path, dtype=np.uint8, mode="r")
        size = len(mm)
        window = 8 + _IR.size + 4
        cols = np.arange(window, dtype=np.int64)
        try:
            for s in tqdm(range(0, len(k), chunk), desc="labels", disable=not progress):
                o = offs[s : s + chunk]
                w = np.asarray(mm[np.minimum(o[:, None] + cols, size - 1)])
                words = w.view("<u4")
                magic, lrec, flag = words[:, 0], words[:, 1], words[:, 2]
                cflag, length = lrec >> 29, lrec & _LEN_MASK
                label = np.where(flag > 0, words[:, 8], words[:, 3]).view("<f4")
                whole = (
                    (o + 8 + _IR.size <= size)
                    & (magic == MAGIC)
                    & (cflag == 0)
                    & (o + 8 + length.astype(np.int64) <= size)
                    & (length.astype(np.int64) >= _IR.size + 4 * flag.astype(np.int64))
                )
                out[s : s + len(o)] = label
                for j in np.flatnonzero(~whole):  # several parts, or damage: the full path
                    hdr = unpack(
                        self.read(int(k[s + j])), source=f"{self.rec_path} key {k[s + j]}"
                    )[0]
                    lab = hdr.label
                    out[s + j] = float(lab[0]) if isinstance(lab, np.ndarray) else float(lab)
        finally:
            del mm
        return out

    # -- life cycle

    def close(self) -> None:
        """Close this process's file (it is reopened on the next read)."""
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RecordIO:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"], state["_pid"], state["_lock"] = None, -1, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RecordIO({self.rec_path!r}, {len(self)} records)"


# --------------------------------------------------------------------------- dataset


def find_recordio(
    path: str | os.PathLike[str],
) -> tuple[Path, Path | None, Path | None]:
    """``(rec, idx, property)`` of a RecordIO set given its ``.rec`` or its folder.

    A folder must hold ``train.rec`` or exactly one ``.rec``; ``idx`` is the ``.rec`` with
    ``.idx`` and ``property`` the file of that name beside it (each None when absent).
    """
    p = Path(path)
    if p.is_dir():
        rec = p / "train.rec"
        if not rec.is_file():
            recs = sorted(p.glob("*.rec"))
            if len(recs) != 1:
                found = ", ".join(r.name for r in recs) or "none"
                raise InputError(
                    f"{p}: expected train.rec or a single .rec file in the folder (found {found})"
                )
            rec = recs[0]
    else:
        rec = p
        if not rec.is_file():
            raise FileNotFoundError(f"RecordIO file not found: {rec}")
    idx = rec.with_suffix(".idx")
    prop = rec.parent / "property"
    return rec, (idx if idx.is_file() else None), (prop if prop.is_file() else None)


class RecordIOFaces:
    """Aligned faces of an insightface RecordIO set, as ``(image, label)`` items.

    Items are ``(uint8 (H, W, 3) RGB ndarray, int class index)``, what
    :class:`vitfree.faces.FolderFaces` gives; a torch ``DataLoader`` takes the object as a
    map-style dataset (``len`` and ``[i]``), with any number of workers (each opens the file
    itself).  The images are the records insightface's ``dataset.py`` uses: keys ``1 ..
    label[0] - 1`` of the header record 0, or every key when there is no header.

    Checks: opening checks the index against the file (:class:`RecordIO`) and the header's
    image range against the index; each item checks its frame, its label (a whole number
    >= 0, below ``num_classes`` when the property file gives it) and its image (strict
    decoding, :func:`decode_face`; size ``(height, width)`` of the property file, else
    112 x 112).  A damaged frame or a bad label raises :class:`RecordIOFormatError`.

    An undecodable image, or one of the wrong size, raises :class:`DamagedImageError` naming
    the file and key; with ``skip_corrupt=True`` it is skipped instead: the item is the next
    usable record's (index ``i + 1``, ``i + 2``, ... wrapping round), the key is appended to
    :attr:`skipped` (of this process; DataLoader workers keep their own) and a warning on
    the ``vitfree`` logger counts the skipped records.

    Args:
        path: the ``.rec`` file or its folder (``train.rec``).
        idx_path: its index (default beside the ``.rec``).
        property_path: the property file (default ``property`` beside the ``.rec``); without
            one, ``num_classes`` comes from the labels (one pass over the headers).
        skip_corrupt: skip unusable images instead of raising.

    Attributes:
        rec: the :class:`RecordIO` reader.
        image_keys: int64 (N,), the record key of each item.
        image_size: ``(height, width)`` every image must have.
        skipped: keys skipped in this process (``skip_corrupt``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        idx_path: str | os.PathLike[str] | None = None,
        property_path: str | os.PathLike[str] | None = None,
        skip_corrupt: bool = False,
    ) -> None:
        rec_path, found_idx, found_prop = find_recordio(path)
        self.rec = RecordIO(rec_path, idx_path if idx_path is not None else found_idx)
        prop = Path(property_path) if property_path is not None else found_prop
        self.property_path = str(prop) if prop is not None else None
        self._num_classes: int | None = None
        self.image_size = (112, 112)
        if prop is not None:
            self._num_classes, h, w = read_property(prop)
            self.image_size = (h, w)
        self.image_keys = self._image_keys()
        if len(self.image_keys) == 0:
            raise RecordIOFormatError(f"{self.rec.rec_path}: no image records")
        self.skip_corrupt = skip_corrupt
        self.skipped: list[int] = []
        self._labels: npt.NDArray[np.int64] | None = None

    def _image_keys(self) -> npt.NDArray[np.int64]:
        rec = self.rec
        if 0 not in rec:
            return rec.keys.copy()
        source = f"{rec.rec_path} key 0 (the header record)"
        header = unpack(rec.read(0), source=source)[0]
        if header.flag == 0 or not isinstance(header.label, np.ndarray):
            return rec.keys.copy()  # no header record: every key is an image (as insightface)
        end = float(header.label[0])
        if not math.isfinite(end) or end != math.floor(end) or end < 1:
            raise RecordIOFormatError(
                f"{source}: its first label {end!r} should be the end of the image keys "
                "(a whole number >= 1)"
            )
        says = f"{source} says the images are keys 1..{int(end) - 1}, but {rec._idx_name}"
        if end - 1 > len(rec) - 1:  # before allocating the range: the header may be hostile
            raise RecordIOFormatError(f"{says} has only {len(rec)} records, key 0 included")
        keys = np.arange(1, int(end), dtype=np.int64)
        present = keys < len(rec) if rec._dense else np.isin(keys, rec.keys)  # dense: 0..n-1
        if not present.all():
            missing = keys[~present]
            raise RecordIOFormatError(
                f"{says} lacks {len(missing)} of them (key {int(missing[0])} first)"
            )
        return keys

    @property
    def labels(self) -> npt.NDArray[np.int64]:
        """The class index of every item: int64 (N,); read once from the record headers
        (not the images) and checked (whole numbers >= 0, below ``num_classes``)."""
        if self._labels is None:
            raw = self.rec.first_labels(self.image_keys, progress=len(self.image_keys) > 10**6)
            bad = ~np.isfinite(raw) | (raw != np.floor(raw)) | (raw < 0) | (raw >= _MAX_LABEL)
            if self._num_classes is not None:
                bad |= raw >= self._num_classes
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                _check_label(float(raw[i]), self._where(i), self._num_classes)  # raises
            self._labels = raw.astype(np.int64)
        return self._labels

    @property
    def num_classes(self) -> int:
        """Number of classes: from the property file, else the largest label + 1."""
        if self._num_classes is None:
            self._num_classes = int(self.labels.max()) + 1
            log.info("%s: no property file; %d classes from the labels",
                     self.rec.rec_path, self._num_classes)  # fmt: skip
        return self._num_classes

    @property
    def classes(self) -> int:
        """Alias of :attr:`num_classes` (the name :class:`vitfree.faces.FolderFaces` uses)."""
        return self.num_classes

    def __len__(self) -> int:
        return len(self.image_keys)

    def _where(self, i: int) -> str:
        return f"{self.rec.rec_path} key {int(self.image_keys[i])}"

    def load(self, i: int) -> tuple[npt.NDArray[np.uint8], int]:
        """Item ``i`` without skipping: ``(uint8 (H, W, 3) RGB, label)``.

        Raises:
            RecordIOFormatError: a damaged record or a bad label.
            DamagedImageError: an undecodable image or one of the wrong size.
        """
        where = self._where(i)
        header, data = unpack(self.rec.read(int(self.image_keys[i])), source=where)
        label = class_label(header, source=where, num_classes=self._num_classes)
        rgb = decode_face(data, source=where)
        if rgb.shape[:2] != self.image_size:
            h, w = self.image_size
            raise DamagedImageError(
                where,
                f"the image is {rgb.shape[1]}x{rgb.shape[0]}, expected {w}x{h}"
                + (" (property file)" if self.property_path else " (aligned faces)"),
            )
        return rgb, label

    def __getitem__(self, i: int) -> tuple[npt.NDArray[np.uint8], int]:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} faces")
        i %= n
        if not self.skip_corrupt:
            return self.load(i)
        for j in range(n):
            try:
                return self.load((i + j) % n)
            except DamagedImageError as e:
                self.skipped.append(int(self.image_keys[(i + j) % n]))
                log.warning("skipping %s; %d unusable image(s) skipped in this process so far",
                            e, len(self.skipped))  # fmt: skip
        raise RecordIOFormatError(f"{self.rec.rec_path}: no usable image among {n} records")

    def __repr__(self) -> str:
        return f"RecordIOFaces({self.rec.rec_path!r}, {len(self)} faces)"


# --------------------------------------------------------------------------- writer


def _f32(*values: float) -> npt.NDArray[np.float32]:
    return np.asarray(values, dtype=np.float32)


def _frame(payload: bytes) -> bytes:
    """One record as dmlc's ``RecordIOWriter`` writes it: cut into parts where the magic
    sits at a 4-aligned position of the payload, each part framed, the tail padded."""
    out = bytearray()
    start, dptr = 0, 0
    while True:
        i = payload.find(_MAGIC_BYTES, start)
        if i < 0:
            break
        if i % 4:
            start = i + 1
            continue
        out += _FRAME.pack(MAGIC, ((1 if dptr == 0 else 2) << 29) | (i - dptr))
        out += payload[dptr:i]
        dptr = start = i + 4
    rest = len(payload) - dptr
    if rest > _LEN_MASK:
        raise InputError(f"a record of {len(payload)} bytes: RecordIO records hold < 2^29 bytes")
    out += _FRAME.pack(MAGIC, ((3 if dptr else 0) << 29) | rest)
    out += payload[dptr:]
    out += b"\0" * (-len(payload) % 4)
    return bytes(out)


@dataclasses.dataclass(frozen=True)
class WrittenRecordIO:
    """What :func:`write_recordio` wrote.

    Attributes:
        rec_path, idx_path: the files; property_path: the property file (None if not written).
        num_images: image records (keys 1..num_images); num_classes: classes in ``property``.
        identity_records: whether identity-range records follow the images (keys
            ``num_images + 1 ..``; only when each class's images come in one run).
    """

    rec_path: Path
    idx_path: Path
    property_path: Path | None
    num_images: int
    num_classes: int
    identity_records: bool


def write_recordio(
    rec_path: str | os.PathLike[str],
    idx_path: str | os.PathLike[str] | None,
    items: Iterable[tuple[int, bytes]],
    *,
    num_classes: int | None = None,
    image_size: tuple[int, int] = (112, 112),
    write_property: bool = True,
    progress: bool = False,
) -> WrittenRecordIO:
    """Write an insightface RecordIO set: ``.rec``, ``.idx`` and ``property``.

    The layout of MS1MV2 and its kin: key 0 the header record (flag 2, labels ``(num_images
    + 1, end of the identity records)``), keys ``1..num_images`` the images in the order
    given (header ``(flag 0, label, id = key, 0)``), then, when each class's images come in
    one contiguous run, one identity record per class in class order with labels ``[first
    key, end key)``.  Records are framed as dmlc's writer frames them (split where the payload
    holds the magic), so mxnet reads the files too.  The images are stored as given, not
    decoded (a damaged image is written as it is).

    Args:
        rec_path: the ``.rec`` to write.
        idx_path: its index (None: ``rec_path`` with ``.idx``).
        items: ``(label, encoded image bytes)`` pairs; labels are class indexes
            ``0 <= label < 2^24``.
        num_classes: for the property file (default: the largest label + 1).
        image_size: ``(height, width)`` for the property file.
        write_property: write ``property`` beside the ``.rec``.
        progress: a progress bar.

    Returns:
        :class:`WrittenRecordIO`.

    Raises:
        InputError: a label that is not an int in range, an empty image, no items, or
            ``num_classes`` not above the largest label.
    """
    from tqdm.auto import tqdm

    rec = Path(rec_path)
    idx = Path(idx_path) if idx_path is not None else rec.with_suffix(".idx")
    offsets: list[int] = []
    labels: list[int] = []
    placeholder = _frame(pack(IRHeader(2, _f32(0, 0), 0, 0), b""))
    total = len(items) if isinstance(items, Sized) else None
    rec.parent.mkdir(parents=True, exist_ok=True)
    with open(rec, "wb") as f:
        f.write(placeholder)
        offsets.append(0)
        for label, image in tqdm(items, total=total, desc=f"write {rec.name}",
                                 unit="img", disable=not progress):  # fmt: skip
            if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
                raise InputError(f"item {len(labels)}: label {label!r} is not an int class index")
            if not 0 <= int(label) < _MAX_LABEL:
                raise InputError(f"item {len(labels)}: label {label} is not in [0, 2^24)")
            if not image:
                raise InputError(f"item {len(labels)}: empty image bytes")
            key = len(offsets)
            offsets.append(f.tell())
            f.write(_frame(pack(IRHeader(0, float(label), key, 0), image)))
            labels.append(int(label))
        n = len(labels)
        if n == 0:
            raise InputError(f"write_recordio({rec}): no items")
        classes = max(labels) + 1 if num_classes is None else int(num_classes)
        if classes <= max(labels):
            raise InputError(f"num_classes={classes}, but label {max(labels)} occurs")
        if n + 1 >= _MAX_LABEL:
            raise InputError(f"{n} images: the header record's float32 labels hold < 2^24 keys")
        lab = np.asarray(labels, dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
        runs = lab[starts]  # identity records when the runs are the classes 0, 1, 2, ... in order
        identity = bool(np.array_equal(runs, np.arange(len(runs))))
        end_ids = n + 1
        if identity:
            bounds = np.r_[starts, n] + 1  # keys
            for c in range(len(runs)):
                offsets.append(f.tell())
                rng = _f32(bounds[c], bounds[c + 1])
                f.write(_frame(pack(IRHeader(2, rng, len(offsets) - 1, 0), b"")))
            end_ids = len(offsets)
        head = _frame(pack(IRHeader(2, _f32(n + 1, end_ids), 0, 0), b""))
        assert len(head) == len(placeholder)  # positive float32 labels never hold the magic
        f.seek(0)
        f.write(head)
    idx.write_text("".join(f"{k}\t{o}\n" for k, o in enumerate(offsets)), encoding="ascii")
    prop: Path | None = None
    if write_property:
        prop = rec.parent / "property"
        prop.write_text(f"{classes},{image_size[0]},{image_size[1]}\n", encoding="ascii")
    return WrittenRecordIO(rec, idx, prop, n, classes, identity)
