"""The soft spots a new user hits: each fails loudly and early, with plain numbers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ijb_fixtures import write_bin
from model_fixtures import tiny_model
from vitfree.cli import main
from vitfree.data import load_bin
from vitfree.errors import IJBFormatError, NonFiniteFeaturesError
from vitfree.extract import extract_bin, extract_ijb
from vitfree.metrics import tar_at_far
from vitfree.runtime import default_workers

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ijb(ijb_folder) -> Path:
    root, _ = ijb_folder(n_subjects=4, max_images_per_template=2, seed=4)
    return root


def nan_model() -> torch.nn.Module:
    m = tiny_model(seed=2)
    with torch.no_grad():
        m.blocks[1].mlp.fc1.weight[0, 0] = float("nan")  # every image goes NaN from block 2 on
    return m


def test_non_finite_features_are_caught_at_extraction_naming_image_and_exit(ijb, tmp_path) -> None:
    with pytest.raises(NonFiniteFeaturesError, match=r"at exit 2 for IJB image .*1\.jpg \(meta row 0\)"):
        extract_ijb(nan_model(), ijb, tmp_path / "f", exits=[1, 2], batch_size=4, num_workers=0)
    ps = load_bin(write_bin(tmp_path / "x.bin", 2)["path"])
    with pytest.raises(NonFiniteFeaturesError, match=r"at exit 3 for image 0 of x.bin"):
        extract_bin(nan_model(), ps, [1, 3])
    assert extract_bin(nan_model(), ps, [1])[1].shape == (4, 512)  # block 1 is still finite


def test_duplicate_exits_count_once_in_the_api_and_the_cli(tmp_path) -> None:
    from vitfree.synthetic import ijb_features, write_ijb_meta

    model = tiny_model()
    x = torch.zeros(1, 3, 112, 112)
    with torch.no_grad():
        assert list(model.forward_exits(x, [3, 3, 1])) == [3, 1]
    data = ijb_features(scale=0.002, dim=8, seed=1)
    write_ijb_meta(data, tmp_path / "d", "IJBC")
    np.savez(tmp_path / "f.npz", exit_12=data.feats)
    feats = tmp_path / "store"
    feats.mkdir()
    np.save(feats / "exit_12.npy", data.feats)
    out = tmp_path / "o"
    argv = ["eval", "features", str(feats), "--meta", str(tmp_path / "d"), "--out", str(out)]
    assert main([*argv, "--exits", "12,12", "--no-plots", "--no-1n"]) == 0
    assert [e["exit"] for e in json.loads((out / "results.json").read_text())["exits"]] == [12]


def test_error_messages_print_plain_numbers() -> None:
    with pytest.raises(ValueError) as info:
        tar_at_far([0, 1, 1], [0.1, 0.5, 0.9], fars=np.array([0.0]))
    assert "np." not in str(info.value) and "0.0 is outside" in str(info.value)


def _copy(ijb: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ijb"
    shutil.copytree(ijb, root)
    return root


def test_a_bad_pair_file_fails_before_extraction(ijb, tiny_checkpoint, tmp_path, capsys) -> None:
    root = _copy(ijb, tmp_path)
    pairs = root / "IJBC" / "meta" / "ijbc_template_pair_label.txt"
    lines = pairs.read_text().splitlines()
    a, b, _ = lines[3].split()
    lines[3] = f"{a} {b} 7"
    pairs.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    argv = ["eval", "ijbc", "--root", str(root), "--model", str(tiny_checkpoint()), "--out", str(out)]
    assert main([*argv, "--no-speed", "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "ijbc_template_pair_label.txt" in err and ":4" in err
    assert not (out / "features").exists()  # no image was extracted first


def test_1n_csvs_are_checked_against_the_images_before_extraction(ijb, tmp_path) -> None:
    from vitfree.data import load_ijb_1n, load_ijb_meta
    from vitfree.data.ijb import check_1n

    root = _copy(ijb, tmp_path)
    csv = root / "IJBC" / "meta" / "ijbc_1N_probe_mixed.csv"
    csv.write_text(csv.read_text() + "99999991,5,img/x.jpg,1\n")
    with pytest.raises(IJBFormatError, match="1 probe template ids of the 1:N csvs have no image.*99999991"):
        check_1n(load_ijb_1n(root), load_ijb_meta(root, pairs=False))


def test_default_workers_use_every_core_shared_among_ranks(monkeypatch) -> None:
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert default_workers(1) == 16 and default_workers(4) == 4 and default_workers(32) == 1
