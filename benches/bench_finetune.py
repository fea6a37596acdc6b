"""Benchmark of exit-head fine-tuning: all 11 exits of a 12-block model per step against one.

One frozen pass serves every exit (:func:`vitfree.finetune.frozen_exit_tokens`), so training
the heads of exits 1..11 together should cost little more than training the head of exit 11
alone, whose step runs the same 11 blocks (target: at most 1.5x).  Exit 1 alone is timed too
(one block: the cheapest possible step).  Each candidate is a full optimiser step
(:func:`vitfree.finetune.training_step`: frozen pass, heads forward and backward, per-exit
gradient clipping, AdamW) with CosFace classifiers, for ``copy`` and ``lora`` heads.

Before timing, the result is checked: every loss is finite, and one step of exits 1..11
together leaves the exit-11 head equal to one step of exit 11 alone from the same start
(the exits train independently).  Ratios come from interleaved rounds (each round times every
candidate once, in turn; each candidate's best round is kept), so load from other processes
hits all candidates alike.  Timings are reported, never asserted.

Default run (``--benchmark-disable``): a smoke test on a 12-block, 32-wide model at batch 4.
Real numbers (the demo model, batch 64, 5 rounds; a few minutes on 2 cores)::

    VITFREE_BENCH_FULL=1 pytest benches/bench_finetune.py --benchmark-enable -s
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import pytest
import torch
from benchconfig import FULL, print_uncaptured
from vitfree.finetune import ExitHeadTrainer, FinetuneConfig, training_step
from vitfree.models import Head, VisionTransformer, create_model, load, preprocess

BATCH = 64 if FULL else 4
ROUNDS, WARMUP = (5, 1) if FULL else (1, 0)
CLASSES = 100
ALL = tuple(range(1, 12))  # exits 1..11 of a 12-block model
CANDIDATES = {"exit 11 alone": (11,), "exits 1-11 together": ALL, "exit 1 alone": (1,)}

_TIMES: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def model() -> VisionTransformer:
    if FULL:
        return load("demo")  # 12 blocks of width 64, 128-d embeddings
    torch.manual_seed(0)
    return create_model("vit_t", depth=12, embed_dim=32, num_heads=4, num_features=24).eval()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (BATCH, 112, 112, 3), dtype=torch.uint8, generator=g)
    return preprocess(images), torch.randint(0, CLASSES, (BATCH,), generator=g)


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest, model: VisionTransformer) -> Iterator[None]:
    yield
    if not _TIMES:
        return
    lines = ["", f"exit-head fine-tuning step on CPU ({model.config.describe()}, batch {BATCH}, "
                 f"{torch.get_num_threads()} threads)"]  # fmt: skip
    if not FULL:
        lines.append("(smoke run: small model and batch, 1 round; VITFREE_BENCH_FULL=1 for figures)")
    for kind, t in _TIMES.items():
        one, every, first = t["exit 11 alone"], t["exits 1-11 together"], t["exit 1 alone"]
        lines.append(
            f"{kind:>5} heads: exits 1-11 together {every * 1e3:.0f} ms/step = {every / one:.2f}x exit 11 "
            f"alone ({one * 1e3:.0f} ms; target <= 1.5x), {every / first:.1f}x exit 1 alone "
            f"({first * 1e3:.0f} ms)"
        )
    print_uncaptured(request, lines)


def make_step(model: VisionTransformer, exits: tuple[int, ...], kind: str,
              batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[Callable[[], float], ExitHeadTrainer]:  # fmt: skip
    cfg = FinetuneConfig(head=kind)
    heads = {}
    for k in exits:
        torch.manual_seed(k)
        heads[k] = Head.start(model, kind)
    trainer = ExitHeadTrainer(heads, cfg, CLASSES, seed=0)
    opt = torch.optim.AdamW(trainer.parameters(), lr=1e-3, weight_decay=0.05)
    x, y = batch

    def step() -> float:
        return training_step(model, trainer, opt, x, y)[0]

    return step, trainer


@pytest.mark.parametrize("kind", ["copy", "lora"])
def test_all_exits_against_one_exit_per_step(benchmark, model, batch, kind: str) -> None:
    benchmark.group = f"finetune-step-{kind}"
    model.requires_grad_(False)
    steps: dict[str, Callable[[], float]] = {}
    trainers: dict[str, ExitHeadTrainer] = {}
    for name, exits in CANDIDATES.items():
        steps[name], trainers[name] = make_step(model, exits, kind, batch)
    # the check: finite losses; one step of all exits moves exit 11's head as one step alone
    for name, step in steps.items():
        assert math.isfinite(step()), name
    a = trainers["exits 1-11 together"].heads["11"].state_dict()
    b = trainers["exit 11 alone"].heads["11"].state_dict()
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-5, atol=1e-6)
    best = {name: float("inf") for name in steps}

    def sweep() -> None:
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            best[name] = min(best[name], time.perf_counter() - start)

    benchmark.pedantic(sweep, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)
    if benchmark.enabled:
        _TIMES[kind] = dict(best)
        benchmark.extra_info.update({"best_seconds": best, "batch": BATCH,
                                     "ratio_all_vs_exit11": best["exits 1-11 together"] / best["exit 11 alone"]})  # fmt: skip
