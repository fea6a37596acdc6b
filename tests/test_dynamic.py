"""Dynamic exits (vitfree.dynamic): compaction equals per-face execution, policies never run
past their deepest exit, the cascades against direct loops, calibration meets its target on
the calibration set (checked with the IJB protocol, not with the calibration code), policy
files, bad arguments, and the command line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import tiny_model
from vitfree import dynamic as dy
from vitfree.errors import CheckpointError, FormatError, InputError, InputTypeError
from vitfree.ijb import evaluate_verification

pytestmark = pytest.mark.usefixtures("one_thread")

DEPTH = 6


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3, depth=DEPTH, embed_dim=32, num_heads=2, num_features=24)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 112, 112, generator=torch.Generator().manual_seed(seed)).clamp(-1, 1)


def _all_exits(model, x: torch.Tensor, exits, flip: bool = True) -> dict[int, np.ndarray]:
    """Features at every exit from one ordinary batched pass (image + flip summed)."""
    with torch.inference_mode():
        a = model.forward_exits(x, list(exits))
        if not flip:
            return {k: v.numpy() for k, v in a.items()}
        b = model.forward_exits(x.flip(3), list(exits))
    return {k: (a[k] + b[k]).numpy() for k in exits}


def _mid_tau(stats: np.ndarray) -> float:
    """A threshold in the widest gap between observed statistics near their median, so that no
    face sits within floating-point noise of it."""
    v = np.sort(stats[:, 1:-1].ravel())
    mid = v[v.size // 4 : 3 * v.size // 4 + 1]
    j = int(np.argmax(np.diff(mid)))
    assert mid[j + 1] - mid[j] > 1e-4
    return float((mid[j] + mid[j + 1]) / 2)


def _stability(model, x, exits, flip=True) -> dy.Policy:
    base = dy.make_policy("stability", exits, tau=1.0)
    return base.with_threshold(_mid_tau(dy.face_statistics(base, _all_exits(model, x, exits, flip))))


# --------------------------------------------------------------------------------------
# execution
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", [True, False])
def test_compaction_equals_each_face_run_alone(model, flip: bool) -> None:
    x = _images(9)
    policy = _stability(model, x, [1, 2, 3, 4, 6], flip)
    emb, exits = dy.run_dynamic(model, x, policy, flip=flip)
    assert emb.dtype == np.float32 and emb.shape == (9, 24) and exits.dtype == np.int64
    assert len(set(exits.tolist())) >= 3  # faces really leave at different exits
    with torch.inference_mode():
        for i in range(9):
            xi = x[i : i + 1]
            k = int(exits[i])
            ref = model.forward_exit(xi, k) + (model.forward_exit(xi.flip(3), k) if flip else 0)
            # within fp tolerance, not bitwise: the GEMM kernels block by batch size
            np.testing.assert_allclose(emb[i], ref[0].numpy(), rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
            alone = dy.run_dynamic(model, xi, policy, flip=flip)
            assert alone.exits[0] == k  # the policy decides the same for the face alone


def test_rows_leave_the_batch_and_no_block_runs_past_the_deepest_checked_exit(model) -> None:
    x = _images(8, seed=1)
    policy = _stability(model, x, [2, 3, 5], True)  # deepest checked exit 5 of 6 blocks
    rows: dict[int, list[int]] = {}
    hooks = [
        blk.register_forward_hook(lambda m, inp, out, j=j: rows.setdefault(j, []).append(out.shape[0]))
        for j, blk in enumerate(model.blocks, start=1)
    ]
    try:
        _, exits = dy.run_dynamic(model, x, policy)
    finally:
        for h in hooks:
            h.remove()
    assert exits.max() <= 5 and set(exits.tolist()) <= {2, 3, 5}
    assert 6 not in rows  # block 6 never ran
    for j in range(1, 6):  # block j ran once, on image + flip rows of the faces still running
        assert rows[j] == [2 * int((exits >= j).sum())], (j, rows[j], exits)


def test_simulation_from_all_exit_features_equals_run_dynamic(model) -> None:
    x = _images(10, seed=2)
    ks = [1, 2, 4, 6]
    feats = _all_exits(model, x, ks)
    stab = _stability(model, x, ks)
    rng = np.random.default_rng(0)
    net = {"mean": rng.normal(size=5).tolist(), "std": (1 + rng.random(5)).tolist(),
           "w1": rng.normal(size=(4, 5)).tolist(), "b1": rng.normal(size=4).tolist(),
           "w2": rng.normal(size=4).tolist(), "b2": 0.3}  # fmt: skip
    learned = dy.make_policy("learned", ks, threshold=0.5, net=net)
    learned = learned.with_threshold(_mid_tau(dy.face_statistics(learned, feats)))
    for policy in (stab, learned):
        sim = dy.simulate(policy, feats)
        run = dy.run_dynamic(model, x, policy)
        np.testing.assert_array_equal(sim.exits, run.exits)
        np.testing.assert_allclose(sim.embeddings, run.embeddings, rtol=1e-4, atol=1e-3)


def test_uint8_faces_are_normalised_as_preprocess_does(model) -> None:
    from vitfree.models import preprocess

    faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    policy = dy.make_policy("stability", [2, 4], tau=0.5)
    a = dy.run_dynamic(model, faces, policy)
    b = dy.run_dynamic(model, preprocess(faces), policy)
    c = dy.run_dynamic(model, torch.from_numpy(faces).permute(0, 3, 1, 2), policy)
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(a.embeddings, c.embeddings)


def test_stability_tau_bounds(model) -> None:
    x = _images(4, seed=4)
    # tau = -1: the first checked exit has no previous one, its statistic is -1 >= -1
    _, exits = dy.run_dynamic(model, x, dy.make_policy("stability", [2, 4, 6], tau=-1.0))
    assert exits.tolist() == [2, 2, 2, 2]
    # tau = 1: nothing is that stable (cosines of different vectors), every face to the end
    _, exits = dy.run_dynamic(model, x, dy.make_policy("stability", [2, 4, 6], tau=1.0))
    assert exits.tolist() == [6, 6, 6, 6]
    with pytest.raises(InputError, match="can never be met"):
        dy.make_policy("stability", [2, 4], tau=1.0001)
    with pytest.raises(InputError, match=r"\[-1, 1\]"):
        dy.make_policy("stability", [2, 4], tau=-1.5)


# --------------------------------------------------------------------------------------
# the cascades against direct loops
# --------------------------------------------------------------------------------------


def test_verification_cascade_against_a_direct_loop() -> None:
    rng = np.random.default_rng(1)
    p, m = 300, 4
    scores = rng.uniform(-0.2, 0.9, (p, m))
    thr = [0.5, 0.45, 0.42, 0.4]
    scales = [0.2, 0.15, 0.1, 0.1]
    pol = dy.make_policy("cascade", [3, 6, 9, 12], far=1e-3, alpha=0.8, thresholds=thr, scales=scales)
    want_s = np.zeros(p)
    want_e = np.zeros(p, dtype=int)
    for i in range(p):
        for j in range(m):
            if j == m - 1 or abs(scores[i, j] - thr[j]) > 0.8 * scales[j]:
                want_s[i] = scores[i, j] - thr[j] + thr[-1]
                want_e[i] = [3, 6, 9, 12][j]
                break
    r = dy.cascade_scores(pol, scores)
    np.testing.assert_array_equal(r.exits, want_e)
    np.testing.assert_allclose(r.scores, want_s, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(r.accept, want_s >= thr[-1])
    assert 3 < len(set(want_e.tolist())) + 1  # a mix of exits
    # lazily: the scoring function is asked only about the pairs still undecided
    asked = []

    def score(k: int, idx: np.ndarray) -> np.ndarray:
        asked.append((k, idx.size))
        return scores[idx, [3, 6, 9, 12].index(k)]

    lazy = dy.cascade_scores(pol, score, n_pairs=p)
    np.testing.assert_array_equal(lazy.exits, want_e)
    np.testing.assert_array_equal(lazy.scores, r.scores)
    assert [n for _, n in asked] == [int((want_e >= k).sum()) for k, _ in asked]
    by_map = dy.cascade_scores(pol, {k: scores[:, j] for j, k in enumerate([3, 6, 9, 12])})
    np.testing.assert_array_equal(by_map.scores, r.scores)


def test_search_cascade_against_a_direct_loop() -> None:
    rng = np.random.default_rng(2)
    ks = [2, 4, 6]
    g, p, d, top = 30, 40, 8, 5
    base_g = rng.normal(size=(g, d))
    gal, prb = {}, {}
    truth = rng.integers(0, g, p)
    for j, k in enumerate(ks):  # deeper exits less noisy
        noise = 1.5 / (j + 1)
        gg = base_g + 0.1 * rng.normal(size=(g, d))
        pp = base_g[truth] + noise * rng.normal(size=(p, d))
        gal[k] = (gg / np.linalg.norm(gg, axis=1, keepdims=True)).astype(np.float32)
        prb[k] = (pp / np.linalg.norm(pp, axis=1, keepdims=True)).astype(np.float32)
    margin = 0.05
    pol = dy.make_policy("search-cascade", ks, top_k=top, margin=margin)
    r = dy.search_cascade(pol, prb, gal)
    for i in range(p):
        s0 = [float(np.dot(prb[2][i].astype(np.float64), gal[2][c])) for c in range(g)]
        cand = sorted(range(g), key=lambda c: (-np.float32(s0[c]), c))[:top]
        for j, k in enumerate(ks):
            sc = [np.float32(np.dot(prb[k][i], gal[k][c])) for c in cand]
            order = sorted(range(top), key=lambda t: (-float(sc[t]), cand[t]))
            cand = [cand[t] for t in order]
            sc = [sc[t] for t in order]
            if j == len(ks) - 1 or float(sc[0]) - float(sc[1]) >= margin:
                break
        assert r.exits[i] == k, i
        assert r.candidates[i].tolist() == cand, i
        np.testing.assert_allclose(r.scores[i], sc, atol=1e-5)
    assert len(set(r.exits.tolist())) >= 2
    deeper = int((r.exits > 2).sum()) + int((r.exits > 4).sum())
    assert r.comparisons == p * g + top * deeper


# --------------------------------------------------------------------------------------
# per-template exits and pairs scored at a common exit (offline)
# --------------------------------------------------------------------------------------


def _template_data(seed: int = 5):
    """Random per-exit features of 60 rows in 12 templates (sparse ids, shuffled rows) and
    2 medias each, with a stability policy whose threshold splits the rows across exits."""
    rng = np.random.default_rng(seed)
    ks = [2, 3, 5, 6]
    n, d = 60, 8
    templates = rng.permutation(np.repeat(np.arange(12) * 7 + 3, 5)).astype(np.int64)
    medias = (templates * 10 + rng.integers(0, 2, n)).astype(np.int64)
    base = rng.normal(size=(n, d))
    feats = {k: (base + (1.0 / (j + 1)) * rng.normal(size=(n, d))).astype(np.float32) for j, k in enumerate(ks)}
    policy = dy.make_policy("stability", ks, tau=0.5)
    policy = policy.with_threshold(float(np.median(dy.face_statistics(policy, feats)[:, 1:-1])))
    return ks, feats, templates, medias, policy, rng


def test_per_template_exits_are_the_deepest_image_exit_of_each_template() -> None:
    ks, feats, templates, _, policy, _ = _template_data()
    own = dy.simulate(policy, feats)
    assert len(set(own.exits.tolist())) >= 3
    r = dy.simulate(policy, feats, per_template=True, templates=templates)
    want = np.array([own.exits[templates == t].max() for t in templates])  # the rule, row by row
    np.testing.assert_array_equal(r.exits, want)
    assert (r.exits >= own.exits).any() and (r.exits > own.exits).any()
    for t in np.unique(templates):  # one exit per template, and the rows' features at that exit
        assert len(set(r.exits[templates == t].tolist())) == 1
    np.testing.assert_array_equal(r.embeddings, np.stack([feats[int(k)][i] for i, k in enumerate(want)]))
    np.testing.assert_array_equal(dy.template_exits(own.exits, templates), want)


def _reference_common_scores(feats, exits, templates, medias, weights, p1, p2):
    from vitfree.ijb import aggregate_templates

    out, where = [], []
    for a, b in zip(p1, p2):
        k = int(min(exits[templates == a].min(), exits[templates == b].min()))  # every image reached k
        tf, ids = aggregate_templates(np.nan_to_num(feats[k]), templates, medias, weights)
        va, vb = tf[np.searchsorted(ids, a)].astype(np.float64), tf[np.searchsorted(ids, b)].astype(np.float64)
        out.append(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb))
        where.append(k)
    return np.array(out), np.array(where)


@pytest.mark.parametrize("per_template", [False, True])
def test_common_exit_scores_against_template_features_aggregated_at_that_exit(per_template: bool) -> None:
    ks, feats, templates, medias, policy, rng = _template_data(6)
    r = dy.simulate(policy, feats, per_template=per_template, templates=templates if per_template else None)
    weights = rng.uniform(0.5, 1.0, templates.shape[0])
    tids = np.unique(templates)
    p1, p2 = rng.choice(tids, 40), rng.choice(tids, 40)
    # an image never passed the exits past its own: NaN there must never be read
    seen = {k: np.where((r.exits >= k)[:, None], v, np.nan).astype(np.float32) for k, v in feats.items()}
    c = dy.common_exit_scores(seen, r.exits, templates, medias, p1, p2, weights=weights)
    ref, where = _reference_common_scores(feats, r.exits, templates, medias, weights, p1, p2)
    np.testing.assert_array_equal(c.pair_exits, where)
    np.testing.assert_allclose(c.scores, ref, atol=1e-5)
    assert c.scores.dtype == np.float32 and len(set(where.tolist())) >= 2
    if per_template:  # every template at one exit: a pair at the shallower template's exit
        te = {int(t): int(r.exits[templates == t][0]) for t in tids}
        assert where.tolist() == [min(te[int(a)], te[int(b)]) for a, b in zip(p1, p2)]
    np.testing.assert_array_equal(c.template_ids, tids)


def test_template_options_bad_arguments() -> None:
    ks, feats, templates, medias, policy, _ = _template_data()
    with pytest.raises(InputError, match="per_template=True needs the template id"):
        dy.simulate(policy, feats, per_template=True)
    with pytest.raises(InputError, match="only used with per_template=True"):
        dy.simulate(policy, feats, templates=templates)
    with pytest.raises(InputTypeError, match="per_template must be True or False"):
        dy.simulate(policy, feats, per_template="yes", templates=templates)
    with pytest.raises(InputError, match="templates has 59 rows, expected 60"):
        dy.simulate(policy, feats, per_template=True, templates=templates[:-1])
    ex = np.full(60, 6)
    with pytest.raises(InputError, match="scored at exit 6 but its features are missing"):
        dy.common_exit_scores({2: feats[2]}, ex, templates, medias, templates[:3], templates[:3])
    with pytest.raises(InputError, match="pair 1: template 999 of p2 has no images"):
        dy.common_exit_scores(feats, ex, templates, medias, templates[:2], np.array([templates[0], 999]))
    with pytest.raises(InputError, match="p1 and p2 differ in length"):
        dy.common_exit_scores(feats, ex, templates, medias, templates[:2], templates[:3])
    with pytest.raises(InputError, match="1-D array of integers"):
        dy.template_exits(ex.astype(float), templates)


# --------------------------------------------------------------------------------------
# calibration (the demo model on a small held-out SYNTHETIC set)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    from vitfree.models import load
    from vitfree.synthetic.sets import write_ijbc

    root = tmp_path_factory.mktemp("dyn")
    write_ijbc(root / "data", 10, seed=31, impostor_ratio=30.0, progress=False)
    demo = load("demo").eval()
    cs = dy.calibration_set(demo, root / "data", list(range(3, 13)), root / "work", num_workers=0,
                            one_n=True, progress=False)  # fmt: skip
    return root, demo, cs


def _direct_stability_exits(feats: dict, ks: list[int], tau: float) -> np.ndarray:
    out = []
    for i in range(feats[ks[0]].shape[0]):
        k_out = ks[-1]
        if tau <= -1:
            k_out = ks[0]
        else:
            for a, b in zip(ks, ks[1:]):
                u, v = feats[a][i].astype(np.float64), feats[b][i].astype(np.float64)
                if b != ks[-1] and u @ v / np.linalg.norm(u) / np.linalg.norm(v) >= tau:
                    k_out = b
                    break
        out.append(k_out)
    return np.array(out)


def _tar(cs: dy.CalibrationSet, feats: np.ndarray, far: float) -> float:
    r = evaluate_verification(feats, cs.templates, cs.medias, cs.p1, cs.p2, cs.labels,
                              faceness=cs.faceness, fars=[far])  # fmt: skip
    return float(r.nearest.tar[0])


def test_calibration_meets_its_target_on_the_calibration_set(small) -> None:
    _, _, cs = small
    ks = list(range(3, 13))
    far = 1e-2  # 30 genuine, about 400 impostor pairs: FAR 1e-2 is about the finest resolved
    full = _tar(cs, cs.feats[12], far)
    pol = dy.calibrate_features("stability", cs, dy.Target("tar_loss", 3.0, far), exits=ks, depth=12)
    ex = _direct_stability_exits(cs.feats, ks, pol.params["tau"])
    feats = np.stack([cs.feats[int(k)][i] for i, k in enumerate(ex)])
    assert _tar(cs, feats, far) >= full - 0.03 - 1e-9
    assert pol.calibration["avg_blocks"] == pytest.approx(ex.mean(), abs=1e-4)
    assert pol.calibration["avg_blocks"] < 12  # it does save something on this set
    # a block budget is met
    pol = dy.calibrate_features("stability", cs, dy.Target("blocks", 5.0, far), exits=ks, depth=12)
    assert _direct_stability_exits(cs.feats, ks, pol.params["tau"]).mean() <= 5.0
    # the verification cascade: decisions rebuilt from the IJB protocol's scores per exit
    ck = [4, 6, 8, 12]
    pol = dy.calibrate_features("cascade", cs, dy.Target("tar_loss", 2.0, far), exits=ck, depth=12)
    per_exit = {k: evaluate_verification(cs.feats[k], cs.templates, cs.medias, cs.p1, cs.p2, cs.labels,
                                         faceness=cs.faceness, fars=[far]).scores for k in ck}  # fmt: skip
    r = dy.cascade_scores(pol, per_exit)
    from vitfree.metrics import tar_at_far

    assert tar_at_far(cs.labels, r.scores, [far])[0] >= full - 0.02 - 1e-9
    assert r.exits.mean() == pytest.approx(pol.calibration["avg_blocks"], abs=1e-4)
    # the search cascade: closed-set rank-1 within its loss
    pol = dy.calibrate_features("search-cascade", cs, dy.Target("rank1_loss", 0.0), exits=ck, depth=12, top_k=4)
    full_r1 = dy.calibrate_features("search-cascade", cs, dy.Target("rank1_loss", 0.0), exits=[12], depth=12)
    assert pol.calibration["rank1_percent"] >= full_r1.calibration["full_rank1_percent"] - 1e-9
    # an impossible budget is a clear error
    with pytest.raises(InputError, match="budget of 2 blocks"):
        dy.calibrate_features("stability", cs, dy.Target("blocks", 2.0, far), exits=ks, depth=12)


def test_learned_policy_is_seeded_and_calibrated(small) -> None:
    _, demo, cs = small
    ks = [3, 6, 9, 12]
    kw = {"identities": 6, "images_per_identity": 3, "seed": 41, "steps": 40, "progress": False}
    a = dy.train_decision_net(demo, ks, **kw)
    b = dy.train_decision_net(demo, ks, **kw)
    assert a["w1"] == b["w1"] and a["b2"] == b["b2"]  # seeded: identical
    assert a["training"]["rows"] == 18 * 3 and a["features"] == list(dy.DECISION_FEATURES)
    pol = dy.calibrate_features("learned", cs, dy.Target("tar_loss", 3.0, 1e-2), exits=ks, depth=12, net=a)
    emb, ex = dy.simulate(pol, cs.feats)
    assert _tar(cs, emb, 1e-2) >= _tar(cs, cs.feats[12], 1e-2) - 0.03 - 1e-9
    faces = np.random.default_rng(0).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    assert set(dy.run_dynamic(demo, faces, pol).exits.tolist()) <= set(ks)


def test_cascade_rows_of_an_ijb_evaluation(small) -> None:
    from vitfree.data import load_ijb_1n, load_ijb_meta
    from vitfree.evaluate import IJBOptions
    from vitfree.metrics import tar_at_far
    from vitfree.store import load_feature_sets

    root, demo, cs = small
    meta, onen = load_ijb_meta(root / "data"), load_ijb_1n(root / "data")
    sets = load_feature_sets(root / "work" / "features")
    ck = [4, 8, 12]
    pol = dy.calibrate_features("cascade", cs, dy.Target("tar_loss", 2.0, 1e-2), exits=ck, depth=12)
    opts = IJBOptions(fars=(1e-2, 1e-1))
    rows, info = dy.dynamic_ijb_results(pol, demo, meta, onen, sets, opts, speed=False, progress=False)
    assert len(rows) == 1 and rows[0].label.startswith("cascade") and rows[0].exit is None
    direct = dy.cascade_scores(pol, {k: cs.pair_scores(cs.feats[k]) for k in ck})
    np.testing.assert_allclose(rows[0].verification.nearest.tar, tar_at_far(meta.labels, direct.scores, [1e-2, 1e-1]))
    assert info["avg_pair_blocks"] == pytest.approx(direct.exits.mean())
    assert 4 <= info["avg_pair_blocks"] <= info["face_blocks"] <= 12
    search = dy.make_policy("search-cascade", ck, top_k=3, margin=0.05)
    rows, info = dy.dynamic_ijb_results(search, demo, meta, onen, sets, opts, speed=False, progress=False)
    assert rows == [] and info["rank1_percent"] == pytest.approx(100 * dy.search_rank1(search, cs)[0], abs=1e-3)


def test_template_options_of_an_ijb_evaluation(small) -> None:
    """The live path (decisions per image, then deeper templates rerun) against the offline
    path on the stored per-exit features; a calibration in the same mode; misuse refused."""
    from vitfree.data import load_ijb_1n, load_ijb_meta
    from vitfree.evaluate import IJBOptions
    from vitfree.metrics import tar_at_far
    from vitfree.store import load_feature_sets

    root, demo, cs = small
    meta, onen = load_ijb_meta(root / "data"), load_ijb_1n(root / "data")
    sets = load_feature_sets(root / "work" / "features")
    ks = [3, 4, 5]  # shallow: the live path runs at most 5 of the 12 blocks
    base = dy.Policy("stability", ks, {"tau": 1.0}, model=dy.model_record(demo))
    pol = base.with_threshold(_mid_tau(dy.face_statistics(base, cs.feats)))
    opts = IJBOptions(fars=(1e-2, 1e-1))
    rows, info = dy.dynamic_ijb_results(pol, demo, meta, onen, sets, opts, speed=False, progress=False,
                                        per_template=True, pair_exit="common")  # fmt: skip
    sim = dy.simulate(pol, cs.feats, per_template=True, templates=cs.templates)
    assert info["per_template"] and info["pair_exit"] == "common" and info["rerun_images"] > 0
    assert info["avg_blocks"] == pytest.approx(sim.exits.mean())
    assert info["blocks_run"] > info["avg_blocks"]  # the rerun images ran their first blocks twice
    ref = dy.common_exit_scores(cs.feats, sim.exits, cs.templates, cs.medias, cs.p1, cs.p2, weights=cs.faceness)
    assert info["avg_pair_exit"] == pytest.approx(ref.pair_exits.mean())
    np.testing.assert_allclose(rows[0].verification.scores, ref.scores, atol=1e-4)
    assert rows[0].identification is None and "common-exit pairs" in rows[0].label
    # a calibration in this mode meets its target in this mode
    cal = dy.calibrate_features("stability", cs, dy.Target("tar_loss", 3.0, 1e-2), exits=ks, depth=12,
                                per_template=True, pair_exit="common")  # fmt: skip
    ex = dy.simulate(cal, cs.feats, per_template=True, templates=cs.templates).exits
    r = dy.common_exit_scores(cs.feats, ex, cs.templates, cs.medias, cs.p1, cs.p2, weights=cs.faceness)
    assert tar_at_far(cs.labels, r.scores, [1e-2])[0] >= _tar(cs, cs.feats[12], 1e-2) - 0.03 - 1e-9
    assert cal.calibration["avg_blocks"] == pytest.approx(ex.mean(), abs=1e-4)
    assert cal.calibration["per_template"] is True and cal.calibration["pair_exit"] == "common"
    cascade = dy.make_policy("cascade", ks, far=1e-2, alpha=1.0, thresholds=[0.3] * 3, scales=[0.1] * 3)
    with pytest.raises(InputError, match="options of face policies"):
        dy.dynamic_ijb_results(cascade, demo, meta, onen, sets, opts, per_template=True, progress=False)
    with pytest.raises(InputError, match="unknown pair_exit 'nearest'"):
        dy.calibrate_features("stability", cs, dy.Target("tar_loss", 3.0), exits=ks, depth=12, pair_exit="nearest")
    with pytest.raises(InputError, match="not of a cascade policy"):
        dy.calibrate_features("cascade", cs, dy.Target("tar_loss", 3.0), exits=ks, depth=12, per_template=True)


# --------------------------------------------------------------------------------------
# policy files and bad arguments
# --------------------------------------------------------------------------------------


def test_policy_files_round_trip_and_refuse_another_model(small, model, tmp_path: Path) -> None:
    _, demo, cs = small
    pol = dy.calibrate_features("stability", cs, dy.Target("tar_loss", 5.0, 1e-2), exits=[4, 8, 12], depth=12,
                                model=dy.model_record(demo))  # fmt: skip
    path = dy.save_policy(pol, tmp_path / "p.json")
    back = dy.load_policy(path, demo)
    assert back == pol
    with pytest.raises(CheckpointError, match="calibrated for another model"):
        dy.load_policy(path, model)
    with pytest.raises(CheckpointError, match="calibrated for another model"):
        dy.resolve_policy(pol, model)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(FormatError, match="not a JSON policy"):
        dy.load_policy(tmp_path / "bad.json")
    d = json.loads(path.read_text())
    d["kind"] = "oracle"
    (tmp_path / "kind.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="unknown policy 'oracle'"):
        dy.load_policy(tmp_path / "kind.json")
    d["kind"], d["params"] = "stability", {"tau": 3}
    (tmp_path / "tau.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="tau.json.*never be met"):
        dy.load_policy(tmp_path / "tau.json")
    with pytest.raises(InputError, match="a policy kind, not a policy file"):
        dy.resolve_policy("stability", demo)
    with pytest.raises(FileNotFoundError):
        dy.load_policy(tmp_path / "missing.json")


def test_bad_arguments(model) -> None:
    with pytest.raises(InputError, match="within \\[0, 100\\]"):
        dy.Target("tar_loss", 150)
    with pytest.raises(InputError, match="budget must be > 0"):
        dy.Target("blocks", 0)
    with pytest.raises(InputError, match="far must lie in"):
        dy.Target("tar_loss", 1.0, far=0.0)
    with pytest.raises(InputError, match="unknown calibration target"):
        dy.Target("speed", 1.0)
    with pytest.raises(InputError, match="unknown policy 'fastest'"):
        dy.make_policy("fastest", [2, 4])
    with pytest.raises(InputError, match="increasing and distinct"):
        dy.make_policy("stability", [4, 2], tau=0.5)
    with pytest.raises(InputTypeError, match="tau must be a number"):
        dy.make_policy("stability", [2, 4], tau="high")
    with pytest.raises(InputError, match="top_k"):
        dy.make_policy("search-cascade", [2, 4], top_k=0, margin=0.1)
    x = _images(2)
    with pytest.raises(InputError, match="the model has 6 blocks"):
        dy.run_dynamic(model, x, dy.make_policy("stability", [4, 8], tau=0.5))
    cascade = dy.make_policy("cascade", [2, 4], far=1e-3, alpha=1.0, thresholds=[0.3, 0.3], scales=[0.1, 0.1])
    with pytest.raises(InputError, match="decides pairs"):
        dy.run_dynamic(model, x, cascade)
    with pytest.raises(InputError, match="one of thresholds per exit"):
        dy.make_policy("cascade", [2, 4], far=1e-3, alpha=1.0, thresholds=[0.3], scales=[0.1, 0.1])
    model.train()
    try:
        with pytest.raises(InputError, match="eval mode"):
            dy.run_dynamic(model, x, dy.make_policy("stability", [2, 4], tau=0.5))
    finally:
        model.eval()
    with pytest.raises(InputError, match="features of the checked exits \\[4\\] are missing"):
        dy.simulate(dy.make_policy("stability", [2, 4], tau=0.5), {2: np.zeros((3, 4))})


# --------------------------------------------------------------------------------------
# command line: calibrate, then evaluate with the policy
# --------------------------------------------------------------------------------------


def test_cli_calibrate_then_eval_with_policy(small, tiny_checkpoint, tmp_path: Path, capsys) -> None:
    from vitfree.cli import main
    from vitfree.synthetic.sets import write_bin

    root, _, _ = small
    pol = tmp_path / "policy.json"
    argv = ["dynamic", "calibrate", "--model", "demo", "--root", str(root / "data"), "--max-tar-loss", "3",
            "--far", "1e-2", "--work", str(root / "work"), "--workers", "0", "--out", str(pol)]  # fmt: skip
    assert main(argv) == 0  # the features in --work are reused (a resumable store)
    assert "stability tau=" in capsys.readouterr().out
    rec = json.loads(pol.read_text())
    assert rec["format"] == dy.POLICY_FORMAT and rec["model"]["fingerprint"] and rec["target"]["value"] == 3.0
    out = tmp_path / "ev"
    argv = ["eval", "ijbc", "--root", str(root / "data"), "--model", "demo", "--exits", "4", "--policy", str(pol),
            "--no-speed", "--no-plots", "--no-1n", "--workers", "0", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    labels = [e["label"] for e in res["exits"]]
    assert labels[0] == "exit 4" and labels[1].startswith("dynamic (stability")
    argv = ["eval", "ijbc", "--root", str(root / "data"), "--model", "demo", "--exits", "4", "--policy-pairs",
            "common", "--no-speed", "--no-plots", "--no-1n", "--workers", "0", "--out", str(out)]  # fmt: skip
    capsys.readouterr()
    assert main(argv) == 2
    assert "options of a dynamic-exit policy (--policy FILE)" in capsys.readouterr().err
    dyn = res["info"]["dynamic"]
    assert dyn["avg_blocks"] == pytest.approx(rec["calibration"]["avg_blocks"], abs=0.5)
    assert 0 < res["exits"][1]["cost"]["flop_ratio"] <= 1.0
    bin_path = tmp_path / "s.bin"
    write_bin(bin_path, 20, seed=2)
    argv = ["eval", "bin", str(bin_path), "--model", "demo", "--exits", "4", "--policy", str(pol), "--no-speed",
            "--no-plots", "--out", str(tmp_path / "bin")]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((tmp_path / "bin" / "results.json").read_text())
    assert any("dynamic" in name for name in res["sets"])
    capsys.readouterr()
    argv = ["eval", "bin", str(bin_path), "--model", str(tiny_checkpoint()), "--policy", str(pol), "--no-speed",
            "--no-plots", "--out", str(tmp_path / "other")]  # fmt: skip
    assert main(argv) == 2
    assert "calibrated for another model" in capsys.readouterr().err
    pol2 = tmp_path / "policy_template.json"
    argv = ["dynamic", "calibrate", "--model", "demo", "--root", str(root / "data"), "--max-blocks", "8",
            "--per-template", "--pairs", "common", "--work", str(root / "work"), "--workers", "0",
            "--out", str(pol2)]  # fmt: skip
    assert main(argv) == 0
    cal = json.loads(pol2.read_text())["calibration"]
    assert cal["per_template"] is True and cal["pair_exit"] == "common"
    argv = ["dynamic", "calibrate", "--model", "demo", "--root", str(root / "data"), "--max-tar-loss", "120",
            "--out", str(pol)]  # fmt: skip
    assert main(argv) == 2
    assert "within [0, 100]" in capsys.readouterr().err
