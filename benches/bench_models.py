"""Benchmarks of vitfree.models on CPU: the cost of early exits in wall time.

* per exit: latency at batch 1 and throughput at a large batch, relative to the full model,
  next to the FLOP ratio from :func:`vitfree.models.exit_costs` (target for vit_s: every
  exit within 0.03 of its FLOP ratio);
* all exits from one pass against the full forward alone (target: at most 12% more);
* full depth against a plain re-implementation of the published layer order (explicit
  matmul attention, fp32), same weights, same run (target: at least 1.0x).

Every benchmark checks its result against an independent computation before timing.
Timings are reported (a table at the end of the run and ``extra_info`` in the JSON), never
asserted.

Default run (``--benchmark-disable`` in pytest's options): a smoke test on vit_t at small
batches.  Real numbers (vit_s, batch 1 and 64, a few minutes on 2 cores)::

    VITFREE_BENCH_FULL=1 pytest benches/bench_models.py --benchmark-enable
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from vitfree.models import VisionTransformer, create_model, exit_costs

FULL = os.environ.get("VITFREE_BENCH_FULL") == "1"
ARCH = "vit_s" if FULL else "vit_t"
BIG_BATCH = 64 if FULL else 4
LATENCY = {"rounds": 15, "warmup_rounds": 2} if FULL else {"rounds": 1}
THROUGHPUT = {"rounds": 3, "warmup_rounds": 1} if FULL else {"rounds": 1}
TOL = 1e-5

# min seconds per benchmark name, filled as the benchmarks run, reported at the end
_TIMES: dict[str, float] = {}


# --------------------------------------------------------------------------------------
# the plain re-implementation (published layer order, matmul attention, fp32)
# --------------------------------------------------------------------------------------


class PlainViT(nn.Module):
    """The insightface/TransFace ViT as published, minus autocast: explicit
    ``softmax(q k^T * scale) v`` attention, ``reshape`` of all tokens into the head.
    Loads the same state_dict as :class:`vitfree.models.VisionTransformer`."""

    def __init__(self, d: int, depth: int, heads: int = 8, n: int = 144) -> None:
        super().__init__()
        self.d, self.heads, self.n = d, heads, n
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, d, 9, 9)
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            b = nn.Module()
            b.norm1, b.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            b.attn = nn.Module()
            b.attn.qkv, b.attn.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d)
            b.mlp = nn.Module()
            b.mlp.fc1, b.mlp.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
            self.blocks.append(b)
        self.norm = nn.LayerNorm(d)
        self.feature = nn.Sequential(
            nn.Linear(n * d, d, bias=False),
            nn.BatchNorm1d(d, eps=2e-5),
            nn.Linear(d, 512, bias=False),
            nn.BatchNorm1d(512, eps=2e-5),
        )

    def attention(self, attn: nn.Module, x: Tensor) -> Tensor:
        b, n, c = x.shape
        qkv = attn.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q @ k.transpose(-2, -1)) * (c // self.heads) ** -0.5
        x = (a.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, n, c)
        return attn.proj(x)

    def head(self, x: Tensor) -> Tensor:
        return self.feature(torch.reshape(self.norm(x.float()), (x.shape[0], self.n * self.d)))

    def forward(self, x: Tensor, exits: tuple[int, ...] = ()) -> Tensor | dict[int, Tensor]:
        x = self.patch_embed.proj(x).flatten(2).transpose(1, 2) + self.pos_embed
        out = {}
        for i, blk in enumerate(self.blocks):
            x = x + self.attention(blk.attn, blk.norm1(x))
            x = x + blk.mlp.fc2(F.relu6(blk.mlp.fc1(blk.norm2(x))))
            if i + 1 in exits:
                out[i + 1] = self.head(x)
        return out if exits else self.head(x)


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model() -> VisionTransformer:
    torch.manual_seed(0)
    m = create_model(ARCH).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for bn in (m.feature[1], m.feature[3]):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def plain(model: VisionTransformer) -> PlainViT:
    ref = PlainViT(model.embed_dim, model.depth, model.config.num_heads).eval()
    ref.load_state_dict(model.state_dict(), strict=True)
    return ref


@pytest.fixture(scope="module")
def inputs() -> dict[int, Tensor]:
    g = torch.Generator().manual_seed(1)
    return {b: torch.rand(b, 3, 112, 112, generator=g) * 2 - 1 for b in (1, BIG_BATCH)}


@pytest.fixture(scope="module")
def reference_exits(plain: PlainViT, inputs: dict[int, Tensor]) -> dict[int, dict[int, Tensor]]:
    """Every exit of the plain re-implementation, per batch size."""
    exits = tuple(range(1, plain_depth(plain) + 1))
    with torch.inference_mode():
        return {b: plain(x, exits) for b, x in inputs.items()}  # type: ignore[misc]


def plain_depth(plain: PlainViT) -> int:
    return len(plain.blocks)


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest, model: VisionTransformer) -> Iterator[None]:
    """Print the ratio table once all benchmarks of this module have run."""
    yield
    if not _TIMES:
        return
    lines = ratio_table(model)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None:  # pragma: no cover - running with -p no:capture
        print("\n".join(lines))
        return
    with capture.global_and_fixture_disabled():  # module teardown output is captured otherwise
        print("\n".join(lines))


def ratio_table(model: VisionTransformer) -> list[str]:
    depth = model.depth
    costs = {c.exit: c for c in exit_costs(model)}
    lines = ["", f"vitfree.models exits on CPU ({ARCH}, {torch.get_num_threads()} threads)"]
    if not FULL:
        lines.append(
            "(smoke run: small model and batch; set VITFREE_BENCH_FULL=1 for real figures)"
        )
    lat_full = _TIMES.get(f"latency-b1-exit{depth}")
    thr_full = _TIMES.get(f"throughput-b{BIG_BATCH}-exit{depth}")
    if lat_full and thr_full:
        lines.append(
            f"{'exit':>4} {'GFLOPs':>7} {'FLOP ratio':>10} {'latency b1':>11} "
            f"{'d':>6} {f'time b{BIG_BATCH}':>11} {'d':>6}"
        )
        for k in range(1, depth + 1):
            lat = _TIMES.get(f"latency-b1-exit{k}")
            thr = _TIMES.get(f"throughput-b{BIG_BATCH}-exit{k}")
            if lat is None or thr is None:
                continue
            fr = costs[k].flop_ratio
            lines.append(
                f"{k:>4} {costs[k].gflops:>7.2f} {fr:>10.3f} {lat / lat_full:>11.3f} "
                f"{lat / lat_full - fr:>+6.3f} {thr / thr_full:>11.3f} {thr / thr_full - fr:>+6.3f}"
            )
    for b in (1, BIG_BATCH):
        full, every = _TIMES.get(f"vitfree-full-b{b}"), _TIMES.get(f"all-exits-b{b}")
        if full and every:
            lines.append(
                f"all {depth} exits in one pass, batch {b}: {every / full:.3f}x the full forward"
            )
        ref, ours = _TIMES.get(f"plain-full-b{b}"), _TIMES.get(f"vitfree-full-b{b}")
        if ref and ours:
            lines.append(
                f"full depth, batch {b}: vitfree {b / ours:.1f} img/s, plain re-implementation "
                f"{b / ref:.1f} img/s: {ref / ours:.2f}x"
            )
    return lines


def timed(benchmark, name: str, fn, *, pedantic: dict[str, int], **extra) -> object:  # type: ignore[no-untyped-def]
    """Run ``fn`` under pytest-benchmark (no grad), record its best time under ``name``."""

    def run() -> object:
        with torch.inference_mode():
            return fn()

    benchmark.extra_info.update(extra)
    result = benchmark.pedantic(run, iterations=1, **pedantic)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        _TIMES[name] = stats.stats.min
    return result


# --------------------------------------------------------------------------------------
# per-exit latency (batch 1) and throughput (large batch)
# --------------------------------------------------------------------------------------


def exit_list() -> list[int]:
    return list(range(1, 13))  # vit_t and vit_s both have 12 blocks


@pytest.mark.parametrize("k", exit_list())
def test_exit_latency_batch1(benchmark, model, inputs, reference_exits, k: int) -> None:
    benchmark.group = "exit-latency-b1"
    small = model.truncate(k)
    x = inputs[1]
    with torch.inference_mode():
        assert rel_err(small(x), reference_exits[1][k]) < TOL
    cost = exit_costs(model, [k])[0]
    timed(
        benchmark,
        f"latency-b1-exit{k}",
        lambda: small(x),
        pedantic=LATENCY,
        exit=k,
        flop_ratio=cost.flop_ratio,
        gflops=cost.gflops,
    )


@pytest.mark.parametrize("k", exit_list())
def test_exit_throughput_big_batch(benchmark, model, inputs, reference_exits, k: int) -> None:
    benchmark.group = f"exit-throughput-b{BIG_BATCH}"
    small = model.truncate(k)
    x = inputs[BIG_BATCH]
    with torch.inference_mode():
        assert rel_err(small(x), reference_exits[BIG_BATCH][k]) < TOL
    cost = exit_costs(model, [k])[0]
    timed(
        benchmark,
        f"throughput-b{BIG_BATCH}-exit{k}",
        lambda: small(x),
        pedantic=THROUGHPUT,
        exit=k,
        flop_ratio=cost.flop_ratio,
        batch=BIG_BATCH,
    )


# --------------------------------------------------------------------------------------
# all exits from one pass vs the full forward alone (timed in test_full_depth_vs_plain)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, BIG_BATCH])
def test_all_exits_one_pass(benchmark, model, inputs, reference_exits, batch: int) -> None:
    benchmark.group = f"full-depth-b{batch}"  # next to the full forward and the plain one
    x = inputs[batch]
    exits = list(range(1, model.depth + 1))
    with torch.inference_mode():
        out = model.forward_exits(x, exits)
    for k in exits:
        assert rel_err(out[k], reference_exits[batch][k]) < TOL, k
    timed(
        benchmark,
        f"all-exits-b{batch}",
        lambda: model.forward_exits(x, exits),
        pedantic=LATENCY if batch == 1 else THROUGHPUT,
        batch=batch,
        exits=len(exits),
    )


# --------------------------------------------------------------------------------------
# full depth: vitfree vs the plain re-implementation, same weights, same run
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["plain", "vitfree"])
@pytest.mark.parametrize("batch", [1, BIG_BATCH])
def test_full_depth_vs_plain(benchmark, model, plain, inputs, impl: str, batch: int) -> None:
    benchmark.group = f"full-depth-b{batch}"
    x = inputs[batch]
    fn = plain if impl == "plain" else model
    with torch.inference_mode():
        assert rel_err(model(x), plain(x)) < TOL
    timed(
        benchmark,
        f"{impl}-full-b{batch}",
        lambda: fn(x),
        pedantic=LATENCY if batch == 1 else THROUGHPUT,
        batch=batch,
        impl=impl,
    )
