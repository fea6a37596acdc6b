"""Inputs that used to give a wrong answer without an error (issue 14, section 5).

1. NaN/inf template features passed through :func:`score_pairs` as NaN scores.
2. 1:N subject ids of mixed kinds (strings vs integers) left every probe non-mated: all NaN.
3. Float (or uint64) ids beyond the int64 range wrapped on the cast and merged distinct ids.
4. ``--skip-bad`` (zero feature rows) with ``--normalize-images`` raised for the zero rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import community_image_feats, image2template_feature, verification
from vitfree.errors import InputError, InputTypeError
from vitfree.identification import identification, ijb_identification
from vitfree.ijb import aggregate_templates, evaluate_verification, score_pairs


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# 1. score_pairs refuses non-finite template features, naming the template
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_score_pairs_names_non_finite_template(bad: float) -> None:
    rng = np.random.default_rng(0)
    feats = unit_rows(rng, 4, 8)
    ids = np.array([3, 17, 42, 99])
    feats[2, 5] = bad
    with pytest.raises(InputError, match=r"template_feats row 2 \(template 42\) has NaN or infinite"):
        score_pairs(feats, ids, [3, 42], [17, 99])
    # any row of the matrix, also one that no pair reads: the features themselves are broken
    with pytest.raises(InputError, match=r"\(template 42\)"):
        score_pairs(feats, ids, [3], [17])
    # float64 input (converted to float32) too; ValueError for callers that catch that
    with pytest.raises(ValueError, match=r"\(template 42\)"):
        score_pairs(feats.astype(np.float64), ids, [3], [17])


def test_score_pairs_non_finite_first_row_named_on_tiled_path() -> None:
    # 3000 x 1024 float32 = 12 MB: above the cache budget, scored tile by tile
    rng = np.random.default_rng(1)
    t, d = 3000, 1024
    feats = rng.normal(size=(t, d)).astype(np.float32)
    ids = np.arange(t, dtype=np.int64) * 5 + 1
    p1 = rng.integers(0, t, 20_000) * 5 + 1
    p2 = rng.integers(0, t, 20_000) * 5 + 1
    good = score_pairs(feats, ids, p1, p2)
    assert np.isfinite(good).all()
    feats[2500, 1000] = np.nan
    feats[1234, 0] = np.inf
    with pytest.raises(InputError, match=r"row 1234 \(template 6171\)"):
        score_pairs(feats, ids, p1, p2)


def test_evaluate_verification_never_scores_nan() -> None:
    # the whole pipeline cannot produce NaN templates (aggregation refuses NaN images), and
    # the scores of finite features are unchanged by the check: the community values
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(60, 8)).astype(np.float32)
    templates = np.repeat(np.arange(20) * 3, 3)
    medias = np.arange(60) // 2
    p1 = rng.choice(templates, 200)
    p2 = rng.choice(templates, 200)
    labels = (np.arange(200) % 4 == 0).astype(np.int64)
    res = evaluate_verification(feats, templates, medias, p1, p2, labels)
    tf, tids = image2template_feature(feats, templates, medias)
    np.testing.assert_allclose(res.scores, verification(tf, tids, p1, p2), atol=2e-6)
    bad = feats.copy()
    bad[7, 3] = np.nan
    with pytest.raises(InputError, match=r"image row 7 \(template 6\)"):
        evaluate_verification(bad, templates, medias, p1, p2, labels)


# --------------------------------------------------------------------------------------------
# 2. 1:N subject ids of mixed kinds
# --------------------------------------------------------------------------------------------


def test_identification_refuses_strings_against_integers() -> None:
    g = np.eye(3, dtype=np.float32)
    with pytest.raises(
        InputError,
        match=r"probe_subjects holds strings \(e\.g\. '1'\) but gallery_subjects holds "
        r"integers \(e\.g\. 1\): subject ids must be of one kind",
    ):
        identification(g, np.array(["1", "2", "3"]), g, np.array([1, 2, 3]))
    with pytest.raises(InputError, match="probe_subjects holds integers .* gallery_subjects holds strings"):
        identification(g, [1, 2, 3], g, ["a", "b", "c"])
    with pytest.raises(InputError, match="probe_subjects holds bytes .* gallery_subjects holds strings"):
        identification(g, [b"a", b"b", b"c"], g, ["a", "b", "c"])
    with pytest.raises(InputError, match="holds strings .* holds integers"):
        identification(g, ["a", "b", "c"], g, np.array([1.0, 2.0, 3.0]))


def test_identification_numeric_kinds_compare_as_int64() -> None:
    rng = np.random.default_rng(3)
    g = unit_rows(rng, 6, 16)
    p = g + 0.05 * unit_rows(rng, 6, 16)
    ints = np.array([5, 6, 7, 8, 9, 10])
    expected = identification(p, ints, g, ints, fpirs=[0.5, 1.0])
    assert expected.n_mated == 6
    for probe_subj, gallery_subj in [
        (ints.astype(np.float64), ints),
        (ints, ints.astype(np.float32)),
        (ints.astype(np.uint16), ints.astype(np.int8)),
        (ints.astype(np.uint64), ints),
    ]:
        res = identification(p, probe_subj, g, gallery_subj, fpirs=[0.5, 1.0])
        np.testing.assert_array_equal(res.mate_rank, expected.mate_rank)
        np.testing.assert_array_equal(res.tpir, expected.tpir)


def test_identification_uint64_and_int64_ids_do_not_merge() -> None:
    # numpy compares uint64 with int64 through float64, where 2**62 + 1 == 2**62 + 2: probe 1
    # was matched with subject 2**62 + 1 and ranked 2 instead of 1
    g = np.eye(2, dtype=np.float32)
    gallery = np.array([2**62 + 1, 2**62 + 2], dtype=np.uint64)
    probes = np.array([2**62 + 1, 2**62 + 2], dtype=np.int64)
    res = identification(g, probes, g, gallery, fpirs=[1.0])
    assert res.mate_rank.tolist() == [1, 1]
    assert res.rank[1] == 1.0


def test_ijb_identification_refuses_mixed_subject_kinds() -> None:
    feats = np.eye(4, dtype=np.float32)
    ids = np.array([1, 2, 3, 4])
    g1 = ([1], ["a"])
    with pytest.raises(InputError, match="G1 subject_ids holds strings .* G2 subject_ids holds integers"):
        ijb_identification(feats, ids, g1, ([2], [200]), ([3, 4], ["a", "b"]))
    with pytest.raises(InputError, match="G1 subject_ids holds strings .* probe subject_ids holds integers"):
        ijb_identification(feats, ids, g1, ([2], ["b"]), ([3, 4], [1, 2]))
    res = ijb_identification(feats, ids, g1, ([2], ["b"]), ([3, 4], ["a", "b"]))
    assert res.n_probes == 2


# --------------------------------------------------------------------------------------------
# 3. ids that int64 cannot hold
# --------------------------------------------------------------------------------------------


def test_aggregate_refuses_float_ids_beyond_int64() -> None:
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    # 1e19 and 2e19 both wrapped to -2**63: two templates merged into one
    with pytest.raises(InputError, match=r"templates\[0\] is 1e\+19, outside the int64 range"):
        aggregate_templates(feats, np.array([1e19, 2e19, 3.0]), [1, 2, 3])
    with pytest.raises(InputError, match=r"medias\[2\] is -1e\+19, outside the int64 range"):
        aggregate_templates(feats, [1, 2, 3], np.array([1.0, 2.0, -1e19]))
    with pytest.raises(InputError, match=r"templates\[1\] is 9.2233720368547758e\+18"):
        aggregate_templates(feats, np.array([1.0, 2.0**63, 3.0]), [1, 2, 3])
    with pytest.raises(InputError, match=r"templates\[0\] is 18446744073709551615, above the int64"):
        aggregate_templates(feats, np.array([2**64 - 1, 1, 2], np.uint64), [1, 2, 3])
    # the edges of the range that int64 does hold are kept exactly
    _, ids = aggregate_templates(feats, np.array([-(2.0**63), 2.0**62, 3.0]), [1, 2, 3])
    assert ids.tolist() == [-(2**63), 3, 2**62]


def test_score_pairs_refuses_ids_beyond_int64() -> None:
    feats = np.eye(2, dtype=np.float32)
    with pytest.raises(InputError, match=r"p1\[1\] is 1e\+19, outside the int64 range"):
        score_pairs(feats, [1, 2], np.array([1.0, 1e19]), [1, 2])
    with pytest.raises(InputError, match=r"p2\[0\] is 9223372036854775808, above the int64 range"):
        score_pairs(feats, [1, 2], [1], np.array([2**63], np.uint64))
    with pytest.raises(InputError, match=r"template_ids\[0\] is -1e\+20"):
        score_pairs(feats, np.array([-1e20, 2.0]), [2], [2])
    p1 = np.array([1.0, 1e19])
    with pytest.raises(InputError, match=r"p1\[1\] is 1e\+19"):
        evaluate_verification(np.eye(2, dtype=np.float32), [1, 2], [1, 2], p1, [2, 1], [1, 0])


def test_non_integral_float_ids_are_refused_as_value_and_type_errors() -> None:
    feats = np.eye(2, dtype=np.float32)
    for bad in (np.array([1.0, 2.5]), np.array([1.0, np.nan])):
        with pytest.raises(InputError, match=r"templates must hold integer ids: templates\[1\]"):
            aggregate_templates(feats, bad, [1, 2])
        with pytest.raises(InputTypeError):  # what such ids raised before
            aggregate_templates(feats, bad, [1, 2])


def test_identification_refuses_subject_ids_that_int64_cannot_hold() -> None:
    g = np.eye(2, dtype=np.float32)
    with pytest.raises(InputError, match=r"probe_subjects\[0\] is 1e\+19, outside the int64 range"):
        identification(g, np.array([1e19, 2e19]), g, np.array([1e19, 2e19]))
    with pytest.raises(InputError, match=r"gallery_subjects\[1\] is 9223372036854775808, above"):
        identification(g, [1, 2], g, np.array([1, 2**63], np.uint64))
    with pytest.raises(InputError, match=r"probe_subjects must hold integer ids: probe_subjects\[1\] is 2\.5"):
        identification(g, np.array([1.0, 2.5]), g, np.array([1, 2]))
    with pytest.raises(InputError, match=r"probe_subjects contains NaN or infinite"):
        identification(g, np.array([1.0, np.inf]), g, np.array([1, 2]))


def test_ijb_identification_refuses_template_ids_that_int64_cannot_hold() -> None:
    feats = np.eye(4, dtype=np.float32)
    g1, g2 = ([1], [100]), ([2], [200])
    probes = ([3, 4], [100, 200])
    with pytest.raises(InputError, match=r"template_ids\[2\] is 1e\+19"):
        ijb_identification(feats, np.array([1.0, 2.0, 1e19, 2e19]), g1, g2, probes)
    with pytest.raises(InputError, match=r"probe template_ids\[1\] is 1e\+19"):
        ijb_identification(feats, [1, 2, 3, 4], g1, g2, (np.array([3.0, 1e19]), [100, 200]))
    with pytest.raises(InputError, match=r"G2 subject_ids\[0\] is 1e\+19"):
        ijb_identification(feats, [1, 2, 3, 4], g1, ([2], np.array([1e19])), probes)
    # integral floats are the same ids as integers
    a = ijb_identification(feats, np.arange(1.0, 5.0), g1, g2, (np.array([3.0, 4.0]), [100, 200]))
    b = ijb_identification(feats, [1, 2, 3, 4], g1, g2, probes)
    np.testing.assert_array_equal(a.tpir, b.tpir)
    assert a.rank == b.rank


# --------------------------------------------------------------------------------------------
# 4. --skip-bad zero rows with --normalize-images
# --------------------------------------------------------------------------------------------


def skip_bad_reference(feats, templates, medias, flip=None, faceness=None):
    """The community procedure (normalised images) on the readable images; skipped (all-zero)
    images enter the media means as zero vectors, as they do without normalisation."""
    zero = ~np.any(feats != 0, axis=1)
    if flip is not None:
        zero &= ~np.any(flip != 0, axis=1)
    ok = ~zero
    x = np.zeros(feats.shape, np.float32)
    x[ok] = community_image_feats(
        feats[ok],
        None if flip is None else flip[ok],
        None if faceness is None else faceness[ok],
        normalize_images=True,
    )
    return image2template_feature(x, templates, medias)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("faceness", [False, True])
@pytest.mark.parametrize("f64", [False, True])
def test_skip_bad_zero_rows_with_normalize_images(flip: bool, faceness: bool, f64: bool) -> None:
    rng = np.random.default_rng(4)
    n, dim, n_templates = 400, 16, 30
    templates = np.concatenate([np.arange(n_templates), rng.integers(0, n_templates, n - n_templates)])
    templates = templates * 11 + 5
    medias = rng.integers(0, 80, n)
    dtype = np.float64 if f64 else np.float32
    feats = rng.normal(size=(n, dim)).astype(dtype)
    fl = rng.normal(size=(n, dim)).astype(dtype) if flip else None
    fs = rng.uniform(0.1, 1.0, n) if faceness else None
    # skipped images: every 7th row (never the first image of a template), exactly zero
    skipped = np.zeros(n, bool)
    skipped[n_templates::7] = True
    feats[skipped] = 0.0
    if fl is not None:
        fl[skipped] = 0.0
    feats[skipped[:, None] & (rng.random((n, dim)) < 0.5)] = -0.0  # either sign of zero
    ours, ids = aggregate_templates(feats, templates, medias, fs, flip_feats=fl, normalize_images=True)
    ref, ref_ids = skip_bad_reference(feats, templates, medias, fl, fs)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)
    # the same rows are no error without normalisation either (the zero rows add nothing)
    plain, _ = aggregate_templates(feats, templates, medias, fs, flip_feats=fl)
    assert np.isfinite(plain).all()


def test_skip_bad_zero_rows_equal_unnormalised_on_unit_features() -> None:
    rng = np.random.default_rng(5)
    feats = unit_rows(rng, 120, 12).astype(np.float64)
    templates = np.arange(120) % 10
    medias = np.arange(120) % 25
    feats[[15, 40, 41, 77]] = 0.0
    a, _ = aggregate_templates(feats, templates, medias, normalize_images=True)
    b, _ = aggregate_templates(feats, templates, medias, normalize_images=False)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_skip_bad_zero_rows_still_errors() -> None:
    feats = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
    # a template whose images were all skipped: the existing zero-template error
    with pytest.raises(InputError, match="template 9 sums to a zero vector"):
        aggregate_templates(feats, [4, 9, 9, 4], [1, 2, 3, 4], normalize_images=True)
    # NaN/inf rows stay an error, named as such
    bad = feats.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match=r"image row 3 \(template 4\) has NaN or infinite"):
        aggregate_templates(bad, [4, 9, 4, 4], [1, 2, 3, 4], normalize_images=True)
    # a NaN weight on a zero row is an error with normalisation as without it
    for normalize in (False, True):
        with pytest.raises(InputError, match=r"weights\[1\] is nan"):
            aggregate_templates(
                feats, [4, 4, 9, 9], [1, 2, 3, 3], [1.0, np.nan, 1.0, 1.0], normalize_images=normalize
            )
    # features cancelled by their flip: zero norm, but not a skipped image
    flip = np.zeros_like(feats)
    flip[0] = [-1.0, 0.0]
    feats2 = feats.copy()
    feats2[1] = [0.0, 1.0]
    with pytest.raises(InputError, match=r"image row 0 \(template 4\) has a feature vector of zero norm"):
        aggregate_templates(feats2, [4, 4, 9, 9], [1, 2, 3, 3], flip_feats=flip, normalize_images=True)


def test_evaluate_verification_with_skipped_images_and_normalisation() -> None:
    rng = np.random.default_rng(6)
    n, dim = 200, 16
    templates = np.arange(n) % 25
    medias = np.arange(n) % 60
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    flip = rng.normal(size=(n, dim)).astype(np.float32)
    faceness = rng.uniform(0.2, 1.0, n)
    skipped = np.arange(n) % 9 == 4
    feats[skipped] = 0.0
    flip[skipped] = 0.0
    p1 = rng.integers(0, 25, 300)
    p2 = rng.integers(0, 25, 300)
    labels = (p1 % 5 == p2 % 5).astype(np.int64)
    res = evaluate_verification(
        feats, templates, medias, p1, p2, labels, faceness=faceness, flip_feats=flip, normalize_images=True
    )
    tf, tids = skip_bad_reference(feats, templates, medias, flip, faceness)
    np.testing.assert_allclose(res.scores, verification(tf, tids, p1, p2), atol=2e-6)


def test_cli_skip_bad_with_normalize_images(tiny_checkpoint, one_thread, tmp_path, capsys) -> None:
    # the reported failure end to end: an unreadable image skipped (a zero feature row) in an
    # evaluation that normalises the images
    from ijb_fixtures import write_ijb
    from vitfree.cli import main

    data = write_ijb(tmp_path / "IJBB", "IJBB", n_subjects=4, seed=4, layout="dataset")
    counts = {t: int((data["templates"] == t).sum()) for t in data["templates"]}
    row = next(i for i, t in enumerate(data["templates"]) if counts[t] > 1)
    (data["image_dir"] / data["names"][row]).unlink()
    out = tmp_path / "out"
    argv = ["eval", "ijbb", "--root", str(tmp_path / "IJBB"), "--model", str(tiny_checkpoint(seed=3))]
    argv += ["--exits", "-1", "--out", str(out), "--no-speed", "--no-plots", "--workers", "0"]
    assert main([*argv, "--skip-bad", "--normalize-images"]) == 0
    assert "skipped 1 unreadable images" in capsys.readouterr().err
