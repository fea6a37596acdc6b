"""LFW-style verification sets (docs/protocols.md §5): insightface ``.bin`` files and pair lists.

A ``.bin`` file (lfw.bin, cfp_fp.bin, agedb_30.bin, calfw.bin, cplfw.bin) is a pickle of
``(bins, issame_list)``: 2N JPEG byte strings of aligned 112x112 faces and N booleans; pair i
is images 2i and 2i+1. Files written by Python 2 need ``pickle.load(f, encoding="bytes")``.
Images are decoded with OpenCV (BGR) and returned RGB, in parallel threads (``cv2.imdecode``
releases the GIL).

The file is a pickle, and a pickle can run code; :func:`load_bin` reads it with a restricted
unpickler (:mod:`vitfree.safe_pickle`) that builds only what these files hold: lists and
tuples of byte strings, booleans and integers, and plain numpy arrays and scalars. A file that
asks for anything else (``os.system``, any class or function) is refused with
:class:`BinFormatError` before anything is called; no option turns this off.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vitfree.data.align import ALIGNED_SIZE
from vitfree.errors import BinFormatError
from vitfree.safe_pickle import BIN_GLOBALS, RefusedGlobal, restricted_loads

__all__ = [
    "BinFormatError",
    "PairSet",
    "decode_images",
    "load_bin",
    "load_pair_list",
    "py2_pickle_bytes",
    "write_bin",
    "write_pair_list",
]


@dataclass(frozen=True, eq=False)
class PairSet:
    """A verification set of N pairs.

    Attributes:
        images: (2N, H, W, 3) uint8 RGB; pair i is ``images[2*i]`` and ``images[2*i + 1]``.
        issame: (N,) bool, True for pairs of the same person.
        source: where the set was read from.
    """

    images: npt.NDArray[np.uint8]
    issame: npt.NDArray[np.bool_]
    source: str = ""

    def __len__(self) -> int:
        return int(self.issame.shape[0])


def _brief(x: Any, limit: int = 120) -> str:
    """``repr``/``str`` of a value or error for a one-line message: one line, at most ``limit``."""
    text = str(x) if isinstance(x, BaseException) else repr(x)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_bytes(b: Any, index: int, source: str) -> bytes:
    if isinstance(b, (bytes, bytearray, memoryview)):
        return bytes(b)
    if isinstance(b, np.ndarray) and b.dtype == np.uint8:
        return b.tobytes()
    if isinstance(b, str):
        # A Python-2 str pickled and loaded with encoding="latin1".
        return b.encode("latin1")
    raise BinFormatError(f"{source}: image {index} is a {type(b).__name__}, expected JPEG bytes")


def decode_images(
    blobs: list[bytes],
    *,
    size: int = ALIGNED_SIZE,
    resize: bool = False,
    num_threads: int | None = None,
    names: list[str] | None = None,
    source: str = "",
) -> npt.NDArray[np.uint8]:
    """Decode encoded images (JPEG/PNG bytes) to one RGB array.

    Args:
        blobs: encoded images.
        size: expected side of every image.
        resize: resize images of another size to ``size`` x ``size`` (bilinear) instead of
            raising.
        num_threads: decoding threads (default: the number of CPUs, at most 16).
        names: how to name image i in errors (default "image i").
        source: the file, for error messages.

    Returns:
        uint8 (len(blobs), size, size, 3), RGB.
    """
    import cv2  # imported here, so that the package imports without OpenCV's start-up cost

    out = np.empty((len(blobs), size, size, 3), dtype=np.uint8)

    def label(i: int) -> str:
        return names[i] if names is not None else f"image {i}"

    def work(i: int) -> None:
        buf = np.frombuffer(blobs[i], dtype=np.uint8)
        try:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        except cv2.error as e:  # e.g. a header claiming more pixels than OpenCV allows
            msg = " ".join(str(e).split())[-160:] or type(e).__name__
            raise BinFormatError(f"{source}: cannot decode {label(i)} ({msg})") from None
        if img is None:
            raise BinFormatError(f"{source}: cannot decode {label(i)}")
        if img.shape[:2] != (size, size):
            if not resize:
                raise BinFormatError(
                    f"{source}: {label(i)} is {img.shape[1]}x{img.shape[0]}, expected an aligned "
                    f"{size}x{size} face (pass resize=True to resize)"
                )
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    threads = num_threads or min(os.cpu_count() or 1, 16)
    if threads > 1 and len(blobs) > 64:
        with ThreadPoolExecutor(threads) as ex:
            for f in [ex.submit(work, i) for i in range(len(blobs))]:
                f.result()  # re-raises the first error, in image order
    else:
        for i in range(len(blobs)):
            work(i)
    return out


def load_bin(
    path: str | os.PathLike[str],
    *,
    size: int = ALIGNED_SIZE,
    resize: bool = False,
    num_threads: int | None = None,
) -> PairSet:
    """Read an insightface ``.bin`` verification set (Python 2 or 3 pickle).

    Args:
        path: the ``.bin`` file.
        size: expected image side (112).
        resize: resize images of another size instead of raising.
        num_threads: JPEG decoding threads.

    Returns:
        :class:`PairSet` with images (2N, size, size, 3) uint8 RGB and issame (N,) bool.

    The pickle is read with a restricted unpickler (:mod:`vitfree.safe_pickle`): it builds
    lists/tuples of byte strings, booleans and integers and plain numpy arrays, and refuses any
    other class or function the file names before calling it. No option turns this off.

    Raises:
        FileNotFoundError; BinFormatError for a pickle that asks for anything else ("refusing
        to load ...: it asks for os.system"), a corrupt pickle, a pickle that is not
        ``(bins, issame_list)``, an odd image count, ``len(issame) != len(bins) // 2``,
        issame values other than booleans/0/1, or an undecodable image (its index named).
    """
    p = Path(path)
    src = str(p)
    if not p.is_file():
        raise FileNotFoundError(f".bin file not found: {p}")
    obj: Any = None
    errors: list[str] = []
    try:
        data = p.read_bytes()
    except OSError as e:
        raise BinFormatError(f"{src}: cannot read it ({e.strerror or e})") from None
    # encoding="bytes" is what insightface uses for Python-2 pickles (str -> bytes); some
    # Python-2 pickles hold numpy arrays, which need encoding="latin1".
    for enc in ("bytes", "latin1"):
        try:
            obj = restricted_loads(data, BIN_GLOBALS, encoding=enc)
            break
        except RefusedGlobal as e:
            raise BinFormatError(
                f"refusing to load {src}: it asks for {e.qualname}; "
                f"a .bin holds only images and flags"
            ) from None
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
            errors.append(f"{type(e).__name__}: {_brief(e)}")
    else:
        raise BinFormatError(f"{src}: not a readable pickle ({errors[0]})")
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise BinFormatError(
            f"{src}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}"
        )
    bins, issame_list = obj
    try:
        bins = list(bins)
        issame_raw = list(issame_list)
    except TypeError:
        raise BinFormatError(f"{src}: bins and issame_list must be sequences") from None
    if len(bins) % 2:
        raise BinFormatError(f"{src}: odd number of images ({len(bins)}); pairs need 2N")
    if len(issame_raw) != len(bins) // 2:
        raise BinFormatError(
            f"{src}: {len(bins)} images make {len(bins) // 2} pairs but issame_list has "
            f"{len(issame_raw)} entries"
        )
    issame = np.zeros(len(issame_raw), dtype=bool)
    for i, v in enumerate(issame_raw):
        if isinstance(v, (bool, np.bool_)) or (
            isinstance(v, (int, np.integer)) and int(v) in (0, 1)
        ):
            issame[i] = bool(v)
        else:
            raise BinFormatError(f"{src}: issame_list[{i}] = {_brief(v)} is not a boolean")
    blobs = [_to_bytes(b, i, src) for i, b in enumerate(bins)]
    images = decode_images(blobs, size=size, resize=resize, num_threads=num_threads, source=src)
    return PairSet(images=images, issame=issame, source=src)


def load_pair_list(
    path: str | os.PathLike[str],
    *,
    size: int = ALIGNED_SIZE,
    resize: bool = False,
    num_threads: int | None = None,
) -> PairSet:
    """Read a verification set of one's own aligned images from a pairs list.

    The list is a text file with one pair per line, ``path1 path2 label``, separated by
    whitespace (so paths must not contain spaces); label 1 = same person, 0 = different.
    Relative paths are relative to the list's folder. Blank lines and lines starting with
    ``#`` are skipped. Images must already be aligned ``size`` x ``size`` faces (e.g. the
    output of :func:`vitfree.data.align.align_face`); with ``resize=True`` other sizes are
    resized (bilinear), which is only right for images that are aligned crops already.

    Returns:
        :class:`PairSet`: images (2N, size, size, 3) uint8 RGB in list order, issame (N,) bool.

    Raises:
        FileNotFoundError (the list or an image, named); BinFormatError for a malformed line
        (file:line), a bad label, or an undecodable image.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"pair list not found: {p}")
    base = p.parent
    files: list[Path] = []
    labels: list[bool] = []
    for lineno, raw in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3:
            raise BinFormatError(
                f"{p}:{lineno}: expected 'path1 path2 label', got {len(fields)} fields: {line!r}"
            )
        if fields[2] not in ("0", "1"):
            raise BinFormatError(f"{p}:{lineno}: label must be 0 or 1, got {fields[2]!r}")
        for f in fields[:2]:
            q = Path(f)
            files.append(q if q.is_absolute() else base / q)
        labels.append(fields[2] == "1")
    blobs: list[bytes] = []
    for q in files:
        try:
            blobs.append(q.read_bytes())
        except FileNotFoundError:
            raise FileNotFoundError(f"image listed in {p} not found: {q}") from None
    images = decode_images(
        blobs,
        size=size,
        resize=resize,
        num_threads=num_threads,
        names=[str(q) for q in files],
        source=str(p),
    )
    return PairSet(images=images, issame=np.array(labels, dtype=bool), source=str(p))


# --------------------------------------------------------------------------------------
# Writers: the same formats, for synthetic sets, tests and benchmarks
# --------------------------------------------------------------------------------------


def py2_pickle_bytes(bins: list[bytes], issame: list[bool]) -> bytes:
    """The pickle Python 2 writes for ``pickle.dump((bins, issame_list), f, protocol=2)``.

    Python 2 ``str`` objects are byte strings, pickled as SHORT_BINSTRING / BINSTRING opcodes,
    which Python 3 decodes as text (and fails on JPEG bytes) unless ``encoding="bytes"``. The
    opcodes are emitted by hand (with the memo PUTs Python 2 emits), since Python 3's pickler
    writes bytes differently.
    """
    out = bytearray(b"\x80\x02")  # PROTO 2
    memo = 0

    def put() -> None:
        nonlocal memo
        out.extend(b"q" + bytes([memo]) if memo < 256 else b"r" + struct.pack("<I", memo))
        memo += 1

    def write_list(items: list[Any], emit: Any) -> None:
        out.extend(b"]")  # EMPTY_LIST
        put()
        for start in range(0, len(items), 1000):  # Python 2 batches APPENDS by 1000
            batch = items[start : start + 1000]
            out.extend(b"(")  # MARK
            for x in batch:
                emit(x)
            out.extend(b"e")  # APPENDS

    def emit_str(b: bytes) -> None:
        if len(b) < 256:
            out.extend(b"U" + bytes([len(b)]) + b)  # SHORT_BINSTRING
        else:
            out.extend(b"T" + struct.pack("<i", len(b)) + b)  # BINSTRING
        put()

    def emit_bool(v: bool) -> None:
        out.extend(b"\x88" if v else b"\x89")  # NEWTRUE / NEWFALSE

    write_list(list(bins), emit_str)
    write_list(list(issame), emit_bool)
    out.extend(b"\x86")  # TUPLE2
    put()
    out.extend(b".")  # STOP
    return bytes(out)


def write_bin(
    path: str | os.PathLike[str],
    blobs: Sequence[bytes],
    issame: Sequence[bool],
    *,
    protocol: int = 2,
) -> Path:
    """Write an insightface ``.bin`` verification set (docs/protocols.md §5).

    Args:
        path: the file.
        blobs: 2N encoded images (JPEG/PNG bytes, aligned 112x112); pair i = blobs 2i, 2i+1.
        issame: N flags, True for a genuine pair.
        protocol: 2 writes the Python-2 pickle the published sets are (byte strings, see
            :func:`py2_pickle_bytes`); 3 or higher a Python-3 ``pickle.dump`` of
            ``(list of bytes, list of bool)``.
    """
    if len(blobs) != 2 * len(issame):
        raise ValueError(f"{len(blobs)} images for {len(issame)} pairs: a .bin needs 2N images")
    flags = [bool(x) for x in issame]
    if protocol == 2:
        data = py2_pickle_bytes([bytes(b) for b in blobs], flags)
    else:
        data = pickle.dumps((list(blobs), flags), protocol=protocol)
    p = Path(path)
    p.write_bytes(data)
    return p


def write_pair_list(
    path: str | os.PathLike[str],
    pairs: Sequence[tuple[str, str, int | bool]],
    *,
    header: str | None = "path1 path2 label",
) -> Path:
    """Write a pair list read by :func:`load_pair_list`: ``path1 path2 label`` per line.

    Paths are written as given (relative paths are relative to the list's folder at read
    time) and must not contain whitespace.
    """
    lines = [f"# {header}"] if header else []
    for a, b, lab in pairs:
        if any(c.isspace() for c in f"{a}{b}"):
            raise ValueError(f"pair list paths must not contain whitespace: {a!r} {b!r}")
        lines.append(f"{a} {b} {int(lab)}")
    p = Path(path)
    p.write_text("\n".join(lines) + "\n")
    return p
