"""ONNX models run with onnxruntime, and TorchScript archives read without running their code
(vitfree.models.onnx, vitfree.models.torchscript; docs/reproduce.md).

The references are the PyTorch model the files were made from and, for TorchScript,
``torch.jit.load`` of the same file (the way insightface's ``ijb_evals.py`` loads it).
"""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import tiny_model
from vitfree.cli import main
from vitfree.errors import CheckpointError, InputError
from vitfree.models import export_onnx, load
from vitfree.models.onnx import OnnxModel, load_onnx
from vitfree.models.torchscript import is_torchscript_archive, read_torchscript_weights
from vitfree.pipelines import evaluate_ijb

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.usefixtures("one_thread")

DEPTH = 3


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint(seed=0)


@pytest.fixture(scope="module")
def ijb(ijb_folder) -> Path:
    root, _ = ijb_folder(n_subjects=4, max_images_per_template=2, seed=1)
    return root


@pytest.fixture(scope="module")
def onnx_file(ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(load(ckpt), path)
    return path


def _faces(b: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 112, 112, generator=g) * 2 - 1


def test_onnx_embeddings_equal_pytorch(ckpt: Path, onnx_file: Path) -> None:
    model = load(ckpt)
    onnx = load_onnx(onnx_file)
    assert onnx.num_features == 512 and onnx.img_size == 112 and onnx.depth == DEPTH
    for b in (1, 5):
        x = _faces(b, seed=b)
        with torch.inference_mode():
            want = model(x).numpy()
        got = onnx.embed(x.numpy())
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


def test_onnx_evaluation_gives_the_pytorch_tars(
    ijb: Path, ckpt: Path, onnx_file: Path, tmp_path: Path
) -> None:
    kw = dict(num_workers=0, speed=False, plots=False, progress=False, batch_size=4, reproduce="ijb_evals")
    ev_pt = evaluate_ijb(load(ckpt), ijb, tmp_path / "pt", exits=[DEPTH], **kw)
    ev_onnx = evaluate_ijb(load_onnx(onnx_file), ijb, tmp_path / "onnx", **kw)
    assert ev_pt is not None and ev_onnx is not None
    (a,), (b,) = ev_pt.results, ev_onnx.results
    assert b.exit == DEPTH and "ONNX" in b.label
    np.testing.assert_array_equal(a.verification.nearest.tar, b.verification.nearest.tar)
    np.testing.assert_array_equal(a.verification.at_most.tar, b.verification.at_most.tar)
    np.testing.assert_allclose(a.verification.scores, b.verification.scores, atol=1e-5)
    assert a.identification is not None and b.identification is not None
    np.testing.assert_array_equal(a.identification.tpir, b.identification.tpir)
    fa = np.load(tmp_path / "pt" / "features" / "exit_03.npy")
    fb = np.load(tmp_path / "onnx" / "features" / "exit_03.npy")
    np.testing.assert_allclose(fb, fa, rtol=0, atol=1e-5 * float(np.abs(fa).max()))
    info = json.loads((tmp_path / "onnx" / "results.json").read_text())["info"]
    assert info["arch"] == "onnx" and "onnxruntime" in info["runtime"]
    assert info["reproduce"]["conventions"]["pixel_scaling"] == "div128"


def test_onnx_exits_are_a_clear_error(ijb: Path, onnx_file: Path, tmp_path: Path, capsys) -> None:
    onnx = load_onnx(onnx_file)
    assert onnx.resolve_exits(None) == onnx.resolve_exits([-1]) == [DEPTH]
    with pytest.raises(InputError, match="final embedding only.*PyTorch checkpoint"):
        onnx.resolve_exits([1, 2])
    with pytest.raises(InputError, match="PyTorch checkpoint"):
        evaluate_ijb(onnx, ijb, tmp_path / "api", exits=[1, 3], progress=False)
    argv = ["eval", "ijbc", "--root", str(ijb), "--model", str(onnx_file), "--out", str(tmp_path)]
    assert main([*argv, "--exits", "1,3", "--no-speed"]) != 0
    err = capsys.readouterr().err
    assert "ONNX model" in err and "exits [1, 3]" in err and "PyTorch checkpoint" in err
    assert main([*argv, "--arch", "vit_t"]) != 0
    assert "--arch does not apply to an ONNX model" in capsys.readouterr().err
    assert not (tmp_path / "features").exists()  # refused before any work
    # a PyTorch-only command says what the file is
    with pytest.raises(CheckpointError, match="ONNX model"):
        load(onnx_file)


def test_onnx_cli_run(ijb: Path, onnx_file: Path, tmp_path: Path) -> None:
    argv = [
        "eval", "ijbc", "--root", str(ijb), "--model", str(onnx_file), "--out", str(tmp_path),
        "--no-plots", "--workers", "0", "--modes", "N0D1F1,N1D1F1",
    ]  # fmt: skip
    assert main(argv) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert [e["mode"] for e in res["exits"]] == ["N0D1F1", "N1D1F1"]
    assert res["info"]["reproduce"]["preset"] == "eval_ijbc"
    assert res["exits"][0]["cost"] == {}  # no FLOP count for a graph


def test_broken_onnx_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a graph")
    with pytest.raises(CheckpointError, match="not an ONNX model onnxruntime can run"):
        OnnxModel(bad)


# ---------------------------------------------------------------------------------------
# TorchScript
# ---------------------------------------------------------------------------------------


def _jit_save(model: torch.nn.Module, path: Path, how: str) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript deprecation, tracer warnings
        prog = torch.jit.trace(model, torch.zeros(1, 3, 112, 112)) if how == "trace" else torch.jit.script(model)
        prog.save(str(path))
    return path


# a trace keeps only tensors: the head count is inferred as for a state_dict (8 for the
# insightface family); a script keeps the attention modules' num_heads, which is read
@pytest.mark.parametrize(("how", "heads"), [("trace", 8), ("script", 4)])
def test_torchscript_weights_load_without_running_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str, heads: int
) -> None:
    model = tiny_model(seed=2, num_heads=heads)
    ts = _jit_save(model, tmp_path / "model.pt", how)
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    assert is_torchscript_archive(ts) and not is_torchscript_archive(tmp_path / "plain.pt")
    x = _faces(2, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.inference_mode():
            want_jit = torch.jit.load(str(ts))(x)  # how ijb_evals.py runs it
    sd = read_torchscript_weights(ts)
    assert sd.keys() == model.state_dict().keys()
    for k, v in model.state_dict().items():
        assert torch.equal(sd[k], v), k

    def boom(*a, **k):
        raise AssertionError("TorchScript code was loaded")

    monkeypatch.setattr(torch.jit, "load", boom)
    monkeypatch.setattr(torch._C, "import_ir_module", boom)
    monkeypatch.setattr(torch._C, "import_ir_module_from_buffer", boom)
    got_model = load(ts)
    assert got_model.config.num_heads == heads
    with torch.inference_mode():
        got = got_model(x)
        want = model(x)
    assert (got - want).abs().max() <= 1e-6 * want.abs().max()
    assert (got - want_jit).abs().max() <= 1e-5 * want_jit.abs().max()
    assert got_model.depth == DEPTH and len(got_model.forward_exits(x, [1, 3])) == 2


def _rewrite_data_pkl(src: Path, dst: Path, data: bytes) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            body = data if item.filename.endswith("/data.pkl") else zin.read(item.filename)
            zout.writestr(item, body)
    return dst


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_hostile_torchscript_archives_are_refused(tmp_path: Path, capsys) -> None:
    ts = _jit_save(tiny_model(seed=1), tmp_path / "ok.pt", "trace")
    evil = _rewrite_data_pkl(ts, tmp_path / "evil.pt", pickle.dumps(_Evil(), protocol=4))
    with pytest.raises(CheckpointError, match=r"TorchScript archive.*refused the global builtins.print"):
        load(evil)
    assert "pwned" not in capsys.readouterr().out

    # a TorchScript class whose state is not an attribute dict (its __setstate__ is code)
    buf = io.BytesIO()
    buf.write(b"\x80\x02c__torch__.m\nC\n)\x81K\x01b.")  # GLOBAL, EMPTY_TUPLE, NEWOBJ, 1, BUILD
    odd = _rewrite_data_pkl(ts, tmp_path / "odd.pt", buf.getvalue())
    with pytest.raises(CheckpointError, match="__setstate__"):
        load(odd)

    # a TorchScript of something that is not a face ViT is named by its weights
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 4))).save(str(tmp_path / "lin.pt"))
    with pytest.raises(CheckpointError, match="looks like"):
        load(tmp_path / "lin.pt")
