"""The exit-head kinds of vitfree.models.heads: copy, lora, norms, lgvit_local, lgvit_global.

Each kind against a functional reference written here from its definition (LoRA: the merged
weight W + (alpha/r) B A; LGViT: convolutions on the row-major token grid, attention over
2x2-pooled keys), through heads files (only trained tensors stored, the model's shared
weights bound back on load), truncate(k) where a plain-checkpoint equivalent exists, and the
backbone fingerprint that refuses heads of another model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from model_fixtures import tiny_bn_model, tiny_images
from torch import Tensor, nn
from vitfree import models
from vitfree.errors import CheckpointError
from vitfree.models import Head, VisionTransformer, get_config
from vitfree.models.files import backbone_fingerprint, read_exit_heads_file

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ["copy", "lora", "norms", "lgvit_local", "lgvit_global"]
#: kinds whose truncate(k) is a plain checkpoint
FOLDABLE = ["copy", "lora", "norms"]
HEAD_KEYS = {"norm.weight", "norm.bias", "feature.1.weight", "feature.1.bias", "feature.1.running_mean",
             "feature.1.running_var", "feature.1.num_batches_tracked", "feature.2.weight", "feature.3.weight",
             "feature.3.bias", "feature.3.running_mean", "feature.3.running_var",
             "feature.3.num_batches_tracked"}  # fmt: skip


def tiny(depth: int = 3, senet: bool = False, seed: int = 0) -> VisionTransformer:
    return tiny_bn_model(depth, senet, seed)


images = tiny_images


def perturb_(head: nn.Module, seed: int, scale: float = 0.05) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return head


def tokens_of(model: VisionTransformer, x: Tensor, k: int) -> Tensor:
    with torch.no_grad():
        return model.run_blocks(model.embed(x), 0, k)


# --------------------------------------------------------------------------------------
# functional references, from the definitions
# --------------------------------------------------------------------------------------


def ref_checkpoint_head(t: Tensor, norm: dict, senet: dict | None, w0: Tensor, feat: dict) -> Tensor:
    """norm -> [senet] -> flatten -> Linear(w0) -> BN -> Linear -> BN, eval mode."""
    x = F.layer_norm(t, t.shape[-1:], norm["weight"], norm["bias"], 1e-5)
    if senet is not None:
        s = torch.sigmoid(F.relu(x.flatten(1) @ senet["0.weight"].T) @ senet["2.weight"].T)
        x = x * s[:, :, None]
    h = x.flatten(1) @ w0.T

    def bn(v: Tensor, p: str) -> Tensor:
        return (v - feat[f"{p}.running_mean"]) / torch.sqrt(feat[f"{p}.running_var"] + 2e-5) * feat[
            f"{p}.weight"] + feat[f"{p}.bias"]  # fmt: skip

    return bn(bn(h, "1") @ feat["2.weight"].T, "3")


def sub(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def reference(model: VisionTransformer, head: Head, t: Tensor) -> Tensor:
    """The head's embedding computed from its definition and its (and the model's) tensors."""
    hs, ms = head.state_dict(), model.state_dict()
    senet = sub(ms, "senet.") or None
    if head.kind == "copy":
        return ref_checkpoint_head(t, sub(hs, "norm."), sub(hs, "senet.") or None, hs["feature.0.weight"],
                                   sub(hs, "feature."))  # fmt: skip
    if head.kind in ("norms", "lora"):
        w0 = ms["feature.0.weight"]
        if head.kind == "lora":
            r, alpha = head.options()["rank"], head.options()["alpha"]
            w0 = w0 + (alpha / r) * hs["lora_b"] @ hs["lora_a"]
        return ref_checkpoint_head(t, sub(hs, "norm."), senet, w0, sub(hs, "feature."))
    b, n, d = t.shape
    g = int(math.isqrt(n))
    grid = t.reshape(b, g, g, d).permute(0, 3, 1, 2)  # token r*g+c sits at row r, column c
    if head.kind == "lgvit_local":
        y = F.gelu(F.conv2d(grid, hs["local.0.weight"], hs["local.0.bias"]))
        y = F.gelu(F.conv2d(y, hs["local.2.weight"], hs["local.2.bias"], padding=1, groups=y.shape[1]))
        y = F.conv2d(y, hs["local.4.weight"], hs["local.4.bias"])
        t2 = t + y.permute(0, 2, 3, 1).reshape(b, n, d)
    else:
        nh = head.options()["heads"]
        x = F.layer_norm(t, (d,), hs["attn_norm.weight"], hs["attn_norm.bias"], 1e-5)
        xg = x.reshape(b, g // 2, 2, g // 2, 2, d).mean(dim=(2, 4)).reshape(b, -1, d)  # 2x2 means
        q = (x @ hs["q.weight"].T + hs["q.bias"]).reshape(b, n, nh, -1).transpose(1, 2)
        kv = xg @ hs["kv.weight"].T + hs["kv.bias"]
        k_, v_ = kv[..., :d], kv[..., d:]
        k_ = k_.reshape(b, -1, nh, d // nh).transpose(1, 2)
        v_ = v_.reshape(b, -1, nh, d // nh).transpose(1, 2)
        att = torch.softmax(q @ k_.transpose(-1, -2) / math.sqrt(d // nh), dim=-1)
        o = (att @ v_).transpose(1, 2).reshape(b, n, d)
        t2 = t + o @ hs["proj.weight"].T + hs["proj.bias"]
    return ref_checkpoint_head(t2, sub(hs, "norm."), sub(hs, "senet.") or None, hs["feature.0.weight"],
                               sub(hs, "feature."))  # fmt: skip


# --------------------------------------------------------------------------------------
# forward, start, reference
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("senet", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_starts_as_the_shared_head_and_matches_its_definition(kind: str, senet: bool) -> None:
    assert kind in models.head_kinds()
    model = tiny(senet=senet)
    x = images(3)
    t = tokens_of(model, x, 2)
    head = Head.start(model, kind).eval()
    assert head.kind == kind
    with torch.no_grad():
        start = head(t)
        shared = model.forward_head(t)
    assert start.shape == (3, 24) and start.dtype == torch.float32
    # zero update at the start: exactly the training-free exit
    torch.testing.assert_close(start, shared, rtol=0, atol=0)
    perturb_(head, seed=5)
    with torch.no_grad():
        got = head(t)
        want = reference(model, head, t)
    assert (got - shared).abs().max() > 1e-3  # the perturbation shows
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_heads_run_in_float32_under_autocast(kind: str) -> None:
    model = tiny()
    head = perturb_(Head.start(model, kind), seed=2).eval()
    t = tokens_of(model, images(2), 1)
    with torch.no_grad():
        plain = head(t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = head(t.bfloat16())
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, head(t.bfloat16().float()), rtol=0, atol=0)
    torch.testing.assert_close(auto, plain, rtol=0.05, atol=0.05)


# --------------------------------------------------------------------------------------
# what is stored, files, binding
# --------------------------------------------------------------------------------------


def test_light_kinds_store_only_what_they_train() -> None:
    model = tiny(senet=True)
    lora = Head.start(model, "lora", rank=4)
    norms = Head.start(model, "norms")
    assert set(norms.state_dict()) == HEAD_KEYS
    assert set(lora.state_dict()) == HEAD_KEYS | {"lora_a", "lora_b"}
    assert lora.state_dict()["lora_a"].shape == (4, 144 * 32) and lora.state_dict()["lora_b"].shape == (32, 4)
    # the shared first Linear and senet are the model's own tensors, not parameters of the head
    names = {id(p) for p in lora.parameters()}
    assert id(model.feature[0].weight) not in names and id(model.senet[0].weight) not in names
    assert all(p.data_ptr() != model.feature[0].weight.data_ptr() for p in lora.parameters())
    # full-copy kinds hold the whole head
    copy_keys = set(Head.start(model, "copy").state_dict())
    assert {"feature.0.weight", "senet.0.weight"} <= copy_keys
    local = set(Head.start(model, "lgvit_local").state_dict())
    assert copy_keys < local and {"local.0.weight", "local.2.weight", "local.4.weight"} <= local
    glob = set(Head.start(model, "lgvit_global").state_dict())
    assert copy_keys < glob and {"q.weight", "kv.weight", "proj.weight", "attn_norm.weight"} <= glob


def test_sizes_from_shapes_for_vit_s() -> None:
    """Stored tensors per head for vit_s (shapes only, on the meta device)."""
    cfg = get_config("vit_s")
    with torch.device("meta"):
        size = {k: sum(t.numel() for t in Head.create(k, cfg).state_dict().values()) for k in KINDS}
    d, n, f = 512, 144, 512
    copy = 2 * d + n * d * d + (4 * d + 1) + d * f + (4 * f + 1)  # LN, Linear, BN (+ counter), Linear, BN
    assert size["copy"] == copy  # 38.0M values: 152 MB in float32
    assert size["norms"] == copy - n * d * d
    assert size["lora"] == size["norms"] + 8 * n * d + d * 8
    assert size["lora"] < 0.03 * size["copy"] and size["norms"] < 0.01 * size["copy"]
    assert size["lgvit_local"] == copy + (d * d + d) * 2 + 9 * d + d
    assert size["lgvit_global"] == copy + 2 * d + (d * d + d) * 4


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_through_a_heads_file_binds_the_new_model(tmp_path, kind: str, suffix: str) -> None:
    model = tiny(senet=True)
    head = perturb_(Head.start(model, kind), seed=3).eval()
    model.set_exit_heads({2: head})
    x = images(2)
    with torch.no_grad():
        want = model.forward_exits(x, [2, 3])
    path = tmp_path / f"heads{suffix}"
    model.save_exit_heads(path, info={"note": "test"})
    f = read_exit_heads_file(path)
    assert f.version == 3 and f.backbone == backbone_fingerprint(model) and f.info == {"note": "test"}
    assert f.heads[2].kind == kind and set(f.heads[2].state_dict) == set(head.state_dict())
    other = tiny(senet=True)  # the same weights, a different object
    other.load_exit_heads(path)
    assert other.exit_heads_file == str(path) and type(other.exit_heads["2"]) is type(head)
    with torch.no_grad():
        got = other.forward_exits(x, [2, 3])
    torch.testing.assert_close(got[2], want[2], rtol=0, atol=0)
    torch.testing.assert_close(got[3], want[3], rtol=0, atol=0)
    if kind in ("lora", "norms"):  # bound to the new model's weights, not the old one's
        assert other.exit_heads["2"]._shared[0] is other.feature[0]


def test_heads_of_another_backbone_are_refused(tmp_path) -> None:
    model, stranger = tiny(seed=0), tiny(seed=1)
    model.set_exit_heads({1: Head.start(model, "lora")})
    path = tmp_path / "heads.pt"
    model.save_exit_heads(path)
    with pytest.raises(CheckpointError, match="trained on another backbone"):
        stranger.load_exit_heads(path)
    assert len(stranger.exit_heads) == 0
    stranger.load_exit_heads(path, check_backbone=False)  # on purpose: allowed
    assert sorted(stranger.exit_heads) == ["1"]
    # the fingerprint ignores exit heads and the dtype of a float16-exact model
    half = tiny(seed=0)
    with torch.no_grad():
        for t in half.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().float())
    assert backbone_fingerprint(half) == backbone_fingerprint(half.half())
    half.float().set_exit_heads({2: Head.start(half, "copy")})
    assert backbone_fingerprint(half) == backbone_fingerprint(half.half().float())


def test_version_2_files_without_fingerprint_still_load(tmp_path) -> None:
    model = tiny()
    head = perturb_(Head.start(model, "copy"), seed=1)
    torch.save({"format": "vitfree.exit_heads", "version": 2, "exits": {2: head.state_dict()},
                "kinds": {2: "copy"}, "options": {2: {}}}, tmp_path / "v2.pt")  # fmt: skip
    f = read_exit_heads_file(tmp_path / "v2.pt")
    assert f.backbone is None and f.info == {} and f.version == 2
    tiny(seed=9).load_exit_heads(tmp_path / "v2.pt")  # no fingerprint: nothing to check


def test_unbound_light_head_says_how_to_bind() -> None:
    head = Head.create("lora", tiny().config)
    with pytest.raises(RuntimeError, match="not bound to a model.*set_exit_heads"):
        head(torch.zeros(1, 144, 32))


def test_bad_options_are_refused() -> None:
    cfg = tiny().config
    with pytest.raises(ValueError, match="rank must be an integer >= 1"):
        Head.create("lora", cfg, rank=0)
    with pytest.raises(ValueError, match="must divide the width"):
        Head.create("lgvit_global", cfg, heads=5)
    with pytest.raises(CheckpointError, match="exit head for exit 1: .*rank"):
        tiny().set_exit_heads({1: models.HeadSpec("lora", {"rank": -1}, {})})


# --------------------------------------------------------------------------------------
# truncate(k)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("senet", [False, True])
@pytest.mark.parametrize("kind", FOLDABLE)
def test_truncate_folds_the_head_into_a_plain_checkpoint(kind: str, senet: bool) -> None:
    model = tiny(depth=4, senet=senet)
    head = perturb_(Head.start(model, kind), seed=7).eval()
    model.set_exit_heads({2: head})
    x = images(3)
    small = model.truncate(2)
    with torch.no_grad():
        via_exit = model.forward_exits(x, [2])[2]
        via_small = small(x)
    torch.testing.assert_close(via_small, via_exit, rtol=1e-5, atol=1e-5)
    plain = VisionTransformer.from_config(small.config)
    assert set(small.state_dict()) == set(plain.state_dict())  # a plain depth-2 checkpoint
    if kind == "lora":  # the merged weight, checked in float64 with numpy
        hs = head.state_dict()
        r = head.options()["rank"]
        want = model.feature[0].weight.detach().double().numpy() + (
            hs["lora_b"].double().numpy() @ hs["lora_a"].double().numpy()) * (head.options()["alpha"] / r)
        np.testing.assert_allclose(small.feature[0].weight.detach().double().numpy(), want, rtol=0, atol=1e-6)
        assert small.feature[0].weight.data_ptr() != model.feature[0].weight.data_ptr()
    if kind == "norms":  # shares the model's first Linear
        assert small.feature[0] is model.feature[0]


@pytest.mark.parametrize("kind", ["lgvit_local", "lgvit_global"])
def test_lgvit_heads_have_no_plain_checkpoint_form(kind: str) -> None:
    model = tiny()
    model.set_exit_heads({2: Head.start(model, kind)})
    with pytest.raises(NotImplementedError, match=kind):
        model.truncate(2)
    model.truncate(2, heads="shared")  # the shared head still truncates


def test_onnx_export_of_a_model_truncated_at_a_lora_exit(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = tiny(depth=3, senet=True)
    model.set_exit_heads({2: perturb_(Head.start(model, "lora", rank=3), seed=4).eval()})
    path = models.export_onnx(model.truncate(2), tmp_path / "exit2.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images(2)
    (got,) = session.run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = model.forward_exits(x, [2])[2]
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-4)


def test_start_defaults_to_the_class_kind() -> None:
    model = tiny()
    assert type(models.LoRAHead.start(model)) is models.LoRAHead
    assert type(Head.start(model)) is models.ExitHead
    assert Head.start(model, "norms").kind == "norms"
