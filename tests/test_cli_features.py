"""`vitfree eval features` and `vitfree demo` end to end, on files in the real formats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference import community_image_feats, image2template_feature, tar_nearest, verification
from vitfree.cli import main
from vitfree.features import exit_filename, load_feature_sets
from vitfree.synthetic import ijb_1n_split, ijb_features, write_ijb_meta


@pytest.fixture(scope="module")
def ijb(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijb")
    data = ijb_features(scale=0.004, dim=32, seed=3, flip=True)
    write_ijb_meta(data, root / "data", "IJBC")
    feats = root / "features"
    feats.mkdir()
    np.save(feats / exit_filename(12), data.feats)
    np.save(feats / exit_filename(12, True), data.flip_feats)
    weak = data.feats + np.random.default_rng(0).normal(scale=20.0, size=data.feats.shape).astype(np.float32)
    np.save(feats / exit_filename(6), weak)
    return root, data


def test_eval_features_matches_reference(ijb, tmp_path, capsys):
    root, data = ijb
    out = tmp_path / "out"
    rc = main(["eval", "features", str(root / "features"), "--meta", str(root / "data"), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "exit 6" in printed and "exit 12" in printed and "TAR@1e-04" in printed and "rank-1" in printed
    res = json.loads((out / "results.json").read_text())
    assert [e["exit"] for e in res["exits"]] == [6, 12]
    assert (out / "results.csv").read_text().startswith("exit,TAR@1e-06")
    assert (out / "roc.png").stat().st_size > 0 and (out / "accuracy_vs_cost.png").stat().st_size > 0
    # exit 12: community pipeline (flip + detector score), independently computed
    x = community_image_feats(data.feats, data.flip_feats, data.faceness)
    tf, tids = image2template_feature(x, data.templates, data.medias)
    scores = verification(tf, tids, data.p1, data.p2)
    fars = res["exits"][1]["verification"]["fars"]
    ref_tar, _ = tar_nearest(data.labels, scores, fars)
    got = np.array(res["exits"][1]["verification"]["tar_nearest"]) / 100
    np.testing.assert_allclose(got, ref_tar, atol=2.0 / data.labels.sum())
    # 1:N rank-1 against brute force: each probe against its own gallery
    g1, g2, probes = ijb_1n_split(data)
    row = {int(t): i for i, t in enumerate(tids)}
    hits = 0
    for gallery in (g1, g2):
        gf = tf[[row[int(t)] for t in gallery[0]]]
        gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
        for t, s in zip(*probes):
            if s in set(gallery[1].tolist()):
                v = tf[row[int(t)]] / np.linalg.norm(tf[row[int(t)]])
                hits += gallery[1][np.argmax(gf @ v)] == s
    rank1 = res["exits"][1]["identification"]["rank"]["1"] / 100
    assert rank1 == pytest.approx(hits / len(probes[0]), abs=1e-6)


def test_npz_and_flip_halves_give_the_same_numbers(ijb, tmp_path):
    root, data = ijb
    np.savez(tmp_path / "f.npz", exit_12=data.feats, exit_12_flip=data.flip_feats)
    np.save(tmp_path / "halves.npy", np.concatenate([data.feats, data.flip_feats], 1))
    outs = []
    for args in (
        [str(tmp_path / "f.npz")],
        [str(tmp_path / "halves.npy"), "--flip-halves"],
        [str(root / "features"), "--exits", "12"],
    ):
        out = tmp_path / f"out{len(outs)}"
        assert main(["eval", "features", *args, "--meta", str(root / "data"), "--out", str(out), "--no-plots"]) == 0
        outs.append(json.loads((out / "results.json").read_text())["exits"][-1]["verification"]["tar_nearest"])
    assert outs[0] == outs[1] == outs[2]


def test_feature_sets_reader(ijb):
    root, _ = ijb
    sets = load_feature_sets(root / "features")
    assert [s.exit for s in sets] == [6, 12]
    assert sets[0].flip is None and sets[1].flip is not None
    assert isinstance(sets[1].feats, np.memmap)


def test_errors_are_clear(ijb, tmp_path, capsys):
    root, data = ijb
    assert main(["eval", "features", str(tmp_path / "nope.npy"), "--meta", str(root / "data")]) == 2
    assert "features not found" in capsys.readouterr().err
    np.save(tmp_path / "short.npy", data.feats[:-3])
    assert main(["eval", "features", str(tmp_path / "short.npy"), "--meta", str(root / "data"), "--no-plots"]) == 2
    assert "rows but the meta files list" in capsys.readouterr().err
    assert main(["eval", "features", str(root / "features"), "--meta", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    assert main(["eval", "features", str(root / "features"), "--exits", "7", "--meta", str(root / "data")]) == 2
    assert "no features for exits [7]" in capsys.readouterr().err


def test_incomplete_extraction_is_refused(ijb, tmp_path):
    import shutil

    from vitfree.features import read_manifest, write_manifest

    root, _ = ijb
    feats = tmp_path / "features"
    shutil.copytree(root / "features", feats)
    write_manifest(feats, dict(read_manifest(feats), complete=False))
    with pytest.raises(ValueError, match="not complete"):
        load_feature_sets(feats)
    assert len(load_feature_sets(feats, allow_incomplete=True)) == 2


def test_missing_1n_files_are_reported_not_silent(ijb, tmp_path, capsys):
    import shutil

    root, _ = ijb
    data_dir = tmp_path / "data"
    shutil.copytree(root / "data", data_dir)
    for f in (data_dir / "IJBC" / "meta").glob("*.csv"):
        f.unlink()
    out = tmp_path / "out"
    assert main(["eval", "features", str(root / "features"), "--meta", str(data_dir), "--out", str(out), "--no-plots"]) == 0
    assert "skipping 1:N" in capsys.readouterr().err
    assert "identification" not in json.loads((out / "results.json").read_text())["exits"][0]


def test_demo_smoke(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo-features", "--scale", "0.003", "--exits", "6,12", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "SYNTHETIC" in captured.err and "SYNTHETIC" in captured.out
    res = json.loads((out / "results.json").read_text())
    assert [e["exit"] for e in res["exits"]] == [6, 12]
    tar = [e["verification"]["tar_nearest"][2] for e in res["exits"]]
    assert tar[0] < tar[1]  # the deeper synthetic exit is better


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit):
        main(["eval", "features", "--help"])
    text = capsys.readouterr().out
    for opt in ("--meta", "--flip-halves", "--no-faceness", "--normalize-images", "--no-1n", "--search", "--out"):
        assert opt in text
