"""Image probing and strict decoding (vitfree.data.images) against OpenCV, on real files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ijb_fixtures import aligned_face_image
from vitfree.data.images import DamagedImageError, decode_image, probe_image, probe_images


def _jpeg(path: Path, img: np.ndarray, **params: int) -> Path:
    flags = [int(k) for kv in params.items() for k in (getattr(cv2, kv[0]), kv[1])]
    path.write_bytes(cv2.imencode(".jpg", img, flags)[1].tobytes())
    return path


def test_strict_decoder_gives_the_pixels_of_cv2_imread(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    files = []
    for i in range(12):
        img = aligned_face_image(rng, 112) if i % 3 else rng.integers(0, 256, (170, 130, 3), np.uint8)
        files.append(_jpeg(tmp_path / f"{i}.jpg", img, IMWRITE_JPEG_QUALITY=60 + 3 * i))
    files.append(_jpeg(tmp_path / "prog.jpg", aligned_face_image(rng, 112), IMWRITE_JPEG_PROGRESSIVE=1))
    gray = rng.integers(0, 256, (40, 50), np.uint8)
    files.append(tmp_path / "gray.jpg")
    files[-1].write_bytes(cv2.imencode(".jpg", gray)[1].tobytes())
    png = tmp_path / "face.png"
    png.write_bytes(cv2.imencode(".png", aligned_face_image(rng, 112))[1].tobytes())
    files.append(png)
    for f in files:
        img, damage = decode_image(f)
        assert damage is None
        np.testing.assert_array_equal(img, cv2.imread(str(f), cv2.IMREAD_COLOR), err_msg=f.name)
        probe = probe_image(f)
        assert probe.problem is None and (probe.height, probe.width) == img.shape[:2]


def test_damage_is_named_and_lenient_decoding_matches_the_community_reader(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    whole = _jpeg(tmp_path / "whole.jpg", aligned_face_image(rng, 112))
    data = whole.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 3])
    assert probe_image(cut).problem == "truncated JPEG: no end-of-image marker"
    with pytest.raises(DamagedImageError, match=r"cut.jpg: damaged JPEG \(Premature end of JPEG file\)"):
        decode_image(cut)
    img, damage = decode_image(cut, lenient=True)
    assert damage is not None and "Premature end" in damage
    np.testing.assert_array_equal(img, cv2.imread(str(cut), cv2.IMREAD_COLOR))  # what the scripts use
    png = tmp_path / "p.png"
    png.write_bytes(cv2.imencode(".png", aligned_face_image(rng, 112))[1].tobytes()[:300])
    assert probe_image(png).problem == "truncated PNG: no IEND chunk"
    with pytest.raises(DamagedImageError, match="truncated PNG"):
        decode_image(png)
    empty = tmp_path / "e.jpg"
    empty.write_bytes(b"")
    assert probe_image(empty).problem == "empty file"
    with pytest.raises(DamagedImageError, match="empty file"):
        decode_image(empty)
    text = tmp_path / "t.jpg"
    text.write_text("not an image")
    assert "not a JPEG image" in (probe_image(text).problem or "")
    with pytest.raises(DamagedImageError, match="cannot be decoded"):
        decode_image(text)
    assert probe_image(tmp_path / "none.jpg").problem == "not found"
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "none.jpg")
    assert probe_image(tmp_path).problem == "is a folder, not an image"


def test_probe_images_keeps_the_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    paths = []
    for i in range(100):
        p = _jpeg(tmp_path / f"{i}.jpg", rng.integers(0, 256, (20 + i, 30, 3), np.uint8))
        paths.append(p)
    paths[37].write_bytes(paths[37].read_bytes()[:50])
    probes = probe_images(paths)
    assert [p.height for p in probes[:36]] == list(range(20, 56))
    assert [i for i, p in enumerate(probes) if p.problem] == [37]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"", b"\xff\xd8", b"\x89PNG\r\n\x1a\n"]))
def test_random_bytes_never_crash_the_decoder(tmp_path_factory, blob: bytes, magic: bytes) -> None:
    f = tmp_path_factory.mktemp("rnd") / "x.jpg"
    f.write_bytes(magic + blob)
    probe_image(f)  # never raises
    try:
        img, _ = decode_image(f)
    except DamagedImageError:
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
