"""vitfree.models: architecture, fidelity to the functional reference, exits, truncation,
costs, bad input and preprocessing.  Loading, exit-head files and export are in
test_models_io.py.

Large variants (vit_b, vit_l, vit_h, CVLface) run only with VITFREE_SLOW=1.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from models_reference import images, randomize_, reference_forward, reference_head, rel_err
from vitfree import models
from vitfree.models import ExitHead, VisionTransformer, create_model, exit_costs, get_config

SLOW = os.environ.get("VITFREE_SLOW") == "1"
slow = pytest.mark.skipif(not SLOW, reason="large variant: set VITFREE_SLOW=1")

TOL = 1e-5  # fidelity: max |a - b| / max |b|, fp32 on CPU


def tiny(depth: int = 4, senet: bool = False, **kw) -> VisionTransformer:
    """A small ViT of the same family (fast exhaustive tests)."""
    cfg = {"embed_dim": 64, "depth": depth, "num_heads": 4, "senet": senet} | kw
    return randomize_(VisionTransformer(**cfg), seed=depth).eval()


@pytest.fixture(scope="module")
def vit_t_senet() -> VisionTransformer:
    return randomize_(create_model("vit_t", senet=True), seed=1).eval()


# --------------------------------------------------------------------------------------
# architecture and names
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, senet, millions",
    [
        ("vit_t", False, 19.1),
        ("vit_s", False, 76.0),
        ("vit_b", False, 113.8),
        ("vit_s", True, 86.7),  # TransFace-S
        ("vit_b", True, 124.5),  # TransFace-B
        ("vit_l", True, 271.6),  # TransFace-L
    ],
)
def test_parameter_counts_match_published(name: str, senet: bool, millions: float) -> None:
    with torch.device("meta"):  # no memory for the big ones
        model = create_model(name, senet=senet)
    n = sum(p.numel() for p in model.parameters())
    assert round(n / 1e6, 1) == millions


def expected_keys(depth: int, senet: bool) -> set[str]:
    """state_dict keys as listed in docs/protocols.md §1."""
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "mask_token"}
    for i in range(depth):
        b = f"blocks.{i}."
        keys |= {
            b + s
            for s in (
                "norm1.weight",
                "norm1.bias",
                "attn.qkv.weight",
                "attn.proj.weight",
                "attn.proj.bias",
                "norm2.weight",
                "norm2.bias",
                "mlp.fc1.weight",
                "mlp.fc1.bias",
                "mlp.fc2.weight",
                "mlp.fc2.bias",
            )
        }
    keys |= {"norm.weight", "norm.bias", "feature.0.weight", "feature.2.weight"}
    for bn in ("feature.1", "feature.3"):
        keys |= {
            f"{bn}.{s}"
            for s in (
                "weight",
                "bias",
                "running_mean",
                "running_var",
                "num_batches_tracked",
            )
        }
    if senet:
        keys |= {"senet.0.weight", "senet.2.weight"}
    return keys


@pytest.mark.parametrize("name", sorted(n for n in models.VARIANTS if not n.startswith("cvl")))
@pytest.mark.parametrize("senet", [False, True])
def test_state_dict_names_and_shapes(name: str, senet: bool) -> None:
    with torch.device("meta"):
        model = create_model(name, senet=senet)
    cfg = get_config(name)
    sd = model.state_dict()
    assert set(sd) == expected_keys(cfg.depth, senet)
    d = cfg.embed_dim
    assert sd["patch_embed.proj.weight"].shape == (d, 3, 9, 9)
    assert sd["pos_embed"].shape == (1, 144, d)
    assert sd["mask_token"].shape == (1, 1, d)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * d, d)
    assert sd["blocks.0.mlp.fc1.weight"].shape == (4 * d, d)
    assert sd["feature.0.weight"].shape == (d, 144 * d)
    assert sd["feature.2.weight"].shape == (512, d)
    if senet:
        assert sd["senet.0.weight"].shape == (144, 144 * d)
        assert sd["senet.2.weight"].shape == (144, 144)
    assert model.arch == name


def test_layer_hyperparameters() -> None:
    with torch.device("meta"):
        m = create_model("vit_s")
    blk = m.blocks[0]
    assert blk.norm1.eps == blk.norm2.eps == m.norm.eps == 1e-5
    assert m.feature[1].eps == m.feature[3].eps == 2e-5
    assert blk.attn.num_heads == 8 and blk.attn.scale == 64**-0.5
    assert blk.attn.qkv.bias is None and blk.attn.proj.bias is not None
    assert isinstance(blk.mlp.act, torch.nn.ReLU6)
    assert m.patch_embed.proj.stride == (9, 9)


def test_suffixed_names_are_their_base_architecture() -> None:
    pairs = {
        "vit_t_dp005_mask0": "vit_t",
        "vit_s_dp005_mask_0": "vit_s",
        "vit_b_dp005_mask_005": "vit_b",
        "vit_l_dp005_mask_005": "vit_l",
    }
    for suffixed, base in pairs.items():
        assert get_config(suffixed) == get_config(base)
        factory = getattr(models, suffixed)
        with torch.device("meta"):
            assert factory().config == getattr(models, base)().config
            assert factory(senet=True).config.senet


def test_unknown_variant_is_named() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'vit_xl'.*vit_s"):
        create_model("vit_xl")


# --------------------------------------------------------------------------------------
# fidelity: every exit equals the functional reference
# --------------------------------------------------------------------------------------


def check_fidelity(model: VisionTransformer, x: torch.Tensor) -> None:
    sd = model.state_dict()
    with torch.no_grad():
        ref = reference_forward(sd, x, num_heads=model.config.num_heads)
        exits = model.forward_exits(x)  # all exits, one pass
        full = model(x)
    depth = model.depth
    assert set(exits) == set(range(1, depth + 1))
    assert rel_err(full, ref["exits"][depth]) < TOL
    for k in range(1, depth + 1):
        assert exits[k].shape == (x.shape[0], 512)
        assert rel_err(exits[k], ref["exits"][k]) < TOL, f"exit {k}"


SMALL = [("vit_t", False), ("vit_t", True), ("vit_s", False), ("vit_s", True)]
LARGE = [
    ("vit_b", False),
    ("vit_b", True),
    ("vit_l", False),
    ("vit_l", True),
    ("vit_h", False),
    ("vit_h", True),
    ("vit_t_dp005_mask0", False),
    ("vit_s_dp005_mask_0", True),
    ("vit_b_dp005_mask_005", False),
    ("vit_l_dp005_mask_005", True),
    ("cvlface_vit_s", False),
    ("cvlface_vit_b", False),
]


@pytest.mark.parametrize("name, senet", SMALL)
def test_every_exit_matches_reference(name: str, senet: bool) -> None:
    model = randomize_(create_model(name, senet=senet), seed=3).eval()
    check_fidelity(model, images(2))


@slow
@pytest.mark.slow
@pytest.mark.parametrize("name, senet", LARGE)
def test_every_exit_matches_reference_large(name: str, senet: bool) -> None:
    model = randomize_(create_model(name, senet=senet), seed=4).eval()
    check_fidelity(model, images(2))


def test_single_exit_matches_reference_and_output_is_raw(vit_t_senet) -> None:
    x = images(3, seed=5)
    ref = reference_forward(vit_t_senet.state_dict(), x)["exits"]
    with torch.no_grad():
        for k in (1, 5, -1, -12):
            out = vit_t_senet.forward_exit(x, k)
            assert rel_err(out, ref[k if k > 0 else 13 + k]) < TOL
    # raw embedding: not L2-normalised
    assert not torch.allclose(out.norm(dim=1), torch.ones(3))


def test_qkv_bias_variant_matches_reference() -> None:
    model = tiny(qkv_bias=True)
    check_fidelity(model, images(2))


def test_transface_forward_returns_embedding_weights_and_std(vit_t_senet) -> None:
    x = images(2, seed=6)
    sd = vit_t_senet.state_dict()
    tokens = reference_forward(sd, x)["tokens"][12]
    emb, weights, weighted = reference_head(tokens, sd)
    with torch.no_grad():
        e, w, s = vit_t_senet.forward_transface(x)
    assert rel_err(e, emb) < TOL
    assert rel_err(w, weights.softmax(dim=1)) < TOL
    assert rel_err(s, weighted.std(dim=2)) < TOL
    with pytest.raises(ValueError, match="senet"):
        tiny().forward_transface(x)


# --------------------------------------------------------------------------------------
# exits: one pass, only the blocks needed
# --------------------------------------------------------------------------------------


def count_block_calls(model: VisionTransformer) -> list[int]:
    """Times each block ran (counted on its first LayerNorm, which every path calls)."""
    calls = [0] * model.depth
    for i, blk in enumerate(model.blocks):
        blk.norm1.register_forward_hook(lambda *_a, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_forward_exits_runs_each_block_once_up_to_the_deepest() -> None:
    model = tiny(depth=6)
    calls = count_block_calls(model)
    with torch.no_grad():
        out = model.forward_exits(images(2), [2, 4, -3])
    assert calls == [1, 1, 1, 1, 0, 0]
    assert list(out) == [2, 4, -3]
    assert torch.equal(out[-3], out[4])


def test_forward_exits_equals_separate_exits_and_keeps_requested_keys() -> None:
    model = tiny(depth=5, senet=True)
    x = images(3)
    with torch.no_grad():
        together = model.forward_exits(x, (k for k in [5, 1, -1, 3]))  # a generator is fine
        for k in [5, 1, -1, 3]:
            assert rel_err(together[k], model.truncate(k)(x)) < TOL
    assert list(together) == [5, 1, -1, 3]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-6, 6).filter(bool), min_size=1, max_size=8))
def test_forward_exits_any_valid_list(exits: list[int]) -> None:
    model = _hyp_model()
    x = images(1, seed=7)
    ref = _hyp_ref()
    with torch.no_grad():
        out = model.forward_exits(x, exits)
    assert list(out) == list(dict.fromkeys(exits))
    for k in exits:
        assert rel_err(out[k], ref[k if k > 0 else 7 + k]) < TOL


_HYP: dict[str, object] = {}


def _hyp_model() -> VisionTransformer:
    if "model" not in _HYP:
        _HYP["model"] = tiny(depth=6, senet=True)
    return _HYP["model"]  # type: ignore[return-value]


def _hyp_ref() -> dict[int, torch.Tensor]:
    if "ref" not in _HYP:
        _HYP["ref"] = reference_forward(_hyp_model().state_dict(), images(1, seed=7), 4)["exits"]
    return _HYP["ref"]  # type: ignore[return-value]


def test_training_mode_normalises_each_exit_alone() -> None:
    model = tiny(depth=3)
    x = images(4)
    model.train()
    with torch.no_grad():
        torch.manual_seed(0)
        both = model.forward_exits(x, [1, 3])
        # train-mode BatchNorm uses batch statistics: each exit must be normalised alone
        single = model.forward_exits(x, [1])[1]
    assert rel_err(both[1], single) < TOL


# --------------------------------------------------------------------------------------
# intermediates and attention maps
# --------------------------------------------------------------------------------------


def test_forward_intermediates_tokens_and_attention() -> None:
    model = randomize_(create_model("vit_t", senet=True), seed=1).eval()
    x = images(2, seed=8)
    ref = reference_forward(model.state_dict(), x, collect_attention=True)
    calls = count_block_calls(model)
    with torch.no_grad():
        final, tokens, attn = model.forward_intermediates(
            x, indices=[0, 4, -8], return_attention=True
        )
    assert calls == [1] * 5 + [0] * 7  # stop_early: ran blocks 1..5 only
    assert len(tokens) == len(attn) == 2  # 4 and -8 are the same block
    for got, blk in zip(tokens, (1, 5)):
        assert rel_err(got, ref["tokens"][blk]) < TOL
    for got, blk in zip(attn, (1, 5)):
        assert got.shape == (2, 8, 144, 144)
        assert rel_err(got, ref["attention"][blk]) < TOL
        assert torch.allclose(got.sum(-1), torch.ones(2, 8, 144))
    assert torch.equal(final, tokens[-1])


def test_forward_intermediates_timm_index_semantics() -> None:
    model = tiny(depth=4)
    x = images(1)
    ref = reference_forward(model.state_dict(), x, 4)["tokens"]
    with torch.no_grad():
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        normed = model.forward_intermediates(x, indices=[-1], norm=True, intermediates_only=True)
        full, every = model.forward_intermediates(x, stop_early=False, indices=[0])
        allb = model.forward_intermediates(x, intermediates_only=True)
    assert [rel_err(a, ref[k]) < TOL for a, k in zip(last2, (3, 4))] == [True, True]
    ln = torch.nn.functional.layer_norm(ref[4], (64,), model.norm.weight, model.norm.bias, 1e-5)
    assert rel_err(normed[0], ln) < TOL
    assert rel_err(full, ref[4]) < TOL and len(every) == 1
    assert len(allb) == 4
    for bad, err in [(5, ValueError), ([4], ValueError), ([], ValueError), (["0"], TypeError)]:
        with pytest.raises(err):
            model.forward_intermediates(x, indices=bad)


# --------------------------------------------------------------------------------------
# truncation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, -1, -4])
def test_truncate_equals_exit_and_holds_k_blocks(k: int) -> None:
    model = tiny(depth=5, senet=True)
    x = images(2)
    small = model.truncate(k)
    blocks = k if k > 0 else 6 + k
    assert len(small.blocks) == small.depth == blocks
    assert small.config.depth == blocks
    with torch.no_grad():
        assert rel_err(small(x), model.forward_exit(x, k)) < TOL
    # its state_dict is a valid checkpoint of a depth-k model
    fresh = VisionTransformer.from_config(model.config.replace(depth=blocks))
    fresh.load_state_dict(small.state_dict(), strict=True)
    assert not any(p.is_meta for p in small.parameters())
    assert not any(b.is_meta for b in small.buffers())


def test_truncate_shares_or_copies_weights() -> None:
    model = tiny(depth=3)
    shared, copied = model.truncate(2), model.truncate(2, copy_weights=True)
    assert shared.blocks[0].attn.qkv.weight is model.blocks[0].attn.qkv.weight
    assert copied.blocks[0].attn.qkv.weight is not model.blocks[0].attn.qkv.weight
    n_small = sum(p.numel() for p in shared.parameters())
    n_full = sum(p.numel() for p in model.parameters())
    assert n_full - n_small == sum(p.numel() for p in model.blocks[2].parameters())


# --------------------------------------------------------------------------------------
# costs
# --------------------------------------------------------------------------------------


def hand_flops(d: int, depth: int, k: int, senet: bool, n: int = 144, p: int = 9) -> int:
    """2 FLOPs per multiply-add, matmuls/conv/attention only (what FlopCounterMode counts)."""
    embed = 2 * n * d * 3 * p * p
    block = 2 * n * d * 3 * d + 2 * 2 * n * n * d + 2 * n * d * d + 2 * 2 * n * d * 4 * d
    head = 2 * n * d * d + 2 * d * 512 + (2 * n * d * n + 2 * n * n if senet else 0)
    return embed + k * block + head


@pytest.mark.parametrize("name, senet", [("vit_s", False), ("vit_s", True), ("vit_h", False)])
def test_exit_costs_match_hand_count(name: str, senet: bool) -> None:
    cfg = get_config(name, senet=senet)
    costs = exit_costs(cfg)
    assert [c.exit for c in costs] == list(range(1, cfg.depth + 1))
    full = hand_flops(cfg.embed_dim, cfg.depth, cfg.depth, senet)
    for c in costs:
        want = hand_flops(cfg.embed_dim, cfg.depth, c.exit, senet)
        assert c.gflops * 1e9 == pytest.approx(want, rel=1e-9)
        assert c.flop_ratio == pytest.approx(want / full, rel=1e-9)
    assert costs[-1].flop_ratio == 1.0 and costs[-1].param_ratio == 1.0
    with torch.device("meta"):
        model = create_model(name, senet=senet)
    n_all = sum(p.numel() for p in model.parameters())
    assert costs[-1].params == n_all - cfg.embed_dim  # all but the training-only mask_token


def test_exit_costs_of_model_equal_truncated_parameter_counts() -> None:
    model = tiny(depth=4, senet=True)
    costs = model.exit_costs([2, -1])
    assert [c.exit for c in costs] == [2, 4]
    for c in costs:
        small = model.truncate(c.exit)
        assert c.params == sum(p.numel() for p in small.parameters()) - small.mask_token.numel()
    vit_s_costs = exit_costs("vit_s", [6])
    assert vit_s_costs[0].flop_ratio == pytest.approx(0.505, abs=1e-3)
    assert set(vit_s_costs[0].as_dict()) == {
        "exit",
        "gflops",
        "params",
        "flop_ratio",
        "param_ratio",
    }


# --------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x, err, match",
    [
        (torch.zeros(2, 3, 128, 128), ValueError, "expected 112x112 images, got 128x128"),
        (torch.zeros(2, 1, 112, 112), ValueError, "expected 3 channels.*got 1"),
        (torch.zeros(2, 112, 112, 3), ValueError, "channels-last"),
        (torch.zeros(3, 112, 112), ValueError, r"\(B, 3, 112, 112\).*got shape \(3, 112, 112\)"),
        (torch.zeros(2, 3, 112, 112, dtype=torch.uint8), TypeError, "uint8.*preprocess"),
        (torch.zeros(2, 3, 112, 112, dtype=torch.float64), TypeError, "float64.*float32"),
        (np.zeros((2, 3, 112, 112), np.float32), TypeError, "torch.Tensor.*ndarray"),
    ],
)
def test_bad_images_are_named(x, err, match) -> None:
    model = tiny(depth=2)
    for call in (model, model.forward_features, lambda t: model.forward_exits(t, [1])):
        with pytest.raises(err, match=match):
            call(x)


@pytest.mark.parametrize(
    "exits, err, match",
    [
        ([5], ValueError, r"exit 5 is out of range for a 4-block model: use 1\.\.4.*-4\.\.-1"),
        ([-5], ValueError, "exit -5 is out of range"),
        ([0], ValueError, "exit 0 is out of range"),
        ([], ValueError, "exits is empty"),
        ([1.5], TypeError, "integers.*1.5"),
        ([True], TypeError, "integers"),
        ("12", TypeError, "sequence of integers"),
        (4, TypeError, r"sequence of integers, e\.g\. \[4\]"),
    ],
)
def test_bad_exits_are_named(exits, err, match) -> None:
    model = tiny(depth=4)
    with pytest.raises(err, match=match):
        model.forward_exits(images(1), exits)
    if isinstance(exits, list) and len(exits) == 1:
        with pytest.raises(err, match=match):
            model.truncate(exits[0])


def test_bad_heads_choice() -> None:
    model = tiny(depth=2)
    with pytest.raises(ValueError, match="heads must be 'auto', 'shared' or 'exit'"):
        model.forward_exits(images(1), [1], heads="mine")


def test_numpy_integer_exits_are_accepted() -> None:
    model = tiny(depth=3)
    with torch.no_grad():
        out = model.forward_exits(images(1), np.array([1, 3]))
    assert set(out) == {1, 3}


# --------------------------------------------------------------------------------------
# exit-specific heads (in memory; files are in test_models_io.py)
# --------------------------------------------------------------------------------------


def test_exit_head_from_model_reproduces_shared_head() -> None:
    model = tiny(depth=3, senet=True)
    head = ExitHead.from_model(model).eval()
    x = images(2)
    with torch.no_grad():
        tokens = model.forward_intermediates(x, [0], intermediates_only=True)[0]  # block 1
        assert rel_err(head(tokens), model.forward_exit(x, 1)) < TOL
    assert head.feature[0].weight is not model.feature[0].weight  # a copy, for fine-tuning


def test_exit_specific_heads_are_used_where_loaded() -> None:
    model = tiny(depth=4, senet=True)
    x = images(2)
    head = randomize_(model.new_exit_head(), seed=11).eval()
    with torch.no_grad():
        shared = model.forward_exits(x, [2, 4])
        model.set_exit_heads({-3: head})  # exit -3 is exit 2
        auto = model.forward_exits(x, [2, 4])
        forced_shared = model.forward_exits(x, [2], heads="shared")
        tokens = reference_forward(model.state_dict(), x, 4)["tokens"][2]
        want = reference_head(tokens, {k: v for k, v in head.state_dict().items()})[0]
        assert rel_err(auto[2], want) < TOL
        assert rel_err(auto[4], shared[4]) < TOL  # alone vs batched with exit 2
        assert rel_err(forced_shared[2], shared[2]) < TOL
        assert rel_err(model.truncate(2)(x), want) < TOL
        assert rel_err(model.truncate(2, heads="shared")(x), shared[2]) < TOL
    assert sorted(model.exit_heads) == ["2"]
    with pytest.raises(ValueError, match=r"no exit-specific head for exit 4 \(loaded: \[2\]\)"):
        model.forward_exits(x, [4], heads="exit")
    model.clear_exit_heads()
    assert len(model.exit_heads) == 0 and set(model.state_dict()) == expected_keys(4, True)


def test_head_that_does_not_fit_is_rejected_with_names() -> None:
    model = tiny(depth=3, senet=True)
    other = VisionTransformer(embed_dim=32, depth=1, num_heads=4)  # no senet, other width
    with pytest.raises(models.CheckpointError) as e:
        model.set_exit_heads({1: ExitHead.from_model(other)})
    msg = str(e.value)
    assert "exit head for exit 1 does not fit" in msg
    assert "missing (2): senet.0.weight, senet.2.weight" in msg
    assert "norm.weight: file (32,) vs model (64,)" in msg
    with pytest.raises(models.CheckpointError, match="exit head key 7.*out of range"):
        model.set_exit_heads({7: model.new_exit_head()})
    assert len(model.exit_heads) == 0  # nothing installed on failure


# --------------------------------------------------------------------------------------
# precision and compile-friendliness
# --------------------------------------------------------------------------------------


def test_autocast_bf16_keeps_attention_and_head_in_fp32() -> None:
    model = tiny(depth=3)
    x = images(2)
    seen = []
    model.blocks[0].attn.proj.register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    model.feature[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].dtype))
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
            outs = model.forward_exits(x, [1, 3])
    assert out.dtype == torch.float32
    # attention output cast back to the autocast dtype for proj; head input in fp32
    assert seen[-4:] == [torch.bfloat16, torch.float32, torch.bfloat16, torch.float32]
    cos = torch.nn.functional.cosine_similarity(out, ref).min()
    assert cos > 0.99
    assert torch.nn.functional.cosine_similarity(outs[3], ref).min() > 0.99


def test_torch_compile_fullgraph_no_graph_breaks() -> None:
    model = tiny(depth=3, senet=True)
    x = images(2)
    with torch.no_grad():
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        assert rel_err(compiled(x), model(x)) < TOL
        exits = torch.compile(model.forward_exits, backend="eager", fullgraph=True)(x, [1, 3])
        assert rel_err(exits[1], model.forward_exit(x, 1)) < TOL


def test_drop_path_only_in_training() -> None:
    model = VisionTransformer(embed_dim=32, depth=2, num_heads=4, drop_path_rate=0.5)
    assert model.blocks[0].drop_path.__class__.__name__ == "Identity"  # rate 0 at block 1
    assert model.blocks[1].drop_path.drop_prob == 0.5
    x = images(2)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


# --------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------


def test_preprocess_matches_insightface_normalisation() -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 112, 112, 3), dtype=np.uint8)
    x = models.preprocess(imgs)
    want = ((imgs.astype(np.float32) / 255 - 0.5) / 0.5).transpose(0, 3, 1, 2)
    assert x.shape == (3, 3, 112, 112) and x.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), want)
    np.testing.assert_array_equal(models.preprocess(imgs[0]).numpy(), want[:1])
    np.testing.assert_array_equal(models.preprocess(torch.from_numpy(imgs)).numpy(), want)
    np.testing.assert_array_equal(models.preprocess(list(imgs)).numpy(), want)
    bgr = models.preprocess(imgs[..., ::-1], bgr=True)
    np.testing.assert_array_equal(bgr.numpy(), want)
    assert x.min() >= -1 and x.max() <= 1
    assert math.isclose(float(models.preprocess(np.full((1, 1, 3), 255, np.uint8)).max()), 1.0)


@pytest.mark.parametrize(
    "bad, err, match",
    [
        (np.zeros((112, 112, 3), np.float32), TypeError, "uint8"),
        (np.zeros((2, 3, 112, 112), np.uint8), ValueError, "channels-last"),
        (np.zeros((112, 112), np.uint8), ValueError, "channels-last"),
        ([], ValueError, "empty"),
        ("img.jpg", TypeError, "uint8 numpy array or tensor"),
    ],
)
def test_preprocess_errors(bad, err, match) -> None:
    with pytest.raises(err, match=match):
        models.preprocess(bad)
