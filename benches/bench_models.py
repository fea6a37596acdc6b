"""Benchmarks of vitfree.models on CPU: the cost of early exits in wall time.

* per exit: latency at batch 1 and time at a large batch, relative to the full model, next
  to the FLOP ratio from :func:`vitfree.models.exit_costs` (target for vit_s: every exit
  within 0.03 of its FLOP ratio);
* all exits from one pass against the full forward alone (target: at most 12% more);
* full depth against a plain re-implementation of the published layer order (explicit
  matmul attention, fp32), same weights, same run (target: at least 1.0x).

Every benchmark checks its result against an independent computation (the plain
re-implementation) before timing.  Timings are reported (a table at the end of the run and
``extra_info`` in the JSON), never asserted.

Ratios come from *interleaved* sweeps: each round times every candidate once, in turn, and
the best round of each candidate is kept.  On a shared machine, load from other processes
then hits all candidates alike instead of whichever benchmark happened to run at that
moment.  The per-candidate pytest-benchmark entries (groups ``exit-latency-b1``,
``full-depth-b*``) are there for the usual tables and JSON comparisons.

Default run (``--benchmark-disable`` in pytest's options): a smoke test on vit_t at small
batches.  Real numbers (vit_s, batch 1 and 64, about 5 minutes on 2 quiet cores)::

    VITFREE_BENCH_FULL=1 pytest benches/bench_models.py --benchmark-enable
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F
from benchconfig import FULL, print_uncaptured
from torch import Tensor, nn
from vitfree.models import VisionTransformer, create_model, exit_costs

ARCH = "vit_s" if FULL else "vit_t"
BIG_BATCH = 64 if FULL else 4
# (rounds, warmup rounds) for batch 1 and for the big batch
ROUNDS = {1: (15, 2), BIG_BATCH: (3, 1)} if FULL else {1: (1, 0), BIG_BATCH: (1, 0)}
TOL = 1e-5

# best seconds per candidate, filled by the interleaved sweeps, reported at the end
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
    print_uncaptured(request, ratio_table(model))


def ratio_table(model: VisionTransformer) -> list[str]:
    depth = model.depth
    costs = {c.exit: c for c in exit_costs(model)}
    lines = ["", f"vitfree.models exits on CPU ({ARCH}, {torch.get_num_threads()} threads)"]
    if not FULL:
        lines.append(
            "(smoke run: small model and batch, 1 round; VITFREE_BENCH_FULL=1 for figures)"
        )
    t = _TIMES.get
    if all(t(f"b{b}-exit{k}") for b in (1, BIG_BATCH) for k in range(1, depth + 1)):
        big = f"time b{BIG_BATCH}"
        lines.append(
            f"{'exit':>4} {'GFLOPs':>7} {'FLOP ratio':>10} {'latency b1':>11} {'diff':>6} "
            f"{big:>11} {'diff':>6}"
        )
        for k in range(1, depth + 1):
            fr = costs[k].flop_ratio
            lat = t(f"b1-exit{k}") / t(f"b1-exit{depth}")  # type: ignore[operator]
            big_r = t(f"b{BIG_BATCH}-exit{k}") / t(f"b{BIG_BATCH}-exit{depth}")  # type: ignore[operator]
            lines.append(
                f"{k:>4} {costs[k].gflops:>7.2f} {fr:>10.3f} {lat:>11.3f} {lat - fr:>+6.3f} "
                f"{big_r:>11.3f} {big_r - fr:>+6.3f}"
            )
    for b in (1, BIG_BATCH):
        full, every = t(f"b{b}-exit{depth}"), t(f"b{b}-all-exits")
        if full and every:
            lines.append(
                f"batch {b}: all {depth} exits from one pass = {every / full:.3f}x the full forward"
                f" ({every * 1e3:.1f} ms vs {full * 1e3:.1f} ms)"
            )
        ref, ours = t(f"b{b}-plain"), t(f"b{b}-vitfree")
        if ref and ours:
            lines.append(
                f"batch {b}: full depth vitfree {b / ours:.1f} img/s vs plain re-implementation "
                f"{b / ref:.1f} img/s = {ref / ours:.2f}x"
            )
    return lines


def interleaved(
    benchmark, candidates: dict[str, Callable[[], object]], batch: int, **extra: object
) -> dict[str, float]:
    """Time every candidate once per round, in turn; keep each one's best round.

    pytest-benchmark times whole sweeps; the per-candidate bests go to ``extra_info`` and to
    the table printed at the end.
    """
    rounds, warmup = ROUNDS[batch]
    best = {name: float("inf") for name in candidates}

    def sweep() -> None:
        with torch.inference_mode():
            for name, fn in candidates.items():
                start = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - start)

    benchmark.pedantic(sweep, rounds=rounds, warmup_rounds=warmup, iterations=1)
    if benchmark.enabled:
        _TIMES.update(best)
        benchmark.extra_info.update({"best_seconds": best, "batch": batch, **extra})
    return best


def timed(benchmark, fn: Callable[[], object], batch: int, **extra: object) -> None:
    """Plain pytest-benchmark timing of ``fn`` (no grad)."""

    def run() -> object:
        with torch.inference_mode():
            return fn()

    rounds, warmup = ROUNDS[batch]
    benchmark.extra_info.update(extra)
    benchmark.pedantic(run, rounds=rounds, warmup_rounds=warmup, iterations=1)


# --------------------------------------------------------------------------------------
# per exit: latency at batch 1 (one entry per exit, for the pytest-benchmark table)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", range(1, 13))  # vit_t and vit_s both have 12 blocks
def test_exit_latency_batch1(benchmark, model, inputs, reference_exits, k: int) -> None:
    benchmark.group = "exit-latency-b1"
    small = model.truncate(k)
    x = inputs[1]
    with torch.inference_mode():
        assert rel_err(small(x), reference_exits[1][k]) < TOL
    timed(benchmark, lambda: small(x), 1, exit=k, flop_ratio=exit_costs(model, [k])[0].flop_ratio)


# --------------------------------------------------------------------------------------
# per exit and all exits from one pass: interleaved sweep, the source of the ratios
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, BIG_BATCH])
def test_exit_sweep(benchmark, model, inputs, reference_exits, batch: int) -> None:
    benchmark.group = f"exit-sweep-b{batch}"
    x = inputs[batch]
    ref = reference_exits[batch]
    exits = list(range(1, model.depth + 1))
    truncated = {k: model.truncate(k) for k in exits}
    with torch.inference_mode():
        for k in exits:
            assert rel_err(truncated[k](x), ref[k]) < TOL, k
        every = model.forward_exits(x, exits)
        for k in exits:
            assert rel_err(every[k], ref[k]) < TOL, k
    candidates: dict[str, Callable[[], object]] = {
        f"b{batch}-exit{k}": (lambda m=truncated[k]: m(x)) for k in exits
    }
    candidates[f"b{batch}-all-exits"] = lambda: model.forward_exits(x, exits)
    interleaved(
        benchmark,
        candidates,
        batch,
        flop_ratio={k: c.flop_ratio for k, c in zip(exits, exit_costs(model, exits))},
    )


# --------------------------------------------------------------------------------------
# full depth: vitfree vs the plain re-implementation, same weights, same run
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["plain", "vitfree"])
@pytest.mark.parametrize("batch", [1, BIG_BATCH])
def test_full_depth(benchmark, model, plain, inputs, impl: str, batch: int) -> None:
    benchmark.group = f"full-depth-b{batch}"
    x = inputs[batch]
    fn = plain if impl == "plain" else model
    with torch.inference_mode():
        assert rel_err(model(x), plain(x)) < TOL
    timed(benchmark, lambda: fn(x), batch, impl=impl)


@pytest.mark.parametrize("batch", [1, BIG_BATCH])
def test_full_depth_interleaved(benchmark, model, plain, inputs, batch: int) -> None:
    benchmark.group = f"full-depth-b{batch}"
    x = inputs[batch]
    with torch.inference_mode():
        assert rel_err(model(x), plain(x)) < TOL
    interleaved(
        benchmark,
        {f"b{batch}-plain": lambda: plain(x), f"b{batch}-vitfree": lambda: model(x)},
        batch,
    )
