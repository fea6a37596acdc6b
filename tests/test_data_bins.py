"""LFW-style .bin sets and pair lists, written in the real formats by tests/ijb_fixtures.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
from ijb_fixtures import (
    aligned_face_image,
    encode_jpeg,
    py2_pickle_bytes,
    write_bin,
    write_pair_list,
)
from vitfree.data import BinFormatError, decode_images, load_bin, load_pair_list


@pytest.mark.parametrize(
    "protocol,blob_type", [(2, "bytes"), (3, "bytes"), (4, "bytes"), (4, "ndarray")]
)
def test_load_bin_py2_and_py3(tmp_path: Path, protocol: int, blob_type: str) -> None:
    path = tmp_path / "lfw.bin"
    exp = write_bin(path, n_pairs=5, protocol=protocol, seed=protocol, blob_type=blob_type)
    got = load_bin(path)
    assert got.images.dtype == np.uint8 and got.images.shape == (10, 112, 112, 3)
    np.testing.assert_array_equal(got.images, exp["images"])
    np.testing.assert_array_equal(got.issame, exp["issame"])
    assert got.issame.dtype == np.bool_ and len(got) == 5


def test_py2_pickle_is_genuinely_python2_style(tmp_path: Path) -> None:
    path = tmp_path / "agedb_30.bin"
    exp = write_bin(path, n_pairs=2, protocol=2)
    # Python 3's default (ASCII) decoding of Python-2 str fails on JPEG bytes ...
    with open(path, "rb") as f, pytest.raises(UnicodeDecodeError):
        pickle.load(f)
    # ... and encoding="bytes" gives the byte strings back, as insightface loads them.
    with open(path, "rb") as f:
        bins, issame = pickle.load(f, encoding="bytes")
    assert bins == exp["jpegs"] and issame == exp["issame"].tolist()


def test_images_are_rgb(tmp_path: Path) -> None:
    img = np.zeros((112, 112, 3), np.uint8)
    img[..., 0] = 250  # pure blue in BGR
    jpg = encode_jpeg(img, quality=100)
    path = tmp_path / "blue.bin"
    path.write_bytes(py2_pickle_bytes([jpg, jpg], [True]))
    got = load_bin(path)
    r, g, b = got.images[0, 56, 56].tolist()
    assert b > 240 and r < 10 and g < 10


def test_parallel_decoding_matches_serial(tmp_path: Path) -> None:
    path = tmp_path / "cfp_fp.bin"
    exp = write_bin(path, n_pairs=40, protocol=4, seed=11)  # 80 images: the threaded path
    a = load_bin(path, num_threads=1)
    b = load_bin(path, num_threads=4)
    np.testing.assert_array_equal(a.images, exp["images"])
    np.testing.assert_array_equal(b.images, exp["images"])


def test_bin_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    jpg = encode_jpeg(aligned_face_image(rng))
    path = tmp_path / "x.bin"
    with pytest.raises(FileNotFoundError, match=".bin file not found"):
        load_bin(path)
    good = py2_pickle_bytes([jpg, jpg], [True])
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(BinFormatError, match="not a readable pickle"):
        load_bin(path)
    path.write_bytes(b"garbage that is not a pickle")
    with pytest.raises(BinFormatError, match="not a readable pickle"):
        load_bin(path)
    path.write_bytes(pickle.dumps({"bins": [jpg]}))
    with pytest.raises(BinFormatError, match=r"expected a pickled \(bins, issame_list\)"):
        load_bin(path)
    path.write_bytes(py2_pickle_bytes([jpg, jpg, jpg], [True]))
    with pytest.raises(BinFormatError, match="odd number of images"):
        load_bin(path)
    path.write_bytes(py2_pickle_bytes([jpg, jpg], [True, False]))
    with pytest.raises(BinFormatError, match="2 images make 1 pairs but issame_list has 2"):
        load_bin(path)
    path.write_bytes(pickle.dumps(([jpg, jpg], ["yes"])))
    with pytest.raises(BinFormatError, match=r"issame_list\[0\] = 'yes'"):
        load_bin(path)
    path.write_bytes(py2_pickle_bytes([jpg, jpg, b"\xff\xd8broken", jpg], [True, False]))
    with pytest.raises(BinFormatError, match="cannot decode image 2"):
        load_bin(path)
    small = encode_jpeg(aligned_face_image(rng, 96))
    path.write_bytes(py2_pickle_bytes([jpg, small], [True]))
    with pytest.raises(BinFormatError, match="image 1 is 96x96, expected an aligned 112x112"):
        load_bin(path)
    got = load_bin(path, resize=True)
    assert got.images.shape == (2, 112, 112, 3)
    ref = cv2.cvtColor(
        cv2.resize(cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR), (112, 112)),
        cv2.COLOR_BGR2RGB,
    )
    np.testing.assert_array_equal(got.images[1], ref)


def test_pair_list(tmp_path: Path) -> None:
    exp = write_pair_list(tmp_path / "mine", n_pairs=4, seed=2)
    got = load_pair_list(exp["path"])
    np.testing.assert_array_equal(got.images, exp["images"])
    np.testing.assert_array_equal(got.issame, exp["issame"])
    png = write_pair_list(tmp_path / "png", n_pairs=2, seed=3, ext=".png")
    np.testing.assert_array_equal(load_pair_list(png["path"]).images, png["images"])


def test_pair_list_errors(tmp_path: Path) -> None:
    exp = write_pair_list(tmp_path, n_pairs=2, seed=4)
    lst = exp["path"]
    with pytest.raises(FileNotFoundError, match="pair list not found"):
        load_pair_list(tmp_path / "none.txt")
    lst.write_text("imgs/a_0.jpg imgs/b_0.jpg\n")
    with pytest.raises(BinFormatError, match=r"pairs.txt:1: expected 'path1 path2 label', got 2"):
        load_pair_list(lst)
    lst.write_text("# header\nimgs/a_0.jpg imgs/b_0.jpg yes\n")
    with pytest.raises(BinFormatError, match=r"pairs.txt:2: label must be 0 or 1, got 'yes'"):
        load_pair_list(lst)
    lst.write_text("imgs/a_0.jpg imgs/missing.jpg 1\n")
    with pytest.raises(
        FileNotFoundError, match=r"image listed in .*pairs.txt not found: .*missing.jpg"
    ):
        load_pair_list(lst)
    (tmp_path / "imgs" / "bad.jpg").write_bytes(b"nope")
    lst.write_text("imgs/a_0.jpg imgs/bad.jpg 1\n")
    with pytest.raises(BinFormatError, match=r"cannot decode .*bad.jpg"):
        load_pair_list(lst)
    big = aligned_face_image(np.random.default_rng(0), 150)
    (tmp_path / "imgs" / "big.jpg").write_bytes(encode_jpeg(big))
    lst.write_text(f"{tmp_path / 'imgs' / 'big.jpg'} imgs/a_0.jpg 0\n")  # absolute path too
    with pytest.raises(BinFormatError, match=r"big.jpg is 150x150"):
        load_pair_list(lst)
    assert load_pair_list(lst, resize=True).images.shape == (2, 112, 112, 3)


def test_decode_images_direct() -> None:
    rng = np.random.default_rng(5)
    imgs = [aligned_face_image(rng) for _ in range(3)]
    out = decode_images([encode_jpeg(i) for i in imgs], num_threads=1)
    assert out.shape == (3, 112, 112, 3)
    # JPEG is lossy; the decoded RGB is close to the flipped BGR source.
    assert np.abs(out.astype(int) - np.stack(imgs)[..., ::-1].astype(int)).mean() < 4
    with pytest.raises(BinFormatError, match="cannot decode image 0"):
        decode_images([b""])
