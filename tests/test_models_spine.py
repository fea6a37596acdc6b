"""What the models' redesign promises: one head path, block stepping, head kinds, one exit resolver."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import tiny_bn_model, tiny_images
from torch import Tensor, nn
from vitfree import models
from vitfree.errors import CheckpointError, VitfreeError
from vitfree.models import ExitHead, Head, HeadSpec, VisionTransformer
from vitfree.models.heads import checkpoint_embed


def tiny(depth: int = 4, senet: bool = False, seed: int = 0) -> VisionTransformer:
    return tiny_bn_model(depth, senet, seed)


images = tiny_images


def randomize_(head: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return head


@pytest.mark.parametrize("senet", [False, True])
def test_exit_head_under_autocast_equals_truncate_under_autocast(senet: bool) -> None:
    model = tiny(senet=senet)
    model.set_exit_heads({2: randomize_(ExitHead.from_model(model), seed=3)})
    x = images(3)
    small = model.truncate(2)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        via_exits = model.forward_exits(x, [2, 4])[2]
        via_small = small(x)
        via_step = model.head_at(model.run_blocks(model.embed(x), 0, 2), 2)
    # every head runs in float32 under autocast: the same numbers by every route
    assert via_exits.dtype == torch.float32 and via_small.dtype == torch.float32
    torch.testing.assert_close(via_exits, via_small, rtol=0, atol=0)
    torch.testing.assert_close(via_step, via_small, rtol=0, atol=0)
    # and the exit head is really used (not the shared one)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        shared = model.forward_exits(x, [2], heads="shared")[2]
    assert (shared - via_exits).abs().max() > 1e-3


def test_block_stepping_on_a_shrinking_batch_equals_the_full_forward() -> None:
    model = tiny(depth=5)
    x = images(6)
    with torch.inference_mode():
        full = model.forward_exits(x, [2, 5])
        t = model.embed(x)
        t = model.run_blocks(t, 0, 2)
        e2 = model.head_at(t, 2)
        keep = torch.tensor([0, 2, 3, 5])  # rows 1 and 4 "exit" at block 2
        t = model.run_blocks(t[keep], 2, 5)
        e5 = model.head_at(t, 5)
    torch.testing.assert_close(e2, full[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(e5, full[5][keep], rtol=1e-5, atol=1e-6)


def test_run_blocks_checks_its_range() -> None:
    model = tiny(depth=3)
    t = model.embed(images(1))
    with pytest.raises(ValueError, match="start must be an exit in 0..2"):
        model.run_blocks(t, 3, 2)
    with pytest.raises(ValueError, match="exit 4 is out of range"):
        model.run_blocks(t, 0, 4)
    torch.testing.assert_close(model.run_blocks(t, 1, 1), t)  # an empty step


def test_checkpoint_embed_equals_the_scriptable_head_of_the_model() -> None:
    model = tiny(senet=True)
    t = torch.randn(2, model.num_patches, model.embed_dim)
    with torch.no_grad():
        a = checkpoint_embed(model.norm, model.senet, model.feature, t)
        b = model._head_embed(t)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_intermediates_has_one_return_type_with_1_based_exits() -> None:
    model = tiny(depth=4)
    x = images(2)
    with torch.no_grad():
        out = model.intermediates(x, [2, -1], attention=True)
        plain = model.intermediates(x, [1])
        timm = model.forward_intermediates(x, indices=[1, 3], intermediates_only=True)
    assert isinstance(out, models.Intermediates) and isinstance(plain, models.Intermediates)
    assert sorted(out.tokens) == [2, 4] and sorted(out.attentions) == [2, 4]
    assert plain.attentions == {} and sorted(plain.tokens) == [1]
    torch.testing.assert_close(timm[0], out.tokens[2])  # 0-based index 1 is exit 2
    torch.testing.assert_close(out.last, out.tokens[4])


class ScaledHead(Head):
    """A test head kind: the checkpoint head scaled by a learned scalar (has an option)."""

    kind = "test-scaled"

    def __init__(self, cfg: models.ViTConfig, start: float = 1.0) -> None:
        super().__init__()
        self.inner = ExitHead(cfg)
        self.scale = nn.Parameter(torch.tensor(float(start)))
        self.start = float(start)

    def options(self) -> dict[str, float]:
        return {"start": self.start}

    def embed(self, tokens: Tensor) -> Tensor:
        return self.inner.embed(tokens) * self.scale


def test_a_new_head_kind_installs_and_round_trips_through_heads_files(tmp_path) -> None:
    assert "copy" in models.head_kinds() and "test-scaled" in models.head_kinds()
    model = tiny()
    head = ScaledHead(model.config, start=2.0)
    head.inner = ExitHead.from_model(model)
    model.set_exit_heads({3: head, 1: ExitHead.from_model(model)})
    x = images(2)
    with torch.no_grad():
        want = model.forward_exits(x, [1, 3])
    torch.testing.assert_close(want[3], 2.0 * model.forward_exits(x, [3], heads="shared")[3])
    for suffix in (".pt", ".safetensors"):
        path = tmp_path / f"heads{suffix}"
        model.save_exit_heads(path)
        specs = models.read_exit_head_specs(path)
        assert {k: s.kind for k, s in specs.items()} == {1: "copy", 3: "test-scaled"}
        assert specs[3].options == {"start": 2.0}
        other = tiny()
        other.load_exit_heads(path)
        assert type(other.exit_heads["3"]) is ScaledHead
        with torch.no_grad():
            got = other.forward_exits(x, [1, 3])
        torch.testing.assert_close(got[3], want[3], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    # a head without a checkpoint-layout equivalent cannot be truncated into a plain model
    with pytest.raises(NotImplementedError, match="test-scaled"):
        model.truncate(3)


def test_version_1_heads_files_hold_copy_heads(tmp_path) -> None:
    model = tiny()
    head = randomize_(ExitHead.from_model(model), seed=5)
    torch.save({"format": "vitfree.exit_heads", "version": 1, "exits": {2: head.state_dict()}}, tmp_path / "v1.pt")
    specs = models.read_exit_head_specs(tmp_path / "v1.pt")
    assert specs[2].kind == "copy" and specs[2].options == {}
    model.load_exit_heads(tmp_path / "v1.pt")
    x = images(1)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_exit(x, 2), head(model.run_blocks(model.embed(x), 0, 2)))


def test_unknown_head_kind_and_foreign_modules_are_checkpoint_errors(tmp_path) -> None:
    model = tiny()
    spec = HeadSpec("no-such-kind", {}, ExitHead.from_model(model).state_dict())
    with pytest.raises(CheckpointError, match="unknown head kind 'no-such-kind'"):
        model.set_exit_heads({2: spec})
    with pytest.raises(CheckpointError, match="not a vitfree.models.heads.Head"):
        model.set_exit_heads({2: nn.Linear(2, 2)})
    assert issubclass(CheckpointError, VitfreeError) and issubclass(CheckpointError, ValueError)


def test_one_exit_resolver_for_every_entry_point() -> None:
    model = tiny(depth=4)
    assert models.resolve_exits([1, -1, -4], 4) == [1, 4, 1] == model.resolve_exits([1, -1, -4])
    for bad, err in [(0, ValueError), (5, ValueError), (-5, ValueError), (True, TypeError), ("1", TypeError)]:
        with pytest.raises(err):
            models.resolve_exit(bad, 4)
        with pytest.raises(err):
            model.forward_exits(images(1), [bad])
        with pytest.raises(err):
            models.exit_costs(model, [bad])
