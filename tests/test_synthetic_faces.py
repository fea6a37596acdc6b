"""Rendered synthetic faces: deterministic, landmarks exact, depth, disjoint identities, and
every writer read back by vitfree's own readers."""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from vitfree.cli import main
from vitfree.data import (
    ARCFACE_TEMPLATE,
    estimate_similarity,
    load_bin,
    load_ijb_1n,
    load_ijb_meta,
    load_pair_list,
)
from vitfree.errors import InputError
from vitfree.faces import IJBCrops
from vitfree.synthetic.faces import (
    aligned_faces,
    identity,
    render_faces,
    variation_replace,
)
from vitfree.synthetic.sets import write_bin, write_ijbc, write_image_folder, write_pairs

FRONTAL = variation_replace("easy", yaw=0.0, pitch=0.0, roll=0.0, offset=0.0)


def test_same_seed_same_bytes_and_images_differ() -> None:
    a = render_faces([0, 1, 1], seed=4)
    b = render_faces([0, 1, 1], seed=4)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.landmarks, b.landmarks)
    assert not np.array_equal(a.images[1], a.images[2])  # two images of one person differ
    assert a.images.dtype == np.uint8 and a.images.shape == (3, 160, 160, 3)


@pytest.mark.parametrize("preset", ["easy", "hard"])
@pytest.mark.parametrize("size", [64, 160])
def test_casting_only_rays_that_can_hit_gives_the_bytes_of_casting_every_pixel(
    preset: str, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vitfree.synthetic import faces

    ids = np.arange(24) % 7
    fast = render_faces(ids, seed=5, preset=preset, size=size)
    monkeypatch.setattr(faces, "_CULL", False)
    full = render_faces(ids, seed=5, preset=preset, size=size)
    np.testing.assert_array_equal(fast.images, full.images)
    np.testing.assert_array_equal(fast.landmarks, full.landmarks)


def test_aligning_a_frontal_face_puts_its_landmarks_on_the_template() -> None:
    r = render_faces(np.arange(60), seed=9, preset=FRONTAL)
    worst = 0.0
    for lmk in r.landmarks:
        m = estimate_similarity(lmk, ARCFACE_TEMPLATE)
        moved = lmk @ m[:, :2].T + m[:, 2]
        worst = max(worst, float(np.abs(moved - ARCFACE_TEMPLATE).max()))
    assert worst < 1.5, worst


def test_landmarks_sit_on_the_drawn_features() -> None:
    # the eye landmarks are inside the eyes: sclera/iris/pupil, unlike the skin around them
    r = render_faces(np.arange(20), seed=2, preset=FRONTAL)
    for img, lmk in zip(r.images, r.landmarks):
        for e in lmk[:2]:
            x, y = int(round(e[0])), int(round(e[1]))
            centre = img[y - 1 : y + 2, x - 1 : x + 2].astype(float).mean()
            cheek = img[y + 12, x].astype(float).mean()
            assert abs(centre - cheek) > 10


def test_a_head_turn_is_not_a_2d_warp() -> None:
    # with depth, the nose tip moves against the eyes when the head turns (parallax); a 2D
    # similarity warp would keep its place relative to them
    import vitfree.synthetic.faces as F

    def nose_vs_eyes(ident: F.Identity, yaw: float) -> float:
        rot = F._rotation(yaw, 0.0, 0.0)
        ez = F._surface_z(ident, ident.eye_x, ident.eye_y)
        pts = np.array(
            [(-ident.eye_x, ident.eye_y, ez), (ident.eye_x, ident.eye_y, ez),
             (0.0, ident.nose_y - 0.5 * ident.nose[1], ident.nose_out + ident.nose[2])]
        ) @ rot.T  # fmt: skip
        return float((pts[2, 0] - pts[:2, 0].mean()) / (pts[1, 0] - pts[0, 0]))

    for k in range(10):
        ident = identity(0, k)
        assert abs(nose_vs_eyes(ident, 0.0)) < 1e-9
        assert abs(nose_vs_eyes(ident, 30.0)) > 0.1
    # and the renderer uses that geometry: a turned face's landmarks show the parallax
    var = variation_replace(FRONTAL, yaw=40.0)
    r = render_faces(np.arange(40), seed=0, preset=var)
    rel = (r.landmarks[:, 2, 0] - r.landmarks[:, :2, 0].mean(1)) / (r.landmarks[:, 1, 0] - r.landmarks[:, 0, 0])
    assert np.abs(rel).max() > 0.2


def test_seeds_give_disjoint_people() -> None:
    a = {identity(1, i) for i in range(200)}
    b = {identity(2, i) for i in range(200)}
    assert len(a) == 200 and not (a & b)
    assert identity(1, 7) == identity(1, 7)


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown preset 'extreme'"):
        render_faces([0], preset="extreme")
    with pytest.raises(InputError, match="identities must be >= 1"):
        write_image_folder(tmp_path / "a", 0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("someone's data")
    with pytest.raises(InputError, match="is not empty"):
        write_image_folder(tmp_path / "full", 1, 1, progress=False)
    write_bin(tmp_path / "s.bin", 4)
    with pytest.raises(InputError, match="exists"):
        write_bin(tmp_path / "s.bin", 4)


def test_writers_round_trip_through_the_readers(tmp_path: Path) -> None:
    info = write_ijbc(tmp_path / "a", subjects=6, seed=11, progress=False)
    again = write_ijbc(tmp_path / "b", subjects=6, seed=11, progress=False)
    meta = load_ijb_meta(tmp_path / "a")
    assert len(meta) == info["images"] and meta.labels.sum() == info["genuine"]
    onen = load_ijb_1n(tmp_path / "a")
    assert len(onen.gallery1[0]) + len(onen.gallery2[0]) == 6 and len(onen.probes[0]) == 12
    assert not set(onen.gallery1[1]) & set(onen.gallery2[1])  # disjoint galleries
    assert len(set(meta.medias.tolist())) < len(meta)  # videos: several frames per media
    crops = IJBCrops(meta=meta, normalize=False)
    assert crops.check() == {}
    assert crops[0][0].shape == (3, 112, 112)
    cmp = filecmp.dircmp(tmp_path / "a" / "IJBC" / "meta", tmp_path / "b" / "IJBC" / "meta")
    assert cmp.diff_files == [] and again["images"] == info["images"]  # same seed, same bytes
    ps = load_bin(write_bin(tmp_path / "x.bin", 10, seed=5))
    assert ps.images.shape == (20, 112, 112, 3) and ps.issame.sum() == 5
    pl = load_pair_list(write_pairs(tmp_path / "p", 6, seed=6))
    assert pl.images.shape == (12, 112, 112, 3)
    folder = write_image_folder(tmp_path / "f", 3, 2, seed=8, progress=False)
    files = sorted(folder.glob("*/*.jpg"))
    assert len(files) == 6 and cv2.imread(str(files[0])).shape == (112, 112, 3)
    assert "SYNTHETIC" in (folder / "SYNTHETIC.txt").read_text()
    # the aligned faces are what the renderer's aligned output gives (up to JPEG)
    ref = aligned_faces([0, 0], seed=8, image_seed=8 * 1_000_003)
    got = cv2.cvtColor(cv2.imread(str(folder / "000000" / "0000.jpg")), cv2.COLOR_BGR2RGB)
    assert np.abs(got.astype(int) - ref[0].astype(int)).mean() < 6  # JPEG q95 of a noisy image


def test_the_recordio_training_set_holds_the_image_folder_faces(tmp_path: Path) -> None:
    from vitfree.data.recordio import RecordIOFaces, decode_face

    folder = write_image_folder(tmp_path / "f", 3, 2, seed=8, progress=False)
    assert main(["synth", "rec", "--out", str(tmp_path / "r"), "--identities", "3", "--images", "2",
                 "--seed", "8"]) == 0  # fmt: skip
    faces = RecordIOFaces(tmp_path / "r")
    assert len(faces) == 6 and faces.num_classes == 3
    assert faces.labels.tolist() == [0, 0, 1, 1, 2, 2]
    for j, path in enumerate(sorted(folder.glob("*/*.jpg"))):  # the same JPEG bytes
        img, label = faces[j]
        np.testing.assert_array_equal(img, decode_face(path.read_bytes()))
        assert label == int(path.parent.name)
    assert "SYNTHETIC" in (tmp_path / "r" / "SYNTHETIC.txt").read_text()


def test_synth_ijbc_is_read_by_eval_ijbc_as_it_is(tmp_path: Path, tiny_checkpoint, capsys) -> None:
    assert main(["synth", "ijbc", "--out", str(tmp_path / "s"), "--identities", "6", "--seed", "3"]) == 0
    assert "SYNTHETIC IJB-C-format benchmark" in capsys.readouterr().out
    out = tmp_path / "o"
    argv = ["eval", "ijbc", "--root", str(tmp_path / "s"), "--model", str(tiny_checkpoint()), "--out", str(out)]
    assert main([*argv, "--no-speed", "--no-plots", "--workers", "0", "--exits", "1,3"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [e["exit"] for e in res["exits"]] == [1, 3] and "identification" in res["exits"][0]
