"""CVLface / AdaFace ViTs loaded as published (docs/protocols.md §1.3).

CVLface's ``models/vit/vit.py`` ``VisionTransformer`` has insightface's block, ``norm`` and
``feature`` names and layer order, with patch 8 on 112x112 (14 x 14 = 196 tokens, so
``feature.0`` is ``Linear(196*D, D)``), MLP ratio 5 (``small``) or 3 (``base``), 16 heads for
the base, ``mask_token`` only when trained with masking (``mask_ratio > 0``).  Its research
folders save ``ViTModel.state_dict()`` (keys ``net.*``) as ``pretrained_model/model.pt`` beside
``model.yaml``; its Hugging Face repos save the wrapper's (``model.net.*``) as
``model.safetensors`` beside ``config.json`` (the same settings under ``conf``).

The state_dicts here are written key by key from that layer list (not from vitfree's model),
small (D=64, 3 blocks, 4 heads, patch 8, MLP ratio 5) to keep the tests fast; every exit is
checked against the functional reference of tests/models_reference.py.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from models_reference import images, reference_forward, rel_err
from safetensors.torch import save_file
from vitfree import models
from vitfree.errors import InputError
from vitfree.models import VARIANTS, CheckpointError, ViTConfig, checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-5
D, DEPTH, HEADS, PATCH, RATIO, OUT = 64, 3, 4, 8, 5.0, 32
TINY = ViTConfig(
    embed_dim=D, depth=DEPTH, num_heads=HEADS, patch_size=PATCH, mlp_ratio=RATIO,
    num_features=OUT, mask_token=False,
)  # fmt: skip


# --------------------------------------------------------------------------------------
# CVLface's state_dict, from its layer list
# --------------------------------------------------------------------------------------


def cvlface_shapes(
    d: int = D,
    depth: int = DEPTH,
    patch: int = PATCH,
    mlp_ratio: float = RATIO,
    out: int = OUT,
    mask_token: bool = False,
    img: int = 112,
) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of CVLface's ``VisionTransformer(img_size=img, patch_size=patch,
    embed_dim=d, depth=depth, mlp_ratio=mlp_ratio, num_classes=out, norm_layer="ln",
    mask_ratio=...)``, in its state_dict order (own parameters first, then children)."""
    n = (img // patch) ** 2
    h = int(d * mlp_ratio)
    shapes: dict[str, tuple[int, ...]] = {"pos_embed": (1, n, d)}
    if mask_token:  # created only when mask_ratio != 0
        shapes["mask_token"] = (1, 1, d)
    shapes["patch_embed.proj.weight"] = (d, 3, patch, patch)
    shapes["patch_embed.proj.bias"] = (d,)
    for i in range(depth):
        b = f"blocks.{i}."
        shapes |= {
            b + "norm1.weight": (d,),
            b + "norm1.bias": (d,),
            b + "attn.qkv.weight": (3 * d, d),  # qkv_bias=False
            b + "attn.proj.weight": (d, d),
            b + "attn.proj.bias": (d,),
            b + "norm2.weight": (d,),
            b + "norm2.bias": (d,),
            b + "mlp.fc1.weight": (h, d),
            b + "mlp.fc1.bias": (h,),
            b + "mlp.fc2.weight": (d, h),
            b + "mlp.fc2.bias": (d,),
        }
    shapes |= {"norm.weight": (d,), "norm.bias": (d,), "feature.0.weight": (d, n * d)}
    for j, width in ((1, d), (3, out)):
        if j == 3:
            shapes["feature.2.weight"] = (out, d)
        for leaf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"feature.{j}.{leaf}"] = (width,)
        shapes[f"feature.{j}.num_batches_tracked"] = ()
    return shapes


def cvlface_state_dict(seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    """Random weights of a realistic scale for :func:`cvlface_shapes` (BatchNorm statistics
    random too, so the eval-mode head is exercised)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for k, shape in cvlface_shapes(**kw).items():
        leaf = k.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            sd[k] = torch.tensor(1000, dtype=torch.long)
        elif leaf == "running_var":
            sd[k] = 0.5 + 1.5 * torch.rand(shape, generator=g)
        elif leaf == "running_mean" or k in ("pos_embed", "mask_token"):
            sd[k] = 0.5 * torch.randn(shape, generator=g)
        elif len(shape) == 1 and leaf == "weight":
            sd[k] = 1.0 + 0.2 * torch.randn(shape, generator=g)
        elif len(shape) == 1:
            sd[k] = 0.1 * torch.randn(shape, generator=g)
        else:
            sd[k] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
    return sd


def hf_config(**conf) -> dict:
    """A CVLface Hugging Face config.json (``conf`` holds its model.yaml's settings)."""
    base = {
        "color_space": "RGB",
        "freeze": False,
        "input_size": [3, 112, 112],
        "mask_ratio": 0.0,
        "name": "base",
        "output_dim": 512,
        "start_from": "",
        "yaml_path": "models/vit/configs/v1_base.yaml",
    }
    return {
        "architectures": ["CVLFaceRecognitionModel"],
        "auto_map": {
            "AutoConfig": "wrapper.ModelConfig",
            "AutoModel": "wrapper.CVLFaceRecognitionModel",
        },
        "conf": base | conf,
        "torch_dtype": "float32",
        "transformers_version": "4.33.0",
    }


MODEL_YAML = """\
input_size: [3, 112, 112]
color_space: 'RGB'
name: '{name}'
output_dim: {out}
start_from: ''
freeze: False
{extra}
mask_ratio: 0.0
"""


def write(folder: Path, sd: dict[str, torch.Tensor], suffix: str, prefix: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    sd = {prefix + k: v.contiguous() for k, v in sd.items()}
    if suffix == ".safetensors":
        path = folder / "model.safetensors"
        save_file(sd, str(path))
    else:
        path = folder / "model.pt"
        torch.save(sd, path)
    return path


@pytest.fixture
def tiny_variant(monkeypatch: pytest.MonkeyPatch) -> str:
    """A small named CVLface variant, so that the shipped name-to-variant logic (CVLface's
    ``small``/``base`` -> ``cvlface_vit_s``/``_b``) runs on a small model."""
    monkeypatch.setitem(VARIANTS, "cvlface_tiny", TINY)
    monkeypatch.setitem(checkpoint.CVLFACE_NAMES, "tiny", "cvlface_tiny")
    return "cvlface_tiny"


def check_exits(model: models.VisionTransformer, sd: dict[str, torch.Tensor]) -> None:
    x = images(2, seed=5)
    ref = reference_forward(sd, x, num_heads=HEADS, collect_attention=True)
    with torch.no_grad():
        out = model.forward_exits(x)
        inter = model.intermediates(x, [1, DEPTH], attention=True)
        assert rel_err(model(x), ref["exits"][DEPTH]) < TOL
    assert sorted(out) == list(range(1, DEPTH + 1))
    for k in range(1, DEPTH + 1):
        assert out[k].shape == (2, OUT)
        assert rel_err(out[k], ref["exits"][k]) < TOL, k
    for k in (1, DEPTH):
        assert inter.tokens[k].shape == (2, 196, D)
        assert inter.attentions[k].shape == (2, HEADS, 196, 196)
        assert rel_err(inter.attentions[k], ref["attention"][k]) < TOL


# --------------------------------------------------------------------------------------
# key names, shapes, named variants
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mask_token", [False, True])
def test_vitfree_model_has_cvlface_names_and_shapes(mask_token: bool) -> None:
    want = cvlface_shapes(mask_token=mask_token)
    with torch.device("meta"):
        model = models.VisionTransformer.from_config(TINY.replace(mask_token=mask_token))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == want
    assert model.num_patches == 196 and model.config.grid_size == 14


@pytest.mark.parametrize(
    ("name", "cvl", "depth", "ratio", "heads"),
    [("cvlface_vit_s", "small", 12, 5, 8), ("cvlface_vit_b", "base", 24, 3, 16)],
)
@pytest.mark.parametrize("mask_token", [False, True])
def test_published_sizes_are_named_and_inferred(name, cvl, depth, ratio, heads, mask_token) -> None:
    shapes = cvlface_shapes(512, depth, 8, ratio, 512, mask_token=mask_token)
    with torch.device("meta"):
        made = models.create_model(name, mask_token=mask_token).state_dict()
        sd = {k: torch.empty(s) for k, s in shapes.items()}
    assert {k: tuple(v.shape) for k, v in made.items()} == shapes
    cfg, found = models.infer_config(sd)
    assert found == name and cfg.num_heads == heads and cfg.mask_token == mask_token
    assert cfg.mlp_hidden == 512 * ratio and cfg.num_patches == 196 and cfg.family == "cvlface"
    # CVLface's own config names the size: same answer, head count from the named variant
    cfg2, found2 = models.infer_config(sd, hf_config(name=cvl)["conf"])
    assert (cfg2, found2) == (cfg, found)
    cfg3, found3 = models.infer_config(sd, hf_config(name=cvl))
    assert (cfg3, found3) == (cfg, found)


def test_family_is_recorded_and_described() -> None:
    assert models.get_config("cvlface_vit_b").family == "cvlface"
    for name in ("vit_t", "vit_s", "vit_b", "vit_l", "vit_h", "vit_s_dp005_mask_0"):
        assert models.get_config(name).family == "insightface"
    assert TINY.replace(patch_size=16).family == "custom"
    text = models.get_config("cvlface_vit_b").describe()
    assert text == "D=512, depth=24, 196 tokens (patch 8), mlp 1536, 16 heads, cvlface family"
    assert "insightface family" in models.get_config("vit_s", senet=True).describe()
    model = models.VisionTransformer.from_config(TINY)
    assert "cvlface family" in repr(model)
    assert model.truncate(2).config.family == "cvlface"


# --------------------------------------------------------------------------------------
# loading as distributed
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize("prefix", ["", "net.", "model.net."])
@pytest.mark.parametrize("side", ["config.json", "model.yaml", "num_heads", "shapes", "arch"])
def test_loads_strictly_and_every_exit_matches(
    tmp_path: Path, tiny_variant: str, suffix: str, prefix: str, side: str
) -> None:
    """.safetensors / .pt, keys bare / net. / model.net., and the head count from CVLface's
    config.json, its model.yaml, an explicit num_heads, the named variant the shapes match,
    or arch= with no config beside the file."""
    sd = cvlface_state_dict(seed=1)
    path = write(tmp_path, sd, suffix, prefix)
    arch: ViTConfig | None = None
    if side == "config.json":
        (tmp_path / "config.json").write_text(json.dumps(hf_config(name="tiny", output_dim=OUT)))
    elif side == "model.yaml":
        (tmp_path / "model.yaml").write_text(MODEL_YAML.format(name="tiny", out=OUT, extra=""))
    elif side == "num_heads":  # a hand-written config with the architecture spelled out
        conf = {"patch_size": 8, "hidden_dim": D, "depth": DEPTH, "num_heads": HEADS,
                "mlp_ratio": RATIO, "output_dim": OUT, "img_size": 112, "notes": "ignored"}  # fmt: skip
        (tmp_path / "config.json").write_text(json.dumps({"conf": conf}))
    elif side == "arch":
        arch = TINY
    model = models.load(path, arch)
    assert not model.training and model.config.family == "cvlface"
    assert model.config.num_heads == HEADS and model.mask_token is None
    assert model.arch == (None if side == "arch" else tiny_variant)  # heads agree: named
    got = model.state_dict()
    assert got.keys() == sd.keys()
    for k, v in sd.items():
        assert torch.equal(got[k], v), k
    check_exits(model, sd)


def test_mask_token_follows_the_file(tmp_path: Path, tiny_variant: str) -> None:
    sd = cvlface_state_dict(seed=2, mask_token=True)  # trained with mask_ratio > 0
    path = write(tmp_path, sd, ".safetensors", "net.")
    model = models.load(path)
    assert model.mask_token is not None and torch.equal(model.mask_token, sd["mask_token"])
    check_exits(model, sd)
    model = models.load(path, "cvlface_tiny")
    assert model.mask_token is not None


def test_research_folder_model_yaml_is_read(tmp_path: Path) -> None:
    text = MODEL_YAML.format(name="base", out=512, extra="# a comment\nrpe_config:\n  name: x\n")
    (tmp_path / "model.yaml").write_text(text)
    conf, where = models.read_model_config(tmp_path / "model.pt")
    assert where == tmp_path / "model.yaml"
    assert conf["input_size"] == [3, 112, 112] and conf["name"] == "base"
    assert conf["color_space"] == "RGB" and conf["output_dim"] == 512
    assert conf["mask_ratio"] == 0.0 and conf["freeze"] is False and conf["start_from"] == ""
    assert conf["rpe_config"]  # a nested block is recorded as present
    (tmp_path / "config.json").write_text("{}")  # config.json wins over model.yaml
    assert models.read_model_config(tmp_path / "model.pt") == ({}, tmp_path / "config.json")
    assert models.read_model_config(tmp_path / "elsewhere" / "model.pt") is None


def test_an_unrelated_config_json_is_ignored(tmp_path: Path) -> None:
    model = models.VisionTransformer(embed_dim=32, depth=2, num_heads=8)  # insightface layout
    path = write(tmp_path, model.state_dict(), ".pt")
    (tmp_path / "config.json").write_text(json.dumps({"lr": 0.1, "optimizer": {"beta": 0.9}}))
    loaded = models.load(path)
    assert loaded.config.family == "insightface" and loaded.config.num_heads == 8


# --------------------------------------------------------------------------------------
# what cannot be inferred, what contradicts, what is refused
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["none", "unknown name", "no heads"])
def test_head_count_that_cannot_be_inferred_is_an_error(tmp_path: Path, side: str) -> None:
    path = write(tmp_path, cvlface_state_dict(), ".safetensors", "net.")
    if side == "unknown name":
        (tmp_path / "config.json").write_text(json.dumps(hf_config(name="tiny", output_dim=OUT)))
    elif side == "no heads":
        (tmp_path / "model.yaml").write_text("color_space: RGB\n")
    with pytest.raises(CheckpointError) as e:
        models.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot infer the number of attention heads")
    assert 'arch="cvlface_vit_s" or arch="cvlface_vit_b" (--arch)' in msg
    assert "ViTConfig(img_size=112, patch_size=8, embed_dim=64, depth=3, mlp_ratio=5.0" in msg
    assert "num_heads=H" in msg and "config.json beside the checkpoint" in msg
    if side == "none":
        assert "match no named variant and there is no config.json" in msg
    elif side == "unknown name":
        assert "names 'tiny', which is no named variant" in msg
    with pytest.raises(CheckpointError, match="cannot infer the number of attention heads"):
        models.infer_config(cvlface_state_dict())
    # the way out the message gives
    assert models.load(path, TINY).config.num_heads == HEADS


@pytest.mark.parametrize(
    ("conf", "match"),
    [
        ({"name": "base"}, r"names 'base' \(vitfree's cvlface_vit_b: D=512.*depth 3 \(not 24\)"),
        ({"name": "tiny", "depth": 5}, r"says depth 5, but the checkpoint's tensors have depth 3"),
        ({"name": "tiny", "input_size": [3, 96, 96]}, r"says input_size 96, .* img_size 112"),
        ({"name": "tiny", "mlp_ratio": 4}, r"says mlp_ratio 4.0, .* mlp_ratio 5.0"),
        ({"name": "tiny", "output_dim": 512}, r"says output_dim 512, .* num_features 32"),
        ({"num_heads": 5}, r"5 attention heads \(.*config.json: num_heads\) do not divide .*D=64"),
        ({"depth": "three"}, r"depth = 'three' is not a positive integer"),
        ({"name": 7}, r"name = 7 is not a string"),
    ],
)
def test_config_that_contradicts_the_shapes(tmp_path: Path, conf: dict, match: str) -> None:
    path = write(tmp_path, cvlface_state_dict(), ".safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"conf": conf}))
    with pytest.raises(CheckpointError, match=match):
        models.load(path)


def test_unreadable_config_json(tmp_path: Path) -> None:
    path = write(tmp_path, cvlface_state_dict(), ".safetensors")
    (tmp_path / "config.json").write_text("{name: base")
    with pytest.raises(CheckpointError, match=r"config.json is not valid JSON .*arch= \(--arch\)"):
        models.load(path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="holds a list, not an object"):
        models.load(path)
    assert models.load(path, TINY).config.num_heads == HEADS  # arch= skips the config


def kprpe_state_dict() -> dict[str, torch.Tensor]:
    """CVLface's VisionTransformerWithKPRPE: the plain ViT plus ``keypoint_linear`` (5
    landmarks -> buckets per head and block) and the per-block relative position tables."""
    sd = cvlface_state_dict()
    sd["keypoint_linear.weight"] = torch.zeros(HEADS * DEPTH * 27, 10)
    sd["keypoint_linear.bias"] = torch.zeros(HEADS * DEPTH * 27)
    for i in range(DEPTH):
        sd[f"blocks.{i}.attn.rpe_k.lookup_table_weight"] = torch.zeros(HEADS, 27, D // HEADS)
    return sd


@pytest.mark.parametrize("how", ["keys", "keys+arch", "config.json", "model.yaml"])
def test_kprpe_variants_are_named_and_refused(tmp_path: Path, how: str) -> None:
    sd = kprpe_state_dict() if how.startswith("keys") else cvlface_state_dict()
    path = write(tmp_path, sd, ".safetensors", "model.net.")
    kprpe_yaml = "models/vit_kprpe/configs/v1_base_kprpe_splithead_unshared.yaml"
    if how == "config.json":
        rpe = {"name": "KPRPE_shared", "rpe_on": "k", "ctx_type": "rel_keypoint_splithead_unshared",
               "num_keypoints": 5}  # fmt: skip
        (tmp_path / "config.json").write_text(
            json.dumps(hf_config(yaml_path=kprpe_yaml, rpe_config=rpe))
        )
    elif how == "model.yaml":
        extra = f"yaml_path: {kprpe_yaml}\nrpe_config:\n  name: KPRPE_shared\n  rpe_on: k\n"
        (tmp_path / "model.yaml").write_text(MODEL_YAML.format(name="base", out=512, extra=extra))
    with pytest.raises(CheckpointError) as e:
        models.load(path, TINY if how == "keys+arch" else None)
    msg = str(e.value)
    assert msg.startswith(f"{path} is a KP-RPE variant (keypoint-relative position encoding")
    assert msg.endswith("KP-RPE variants need the 5 landmarks as a second input; not supported")
    assert ("keypoint_linear.weight" in msg) == how.startswith("keys")
    if how == "config.json":
        assert "vit_kprpe" in msg and "KPRPE_shared" in msg
    with pytest.raises(CheckpointError, match="KP-RPE variant"):
        models.infer_config(kprpe_state_dict())


def test_other_cvlface_architectures_are_refused(tmp_path: Path) -> None:
    sd = {k: v for k, v in kprpe_state_dict().items() if not k.startswith("keypoint_linear")}
    path = write(tmp_path, sd, ".pt", "net.")
    with pytest.raises(CheckpointError, match=r"relative position encoding \(iRPE.*rpe_k"):
        models.load(path)
    path = write(tmp_path / "part", cvlface_state_dict(), ".pt", "net.")
    conf = hf_config(name="small", yaml_path="models/part_fvit/configs/v1_small.yaml")
    (tmp_path / "part" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(CheckpointError, match="is a CVLface Part fViT model"):
        models.load(path)


def test_bgr_models_are_flagged(tmp_path: Path, tiny_variant: str, caplog) -> None:
    path = write(tmp_path, cvlface_state_dict(), ".safetensors")
    conf = hf_config(name="tiny", output_dim=OUT, color_space="BGR")
    (tmp_path / "config.json").write_text(json.dumps(conf))
    with caplog.at_level(logging.WARNING, logger="vitfree"):
        models.load(path)
    assert "color_space BGR" in caplog.text and "x.flip(1)" in caplog.text


def test_unknown_arch_name_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, cvlface_state_dict(), ".pt")
    with pytest.raises(InputError, match="unknown arch 'cvlface_vit_x'.*cvlface_vit_b"):
        models.load(path, "cvlface_vit_x")


# --------------------------------------------------------------------------------------
# exits, truncation, FLOPs, export
# --------------------------------------------------------------------------------------


def test_truncate_and_exit_costs_count_196_tokens(tmp_path: Path) -> None:
    sd = cvlface_state_dict(seed=3)
    model = models.load(write(tmp_path, sd, ".safetensors", "net."), TINY)
    x = images(2, seed=7)
    ref = reference_forward(sd, x, num_heads=HEADS)["exits"]
    for k in (1, 2):
        small = model.truncate(k)
        assert small.depth == k and small.config.family == "cvlface"
        with torch.no_grad():
            assert rel_err(small(x), ref[k]) < TOL
    costs = model.exit_costs()
    n, h = 196, int(D * RATIO)
    block = 2 * n * (3 * D * D + D * D + 2 * D * h) + 4 * n * n * D  # linears + q k^T, a v
    embed = 2 * n * D * 3 * PATCH * PATCH
    head = 2 * n * D * D + 2 * D * OUT
    for c in costs:
        assert round(c.gflops * 1e9) == embed + c.exit * block + head, c
    params = sum(
        math.prod(s) for k, s in cvlface_shapes().items()
        if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))
    )  # fmt: skip
    assert costs[-1].params == params
    assert costs[0].params == params - (DEPTH - 1) * (4 * D * D + 2 * D * h + 6 * D + h)


def test_onnx_export_of_truncated_cvlface_model(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    sd = cvlface_state_dict(seed=4)
    model = models.load(write(tmp_path, sd, ".safetensors", "net."), TINY)
    path = models.export_onnx(model.truncate(2), tmp_path / "cvlface_exit2.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for b in (1, 3):
        x = images(b, seed=b)
        (got,) = session.run(None, {"images": x.numpy()})
        assert got.shape == (b, OUT)
        want = reference_forward(sd, x, num_heads=HEADS)["exits"][2]
        assert rel_err(torch.from_numpy(got), want) < 1e-4
