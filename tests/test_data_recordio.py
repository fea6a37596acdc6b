"""insightface RecordIO sets (train.rec + train.idx + property), read without mxnet.

The reference for the format is a small writer in this file that transcribes dmlc-core's
``RecordIOWriter::WriteRecord`` and mxnet's ``recordio.pack`` with ``struct`` (aligned-position
walk, part flags 1/2/3, zero padding), independent of vitfree's writer; images are checked
against ``cv2.imdecode``.
"""

from __future__ import annotations

import math
import pickle
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from vitfree.data.images import DamagedImageError
from vitfree.data.recordio import (
    MAGIC,
    RecordIO,
    RecordIOFaces,
    RecordIOFormatError,
    read_property,
    scan_index,
    unpack,
    write_recordio,
)
from vitfree.errors import FormatError, InputError

MAGIC_AS_FLOAT = struct.unpack("<f", struct.pack("<I", MAGIC))[0]


# ------------------------------------------------------------------ independent reference writer


def frame_by_hand(payload: bytes) -> bytes:
    """dmlc's RecordIOWriter::WriteRecord, transcribed: walk the 4-aligned positions; where
    the magic sits, end a part there (flag 1 first, 2 middle) and drop the magic; the last
    part has flag 3 (0 for a record in one part); pad with zeros to a multiple of 4."""
    out = b""
    dptr = 0
    n = len(payload)
    for i in range(0, (n >> 2) << 2, 4):
        if struct.unpack_from("<I", payload, i)[0] == MAGIC:
            flag = 1 if dptr == 0 else 2
            out += struct.pack("<II", MAGIC, (flag << 29) | (i - dptr)) + payload[dptr:i]
            dptr = i + 4
    flag = 3 if dptr != 0 else 0
    out += struct.pack("<II", MAGIC, (flag << 29) | (n - dptr)) + payload[dptr:]
    return out + b"\x00" * (((n + 3) >> 2 << 2) - n)


def payload_by_hand(label: float | list[float], image: bytes, id1: int = 0, id2: int = 0) -> bytes:
    """mxnet's recordio.pack: 'IfQQ' header; an array label goes after it (flag = its size)."""
    if isinstance(label, list):
        return (
            struct.pack("<IfQQ", len(label), 0.0, id1, id2)
            + struct.pack(f"<{len(label)}f", *label)
            + image
        )
    return struct.pack("<IfQQ", 0, label, id1, id2) + image


def write_by_hand(folder: Path, payloads: list[bytes], prop: str | None = None) -> Path:
    """train.rec (records in key order 0, 1, ...), train.idx ('key\\toffset'), property."""
    folder.mkdir(parents=True, exist_ok=True)
    rec = b""
    idx = ""
    for key, p in enumerate(payloads):
        idx += f"{key}\t{len(rec)}\n"
        rec += frame_by_hand(p)
    (folder / "train.rec").write_bytes(rec)
    (folder / "train.idx").write_text(idx)
    if prop is not None:
        (folder / "property").write_text(prop)
    return folder / "train.rec"


def face(seed: int, size: int = 112) -> np.ndarray:
    """A smooth BGR test image (JPEG keeps it close; distinct per seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def jpeg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def reference_rgb(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


@pytest.fixture
def small_set(tmp_path: Path) -> tuple[Path, list[tuple[int, bytes]]]:
    """7 faces of 3 classes written by vitfree's writer (one PNG among the JPEGs)."""
    labels = [0, 0, 1, 1, 1, 2, 2]
    items = [(lab, jpeg(face(i))) for i, lab in enumerate(labels)]
    ok, png = cv2.imencode(".png", face(99))
    items[3] = (1, png.tobytes())
    write_recordio(tmp_path / "train.rec", None, items)
    return tmp_path, items


# ------------------------------------------------------------------ round trip and layout


def test_round_trip(small_set: tuple[Path, list[tuple[int, bytes]]]) -> None:
    folder, items = small_set
    assert read_property(folder / "property") == (3, 112, 112)
    for path in (folder, folder / "train.rec"):
        ds = RecordIOFaces(path)
        assert len(ds) == 7 and ds.num_classes == 3 and ds.classes == 3
        assert ds.image_keys.tolist() == list(range(1, 8))
        np.testing.assert_array_equal(ds.labels, [lab for lab, _ in items])
        for i, (lab, data) in enumerate(items):
            img, got = ds[i]
            assert got == lab and isinstance(got, int)
            assert img.dtype == np.uint8 and img.shape == (112, 112, 3)
            np.testing.assert_array_equal(img, reference_rgb(data))
        assert ds[-1][1] == items[-1][0]
        with pytest.raises(IndexError):
            ds[7]


def test_writer_matches_the_published_layout_byte_for_byte(tmp_path: Path) -> None:
    imgs = [jpeg(face(i)) for i in range(4)]
    labels = [0, 0, 1, 2]
    (tmp_path / "a").mkdir()
    out = write_recordio(tmp_path / "a" / "train.rec", None, list(zip(labels, imgs)))
    assert (out.num_images, out.num_classes, out.identity_records) == (4, 3, True)
    # by hand: header record 0 (flag 2: end of images 5, end of identity records 8), images
    # 1..4 with id = key, identity records 5..7 holding each class's [first, end) keys
    payloads = [payload_by_hand([5.0, 8.0], b"")]
    payloads += [
        payload_by_hand(float(lab), im, id1=k) for k, (lab, im) in enumerate(zip(labels, imgs), 1)
    ]
    payloads += [
        payload_by_hand([1.0, 3.0], b"", id1=5),
        payload_by_hand([3.0, 4.0], b"", id1=6),
        payload_by_hand([4.0, 5.0], b"", id1=7),
    ]
    write_by_hand(tmp_path / "b", payloads, "3,112,112\n")
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_records_holding_the_magic_are_split_as_dmlc_does(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    m = struct.pack("<I", MAGIC)
    blobs = []
    for n in range(12):  # the magic at aligned and unaligned payload positions, 0-3 times
        b = bytearray(rng.integers(0, 256, 40 + 7 * n, dtype=np.uint8).tobytes())
        for _ in range(n % 4):
            at = int(rng.integers(0, len(b) - 4))
            b[at : at + 4] = m
        blobs.append(bytes(b))
    blobs.append(b"abcd" + m)  # magic at the very end (payload position 28)
    blobs.append(m + m + b"x")  # consecutive magics: empty middle part
    items = [(k % 3, blob) for k, blob in enumerate(blobs)]
    write_recordio(tmp_path / "train.rec", None, items, write_property=False)
    payloads = [payload_by_hand([len(blobs) + 1.0, len(blobs) + 1.0], b"")]
    payloads += [payload_by_hand(float(lab), b, id1=k) for k, (lab, b) in enumerate(items, 1)]
    write_by_hand(tmp_path / "hand", payloads)
    data = (tmp_path / "train.rec").read_bytes()
    assert data == (tmp_path / "hand" / "train.rec").read_bytes()
    assert any((struct.unpack_from("<I", data, 4 * i)[0] >> 29) == 2 for i in range(len(data) // 4))
    rec = RecordIO(tmp_path / "train.rec")
    for k, p in enumerate(payloads):
        assert rec.read(k) == p
    assert scan_index(tmp_path / "train.rec")[1].tolist() == rec.offsets_of(rec.keys).tolist()


def test_hand_written_set_with_array_labels_parts_and_identity_records(tmp_path: Path) -> None:
    imgs = [jpeg(face(10 + i)) for i in range(5)]
    labels = [0, 1, 1, 2, 3]
    payloads = [payload_by_hand([6.0, 10.0], b"")]  # header: images 1..5, identities 6..9
    payloads.append(payload_by_hand(0.0, imgs[0], id1=1))
    payloads.append(payload_by_hand([1.0, 7.0, 9.0], imgs[1], id1=2))  # array label
    payloads.append(payload_by_hand(1.0, imgs[2], id1=MAGIC))  # magic in id: 2 parts
    payloads.append(payload_by_hand([2.0, MAGIC_AS_FLOAT], imgs[3], id1=MAGIC))  # 3 parts
    payloads.append(payload_by_hand([3.0], imgs[4], id1=5))
    payloads += [payload_by_hand([a, b], b"") for a, b in [(1, 2), (2, 4), (4, 5), (5, 6)]]
    root = write_by_hand(tmp_path, payloads, "4,112,112")
    rec = RecordIO(root)
    assert len(rec) == 10 and rec.keys.tolist() == list(range(10))
    for k, p in enumerate(payloads):
        assert rec.read(k) == p
    h, img = unpack(rec.read(4))
    assert h.flag == 2 and h.id == MAGIC and img == imgs[3]
    assert isinstance(h.label, np.ndarray) and h.label[0] == 2.0
    assert struct.pack("<f", h.label[1]) == struct.pack("<I", MAGIC)
    h2 = rec.read_header(2)
    assert h2.flag == 3 and h2.label.tolist() == [1.0, 7.0, 9.0]  # type: ignore[union-attr]
    assert rec.read_header(3) == (0, 1.0, MAGIC, 0)
    ds = RecordIOFaces(tmp_path)
    assert len(ds) == 5 and ds.num_classes == 4  # the identity records are not images
    np.testing.assert_array_equal(ds.labels, labels)
    for i in range(5):
        img_i, lab = ds[i]
        assert lab == labels[i]
        np.testing.assert_array_equal(img_i, reference_rgb(imgs[i]))


def test_without_a_header_record_every_key_is_an_image(tmp_path: Path) -> None:
    imgs = [jpeg(face(i)) for i in range(3)]
    write_by_hand(tmp_path, [payload_by_hand(float(i), im) for i, im in enumerate(imgs)])
    ds = RecordIOFaces(tmp_path)  # no property file either: classes from the labels
    assert ds.image_keys.tolist() == [0, 1, 2] and ds.num_classes == 3


def test_missing_idx_is_rebuilt_by_walking_the_file(
    small_set: tuple[Path, list[tuple[int, bytes]]], capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _ = small_set
    with_idx = RecordIO(folder / "train.rec")
    (folder / "train.idx").unlink()
    scanned = RecordIO(folder / "train.rec")
    assert "no .idx" in capsys.readouterr().err
    assert scanned.idx_path is None
    np.testing.assert_array_equal(scanned.keys, with_idx.keys)
    np.testing.assert_array_equal(
        scanned.offsets_of(scanned.keys), with_idx.offsets_of(with_idx.keys)
    )
    assert len(RecordIOFaces(folder)) == 7


# ------------------------------------------------------------------ damaged and hostile input


def _rewrite_idx(folder: Path, key: int, offset: int) -> None:
    lines = (folder / "train.idx").read_text().splitlines()
    lines[key] = f"{key}\t{offset}"
    (folder / "train.idx").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(
    "shift,expected",
    [(4, "no record at byte"), (2, "not a multiple of 4"), (10**7, "beyond the end")],
)
def test_idx_that_does_not_fit_the_rec_is_refused_on_opening(
    small_set: tuple[Path, list[tuple[int, bytes]]], shift: int, expected: str
) -> None:
    folder, _ = small_set
    off = RecordIO(folder / "train.rec").offset(5)
    _rewrite_idx(folder, 5, off + shift)
    with pytest.raises(RecordIOFormatError, match=expected) as e:
        RecordIOFaces(folder)
    assert "train.idx" in str(e.value) and "key 5" in str(e.value)
    assert isinstance(e.value, FormatError)


def test_idx_of_another_rec_is_caught_on_read(
    small_set: tuple[Path, list[tuple[int, bytes]]],
) -> None:
    folder, _ = small_set
    off = RecordIO(folder / "train.rec").offset(4)
    _rewrite_idx(folder, 4, off + 8)  # inside record 4's payload
    rec = RecordIO(folder / "train.rec", check=False)
    assert rec.read(3)  # the others still read
    with pytest.raises(RecordIOFormatError, match=r"train\.rec key 4: no record at byte"):
        rec.read(4)
    with pytest.raises(KeyError, match="no record with key 99"):
        rec.read(99)


def test_truncated_rec(small_set: tuple[Path, list[tuple[int, bytes]]], tmp_path: Path) -> None:
    folder, _ = small_set
    rec_path = folder / "train.rec"
    data = rec_path.read_bytes()
    last = RecordIO(rec_path).offset(10)  # the last identity record
    cut = folder / "cut"
    cut.mkdir()
    shutil.copy(folder / "train.idx", cut / "train.idx")
    (cut / "train.rec").write_bytes(data[: last + 10])  # the last record loses its end
    with pytest.raises(RecordIOFormatError, match="truncated file") as e:
        RecordIO(cut / "train.rec")
    assert "key 10" in str(e.value)
    mid = RecordIO(rec_path).offset(4)
    (cut / "train.rec").write_bytes(data[: mid + 30])  # records 4.. cut off
    with pytest.raises(RecordIOFormatError, match="key 5 .*beyond the end"):
        RecordIO(cut / "train.rec")
    rec = RecordIO(cut / "train.rec", check=False)
    assert rec.read(3)
    with pytest.raises(RecordIOFormatError, match="key 4: truncated file"):
        rec.read(4)
    with pytest.raises(RecordIOFormatError, match="key 6: truncated file"):
        rec.read(6)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0\t0\n1\tabc\n", "line 2"),
        ("0\t0\n\n1 8 9\n", "line 3"),
        ("0\t0\n1\t99999999999999999999999\n", "line 2"),
        ("0\t0\n0\t40\n", "key 0 appears more than once"),
        ("", "no records"),
        ("\n  \n", "no records"),
    ],
)
def test_malformed_idx(
    small_set: tuple[Path, list[tuple[int, bytes]]], text: str, expected: str
) -> None:
    folder, _ = small_set
    (folder / "train.idx").write_text(text)
    with pytest.raises(RecordIOFormatError, match=expected):
        RecordIO(folder / "train.rec")


@pytest.mark.parametrize("bad", [3.5, -1.0, math.nan, math.inf, 7.0, 1e30])
def test_labels_that_are_not_class_indexes(tmp_path: Path, bad: float) -> None:
    imgs = [jpeg(face(i)) for i in range(3)]
    payloads = [payload_by_hand([4.0, 4.0], b"")]
    payloads += [payload_by_hand(0.0, imgs[0]), payload_by_hand(bad, imgs[1])]
    payloads.append(payload_by_hand([1.0, 2.0], imgs[2]))
    write_by_hand(tmp_path, payloads, "5,112,112")  # 7.0 is not below 5 classes
    ds = RecordIOFaces(tmp_path)
    assert ds[0][1] == 0 and ds[2][1] == 1
    with pytest.raises(RecordIOFormatError, match="key 2: label") as e:
        ds[1]
    assert "train.rec" in str(e.value)
    with pytest.raises(RecordIOFormatError, match="key 2: label"):
        _ = ds.labels


def test_header_range_must_be_in_the_index(tmp_path: Path) -> None:
    payloads = [payload_by_hand([9.0, 9.0], b""), payload_by_hand(0.0, jpeg(face(0)))]
    write_by_hand(tmp_path, payloads)
    with pytest.raises(RecordIOFormatError, match=r"keys 1\.\.8.* has only 2 records"):
        RecordIOFaces(tmp_path)
    write_by_hand(tmp_path, [payload_by_hand([1e30, 1e30], b""), payloads[1]])
    with pytest.raises(RecordIOFormatError, match=r"has only 2 records"):
        RecordIOFaces(tmp_path)  # refused before a range of 1e30 keys is allocated
    gap = tmp_path / "gap"  # keys 0, 1, 3, 4: key 2 missing from the index
    gap.mkdir()
    write_by_hand(gap, [payload_by_hand([4.0, 4.0], b"")] + [payloads[1]] * 4)
    lines = (gap / "train.idx").read_text().splitlines()
    (gap / "train.idx").write_text("\n".join(lines[:2] + lines[3:]) + "\n")
    with pytest.raises(RecordIOFormatError, match=r"keys 1\.\.3.* lacks 1 of them \(key 2 first\)"):
        RecordIOFaces(gap)
    write_by_hand(tmp_path, [payload_by_hand([2.5, 3.0], b""), payloads[1]])
    with pytest.raises(RecordIOFormatError, match="header record"):
        RecordIOFaces(tmp_path)


def test_payload_shorter_than_its_header() -> None:
    with pytest.raises(RecordIOFormatError, match="shorter than the 24-byte"):
        unpack(b"\x00" * 10, source="x key 3")
    with pytest.raises(RecordIOFormatError, match="x key 3: the header announces 5 labels"):
        unpack(struct.pack("<IfQQ", 5, 0.0, 0, 0) + b"\x00" * 8, source="x key 3")


def test_corrupt_images_raise_or_are_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = [jpeg(face(i)) for i in range(5)]
    items = [(0, good[0]), (0, good[1][: len(good[1]) // 2]), (1, good[2]),
             (1, jpeg(face(3, size=96))), (2, good[4])]  # fmt: skip
    write_recordio(tmp_path / "train.rec", None, items)
    ds = RecordIOFaces(tmp_path)
    with pytest.raises(DamagedImageError, match=r"train\.rec key 2: damaged JPEG"):
        ds[1]
    with pytest.raises(DamagedImageError, match=r"key 4: the image is 96x96, expected 112x112"):
        ds[3]
    skip = RecordIOFaces(tmp_path, skip_corrupt=True)
    img, lab = skip[1]  # record 2 skipped: the next one's item
    np.testing.assert_array_equal(img, reference_rgb(good[2]))
    assert lab == 1
    assert skip[3][1] == 2
    assert skip.skipped == [2, 4]
    err = capsys.readouterr().err
    assert "1 unusable image(s) skipped" in err and "2 unusable image(s) skipped" in err
    assert skip[0][1] == 0 and len(skip.skipped) == 2


def test_dataloader_workers_read_the_same_items(
    small_set: tuple[Path, list[tuple[int, bytes]]],
) -> None:
    from torch.utils.data import DataLoader
    from vitfree.runtime import worker_context

    folder, _ = small_set
    ds = RecordIOFaces(folder)
    ds[0]  # the parent has the file open before the workers fork

    def run(workers: int) -> tuple[np.ndarray, np.ndarray]:
        loader = DataLoader(ds, batch_size=3, num_workers=workers,
                            multiprocessing_context=worker_context() if workers else None)  # fmt: skip
        imgs, labels = zip(*[(x.numpy(), y.numpy()) for x, y in loader])
        return np.concatenate(imgs), np.concatenate(labels)

    serial, parallel = run(0), run(2)
    assert serial[0].shape == (7, 112, 112, 3)
    np.testing.assert_array_equal(serial[0], parallel[0])
    np.testing.assert_array_equal(serial[1], parallel[1])
    np.testing.assert_array_equal(serial[1], ds.labels)


def test_pickles_without_an_open_file(small_set: tuple[Path, list[tuple[int, bytes]]]) -> None:
    folder, _ = small_set
    ds = RecordIOFaces(folder)
    first = ds[2]
    copy = pickle.loads(pickle.dumps(ds))
    assert copy.rec._fd is None
    np.testing.assert_array_equal(copy[2][0], first[0])


# ------------------------------------------------------------------ property file


@pytest.mark.parametrize("text,expected", [("85742,112,112", (85742, 112, 112)),
                                           (" 10 , 112,96 \n", (10, 112, 96))])  # fmt: skip
def test_property(tmp_path: Path, text: str, expected: tuple[int, int, int]) -> None:
    (tmp_path / "property").write_text(text)
    assert read_property(tmp_path / "property") == expected


@pytest.mark.parametrize("text", ["", "85742", "85742,112", "a,112,112", "0,112,112",
                                  "5,112,112,3", "5,-112,112", "5.5,112,112"])  # fmt: skip
def test_bad_property(tmp_path: Path, text: str) -> None:
    (tmp_path / "property").write_text(text)
    with pytest.raises(RecordIOFormatError, match="num_classes,height,width") as e:
        read_property(tmp_path / "property")
    assert str(tmp_path / "property") in str(e.value)
    with pytest.raises(FileNotFoundError, match="property file not found"):
        read_property(tmp_path / "nothing")


def test_writer_refuses_bad_items(tmp_path: Path) -> None:
    for items, expected in [
        ([(1.5, b"x")], "not an int"),
        ([(True, b"x")], "not an int"),
        ([(-1, b"x")], "not in"),
        ([(0, b"")], "empty image"),
        ([], "no items"),
    ]:
        with pytest.raises(InputError, match=expected):
            write_recordio(tmp_path / "train.rec", None, items)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="num_classes=2"):
        write_recordio(tmp_path / "train.rec", None, [(2, b"x")], num_classes=2)
