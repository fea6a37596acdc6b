"""vitfree.models I/O: checkpoint loading (wrappers, safetensors, architecture inference,
errors), exit-head files, ONNX export checked with onnxruntime, TorchScript."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from models_reference import images, randomize_, reference_forward, rel_err
from safetensors.torch import save_file
from vitfree import models
from vitfree.models import CheckpointError, VisionTransformer, create_model

TOL = 1e-5


@pytest.fixture(scope="module")
def vit_t_sd() -> dict[str, torch.Tensor]:
    """A random vit_t (TransFace head) state_dict, as torch.save would write it."""
    return randomize_(create_model("vit_t", senet=True), seed=2).state_dict()


def tiny_sd(depth: int = 3, senet: bool = False) -> dict[str, torch.Tensor]:
    m = VisionTransformer(embed_dim=64, depth=depth, num_heads=8, senet=senet)
    return randomize_(m, seed=depth).state_dict()


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["plain", "module", "state_dict", "nested", "safetensors"])
def test_load_wrapped_checkpoints(tmp_path: Path, vit_t_sd, wrap: str) -> None:
    path = tmp_path / ("model.safetensors" if wrap == "safetensors" else "model.pt")
    if wrap == "plain":
        torch.save(vit_t_sd, path)
    elif wrap == "module":  # DistributedDataParallel
        torch.save({f"module.{k}": v for k, v in vit_t_sd.items()}, path)
    elif wrap == "state_dict":
        torch.save({"state_dict": vit_t_sd, "epoch": 20, "lr": 0.1}, path)
    elif wrap == "nested":
        torch.save({"state_dict": {f"module.{k}": v for k, v in vit_t_sd.items()}}, path)
    else:
        save_file({k: v.contiguous() for k, v in vit_t_sd.items()}, str(path))
    model = models.load(path)
    assert model.arch == "vit_t" and model.config.senet and not model.training
    x = images(2)
    ref = reference_forward(vit_t_sd, x)["exits"]
    with torch.no_grad():
        out = model.forward_exits(x, [3, 12])
    assert rel_err(out[3], ref[3]) < TOL and rel_err(out[12], ref[12]) < TOL
    for k, v in model.state_dict().items():
        assert torch.equal(v, vit_t_sd[k]), k


def test_load_with_explicit_arch_and_mask_token_following_the_file(tmp_path: Path) -> None:
    sd = randomize_(create_model("vit_t"), seed=3).state_dict()
    del sd["mask_token"]  # e.g. CVLface trained with mask_ratio 0
    torch.save(sd, tmp_path / "m.pth")
    model = models.load(tmp_path / "m.pth", arch="vit_t_dp005_mask0")
    assert model.arch == "vit_t_dp005_mask0" and model.mask_token is None
    assert not model.config.senet


def test_load_infers_architecture_from_shapes() -> None:
    for name in ["vit_t", "vit_s", "vit_b", "vit_l", "vit_h", "cvlface_vit_s", "cvlface_vit_b"]:
        for senet in (False, True):
            with torch.device("meta"):
                sd = create_model(name, senet=senet).state_dict()
            cfg, found = models.infer_config(sd)
            assert found == name
            assert cfg == models.get_config(name, senet=senet)


def test_load_generic_architecture_without_a_name(tmp_path: Path) -> None:
    sd = tiny_sd(depth=3)
    torch.save(sd, tmp_path / "tiny.pt")
    model = models.load(tmp_path / "tiny.pt")
    assert model.arch is None and model.depth == 3 and model.embed_dim == 64
    x = images(1)
    with torch.no_grad():
        assert rel_err(model(x), reference_forward(sd, x)["exits"][3]) < TOL


def test_load_mismatch_lists_missing_unexpected_and_misshaped(tmp_path: Path, vit_t_sd) -> None:
    sd = dict(vit_t_sd)
    del sd["blocks.3.mlp.fc2.bias"]
    sd["blocks.0.attn.qkv.bias"] = torch.zeros(768)
    sd["feature.2.weight"] = torch.zeros(256, 256)
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as e:
        models.load(tmp_path / "bad.pt", arch="vit_t")
    msg = str(e.value)
    assert "does not fit vit_t" in msg
    assert "missing (1): blocks.3.mlp.fc2.bias" in msg
    assert "unexpected (1): blocks.0.attn.qkv.bias" in msg
    assert "mis-shaped (1): feature.2.weight: file (256, 256) vs model (512, 256)" in msg


def test_load_wrong_named_arch(tmp_path: Path, vit_t_sd) -> None:
    torch.save(vit_t_sd, tmp_path / "t.pt")
    with pytest.raises(
        CheckpointError, match=r"(?s)does not fit vit_s.*mis-shaped.*looks like vit_t"
    ):
        models.load(tmp_path / "t.pt", arch="vit_s")
    with pytest.raises(ValueError, match="unknown arch 'vit_q'"):
        models.load(tmp_path / "t.pt", arch="vit_q")


def iresnet_like_state_dict() -> dict[str, torch.Tensor]:
    sd = {"conv1.weight": torch.zeros(64, 3, 3, 3), "bn1.weight": torch.zeros(64)}
    sd["prelu.weight"] = torch.zeros(64)
    for stage, blocks in zip((1, 2, 3, 4), (3, 13, 30, 3)):
        for b in range(blocks):
            sd[f"layer{stage}.{b}.conv1.weight"] = torch.zeros(1)
    sd["fc.weight"] = torch.zeros(512, 25088)
    sd["features.weight"] = torch.zeros(512)
    return sd


@pytest.mark.parametrize(
    "sd, match",
    [
        (iresnet_like_state_dict(), r"IResNet checkpoint \(iresnet100.*ViT face backbones only"),
        (
            {
                "cls_token": torch.zeros(1, 1, 8),
                "patch_embed.proj.weight": torch.zeros(8, 3, 16, 16),
                "pos_embed": torch.zeros(1, 197, 8),
                "head.weight": torch.zeros(1000, 8),
            },
            "classification ViT",
        ),
        ({"weight": torch.zeros(3)}, r"not a face-ViT checkpoint \(first keys: weight\)"),
    ],
)
def test_other_families_are_described(tmp_path: Path, sd, match: str) -> None:
    torch.save(sd, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=match):
        models.load(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=match):
        models.load(tmp_path / "other.pt", arch="vit_s")


def test_unreadable_files_are_explained(tmp_path: Path) -> None:
    whole = tmp_path / "whole.pt"
    torch.save(VisionTransformer(embed_dim=16, depth=1, num_heads=2), whole)  # pickled module
    with pytest.raises(CheckpointError, match=r"weights_only=True.*model.state_dict\(\)"):
        models.load(whole)
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x07")
    with pytest.raises(CheckpointError, match="ONNX model"):
        models.load(onnx_file)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        models.load(junk)
    with pytest.raises(FileNotFoundError):
        models.load(tmp_path / "missing.pt")
    other = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], other)
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        models.load(other)


def test_model_with_exit_heads_round_trips_through_one_file(tmp_path: Path) -> None:
    sd = tiny_sd(depth=3, senet=True)
    base = VisionTransformer(embed_dim=64, depth=3, num_heads=8, senet=True)
    base.load_state_dict(sd)
    base.eval()
    base.set_exit_heads({1: randomize_(base.new_exit_head(), seed=9)})
    torch.save(base.state_dict(), tmp_path / "with_heads.pt")
    loaded = models.load(tmp_path / "with_heads.pt")
    assert sorted(loaded.exit_heads) == ["1"]
    x = images(2)
    with torch.no_grad():
        assert rel_err(loaded.forward_exit(x, 1), base.forward_exit(x, 1)) < TOL


# --------------------------------------------------------------------------------------
# exit-head files
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_exit_head_file_round_trip(tmp_path: Path, suffix: str) -> None:
    sd = tiny_sd(depth=4, senet=True)
    model = VisionTransformer(embed_dim=64, depth=4, num_heads=8, senet=True)
    model.load_state_dict(sd)
    model.eval()
    heads = {k: randomize_(model.new_exit_head(), seed=k).eval() for k in (2, 3)}
    path = tmp_path / f"heads{suffix}"
    models.save_exit_heads(path, heads)
    read = models.read_exit_heads(path)
    assert sorted(read) == [2, 3]
    assert set(read[2]) == set(heads[2].state_dict())
    model.load_exit_heads(path)
    x = images(2)
    with torch.no_grad():
        out = model.forward_exits(x, [2, 3, 4])  # auto: exit heads for 2 and 3
        tokens = reference_forward(sd, x, 8)["tokens"]
        for k in (2, 3):
            want = heads[k](tokens[k])
            assert rel_err(out[k], want) < TOL
        assert rel_err(out[4], reference_forward(sd, x, 8)["exits"][4]) < TOL
    again = tmp_path / f"again{suffix}"
    model.save_exit_heads(again)
    assert {k: sorted(v) for k, v in models.read_exit_heads(again).items()} == {
        k: sorted(v) for k, v in read.items()
    }


def test_exit_head_file_layouts_are_accepted(tmp_path: Path) -> None:
    model = VisionTransformer(embed_dim=64, depth=2, num_heads=8)
    head_sd = model.new_exit_head().state_dict()
    torch.save({"exits": {"2": head_sd}}, tmp_path / "str_keys.pt")
    torch.save({f"exits.1.{k}": v for k, v in head_sd.items()}, tmp_path / "flat.pt")
    assert list(models.read_exit_heads(tmp_path / "str_keys.pt")) == [2]
    assert list(models.read_exit_heads(tmp_path / "flat.pt")) == [1]


def test_exit_head_file_that_does_not_fit(tmp_path: Path) -> None:
    small = VisionTransformer(embed_dim=32, depth=6, num_heads=8)
    models.save_exit_heads(tmp_path / "heads.pt", {5: small.new_exit_head()})
    model = VisionTransformer(embed_dim=64, depth=6, num_heads=8, senet=True)
    with pytest.raises(CheckpointError) as e:
        model.load_exit_heads(tmp_path / "heads.pt")
    msg = str(e.value)
    assert "exit head for exit 5 does not fit this model (D=64, depth=6" in msg
    assert "missing (2): senet.0.weight, senet.2.weight" in msg
    assert "feature.0.weight: file (32, 4608) vs model (64, 9216)" in msg
    short = VisionTransformer(embed_dim=32, depth=4, num_heads=8)
    with pytest.raises(CheckpointError, match="exit head key 5: exit 5 is out of range for a 4"):
        short.load_exit_heads(tmp_path / "heads.pt")
    torch.save(tiny_sd(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="not an exit-head file"):
        model.load_exit_heads(tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="exit-head file, not a model checkpoint"):
        models.load(tmp_path / "heads.pt")


# --------------------------------------------------------------------------------------
# deployment: ONNX and TorchScript
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_t_model(vit_t_sd) -> VisionTransformer:
    model = create_model("vit_t", senet=True)
    model.load_state_dict(vit_t_sd)
    return model.eval()


def test_onnx_export_of_truncated_model_matches_pytorch(tmp_path: Path, vit_t_model) -> None:
    import onnx
    import onnxruntime as ort

    small = vit_t_model.truncate(6)
    path = models.export_onnx(small, tmp_path / "exit6.onnx", opset=18)
    proto = onnx.load(str(path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param  # symbolic batch
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    for b in (1, 3):
        x = images(b, seed=b)
        (got,) = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            want = vit_t_model.forward_exit(x, 6)
        assert got.shape == (b, 512)
        assert rel_err(torch.from_numpy(got), want) < 1e-4
    with pytest.raises(ValueError, match="opset must be >= 17"):
        models.export_onnx(small, tmp_path / "old.onnx", opset=13)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_of_truncated_model(tmp_path: Path, vit_t_model) -> None:
    small = vit_t_model.truncate(-3)
    scripted = models.export_torchscript(small, tmp_path / "exit10.pt")
    loaded = torch.jit.load(str(tmp_path / "exit10.pt"))
    x = images(2)
    with torch.no_grad():
        want = vit_t_model.forward_exit(x, 10)
        assert rel_err(scripted(x), want) < TOL
        assert rel_err(loaded(x), want) < TOL
    assert sum(1 for n, _ in loaded.named_children() if n == "blocks") == 1
    assert len(list(loaded.blocks.children())) == 10


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_full_model_scripts_too(vit_t_model) -> None:
    scripted = torch.jit.script(vit_t_model)
    x = images(1)
    with torch.no_grad():
        assert rel_err(scripted(x), vit_t_model(x)) < TOL
    assert np.isfinite(scripted(x).detach().numpy()).all()
