"""`vitfree analyze` / vitfree.analysis: depth analysis of tokens, attention and exits.

The estimators are checked against independent numpy references (CKA through the centring
matrix, the unbiased HSIC against its U-statistic definition over 4-tuples, the effective rank
against an SVD), and the per-block measures of a tiny random-weight model against direct
computations from ``model.intermediates`` / ``model.forward_exits``.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import tiny_model
from scipy.spatial.distance import jensenshannon
from vitfree.analysis import (
    AnalysisBatch,
    MinibatchCKA,
    analyze,
    effective_rank,
    hsic_unbiased,
    linear_cka,
    open_data,
)
from vitfree.cli import main
from vitfree.errors import InputError, InputTypeError
from vitfree.models import preprocess

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- references


def cka_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.: HSIC(K, L) = tr(K H L H) with the centring matrix H, K = X X^T."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T  # noqa: E741

    def hsic(a, b):
        return np.trace(a @ h @ b @ h)

    return hsic(k, l) / math.sqrt(hsic(k, k) * hsic(l, l))


def hsic_u_statistic(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Song et al. 2012: the unbiased HSIC is the U-statistic over ordered 4-tuples of distinct
    indices of k_ij l_ij + k_ij l_qr - 2 k_ij l_iq."""
    n = k.shape[0]
    total = 0.0
    count = 0
    for i, j, q, r in itertools.permutations(range(n), 4):
        total += k[i, j] * l[i, j] + k[i, j] * l[q, r] - 2 * k[i, j] * l[i, q]
        count += 1
    return total / count


def hsic_formula(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """The closed form of Song et al. 2012 in plain numpy (ones vectors, explicit trace)."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    return (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * (one @ kt @ lt @ one)
    ) / (n * (n - 3))


def minibatch_cka_reference(feats: list[np.ndarray], splits: list[slice]) -> np.ndarray:
    """Nguyen et al. 2021 written directly: summed unbiased HSIC over the minibatches."""
    r = len(feats)
    s = np.zeros((r, r))
    for sl in splits:
        grams = [f[sl] @ f[sl].T for f in feats]
        for a in range(r):
            for b in range(r):
                s[a, b] += hsic_formula(grams[a], grams[b])
    d = np.sqrt(np.diag(s))
    return s / np.outer(d, d)


def random_orthogonal(p: int, rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return q


# ----------------------------------------------------------------------------- estimators


def test_linear_cka_matches_the_centring_matrix_reference():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 12))
    y = x @ rng.standard_normal((12, 7)) + 0.5 * rng.standard_normal((40, 7))
    assert linear_cka(x, y) == pytest.approx(cka_reference(x, y), rel=1e-10)
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert 0.0 < linear_cka(x, y) < 1.0


def test_cka_invariant_to_orthogonal_transforms_and_isotropic_scale():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 10))
    y = np.tanh(x @ rng.standard_normal((10, 16)))
    q = random_orthogonal(16, rng)
    base = linear_cka(x, y)
    assert linear_cka(x * 7.5, y @ q) == pytest.approx(base, rel=1e-10)
    assert linear_cka(x @ random_orthogonal(10, rng), 0.01 * y) == pytest.approx(base, rel=1e-10)
    # the streaming estimator has the same invariances
    plain, moved = MinibatchCKA(2), MinibatchCKA(2)
    for sl in (slice(0, 32), slice(32, 64)):
        plain.update([x[sl], y[sl]])
        moved.update([3.0 * x[sl], y[sl] @ q])
    np.testing.assert_allclose(moved.value(), plain.value(), rtol=1e-10)
    # and it is not invariant to a non-isotropic scaling (the property can fail)
    skewed = MinibatchCKA(2)
    for sl in (slice(0, 32), slice(32, 64)):
        skewed.update([x[sl] * np.arange(1, 11), y[sl]])
    assert abs(skewed.value()[0, 1] - plain.value()[0, 1]) > 1e-3


def test_unbiased_hsic_equals_its_u_statistic_definition():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 3))
    y = x[:, :2] ** 2 + rng.standard_normal((7, 2))
    k, l = x @ x.T, y @ y.T  # noqa: E741
    assert hsic_unbiased(k, l) == pytest.approx(hsic_u_statistic(k, l), rel=1e-10)
    assert hsic_unbiased(k, k) == pytest.approx(hsic_u_statistic(k, k), rel=1e-10)
    with pytest.raises(InputError, match="n >= 4"):
        hsic_unbiased(k[:3, :3], l[:3, :3])


def test_minibatch_cka_one_batch_and_many_batches_match_direct_computations():
    rng = np.random.default_rng(3)
    n = 60
    feats = [rng.standard_normal((n, 5))]
    feats.append(feats[0] @ rng.standard_normal((5, 9)) + rng.standard_normal((n, 9)))
    feats.append(np.sin(feats[1]))
    one = MinibatchCKA(3)
    one.update(feats)
    np.testing.assert_allclose(one.value(), minibatch_cka_reference(feats, [slice(0, n)]), rtol=1e-10)
    # one batch: the CKA of the unbiased HSIC of the whole set
    k = [f @ f.T for f in feats]
    want = hsic_unbiased(k[0], k[1]) / math.sqrt(hsic_unbiased(k[0], k[0]) * hsic_unbiased(k[1], k[1]))
    assert one.value()[0, 1] == pytest.approx(want, rel=1e-10)
    # several (uneven) batches: the summed estimates, as written directly
    splits = [slice(0, 16), slice(16, 40), slice(40, 60)]
    many = MinibatchCKA(3)
    for sl in splits:
        many.update([torch.from_numpy(f[sl]) for f in feats])  # tensors or arrays alike
    np.testing.assert_allclose(many.value(), minibatch_cka_reference(feats, splits), rtol=1e-10)
    assert many.batches == 3 and many.samples == n
    np.testing.assert_allclose(np.diag(many.value()), 1.0)


def test_minibatch_cka_converges_where_averaging_biased_cka_does_not():
    rng = np.random.default_rng(4)
    n, b = 2048, 16
    # independent representations: population CKA 0
    x = rng.standard_normal((n, 30))
    y = rng.standard_normal((n, 30))
    est = MinibatchCKA(2)
    for s in range(0, n, b):
        est.update([x[s : s + b], y[s : s + b]])
    naive = np.mean([linear_cka(x[s : s + b], y[s : s + b]) for s in range(0, n, b)])
    assert abs(est.value()[0, 1]) < 0.05
    assert naive > 0.3  # the per-batch biased CKA is far off: why the unbiased HSIC is used
    # dependent representations: the minibatch estimate approaches the full-data CKA
    y2 = x[:, :10] @ rng.standard_normal((10, 20)) + rng.standard_normal((n, 20))
    est2 = MinibatchCKA(2)
    for s in range(0, n, 64):
        est2.update([x[s : s + 64], y2[s : s + 64]])
    assert est2.value()[0, 1] == pytest.approx(linear_cka(x, y2), abs=0.03)


def test_effective_rank_matches_numpy_svd():
    rng = np.random.default_rng(5)
    e = rng.standard_normal((50, 8)) * np.array([5, 3, 2, 1, 1, 0.5, 0.1, 0.01])
    s = np.linalg.svd(e, compute_uv=False)
    p = s / s.sum()
    want = math.exp(-(p * np.log(p)).sum())
    assert effective_rank(e) == pytest.approx(want, rel=1e-10)
    assert effective_rank(e.T @ e, gram=True) == pytest.approx(want, rel=1e-8)
    assert effective_rank(np.eye(6)) == pytest.approx(6.0)
    assert effective_rank(np.outer(np.ones(5), rng.standard_normal(4))) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- the model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=7, depth=3, embed_dim=32, num_heads=4, num_features=24)


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, size=(12, 3, 112, 112), dtype=np.uint8)
    labels = np.repeat(np.arange(4), 3)
    return images, labels


def stream(images, labels, size):
    for s in range(0, len(images), size):
        yield AnalysisBatch(torch.from_numpy(images[s : s + size]), labels=labels[s : s + size])


def grid_distance(grid: int) -> np.ndarray:
    d = np.zeros((grid * grid, grid * grid))
    for i in range(grid * grid):
        for j in range(grid * grid):
            (ri, ci), (rj, cj) = divmod(i, grid), divmod(j, grid)
            d[i, j] = math.hypot(ri - rj, ci - cj)
    return d


@pytest.fixture(scope="module")
def internals(tiny, faces):
    images, _ = faces
    x = preprocess(torch.from_numpy(images).permute(0, 2, 3, 1))
    with torch.inference_mode():
        inter = tiny.intermediates(x, norm=True, attention=True)
        exits = tiny.forward_exits(x)
    tokens = [inter.tokens[k].double().numpy() for k in (1, 2, 3)]
    attn = [inter.attentions[k].double().numpy() for k in (1, 2, 3)]
    embs = [torch.nn.functional.normalize(exits[k], dim=1).double().numpy() for k in (1, 2, 3)]
    return tokens, attn, embs


def test_token_and_attention_measures_match_model_internals(tiny, faces, internals):
    images, labels = faces
    tokens, attn, embs = internals
    res = analyze(tiny, stream(images, labels, 4), device="cpu", progress=False, pairs_per_batch=100)
    assert res.blocks == [1, 2, 3] and res.n_images == 12

    def cos(a, b):
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    assert res.token_cos_consecutive[0] is None
    for k in (1, 2):
        assert res.token_cos_consecutive[k] == pytest.approx(cos(tokens[k], tokens[k - 1]).mean(), abs=1e-5)
    for k in range(3):
        assert res.token_cos_last[k] == pytest.approx(cos(tokens[k], tokens[2]).mean(), abs=1e-5)

    flat = [t.reshape(12, -1) for t in tokens]
    want = minibatch_cka_reference(flat, [slice(0, 4), slice(4, 8), slice(8, 12)])
    np.testing.assert_allclose(res.cka, want, rtol=1e-6, atol=1e-6)
    assert res.cka_last == pytest.approx(list(want[:, -1]), abs=1e-6)

    dist = grid_distance(12)
    for k in range(3):
        a = attn[k]  # (B, H, N, N)
        entropy = -(a * np.log(a)).sum(-1).mean()
        assert res.attn_entropy[k] == pytest.approx(entropy, rel=1e-5)
        assert res.attn_distance[k] == pytest.approx((a * dist).sum(-1).mean(), rel=1e-5)
        avg = a.mean(1)  # head-averaged (B, N, N)
        np.testing.assert_allclose(res.attn_received[k], avg.mean(1).mean(0), rtol=1e-5)
        np.testing.assert_allclose(res.query_maps[k], avg[:, res.query_patches].mean(0), rtol=1e-5)
        last = attn[2].mean(1)
        js = np.array([[jensenshannon(avg[b, i], last[b, i], base=2) ** 2 for i in range(144)] for b in range(12)])
        assert res.attn_similarity_last[k] == pytest.approx(1 - js.mean(), abs=1e-5)
    prev = attn[0].mean(1)
    js = np.array([[jensenshannon(attn[1].mean(1)[b, i], prev[b, i], base=2) ** 2 for i in range(144)] for b in range(12)])
    assert res.attn_similarity_consecutive[1] == pytest.approx(1 - js.mean(), abs=1e-5)
    assert res.attn_similarity_consecutive[0] is None
    np.testing.assert_allclose(res.attn_received.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(res.mean_face, images.mean(0).transpose(1, 2, 0), rtol=1e-6)


def test_exit_measures_match_forward_exits(tiny, faces, internals):
    images, labels = faces
    _, _, embs = internals
    res = analyze(tiny, stream(images, labels, 6), device="cpu", progress=False, far=0.25)
    for k in range(3):
        assert res.exit_cos_final[k] == pytest.approx((embs[k] * embs[2]).sum(1).mean(), abs=1e-5)
        assert res.effective_rank[k] == pytest.approx(effective_rank(embs[k]), rel=1e-5)
    # within-batch pairs of the two batches of 6 (all kept: fewer than pairs_per_batch)
    pairs = [(s + i, s + j) for s in (0, 6) for i in range(6) for j in range(i + 1, 6)]
    same = np.array([labels[i] == labels[j] for i, j in pairs])
    assert res.genuine_pairs == same.sum() == 12 and res.impostor_pairs == (~same).sum() == 18
    i, j = np.array(pairs).T
    scores = np.stack([(e[i] * e[j]).sum(1) for e in embs], axis=1)
    accept = np.zeros_like(scores, dtype=bool)
    for k in range(3):
        t = res.exit_threshold[k]
        imp = scores[~same, k]
        assert np.isclose(imp, t, atol=1e-5).any()  # an impostor score of that exit
        assert (imp > t + 1e-6).mean() <= 0.25  # at most the FAR of its impostors accepted
        accept[:, k] = scores[:, k] > t
    for k in range(3):
        assert res.exit_agreement[k] == pytest.approx((accept[:, k] == accept[:, 2]).mean())
        assert res.exit_tar[k] == pytest.approx(accept[same, k].mean())
    assert res.exit_agreement[2] == 1.0


def test_streaming_does_not_depend_on_the_batching_except_cka(tiny, faces):
    images, labels = faces
    a = analyze(tiny, stream(images, labels, 12), device="cpu", progress=False)
    b = analyze(tiny, stream(images, labels, 5), device="cpu", progress=False)
    for name in ("token_cos_last", "attn_entropy", "attn_distance", "exit_cos_final", "effective_rank"):
        assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-5), name
    # one batch of 12: the unbiased CKA of the whole set; 5 + 5 + 2: the last left out
    tokens = [t.reshape(12, -1) for t in _norm_tokens(tiny, images)]
    np.testing.assert_allclose(a.cka, minibatch_cka_reference(tokens, [slice(0, 12)]), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b.cka, minibatch_cka_reference(tokens, [slice(0, 5), slice(5, 10)]), rtol=1e-6,
                               atol=1e-6)  # fmt: skip
    assert b.meta["cka_batches"] == 2 and b.meta["batches_left_out_of_cka"] == 1


def _norm_tokens(model, images):
    x = preprocess(torch.from_numpy(images).permute(0, 2, 3, 1))
    with torch.inference_mode():
        inter = model.intermediates(x, norm=True)
    return [inter.tokens[k].double().numpy() for k in sorted(inter.tokens)]


def test_bin_pairs_and_mean_pooled_cka(tiny, faces, tmp_path):
    from ijb_fixtures import write_bin

    info = write_bin(tmp_path / "set.bin", n_pairs=5, seed=3)
    src = open_data(tmp_path / "set.bin", batch_size=5)  # rounded up to 6: pairs stay whole
    batches = list(src.batches())
    assert [len(b) for b in batches] == [6, 4] and src.n_images == 10 and not src.synthetic
    assert batches[0].pairs.tolist() == [[0, 1], [2, 3], [4, 5]]
    assert np.concatenate([b.issame for b in batches]).tolist() == list(info["issame"])
    np.testing.assert_array_equal(batches[0].images.numpy(), info["images"][:6].transpose(0, 3, 1, 2))
    res = analyze(tiny, src.batches(), device="cpu", progress=False, cka_features="mean", far=0.5)
    assert res.genuine_pairs + res.impostor_pairs == 5
    tokens = [t.mean(1) for t in _norm_tokens(tiny, info["images"].transpose(0, 3, 1, 2).copy())]
    np.testing.assert_allclose(res.cka, minibatch_cka_reference(tokens, [slice(0, 6), slice(6, 10)]), rtol=1e-6,
                               atol=1e-6)  # fmt: skip


def test_ijb_and_folder_data_carry_identity_labels(ijb_folder, tmp_path):
    root, expected = ijb_folder(n_subjects=3, max_images_per_template=2, seed=4)
    src = open_data(root, batch_size=4)
    assert src.kind == "ijb" and src.n_images == len(expected["names"])
    labels = np.concatenate([b.labels for b in src.batches()])
    subject = expected["template_subject"]
    assert labels.tolist() == [subject[int(t)] for t in expected["templates"]]

    from vitfree.synthetic.sets import write_image_folder

    write_image_folder(tmp_path / "people", identities=3, images_per_identity=2, progress=False)
    src = open_data(tmp_path / "people", batch_size=4, max_images=5)
    assert src.kind == "folder" and src.synthetic and src.n_images == 5
    batches = list(src.batches())
    assert [len(b) for b in batches] == [4, 1]
    assert np.concatenate([b.labels for b in batches]).tolist() == [0, 0, 1, 1, 2]
    assert batches[0].images.dtype == torch.uint8 and batches[0].images.shape == (4, 3, 112, 112)


def test_synthetic_stream_is_labelled_and_independent_of_the_batch_size():
    a = open_data("synth", batch_size=4, max_images=10, identities=3)
    b = open_data("synth", batch_size=6, max_images=10, identities=3)
    assert a.synthetic and "SYNTHETIC" in a.description["label"]
    ia = torch.cat([x.images for x in a.batches()])
    ib = torch.cat([x.images for x in b.batches()])
    assert ia.shape == (10, 3, 112, 112) and torch.equal(ia, ib)
    assert np.concatenate([x.labels for x in a.batches()]).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


# ----------------------------------------------------------------------------- bad arguments


def test_bad_arguments_give_clear_errors(tiny, tmp_path):
    with pytest.raises(InputError, match="no images"):
        analyze(tiny, [], device="cpu", progress=False)
    with pytest.raises(InputError, match="batch_size must be >= 1, got 0"):
        open_data("synth", batch_size=0)
    with pytest.raises(InputError, match="batch_size must be >= 1, got -3"):
        open_data("synth", batch_size=-3)
    with pytest.raises(InputError, match="needs 4 images"):
        open_data("synth", batch_size=2)
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        open_data(tmp_path / "missing")
    (tmp_path / "faces.txt").write_text("x")
    with pytest.raises(InputError, match="unknown kind of data file"):
        open_data(tmp_path / "faces.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an IJB-B/C root"):
        open_data(tmp_path / "empty")
    imgs = torch.zeros(4, 3, 112, 112, dtype=torch.uint8)
    with pytest.raises(InputError, match="far must lie in"):
        analyze(tiny, [imgs], far=1.5, progress=False)
    with pytest.raises(InputError, match="cka_features"):
        analyze(tiny, [imgs], cka_features="pooled", progress=False)
    with pytest.raises(InputTypeError, match="uint8"):
        analyze(tiny, [imgs.float()], device="cpu", progress=False)
    with pytest.raises(InputError, match="needs 4 images per minibatch"):
        analyze(tiny, [imgs[:3]], device="cpu", progress=False)


# ----------------------------------------------------------------------------- the command


def test_cli_end_to_end_on_synthetic_faces(tiny_checkpoint, tmp_path, capsys):
    ckpt = tiny_checkpoint(seed=1)
    out = tmp_path / "out"
    argv = ["analyze", "--model", str(ckpt), "--data", "synth", "--max-images", "16", "--batch-size", "8"]
    argv += ["--identities", "4", "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "SYNTHETIC" in printed and "CKA last" in printed
    doc = json.loads((out / "analysis.json").read_text())
    assert set(doc) >= {"blocks", "tokens", "cka", "attention", "exits", "meta", "synthetic", "n_images"}
    assert doc["synthetic"] is True and doc["n_images"] == 16 and doc["blocks"] == [1, 2, 3]
    assert "SYNTHETIC" in doc["meta"]["data"]["label"]
    assert len(doc["meta"]["model"]["fingerprint"]) == 24 and doc["meta"]["model"]["path"] == str(ckpt)
    assert np.array(doc["cka"]).shape == (3, 3)
    assert set(doc["tokens"]) == {"cos_consecutive", "cos_last", "cka_last"}
    assert set(doc["attention"]) >= {"similarity_consecutive", "similarity_last", "entropy", "distance",
                                     "received"}  # fmt: skip
    assert np.array(doc["attention"]["received"]).shape == (3, 144)
    assert set(doc["exits"]) >= {"cos_final", "agreement", "tar", "effective_rank"}
    assert doc["exits"]["genuine_pairs"] > 0 and doc["exits"]["impostor_pairs"] > 0
    for name in ("curves", "cka", "attention", "received"):
        png = out / f"analysis_{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_arguments_exit_2(tmp_path, capsys):
    base = ["analyze", "--model", "demo", "--out", str(tmp_path / "o")]
    assert main(base + ["--data", "synth", "--batch-size", "0"]) == 2
    assert "batch_size must be >= 1" in capsys.readouterr().err
    assert main(base + ["--data", str(tmp_path / "nowhere")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not Path(tmp_path / "o" / "analysis.json").exists()
