"""Ordinary mistakes on the command line: rc 2 and one line that says what is wrong, no
traceback; checked before any file is read where they can be."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from vitfree.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    return err


def test_threads_device_and_out_are_checked_before_any_file(tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "none.bin")
    model = str(tmp_path / "none.pt")
    err = run(["eval", "bin", missing, "--model", model, "--threads", "-1"], capsys)
    assert "threads must be >= 0" in err
    err = run(["eval", "bin", missing, "--model", model, "--device", "tpu"], capsys)
    assert "unknown device 'tpu'" in err and "none.pt" not in err
    err = run(["eval", "bin", missing, "--model", model, "--device", "cuda:7"], capsys)
    assert "cuda:7" in err
    err = run(["eval", "bin", missing, "--model", model, "--device", "cpu", "--amp", "fp16"], capsys)
    assert "needs a CUDA device" in err
    afile = tmp_path / "afile"
    afile.write_text("x")
    err = run(["eval", "features", missing, "--meta", str(tmp_path), "--out", str(afile)], capsys)
    assert f"--out {afile} is a file, not a folder" in err
    err = run(["eval", "features", missing, "--meta", str(tmp_path), "--out", "/proc/vitfree/out"], capsys)
    assert "--out /proc/vitfree/out cannot be written" in err


def test_a_meta_path_that_is_a_folder(tmp_path: Path, capsys) -> None:
    meta = tmp_path / "IJBC" / "meta"
    (meta / "ijbc_face_tid_mid.txt").mkdir(parents=True)
    for name in ("ijbc_template_pair_label.txt", "ijbc_name_5pts_score.txt"):
        (meta / name).write_text("")
    feats = tmp_path / "f.npy"
    import numpy as np

    np.save(feats, np.ones((2, 4), np.float32))
    err = run(["eval", "features", str(feats), "--meta", str(tmp_path), "--out", str(tmp_path / "o"), "--no-1n"], capsys)
    assert "ijbc_face_tid_mid.txt is a folder, not a file" in err


@pytest.mark.parametrize(("value", "expect"), [("0", "ignored"), ("-3", "ignored"), ("abc", "ignored"), ("100000", "far above the cores")])
def test_vitfree_num_threads_is_checked(value: str, expect: str) -> None:
    code = "import vitfree, numpy as np; from vitfree.metrics import roc_curve; "
    code += "roc_curve(np.array([0, 1, 1]), np.array([0.1, 0.5, 0.9])); print(vitfree.get_num_threads())"
    env = dict(os.environ, VITFREE_NUM_THREADS=value)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert expect in out.stderr
    assert 1 <= int(out.stdout.strip()) <= max(8, 4 * len(os.sched_getaffinity(0)))
