"""The SYNTHETIC demo face ViT shipped in the package: it loads, reproduces its documented
numbers on a held-out synthetic benchmark, and `vitfree demo` (the main job) runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import vitfree
from vitfree.cli import main
from vitfree.models import demo_weights, load

pytestmark = pytest.mark.usefixtures("one_thread")


def _record() -> dict:
    return json.loads((demo_weights().parent / "model.json").read_text())


def test_the_demo_model_loads_as_documented() -> None:
    model = load("demo")
    cfg = json.loads((demo_weights().parent / "config.json").read_text())
    assert model.depth == 12 and model.config.num_heads == cfg["num_heads"]
    assert model.config.embed_dim == cfg["embed_dim"] and model.config.patch_size == 9
    assert next(model.parameters()).dtype.is_floating_point
    rec = _record()
    assert rec["synthetic"] is True and rec["command"].startswith("vitfree train")
    assert demo_weights().stat().st_size < 25 * 2**20


def test_the_demo_model_reproduces_its_documented_accuracy(tmp_path: Path) -> None:
    reg = _record()["regression"]
    from vitfree.synthetic.sets import write_ijbc

    write_ijbc(tmp_path / "data", reg["subjects"], seed=reg["seed"], preset=reg["preset"],
               impostor_ratio=reg["impostor_ratio"], progress=False)  # fmt: skip
    ev = vitfree.evaluate_ijb(
        load("demo"), tmp_path / "data", tmp_path / "out", exits=reg["exits"], num_workers=0,
        speed=False, plots=False, progress=False, one_n=False,
    )  # fmt: skip
    assert ev is not None
    one_pair = 100.0 / reg["genuine"]  # a float difference may move one genuine pair
    for r, want in zip(ev.results, reg["tar_at_far_percent"]):
        got = [round(float(t) * 100, 2) for t in r.verification.nearest.tar]
        assert got == pytest.approx(want, abs=one_pair + 1e-6), (r.exit, got, want)
    # and depth pays: the deepest exit beats the shallowest
    assert ev.results[-1].verification.auc > ev.results[0].verification.auc


def test_make_demo_runs_at_reduced_size(tmp_path: Path, capsys) -> None:
    argv = ["demo", "--subjects", "5", "--pairs", "20", "--exits", "2,12", "--out", str(tmp_path), "--no-plots"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "SYNTHETIC" in captured.out and "SYNTHETIC" in captured.err
    ijbc = json.loads((tmp_path / "ijbc" / "results.json").read_text())
    assert [e["exit"] for e in ijbc["exits"]] == [2, 12]
    assert "speed-up" in (tmp_path / "ijbc" / "results.csv").read_text()
    bins = json.loads((tmp_path / "bin" / "results.json").read_text())
    assert [e["exit"] for e in bins["sets"]["synthetic_lfw"]["exits"]] == [2, 12]
