"""`vitfree eval ijbc|ijbb|bin|pairs`: a checkpoint in, per-exit tables and files out.

Tiny random-weight checkpoints (``torch.save(model.state_dict())``) on tiny data sets in the
real formats; the numbers are checked against independent references (per-image features
and the community IJB pipeline of tests/reference.py, ``metrics.kfold_accuracy`` on
embeddings computed image by image).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ijb_fixtures import write_bin, write_ijb, write_pair_list
from model_fixtures import reference_features, tiny_model
from reference import community_image_feats, image2template_feature, tar_nearest, verification
from vitfree.cli import build_parser, default_exits, main
from vitfree.data import load_ijb_meta
from vitfree.features import exit_filename, read_manifest
from vitfree.metrics import kfold_accuracy
from vitfree.models import load, preprocess

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint(seed=3)


@pytest.fixture(scope="module")
def ijbc(ijb_folder) -> tuple[Path, dict]:
    return ijb_folder(n_subjects=4, max_images_per_template=2, seed=2)


@pytest.fixture(scope="module")
def ijbc_run(ijbc, ckpt, tmp_path_factory):
    """One `vitfree eval ijbc` run (speed measured), shared by the tests that read it."""
    torch.set_num_threads(1)
    root, _ = ijbc
    out = tmp_path_factory.mktemp("run") / "out"
    argv = ["eval", "ijbc", "--root", str(root), "--model", str(ckpt), "--exits", "1,3"]
    argv += ["--out", str(out), "--batch-size", "4", "--workers", "1"]
    return out, argv


def test_eval_ijbc_end_to_end(ijbc, ckpt, ijbc_run, capsys):
    root, data = ijbc
    out, argv = ijbc_run
    assert main(argv) == 0
    printed = capsys.readouterr()
    table = printed.out
    for col in ("exit 1", "exit 3", "TAR@1e-04", "rank-1", "GFLOPs", "rel. FLOPs", "speed-up"):
        assert col in table
    assert "measuring speed" in printed.err
    res = json.loads((out / "results.json").read_text())
    assert [e["exit"] for e in res["exits"]] == [1, 3]
    assert res["info"]["model"] == str(ckpt) and res["info"]["exits"] == [1, 3]
    cost3 = res["exits"][1]["cost"]
    assert cost3["flop_ratio"] == 1.0 and cost3["speedup"] == 1.0 and cost3["throughput"] > 0
    assert 0 < res["exits"][0]["cost"]["flop_ratio"] < 1
    header = (out / "results.csv").read_text().splitlines()[0]
    assert header.startswith("exit,TAR@1e-06") and header.endswith("GFLOPs,rel. FLOPs,speed-up")
    assert (out / "roc.png").stat().st_size > 0 and (out / "accuracy_vs_cost.png").stat().st_size
    man = read_manifest(out / "features")
    assert man["complete"] and man["exits"] == [1, 3] and man["costs"]["1"]["speedup"] > 0

    # exit 3 against the community pipeline on features computed image by image
    model = load(ckpt)
    meta = load_ijb_meta(root)
    feats, flips = reference_features(model, meta, [3])
    x = community_image_feats(feats[3], flips[3], meta.faceness)
    tf, tids = image2template_feature(x, meta.templates, meta.medias)
    scores = verification(tf, tids, meta.p1, meta.p2)
    ver = res["exits"][1]["verification"]
    want, _ = tar_nearest(meta.labels, scores, ver["fars"])
    np.testing.assert_allclose(
        np.array(ver["tar_nearest"]) / 100, want, atol=0.5 / meta.labels.sum()
    )
    assert "identification" in res["exits"][1]


def test_eval_ijbc_again_resumes_and_equals_eval_features(ijbc, ijbc_run, tmp_path, capsys):
    root, _ = ijbc
    out, argv = ijbc_run
    if not (out / "results.json").exists():
        assert main(argv) == 0
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    assert main([*argv, "--no-speed", "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "0 extracted now" in err and "were done before" in err and "measuring speed" not in err
    again = json.loads((out / "results.json").read_text())
    assert "speedup" not in again["exits"][0]["cost"]  # --no-speed: no speed column
    for a, b in zip(first["exits"], again["exits"]):
        assert a["verification"]["tar_nearest"] == b["verification"]["tar_nearest"]
    # the same features through `eval features` give the same numbers
    other = tmp_path / "feat_eval"
    argv2 = ["eval", "features", str(out / "features"), "--meta", str(root), "--out", str(other)]
    assert main([*argv2, "--no-plots"]) == 0
    via_features = json.loads((other / "results.json").read_text())
    for a, b in zip(first["exits"], via_features["exits"]):
        assert a["verification"]["tar_nearest"] == b["verification"]["tar_nearest"]
        assert a["identification"]["tpir"] == b["identification"]["tpir"]


def test_eval_ijbb_dataset_layout_with_a_missing_image(ckpt, tmp_path, capsys):
    data = write_ijb(tmp_path / "IJBB", "IJBB", n_subjects=4, seed=4, layout="dataset")
    counts = {t: int((data["templates"] == t).sum()) for t in data["templates"]}
    row = next(i for i, t in enumerate(data["templates"]) if counts[t] > 1)
    (data["image_dir"] / data["names"][row]).unlink()
    out = tmp_path / "out"
    argv = ["eval", "ijbb", "--root", str(tmp_path / "IJBB"), "--model", str(ckpt)]
    argv += ["--exits", "-1", "--out", str(out), "--no-speed", "--no-plots", "--workers", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert data["names"][row] in err and "not found" in err and "--skip-bad" in err
    assert main([*argv, "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable images" in captured.err
    res = json.loads((out / "results.json").read_text())
    assert res["info"]["dataset"] == "IJBB" and res["info"]["skipped_images"] == 1
    assert [e["exit"] for e in res["exits"]] == [3]
    assert sorted(res["exits"][0]["identification"]["galleries"]) == ["S1", "S2"]
    man = read_manifest(out / "features")
    assert man["skipped"]["rows"] == [row]
    assert not np.load(out / "features" / exit_filename(3))[row].any()


# --------------------------------------------------------------------------------------
# .bin sets and pair lists
# --------------------------------------------------------------------------------------


def direct_embeddings(model, images, k):
    """emb(image) + emb(flip), one image at a time."""
    out = []
    with torch.inference_mode():
        for img in images:
            a = model.forward_exit(preprocess(img), k)
            b = model.forward_exit(preprocess(np.ascontiguousarray(img[:, ::-1])), k)
            out.append((a + b)[0].numpy())
    return np.stack(out)


def test_eval_bin_py2_and_py3_sets(ckpt, tmp_path, capsys):
    sets = {
        "lfw": write_bin(tmp_path / "lfw.bin", n_pairs=40, protocol=2, seed=1),
        "cfp_fp": write_bin(tmp_path / "cfp_fp.bin", n_pairs=30, protocol=4, seed=2),
    }
    out = tmp_path / "out"
    argv = ["eval", "bin", str(tmp_path / "lfw.bin"), str(tmp_path / "cfp_fp.bin")]
    argv += ["--model", str(ckpt), "--exits", "1,3", "--out", str(out), "--batch-size", "16"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    for col in ("lfw", "cfp_fp", "accuracy", "acc. std", "VAL@1e-03", "GFLOPs", "speed-up"):
        assert col in table
    res = json.loads((out / "results.json").read_text())
    assert list(res["sets"]) == ["lfw", "cfp_fp"]
    model = load(ckpt)
    for name, info in sets.items():
        entry = res["sets"][name]
        assert entry["n_pairs"] == len(info["issame"])
        for ex in entry["exits"]:
            e = direct_embeddings(model, info["images"], ex["exit"])
            want = kfold_accuracy(e[0::2], e[1::2], info["issame"])
            assert ex["accuracy_mean"] == pytest.approx(want.mean * 100, abs=1e-3)
            assert ex["accuracy_std"] == pytest.approx(want.std * 100, abs=1e-3)
            np.testing.assert_allclose(ex["accuracies"], want.accuracies * 100, atol=1e-3)
            assert ex["val_far"] == 1e-3 and "speedup" in ex["cost"]
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("set,exit,accuracy,acc. std,VAL@1e-03,VAL std,GFLOPs")
    assert len(rows) == 1 + 2 * 2
    assert (out / "accuracy_vs_cost.png").stat().st_size > 0


def test_eval_pairs_list(ckpt, tmp_path, capsys):
    info = write_pair_list(tmp_path / "mine", n_pairs=12, seed=5)
    out = tmp_path / "out"
    argv = ["eval", "pairs", str(info["path"]), "--model", str(ckpt), "--exits", "2"]
    argv += ["--out", str(out), "--no-speed", "--no-plots", "--folds", "4"]
    assert main(argv) == 0
    assert "pairs" in capsys.readouterr().out
    ex = json.loads((out / "results.json").read_text())["sets"]["pairs"]["exits"][0]
    e = direct_embeddings(load(ckpt), info["images"], 2)
    want = kfold_accuracy(e[0::2], e[1::2], info["issame"], n_folds=4)
    assert ex["exit"] == 2 and len(ex["accuracies"]) == 4
    assert ex["accuracy_mean"] == pytest.approx(want.mean * 100, abs=1e-3)


# --------------------------------------------------------------------------------------
# errors and help
# --------------------------------------------------------------------------------------


def test_clear_errors(ijbc, ckpt, tmp_path, capsys):
    root, _ = ijbc
    out = str(tmp_path / "out")

    def run(*argv: str) -> str:
        assert main(list(argv)) == 2
        return capsys.readouterr().err

    missing = tmp_path / "nope.pt"
    err = run("eval", "ijbc", "--root", str(root), "--model", str(missing), "--out", out)
    assert f"model checkpoint not found: {missing}" in err
    err = run("eval", "ijbc", "--root", str(tmp_path / "none"), "--model", str(ckpt), "--out", out)
    assert "no IJBC meta folder found" in err and str(tmp_path / "none") in err
    err = run("eval", "ijbb", "--root", str(root), "--model", str(ckpt), "--out", out)
    assert "ijbb_face_tid_mid.txt" in err  # an IJB-C folder has no IJB-B files
    err = run("eval", "bin", str(tmp_path / "lfw.bin"), "--model", str(ckpt), "--out", out)
    assert f"not found: {tmp_path / 'lfw.bin'}" in err
    small = tmp_path / "small.pt"
    torch.save(tiny_model(img_size=90).state_dict(), small)
    err = run("eval", "ijbc", "--root", str(root), "--model", str(small), "--out", out)
    assert "90x90" in err and "112x112" in err
    err = run("eval", "ijbc", "--root", str(root), "--model", str(ckpt), "--out", out,
              "--device", "cpu", "--amp", "bf16")  # fmt: skip
    assert "needs a CUDA device" in err
    err = run("eval", "ijbc", "--root", str(root), "--model", str(ckpt), "--out", out,
              "--exits", "9")  # fmt: skip
    assert "exit 9 is out of range for a 3-block model" in err
    not_a_vit = tmp_path / "cnn.pt"
    torch.save(
        {"conv1.weight": torch.zeros(4, 3, 3, 3), "layer1.0.bn1.weight": torch.zeros(4)}, not_a_vit
    )
    err = run("eval", "bin", str(not_a_vit), "--model", str(not_a_vit), "--out", out)
    assert "IResNet" in err


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser:
    for name in path:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


@pytest.mark.parametrize("command", ["ijbc", "ijbb", "bin", "pairs"])
def test_help_explains_every_option(command, capsys):
    sub = _subparser(build_parser(), "eval", command)
    for action in sub._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
    with pytest.raises(SystemExit) as exc:
        main(["eval", command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for opt in (
        "--model",
        "--arch",
        "--exits",
        "--batch-size",
        "--device",
        "--amp",
        "--no-speed",
        "--out",
    ):
        assert opt in text
    if command.startswith("ijb"):
        for opt in (
            "--root",
            "--workers",
            "--skip-bad",
            "--overwrite",
            "--no-flip",
            "--no-1n",
            "torchrun",
        ):
            assert opt in text
    else:
        assert "--folds" in text and "--far" in text


def test_default_exits():
    assert default_exits(12) == [4, 6, 8, 10, 12]
    assert default_exits(24) == [8, 12, 16, 20, 24]
    assert default_exits(3) == [1, 2, 3]


# --------------------------------------------------------------------------------------
# torchrun
# --------------------------------------------------------------------------------------


def test_torchrun_two_processes_equal_one(ijbc, ckpt, tmp_path):
    root, _ = ijbc
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["eval", "ijbc", "--root", str(root), "--model", str(ckpt), "--exits", "1,3"]
    common += ["--batch-size", "4", "--workers", "1", "--no-speed", "--no-plots"]
    single = tmp_path / "single"
    assert main([*common, "--out", str(single)]) == 0
    dist = tmp_path / "dist"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_addr", "127.0.0.1", "--master_port", str(port), "-m", "vitfree"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [*cmd, *common, "--out", str(dist)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("TAR@1e-04") == 1  # only rank 0 evaluates and prints
    for k in (1, 3):
        for flip in (False, True):
            a = np.load(single / "features" / exit_filename(k, flip))
            b = np.load(dist / "features" / exit_filename(k, flip))
            np.testing.assert_allclose(b, a, rtol=0, atol=1e-6)
    a = json.loads((single / "results.json").read_text())["exits"]
    b = json.loads((dist / "results.json").read_text())["exits"]
    assert [e["verification"]["tar_nearest"] for e in a] == [
        e["verification"]["tar_nearest"] for e in b
    ]
    assert read_manifest(dist / "features")["assembled_from"]["world_size"] == 2
