"""``--reproduce eval_ijbc|ijb_evals`` and ``--modes all`` (vitfree.reproduce, docs/reproduce.md).

References are built here the way each community script builds them, with the libraries the
scripts use: landmark lines parsed as the script parses them, ``cv2.imread``, scikit-image's
``SimilarityTransform`` estimated from float32 arrays, ``cv2.warpAffine`` with border 0, then
the script's pixel scaling (torch ``div_(255).sub_(0.5).div_(0.5)`` for arcface_torch
``eval_ijbc.py``, numpy ``(x - 127.5) * 0.0078125`` for ``ijb_evals.py``).  The templates are
typed in as the scripts write them, not taken from vitfree.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from reference import community_image_feats, image2template_feature, tar_nearest, verification
from vitfree.cli import main
from vitfree.data import load_ijb_meta
from vitfree.data.align import estimate_similarity
from vitfree.errors import InputError, StoreError
from vitfree.evaluate import IJBOptions
from vitfree.extract import extract_ijb
from vitfree.faces import IJBCrops
from vitfree.models import load, preprocess
from vitfree.pipelines import evaluate_features, evaluate_ijb
from vitfree.reproduce import ALL_MODES, PRESETS, FaceInput, apply_preset, parse_modes
from vitfree.store import Manifest, load_feature_sets

skimage_transform = pytest.importorskip("skimage.transform")

pytestmark = pytest.mark.usefixtures("one_thread")

DEPTH = 3  # tiny_model's blocks: the final exit


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint(seed=0)


@pytest.fixture(scope="module")
def ijb(ijb_folder) -> Path:
    root, _ = ijb_folder(n_subjects=4, max_images_per_template=2, seed=1)
    return root


# ---------------------------------------------------------------------------------------
# the scripts' own way
# ---------------------------------------------------------------------------------------


def _script_template(script: str) -> np.ndarray:
    if script == "eval_ijbc":  # arcface_torch eval_ijbc.py, Embedding.__init__
        src = np.array(
            [[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
             [62.7299, 92.2041]],
            dtype=np.float32,
        )  # fmt: skip
        src[:, 0] += 8.0
        return src
    # ijb_evals.py, face_align_landmark
    return np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
         [70.729904, 92.2041]],
        dtype=np.float32,
    )  # fmt: skip


def _script_landmarks(lines: list[str], script: str) -> np.ndarray:
    if script == "eval_ijbc":  # np.array([float(x) for x in fields[1:-1]], dtype=np.float32)
        return np.stack(
            [
                np.array([float(x) for x in ln.strip().split(" ")[1:-1]], dtype=np.float32).reshape(5, 2)
                for ln in lines
            ]
        )
    records = np.array([ln.strip().split(" ") for ln in lines])  # numpy string array
    return records[:, 1:-1].astype("float32").reshape(-1, 5, 2)


def _skimage_params(lmk: np.ndarray, src: np.ndarray) -> np.ndarray:
    tf_cls = skimage_transform.SimilarityTransform
    if hasattr(tf_cls, "from_estimate"):
        tform = tf_cls.from_estimate(lmk, src)
    else:  # scikit-image < 0.26
        tform = tf_cls()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tform.estimate(lmk, src)
    return tform.params


def script_crops(root: Path, script: str) -> np.ndarray:
    """(N, 112, 112, 3) uint8 RGB crops, as ``script`` makes them."""
    meta_dir = root / "IJBC" / "meta"
    lines = (meta_dir / "ijbc_name_5pts_score.txt").read_text().splitlines()
    lmks = _script_landmarks(lines, script)
    src = _script_template(script)
    out = []
    for ln, lmk in zip(lines, lmks):
        img = cv2.imread(str(root / "IJBC" / "loose_crop" / ln.split(" ")[0]))
        m = _skimage_params(lmk, src)[0:2, :]
        warped = cv2.warpAffine(img, m, (112, 112), borderValue=0.0)
        out.append(cv2.cvtColor(warped, cv2.COLOR_BGR2RGB))
    return np.stack(out)


def script_pixels(crops_rgb: np.ndarray, script: str) -> torch.Tensor:
    """Network input of (B, 112, 112, 3) RGB crops, as ``script`` scales them."""
    if script == "eval_ijbc":  # a float64 batch of uint8 values -> torch.Tensor -> in place
        batch = np.empty((crops_rgb.shape[0], 3, 112, 112))
        batch[:] = crops_rgb.transpose(0, 3, 1, 2)
        imgs = torch.Tensor(batch)
        imgs.div_(255).sub_(0.5).div_(0.5)
        return imgs
    imgs = crops_rgb.transpose(0, 3, 1, 2).copy().astype("float32")
    return torch.from_numpy((imgs - 127.5) * 0.0078125)


# ---------------------------------------------------------------------------------------
# alignment and pixels
# ---------------------------------------------------------------------------------------


def test_float32_estimate_is_scikit_image_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    dst = _script_template("ijb_evals")
    for _ in range(300):
        scale, theta = rng.uniform(0.4, 3.0), rng.uniform(-0.9, 0.9)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        pts = (dst - 56) @ rot.T * scale + rng.uniform(30, 500, 2) + rng.normal(0, 2, (5, 2))
        lmk = np.round(pts, 3).astype(np.float32)
        want = _skimage_params(lmk, dst)[:2]
        np.testing.assert_array_equal(estimate_similarity(lmk, dst, dtype="float32"), want)
    # float64 arithmetic is not the same thing (the reason the preset exists)
    assert not np.array_equal(estimate_similarity(lmk, dst), want)


@pytest.mark.parametrize("script", ["eval_ijbc", "ijb_evals"])
def test_crops_are_bit_identical_to_the_scripts(ijb: Path, script: str) -> None:
    meta = load_ijb_meta(ijb, pairs=False)
    want = script_crops(ijb, script)
    fi = apply_preset(script).face_input
    crops = IJBCrops(meta=meta, normalize=False, face_input=fi)
    got = np.stack([crops.load_aligned(r) for r in range(len(meta))])
    np.testing.assert_array_equal(got, want)
    # the float64 alignment (vitfree before presets) moves some grey levels on these crops
    old = IJBCrops(meta=meta, normalize=False, face_input=FaceInput())
    got64 = np.stack([old.load_aligned(r) for r in range(len(meta))])
    diff = np.abs(got64.astype(int) - want.astype(int))
    assert diff.max() == 1 and 0 < np.count_nonzero(diff) < diff.size // 1000


def test_the_two_scripts_write_the_same_float32_template() -> None:
    a, b = _script_template("eval_ijbc"), _script_template("ijb_evals")
    np.testing.assert_array_equal(a, b)
    assert a[4, 0] != np.float32(70.7299)  # 62.7299 + 8 in float32 is 70.72990417...
    np.testing.assert_array_equal(FaceInput("float32", "eval_ijbc").template_points(), a)
    np.testing.assert_array_equal(FaceInput("float32", "ijb_evals").template_points(), b)


@pytest.mark.parametrize("script", ["eval_ijbc", "ijb_evals"])
def test_embeddings_equal_the_model_fed_the_scripts_pixels(
    ijb: Path, ckpt: Path, tmp_path: Path, script: str
) -> None:
    model = load(ckpt)
    repro = apply_preset(script)
    crops = script_crops(ijb, script)
    # the pixels themselves are bit-identical
    x_ref = script_pixels(crops, script)
    assert torch.equal(preprocess(crops, scaling=repro.face_input.pixel_scaling), x_ref)
    res = extract_ijb(
        load(ckpt), ijb, tmp_path / "f", exits=[DEPTH], batch_size=4, num_workers=0,
        progress=False, face_input=repro.face_input,
    )  # fmt: skip
    assert res.complete
    (fs,) = load_feature_sets(tmp_path / "f")
    with torch.inference_mode():
        want = model(x_ref).numpy()
        want_flip = model(script_pixels(np.ascontiguousarray(crops[:, :, ::-1, :]), script)).numpy()
    scale = float(np.abs(want).max())
    np.testing.assert_allclose(fs.feats, want, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(fs.flip, want_flip, rtol=0, atol=1e-5 * scale)
    # and the manifest says how the faces were made
    m = Manifest.read(tmp_path / "f")
    assert m is not None and m.face_input == repro.face_input.as_dict()


def test_the_pixel_scalings_differ_as_documented() -> None:
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 256, 1).expand(1, 3, 256, 3)
    hwc = x.permute(0, 2, 3, 1)
    a = preprocess(hwc, scaling="div255").double()
    b = preprocess(hwc, scaling="div128").double()
    v = torch.arange(256, dtype=torch.float64)
    assert torch.equal(b[0, 0, :, 0], (v - 127.5) / 128)  # exact
    assert (a[0, 0, :, 0] - (v - 127.5) / 127.5).abs().max() < 1e-6
    assert (a - b).abs().max() == pytest.approx(127.5 / 127.5 - 127.5 / 128, abs=1e-6)
    with pytest.raises(InputError, match="pixel scaling"):
        preprocess(hwc, scaling="div127")


# ---------------------------------------------------------------------------------------
# presets and overrides
# ---------------------------------------------------------------------------------------


def test_presets_set_every_convention_and_explicit_values_win() -> None:
    e, j = PRESETS["eval_ijbc"].conventions, PRESETS["ijb_evals"].conventions
    assert (e.pixel_scaling, j.pixel_scaling) == ("div255", "div128")
    assert e.align_dtype == j.align_dtype == "float32"
    assert e.modes == j.modes == ("N0D1F1",)
    assert e.tar_rule == j.tar_rule == "nearest"
    assert e.fars == j.fars == (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    # ijb_evals' 1:N grid as the script computes it: 10 ** np.arange(-4, 0, 0.04), every 25th
    cal = [10**x for x in np.arange(-4, 0, 4 / 100)] + [1]
    assert j.fpirs == tuple(float(cal[i]) for i in range(0, 101, 25))
    assert j.fpirs[1] != 1e-3
    assert apply_preset().preset.name == "eval_ijbc"
    r = apply_preset("ijb_evals", pixel_scaling="div255", align_dtype="float64", tar_rule="at_most")
    c = r.conventions
    assert (c.pixel_scaling, c.align_dtype, c.template, c.tar_rule) == ("div255", "float64", "arcface", "at_most")
    assert c.fpirs == j.fpirs and set(r.explicit) == {"pixel_scaling", "align_dtype", "tar_rule"}
    d = r.as_dict()
    assert d["set_by"]["pixel_formula"] == "explicit" and d["set_by"]["fpirs"] == "preset"
    assert apply_preset("ijb_evals", use_flip=False).modes == ("N0D1F0",)
    assert apply_preset(modes="N1D0F1,n1d0f1, N0D1F1").modes == ("N1D0F1", "N0D1F1")
    with pytest.raises(InputError, match="not both"):
        apply_preset(modes="all", use_flip=False)
    with pytest.raises(InputError, match="unknown preset"):
        apply_preset("eval_ijbb")
    with pytest.raises(InputError, match="N\\{0,1\\}D"):
        parse_modes("N2D1F1")


def test_all_modes_in_ijb_evals_bunch_order() -> None:
    assert parse_modes("all") == ALL_MODES
    # product([True, False], [True, False], [True, False]) over (norm, detector, flip)
    assert ALL_MODES[:3] == ("N1D1F1", "N1D1F0", "N1D0F1") and ALL_MODES[-1] == "N0D0F0"
    assert len(set(ALL_MODES)) == 8


# ---------------------------------------------------------------------------------------
# eight modes from one extraction
# ---------------------------------------------------------------------------------------


def _by_mode(results: dict) -> dict[str, dict]:
    out = {}
    for e in results["exits"]:
        out[e["mode"]] = {"verification": e["verification"], "identification": e.get("identification")}
    return out


def test_eight_modes_from_one_extraction_equal_eight_separate_runs(
    ijb: Path, ckpt: Path, tmp_path: Path
) -> None:
    kw = dict(exits=[DEPTH], num_workers=0, speed=False, plots=False, progress=False, batch_size=4)
    ev = evaluate_ijb(load(ckpt), ijb, tmp_path / "all", reproduce="ijb_evals", modes="all", **kw)
    assert ev is not None and [r.mode for r in ev.results] == list(ALL_MODES)
    assert ev.table().count("TAR@1e-06") == 8 and "[N0D0F0]" in ev.table()
    together = _by_mode(json.loads((tmp_path / "all" / "results.json").read_text()))
    assert list(together) == list(ALL_MODES)
    meta = load_ijb_meta(ijb)
    (fs,) = load_feature_sets(tmp_path / "all" / "features")
    feats, flips = np.asarray(fs.feats), np.asarray(fs.flip)
    for mode in ALL_MODES:
        n, d, f = (mode[i] == "1" for i in (1, 3, 5))
        opts = IJBOptions(normalize_images=n, use_faceness=d, use_flip=f)
        out = tmp_path / mode
        evaluate_ijb(load(ckpt), ijb, out, reproduce="ijb_evals", options=opts, **kw)
        alone = _by_mode(json.loads((out / "results.json").read_text()))
        assert alone == {mode: together[mode]}, mode
        # and the mode means what ijb_evals.py computes (reference.py, numpy)
        x = community_image_feats(feats, flips if f else None, meta.faceness if d else None, n)
        t, ids = image2template_feature(x, meta.templates, meta.medias)
        scores = verification(t, ids, meta.p1, meta.p2)
        ver = together[mode]["verification"]
        tar, thr = tar_nearest(meta.labels, scores, ver["fars"])
        np.testing.assert_allclose(ver["tar_nearest"], np.round(tar * 100, 4), atol=1e-9)
        np.testing.assert_allclose(ver["threshold_nearest"], thr, atol=1e-5)
    # the same modes from the saved store (eval features)
    feats_ev = evaluate_features(
        tmp_path / "all" / "features", ijb, tmp_path / "feat", reproduce="ijb_evals",
        modes="all", plots=False, progress=False,
    )  # fmt: skip
    assert [r.mode for r in feats_ev.results] == list(ALL_MODES)
    assert _by_mode(json.loads((tmp_path / "feat" / "results.json").read_text())) == together


def test_conventions_are_recorded_in_results_json(ijb: Path, ckpt: Path, tmp_path: Path) -> None:
    argv = [
        "eval", "ijbc", "--root", str(ijb), "--model", str(ckpt), "--exits", str(DEPTH),
        "--out", str(tmp_path), "--no-speed", "--no-plots", "--workers", "0",
        "--reproduce", "ijb_evals", "--tar-rule", "at_most", "--no-flip",
    ]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    rep = res["info"]["reproduce"]
    assert rep["preset"] == "ijb_evals" and rep["script"].endswith("_evaluation_/ijb/ijb_evals.py")
    c = rep["conventions"]
    assert c["pixel_scaling"] == "div128" and c["pixel_formula"] == "(x - 127.5) * 0.0078125"
    assert c["align_dtype"] == "float32" and c["template"] == "ijb_evals"
    assert c["template_points"][4][0] == float(np.float32(70.729904))
    assert c["modes"] == ["N0D1F0"] and c["tar_rule"] == "at_most"
    assert c["fars"] == [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1] and len(c["fpirs"]) == 5
    assert rep["set_by"]["modes"] == "explicit" and rep["set_by"]["tar_rule"] == "explicit"
    assert rep["set_by"]["pixel_scaling"] == "preset" and rep["set_by"]["fpirs"] == "preset"
    opts = res["info"]["options"]
    assert opts["use_flip"] is False and opts["tar_rule"] == "at_most" and opts["fpirs"] == c["fpirs"]
    ver = res["exits"][0]["verification"]
    csv = (tmp_path / "results.csv").read_text().splitlines()
    row = dict(zip(csv[0].split(","), csv[1].split(",")))
    assert float(row["TAR@1e-01"]) == round(ver["tar_at_most"][-1], 2)  # the table's rule
    m = Manifest.read(tmp_path / "features")
    assert m is not None and m.face_input is not None and m.face_input["pixel_scaling"] == "div128"


def test_old_stores_read_and_resume_but_not_with_other_faces(
    ijb: Path, ckpt: Path, tmp_path: Path
) -> None:
    kw = dict(exits=[DEPTH], batch_size=4, num_workers=0, progress=False)
    extract_ijb(load(ckpt), ijb, tmp_path, **kw)
    # a store written before face_input was recorded
    d = json.loads((tmp_path / "manifest.json").read_text())
    d.pop("face_input")
    (tmp_path / "manifest.json").write_text(json.dumps(d))
    again = extract_ijb(load(ckpt), ijb, tmp_path, **kw)  # the default is what it was made with
    assert again.extracted == 0 and again.resumed == again.n_images
    with pytest.raises(StoreError, match="face preprocessing"):
        extract_ijb(load(ckpt), ijb, tmp_path, face_input=apply_preset("eval_ijbc").face_input, **kw)
    ev = evaluate_features(tmp_path, ijb, None, plots=False, progress=False, one_n=False)
    assert ev.info["face_input"]["align_dtype"] == "float64"
