"""IJB-B/C readers against data written in the real formats by tests/ijb_fixtures.py."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch
import vitfree.data.ijb as ijb_mod
from hypothesis import given, settings
from hypothesis import strategies as st
from ijb_fixtures import format_int_rows, write_ijb
from vitfree.data import (
    IJBCrops,
    IJBFormatError,
    align_face,
    load_ijb_1n,
    load_ijb_meta,
    read_1n_csv,
    read_template_pair_label,
)


@pytest.fixture(scope="module")
def ijbc(ijb_folder) -> dict[str, Any]:
    root, exp = ijb_folder("IJBC", n_subjects=6, seed=7)
    exp["root"] = root
    return exp


def copy_dataset(exp: dict[str, Any], dst: Path) -> Path:
    """A private copy of the IJBC folder, to corrupt."""
    out = dst / "IJBC"
    shutil.copytree(exp["dataset_dir"], out)
    return out


def assert_meta_equal(meta: Any, exp: dict[str, Any]) -> None:
    assert meta.names.tolist() == exp["names"]
    np.testing.assert_array_equal(meta.templates, exp["templates"])
    np.testing.assert_array_equal(meta.medias, exp["medias"])
    np.testing.assert_array_equal(meta.landmarks, exp["landmarks"])
    np.testing.assert_array_equal(meta.faceness, exp["faceness"])
    np.testing.assert_array_equal(meta.p1, exp["p1"])
    np.testing.assert_array_equal(meta.p2, exp["p2"])
    np.testing.assert_array_equal(meta.labels, exp["labels"])
    assert meta.templates.dtype == np.int64 and meta.p1.dtype == np.int64
    assert meta.landmarks.dtype == np.float32 and meta.landmarks.shape == (len(exp["names"]), 5, 2)
    assert meta.faceness.dtype == np.float32


# --------------------------------------------------------------------------------------------
# Meta files
# --------------------------------------------------------------------------------------------


def test_load_meta_from_root_dataset_and_meta_folders(ijbc: dict[str, Any]) -> None:
    for where in (ijbc["root"], ijbc["dataset_dir"], ijbc["meta_dir"]):
        meta = load_ijb_meta(where)
        assert_meta_equal(meta, ijbc)
        assert meta.meta_dir == ijbc["meta_dir"]
        assert meta.image_dir == ijbc["image_dir"]
    assert "IJBC" in repr(meta) and len(meta) == len(ijbc["names"])


def test_load_meta_without_pairs(ijbc: dict[str, Any]) -> None:
    meta = load_ijb_meta(ijbc["root"], pairs=False)
    assert meta.p1.size == 0 and meta.labels.size == 0
    np.testing.assert_array_equal(meta.templates, ijbc["templates"])


def test_ijbb_prefix_and_dataset_layout(tmp_path: Path) -> None:
    exp = write_ijb(tmp_path / "IJBB", "IJBB", n_subjects=4, seed=3, layout="dataset")
    meta = load_ijb_meta(tmp_path, dataset="IJBB")
    assert_meta_equal(meta, exp)
    assert meta.dataset == "IJBB"
    lists = load_ijb_1n(tmp_path / "IJBB", dataset="ijbb")
    assert lists.gallery_names == ("S1", "S2")
    for got, want in zip(
        (lists.gallery1, lists.gallery2, lists.probes),
        (exp["gallery1"], exp["gallery2"], exp["probes"]),
    ):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_missing_folder_and_files_are_named(ijbc: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="looked for ijbc_face_tid_mid.txt"):
        load_ijb_meta(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="IJBB' or 'IJBC"):
        load_ijb_meta(ijbc["root"], dataset="LFW")
    ds = copy_dataset(ijbc, tmp_path)
    (ds / "meta" / "ijbc_name_5pts_score.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"landmark file not found: .*ijbc_name_5pts_score"):
        load_ijb_meta(tmp_path)
    (ds / "meta" / "ijbc_face_tid_mid.txt").unlink()
    with pytest.raises(FileNotFoundError, match="ijbc_face_tid_mid.txt"):
        load_ijb_meta(tmp_path)


def test_row_count_and_name_mismatch(ijbc: dict[str, Any], tmp_path: Path) -> None:
    ds = copy_dataset(ijbc, tmp_path)
    f5 = ds / "meta" / "ijbc_name_5pts_score.txt"
    lines = f5.read_text().splitlines()
    f5.write_text("\n".join(lines[:-1]) + "\n")
    n = len(lines)
    with pytest.raises(
        IJBFormatError, match=f"has {n} rows but ijbc_name_5pts_score.txt has {n - 1}"
    ):
        load_ijb_meta(tmp_path)
    swapped = lines.copy()
    swapped[2], swapped[3] = swapped[3], swapped[2]
    f5.write_text("\n".join(swapped) + "\n")
    name3 = ijbc["names"][2]
    with pytest.raises(IJBFormatError, match=f"first at row 3: '{name3}'"):
        load_ijb_meta(tmp_path)


def test_unknown_pair_template_is_named(ijbc: dict[str, Any], tmp_path: Path) -> None:
    ds = copy_dataset(ijbc, tmp_path)
    fp = ds / "meta" / "ijbc_template_pair_label.txt"
    fp.write_text(fp.read_text() + f"987654321 {ijbc['p1'][0]} 0\n")
    with pytest.raises(IJBFormatError, match="1 template ids have no image.*987654321"):
        load_ijb_meta(tmp_path)


def test_bad_labels_and_malformed_lines_name_file_and_line(
    ijbc: dict[str, Any], tmp_path: Path
) -> None:
    ds = copy_dataset(ijbc, tmp_path)
    fp = ds / "meta" / "ijbc_template_pair_label.txt"
    good = fp.read_text().splitlines()
    t1, t2 = int(ijbc["p1"][0]), int(ijbc["p2"][0])
    cases = [
        (f"{t1} {t2} 2", r"ijbc_template_pair_label.txt:4: labels must be 0 or 1, got 2"),
        (f"{t1} {t2}", r"ijbc_template_pair_label.txt:4: expected 3 integer fields, got 2"),
        (f"{t1} {t2} 1 0", r"ijbc_template_pair_label.txt:4: expected 3 integer fields, got 4"),
        (f"{t1} x{t2} 1", r"ijbc_template_pair_label.txt:4: 'x\d+' is not a valid integer"),
        (f"{t1} {t2}.5 1", r"ijbc_template_pair_label.txt:4: '\d+\.5' is not a valid integer"),
        (f"{t1} 99999999999999999999 1", r"ijbc_template_pair_label.txt:4: '9+' is not a valid"),
    ]
    for bad, msg in cases:
        fp.write_text("\n".join(good[:3] + [bad] + good[3:]) + "\n")
        with pytest.raises(IJBFormatError, match=msg):
            load_ijb_meta(tmp_path)
    fp.write_text("\n".join(good) + "\n")
    fl = ds / "meta" / "ijbc_name_5pts_score.txt"
    lines = fl.read_text().splitlines()
    lines[4] = lines[4].rsplit(" ", 1)[0]  # drop the detector score
    fl.write_text("\n".join(lines) + "\n")
    with pytest.raises(IJBFormatError, match=r"ijbc_name_5pts_score.txt:5: expected 12 fields"):
        load_ijb_meta(tmp_path)
    lines = fl.read_text().splitlines()
    lines[4] = lines[4] + " abc"
    fl.write_text("\n".join(lines) + "\n")
    with pytest.raises(
        IJBFormatError, match=r"ijbc_name_5pts_score.txt:5: 'abc' is not a valid number"
    ):
        load_ijb_meta(tmp_path)
    ft = ds / "meta" / "ijbc_face_tid_mid.txt"
    lines = ft.read_text().splitlines()
    lines[1] = lines[1] + " 7"
    ft.write_text("\n".join(lines) + "\n")
    with pytest.raises(IJBFormatError, match=r"ijbc_face_tid_mid.txt:2: expected 3 fields"):
        load_ijb_meta(tmp_path)


def reference_pairs(text: str) -> np.ndarray:
    rows = [ln.split() for ln in text.splitlines() if ln.strip()]
    return np.array([[int(x) for x in r] for r in rows], dtype=np.int64).reshape(-1, 3)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 10**12), st.integers(0, 10**12), st.integers(0, 1)),
        max_size=60,
    ),
    blank_every=st.integers(0, 7),
    crlf=st.booleans(),
    trailing_newline=st.booleans(),
    chunk=st.sampled_from([8, 40, 1 << 24]),
)
def test_pair_parser_matches_line_by_line_reference(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[int, int, int]],
    blank_every: int,
    crlf: bool,
    trailing_newline: bool,
    chunk: int,
) -> None:
    lines = []
    for i, (a, b, c) in enumerate(rows):
        if blank_every and i % blank_every == 0:
            lines.append("  ")
        lines.append(f"{a}\t{b} {c}" if i % 3 == 0 else f"{a} {b} {c}")
    nl = "\r\n" if crlf else "\n"
    text = nl.join(lines) + (nl if trailing_newline and lines else "")
    path = tmp_path_factory.mktemp("pairs") / "p.txt"
    path.write_bytes(text.encode())
    old = ijb_mod._CHUNK_BYTES
    ijb_mod._CHUNK_BYTES = chunk  # several chunks and threads, chunk edges inside lines
    try:
        p1, p2, lab = read_template_pair_label(path)
    finally:
        ijb_mod._CHUNK_BYTES = old
    ref = reference_pairs(text)
    np.testing.assert_array_equal(p1, ref[:, 0])
    np.testing.assert_array_equal(p2, ref[:, 1])
    np.testing.assert_array_equal(lab, ref[:, 2])
    assert p1.dtype == np.int64 and lab.dtype == np.int8


def test_pair_parser_large_file_many_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    cols = [rng.integers(1, 190000, n), rng.integers(1, 190000, n), rng.integers(0, 2, n)]
    path = tmp_path / "ijbc_template_pair_label.txt"
    path.write_bytes(format_int_rows(cols))
    monkeypatch.setattr(ijb_mod, "_CHUNK_BYTES", 1 << 16)
    p1, p2, lab = read_template_pair_label(path)
    np.testing.assert_array_equal(p1, cols[0])
    np.testing.assert_array_equal(p2, cols[1])
    np.testing.assert_array_equal(lab, cols[2])
    # An error deep in the file still names its line.
    data = bytearray(path.read_bytes())
    lines = data.split(b"\n")
    lines[150_000] = b"1 2 3"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(
        IJBFormatError, match=r"ijbc_template_pair_label.txt:150001: labels must be 0 or 1"
    ):
        read_template_pair_label(path)
    lines[150_000] = b"1 2 q"
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(IJBFormatError, match=r"ijbc_template_pair_label.txt:150001: 'q'"):
        read_template_pair_label(path)


# --------------------------------------------------------------------------------------------
# 1:N csvs
# --------------------------------------------------------------------------------------------


def test_1n_lists_match_written(ijbc: dict[str, Any]) -> None:
    lists = load_ijb_1n(ijbc["root"])
    assert lists.gallery_names == ("G1", "G2")
    for got, want in zip(
        (lists.gallery1, lists.gallery2, lists.probes),
        (ijbc["gallery1"], ijbc["gallery2"], ijbc["probes"]),
    ):
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert got[0].dtype == np.int64 and got[1].dtype == np.int64
        assert np.unique(got[0]).size == got[0].size
    # The probe csv really has one row per image (so deduplication was exercised).
    n_rows = len(ijbc["paths"]["probe"].read_text().splitlines()) - 1
    assert n_rows > lists.probes[0].size


def test_1n_csv_dedup_order_extra_columns_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "probe.csv"
    p.write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n5,50,a.jpg\n3,30,b.jpg\n5,50,c.jpg\n9,30\n\n")
    t, s = read_1n_csv(p)
    assert t.tolist() == [5, 3, 9] and s.tolist() == [50, 30, 30]
    p.write_text("TEMPLATE_ID,SUBJECT_ID\n")
    t, s = read_1n_csv(p)
    assert t.size == 0 and s.size == 0
    p.write_text("TEMPLATE_ID,SUBJECT_ID,FILENAME\n5,50,a.jpg\n5,51,c.jpg\n")
    with pytest.raises(IJBFormatError, match=r"template 5 has subjects \[50, 51\]"):
        read_1n_csv(p)
    p.write_text("TEMPLATE_ID,SUBJECT_ID\n5,50\n6\n")
    with pytest.raises(IJBFormatError, match=r"probe.csv:3: expected at least 2"):
        read_1n_csv(p)
    p.write_text("TEMPLATE_ID,SUBJECT_ID\n5,abc\n")
    with pytest.raises(
        IJBFormatError, match=r"probe.csv:2: template and subject ids must be integers"
    ):
        read_1n_csv(p)
    p.write_text("")
    with pytest.raises(IJBFormatError, match="empty file"):
        read_1n_csv(p)
    with pytest.raises(FileNotFoundError, match="1:N csv not found"):
        read_1n_csv(tmp_path / "nope.csv")


# --------------------------------------------------------------------------------------------
# Crops dataset
# --------------------------------------------------------------------------------------------


def expected_rgb(exp: dict[str, Any], row: int) -> np.ndarray:
    img = cv2.imread(str(exp["image_dir"] / exp["names"][row]))
    return align_face(img, exp["landmarks"][row])


def test_crops_uint8_and_normalised(ijbc: dict[str, Any]) -> None:
    ds8 = IJBCrops(ijbc["root"], normalize=False)
    assert len(ds8) == len(ijbc["names"])
    for row in (0, 3, len(ds8) - 1):
        img, flip, idx = ds8[row]
        ref = expected_rgb(ijbc, row)
        assert idx == row
        assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 112, 112)
        np.testing.assert_array_equal(img.numpy(), ref.transpose(2, 0, 1))
        np.testing.assert_array_equal(flip.numpy(), ref[:, ::-1].transpose(2, 0, 1))
    meta = load_ijb_meta(ijbc["root"], pairs=False)
    dsf = IJBCrops(meta=meta, indices=[4, 1])
    assert len(dsf) == 2
    img, flip, idx = dsf[0]
    assert idx == 4 and img.dtype == torch.float32
    ref = expected_rgb(ijbc, 4).transpose(2, 0, 1).astype(np.float64)
    np.testing.assert_allclose(img.numpy(), (ref / 255.0 - 0.5) / 0.5, atol=1e-6)
    np.testing.assert_allclose(flip.numpy(), ((ref / 255.0 - 0.5) / 0.5)[:, :, ::-1], atol=1e-6)
    with pytest.raises(IndexError):
        IJBCrops(meta=meta, indices=[len(meta)])


def test_crops_bad_images(ijbc: dict[str, Any], tmp_path: Path) -> None:
    ds_dir = copy_dataset(ijbc, tmp_path)
    (ds_dir / "loose_crop" / ijbc["names"][1]).unlink()
    (ds_dir / "loose_crop" / ijbc["names"][2]).write_bytes(b"not a jpeg")
    ds = IJBCrops(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"IJB image not found: .*{ijbc['names'][1]}"):
        ds[1]
    with pytest.raises(IJBFormatError, match=f"cannot decode IJB image .*{ijbc['names'][2]}"):
        ds[2]
    ok_ds = IJBCrops(tmp_path, skip_bad=True, normalize=False)
    img, flip, idx, ok = ok_ds[1]
    assert (idx, ok) == (1, False) and img.sum() == 0 and flip.sum() == 0
    img, flip, idx, ok = ok_ds[2]
    assert (idx, ok) == (2, False)
    img, flip, idx, ok = ok_ds[0]
    assert ok and img.sum() > 0
    assert ok_ds.skipped == [1, 2]
    f_ds = IJBCrops(tmp_path, skip_bad=True)
    img, _, _, ok = f_ds[1]
    assert not ok and torch.all(img == -1.0)


def test_crops_pickle_and_dataloader_workers(ijbc: dict[str, Any]) -> None:
    ds = IJBCrops(ijbc["root"], normalize=False, indices=np.arange(6))
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone[2][0].numpy(), ds[2][0].numpy())
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    seen = []
    for img, _flip, idx in loader:
        assert img.shape[1:] == (3, 112, 112)
        for j, row in enumerate(idx.tolist()):
            np.testing.assert_array_equal(
                img[j].numpy(), expected_rgb(ijbc, row).transpose(2, 0, 1)
            )
        seen += idx.tolist()
    assert seen == list(range(6))
