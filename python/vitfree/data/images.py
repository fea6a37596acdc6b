"""Image files: a cheap probe for damage and size, and a decoder that says when a file is damaged.

A truncated JPEG decodes "successfully" with OpenCV: libjpeg prints "Premature end of JPEG
file" (with no file name) and fills the rest grey, and the community scripts use that face.
vitfree does not use a damaged face without a word:

* :func:`probe_image` reads the head and the tail of a file (a few KB) and says whether it
  exists, is empty, lacks its end marker (JPEG ``FF D9``, PNG ``IEND``), and what its pixel
  size is (from the JPEG SOF or PNG IHDR header).  It runs before an extraction over every
  image (threads; seconds for IJB-C's 469k files) so a damaged data set stops the run before
  an hour of compute, naming every damaged file.
* :func:`decode_image` decodes strictly: JPEGs with libjpeg-turbo through ``simplejpeg``
  (``strict=True`` raises on every recoverable error, e.g. premature end of data), which
  gives the same pixels as ``cv2.imread`` (both are libjpeg-turbo with the default islow DCT
  and fancy upsampling; checked in the tests); PNG and other formats with OpenCV after the
  same end-marker check.  A damaged file raises :class:`DamagedImageError`.
  ``lenient=True`` decodes as OpenCV does (what the community scripts use) and reports the
  damage instead of raising.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from vitfree.errors import FormatError

__all__ = [
    "USABLE_DAMAGE",
    "DamagedImageError",
    "ImageProbe",
    "decode_bytes",
    "decode_image",
    "probe_image",
    "probe_images",
]

#: Problems of files that a lenient decoder still decodes (truncation): what ``use_damaged``
#: lets through, as the community scripts do.
USABLE_DAMAGE = ("truncated JPEG", "truncated PNG")

_JPEG = b"\xff\xd8"
_PNG = b"\x89PNG\r\n\x1a\n"
_HEAD = 1 << 16  # enough for the SOF of JPEGs with large EXIF/ICC blocks in nearly all files
_TAIL = 1 << 10


class DamagedImageError(FormatError):
    """An image file that is empty, truncated or cannot be decoded (the file named).

    Attributes:
        reason: what is wrong, without the file name ("empty file", "damaged JPEG (...)").
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"image {path}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class ImageProbe:
    """What :func:`probe_image` found out about one file without decoding it.

    Attributes:
        path: the file.
        problem: None for a file that looks whole, else why not ("not found", "empty file",
            "truncated JPEG: no end-of-image marker", ...).
        kind: "jpeg", "png" or "other".
        width, height: pixel size from the header (0 when unknown).
    """

    path: str
    problem: str | None
    kind: str = "other"
    width: int = 0
    height: int = 0


def _jpeg_size(head: bytes) -> tuple[int, int]:
    """(width, height) from the first SOF marker in ``head``; (0, 0) if not found."""
    i = 2
    n = len(head)
    while i + 4 <= n:
        if head[i] != 0xFF:
            i += 1
            continue
        marker = head[i + 1]
        if marker in (0xFF, 0x01) or 0xD0 <= marker <= 0xD7:  # fill bytes, TEM, RSTn
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9 or marker == 0xDA:  # end of image / start of scan: no SOF before
            return 0, 0
        (length,) = struct.unpack(">H", head[i + 2 : i + 4])
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if i + 9 <= n:
                h, w = struct.unpack(">HH", head[i + 5 : i + 9])
                return int(w), int(h)
            return 0, 0
        i += 2 + length
    return 0, 0


def probe_image(path: str | os.PathLike[str]) -> ImageProbe:
    """Check a file cheaply (head and tail only): existence, size, end marker, pixel size."""
    p = str(path)
    try:
        with open(p, "rb") as f:
            head = f.read(_HEAD)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - _TAIL, 0))
            tail = f.read()
    except FileNotFoundError:
        return ImageProbe(p, "not found")
    except IsADirectoryError:
        return ImageProbe(p, "is a folder, not an image")
    except OSError as e:
        return ImageProbe(p, f"cannot be read ({e.strerror or e})")
    if size == 0:
        return ImageProbe(p, "empty file")
    if head.startswith(_JPEG):
        w, h = _jpeg_size(head)
        # EOI may be followed by padding or trailer bytes; it must be in the last KB
        problem = None if b"\xff\xd9" in tail else "truncated JPEG: no end-of-image marker"
        return ImageProbe(p, problem, "jpeg", w, h)
    if head.startswith(_PNG):
        w, h = (struct.unpack(">II", head[16:24]) if len(head) >= 24 else (0, 0))
        problem = None if b"IEND" in tail else "truncated PNG: no IEND chunk"
        return ImageProbe(p, problem, "png", int(w), int(h))
    ext = os.path.splitext(p)[1].lower()
    if ext in (".jpg", ".jpeg", ".png"):  # named as an image vitfree knows, but it is not one
        what = "PNG" if ext == ".png" else "JPEG"
        return ImageProbe(p, f"not a {what} image (the file does not start like one)")
    return ImageProbe(p, None, "other")


def probe_images(
    paths: Sequence[str | os.PathLike[str]], num_threads: int | None = None
) -> list[ImageProbe]:
    """:func:`probe_image` of every path, in order, in threads (file reads release the GIL)."""
    threads = num_threads or min(32, 4 * (os.cpu_count() or 1))
    if len(paths) < 64 or threads <= 1:
        return [probe_image(p) for p in paths]
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(probe_image, paths, chunksize=256))


def decode_image(
    path: str | os.PathLike[str], *, lenient: bool = False
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """Decode an image file to BGR uint8 (H, W, 3), as ``cv2.imread(path, IMREAD_COLOR)``.

    Args:
        path: the file.
        lenient: decode damaged files as far as the decoder gets (OpenCV's behaviour) and
            return the damage as the second value instead of raising.

    Returns:
        ``(image, damage)``: ``damage`` is None for a whole file, else what is wrong (only
        with ``lenient``).

    Raises:
        FileNotFoundError: no such file.
        DamagedImageError: empty, truncated or undecodable (names the file and the reason);
            with ``lenient``, only when nothing at all can be decoded.
    """
    p = str(path)
    try:
        data = Path(p).read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {p}") from None
    except OSError as e:
        raise DamagedImageError(p, f"cannot be read ({e.strerror or e})") from None
    return decode_bytes(data, p, lenient=lenient, path=p)


def decode_bytes(
    data: bytes, source: str, *, lenient: bool = False, path: str | None = None
) -> tuple[npt.NDArray[np.uint8], str | None]:
    """Decode an encoded image in memory (JPEG, PNG, ...) to BGR uint8 (H, W, 3).

    The one decoding rule of vitfree (image files, ``.bin`` sets and RecordIO records): JPEGs
    with libjpeg-turbo through ``simplejpeg`` with ``strict=True`` (a truncated or damaged JPEG
    raises instead of being filled grey), a PNG without its ``IEND`` chunk is refused, other
    formats through OpenCV.

    Args:
        data: the encoded bytes.
        source: what to name in errors (a file, ``"train.rec key 17"``).
        lenient: decode damaged data as far as the decoder gets and return the damage.
        path: the file the bytes came from, if any: the last resort of ``lenient`` is
            ``cv2.imread`` on it (the community scripts' reader).

    Returns:
        ``(image, damage)`` as :func:`decode_image`.

    Raises:
        DamagedImageError: empty, truncated or undecodable (names ``source``).
    """
    import cv2

    if not data:
        raise DamagedImageError(source, "empty file" if path else "empty image")
    damage: str | None = None
    img: np.ndarray | None = None
    if data.startswith(_JPEG):
        import simplejpeg

        try:
            img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True)
        except ValueError as e:
            damage = f"damaged JPEG ({e})"
            if lenient:  # as far as libjpeg gets, like cv2.imread
                try:
                    img = simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False)
                except ValueError:
                    img = None
    elif data.startswith(_PNG) and b"IEND" not in data[-_TAIL:]:
        damage = "truncated PNG: no IEND chunk"
    if img is None and (damage is None or lenient):
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as e:
            msg = " ".join(str(e).split())[-160:]
            raise DamagedImageError(source, f"cannot be decoded ({msg})") from None
        if (img is None or img.size == 0) and lenient and path is not None:
            img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None or img.size == 0:
            raise DamagedImageError(source, "cannot be decoded" + (f": {damage}" if damage else ""))
    if damage is not None and not lenient:
        raise DamagedImageError(source, damage)
    assert img is not None
    return np.ascontiguousarray(img), damage
