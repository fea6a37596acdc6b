"""Per-exit compute and parameter costs, counted rather than typed, and measured speed.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add;
it counts convolutions, matmuls and the attention kernel, not LayerNorm/softmax/elementwise
work) on a meta-device copy of the architecture, so no weights are allocated and any
variant, ``vit_h`` included, is costed in milliseconds.  The counting steps through the
backbone with the public block-stepping API (:class:`vitfree.models.backbone.ViTBackbone`)
and applies the checkpoint-layout head, exactly as an exit runs.

This module does not import the model class (the model imports it for
:meth:`VisionTransformer.exit_costs`); the records are :class:`vitfree.costs.ExitCost`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vitfree.costs import ExitCost
from vitfree.errors import InputTypeError
from vitfree.models.backbone import ViTBackbone
from vitfree.models.config import ViTConfig, get_config, resolve_exits
from vitfree.models.heads import ExitHead
from vitfree.runtime import runtime, synchronize

if TYPE_CHECKING:
    from vitfree.models.vit import VisionTransformer

__all__ = ["ExitCost", "exit_cost_records", "exit_cost_table", "exit_costs", "measure_speed"]


def _count(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return out, counter.get_total_flops()


def exit_costs(
    model: ViTBackbone | ViTConfig | str,
    exits: Iterable[int] | None = None,
) -> list[ExitCost]:
    """FLOPs and parameters of each exit of a model.

    Args:
        model: A :class:`VisionTransformer` (any :class:`ViTBackbone`), its
            :class:`ViTConfig`, or a variant name.
        exits: Exits to report (1-based, negative from the end); ``None`` = every block.

    Returns:
        One :class:`ExitCost` per requested exit, in the order given.
    """
    if isinstance(model, ViTBackbone):
        cfg = model.config.replace(depth=model.depth)
    elif isinstance(model, ViTConfig):
        cfg = model
    elif isinstance(model, str):
        cfg = get_config(model)
    else:
        raise InputTypeError(f"expected a VisionTransformer, ViTConfig or name, got {model!r}")
    wanted = resolve_exits(exits, cfg.depth)
    with torch.device("meta"):
        backbone = ViTBackbone(cfg)
        head = ExitHead(cfg)  # the checkpoint's head layout
        x = torch.empty(1, cfg.in_chans, cfg.img_size, cfg.img_size)
    backbone.eval()
    head.eval()
    with torch.no_grad():
        # All blocks have the same shape, but count each one anyway: it is cheap on meta
        # tensors and does not assume it.
        tokens, embed_flops = _count(backbone.embed, x)
        block_flops = []
        for k in range(1, cfg.depth + 1):
            tokens, f = _count(backbone.run_blocks, tokens, k - 1, k)
            block_flops.append(f)
        _, head_flops = _count(head.embed, tokens)

    def n_params(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    embed_params = n_params(backbone.patch_embed) + backbone.pos_embed.numel()
    head_params = n_params(head)
    block_params = [n_params(b) for b in backbone.blocks]

    def flops_at(k: int) -> int:
        return embed_flops + sum(block_flops[:k]) + head_flops

    def params_at(k: int) -> int:
        return embed_params + sum(block_params[:k]) + head_params

    full_f, full_p = flops_at(cfg.depth), params_at(cfg.depth)
    return [
        ExitCost(
            exit=k,
            gflops=flops_at(k) / 1e9,
            params=params_at(k),
            flop_ratio=flops_at(k) / full_f,
            param_ratio=params_at(k) / full_p,
        )
        for k in wanted
    ]


# --------------------------------------------------------------------------------------
# measured speed
# --------------------------------------------------------------------------------------


def _time_runs(fn: Callable[[], Any], device: torch.device, iters: int, budget_s: float) -> float:
    """Fastest of at most ``iters`` runs of ``fn`` in seconds (at least one; stops after budget)."""
    times: list[float] = []
    spent = 0.0
    while len(times) < max(iters, 1):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent >= budget_s:
            break
    return float(min(times))  # noise (other processes, frequency changes) only adds time


def measure_speed(
    model: VisionTransformer,
    exits: Sequence[int] | None = None,
    device: str | torch.device | None = None,
    *,
    batch_size: int = 64,
    latency_iters: int = 10,
    throughput_iters: int = 3,
    budget_s: float = 1.0,
    amp: str | None = None,
) -> dict[int, dict[str, float]]:
    """Wall-clock speed of each exit relative to the full model, measured briefly.

    Each exit runs only its blocks and its head (:meth:`VisionTransformer.forward_exit`).
    After one warm-up pass, latency is the fastest of up to ``latency_iters`` single-image
    passes and throughput the fastest of up to ``throughput_iters`` batches of ``batch_size``;
    each measurement stops early once it has used ``budget_s`` seconds (at least one run),
    so a whole table costs seconds on a GPU and up to a minute for vit_s on 2 CPU cores.

    Args:
        model: the model (moved to ``device`` and put in eval mode).
        exits: exits to measure (1-based, negative from the end); ``None`` = every block.
        device: see :func:`vitfree.runtime.resolve_device`.
        batch_size: batch of the throughput measurement (64).
        latency_iters, throughput_iters, budget_s: how long to measure (see above).
        amp: ``"bf16"``/``"fp16"`` autocast on CUDA, as in extraction.

    Returns:
        ``{exit: {"latency_ms", "throughput" (images/s), "speedup" (throughput relative to
        the full model), "latency_speedup" (batch-1 latency of the full model / this exit's),
        "batch_size"}}`` for the requested exits.  The full model is always measured as the
        reference, whether or not it is requested.
    """
    if not callable(getattr(model, "forward_exit", None)):
        raise InputTypeError(f"expected a vitfree.models.VisionTransformer, got {type(model).__name__}")
    rt = runtime(device, amp)
    dev = rt.device
    wanted = sorted(set(model.resolve_exits(None if exits is None else list(exits))))
    model.to(dev).eval()
    full = model.depth
    todo = sorted(set(wanted) | {full})
    gen = torch.Generator().manual_seed(0)
    shape = (batch_size, model.in_chans, model.img_size, model.img_size)
    x_big = (torch.rand(shape, generator=gen) * 2 - 1).to(dev, model.pos_embed.dtype)
    x_one = x_big[:1].contiguous()
    lat: dict[int, float] = {}
    thr: dict[int, float] = {}
    with torch.inference_mode(), rt.autocast():
        model.forward_exit(x_big, full)  # warm-up: allocator, kernels, caches
        model.forward_exit(x_one, full)
        for k in todo:
            one = functools.partial(model.forward_exit, x_one, k)
            big = functools.partial(model.forward_exit, x_big, k)
            lat[k] = _time_runs(one, dev, latency_iters, budget_s)
            thr[k] = _time_runs(big, dev, throughput_iters, budget_s)
    return {
        k: {
            "latency_ms": lat[k] * 1e3,
            "throughput": batch_size / thr[k],
            "speedup": thr[full] / thr[k],
            "latency_speedup": lat[full] / lat[k],
            "batch_size": float(batch_size),
        }
        for k in wanted
    }


def exit_cost_table(
    model: VisionTransformer,
    exits: Sequence[int] | None = None,
    speed: Mapping[int, Mapping[str, float]] | None = None,
) -> dict[str, dict[str, float]]:
    """Per-exit cost records keyed by ``str(exit)``, in their JSON form (as in a manifest).

    FLOPs and parameters from :func:`exit_costs`; with ``speed`` (from :func:`measure_speed`)
    also ``latency_ms``, ``throughput`` and ``speedup``, which the report tables show as the
    "speed-up" column.  :func:`exit_cost_records` gives the same as :class:`ExitCost` records.
    """
    return {str(c.exit): c.as_dict() for c in exit_cost_records(model, exits, speed)}


def exit_cost_records(
    model: VisionTransformer,
    exits: Sequence[int] | None = None,
    speed: Mapping[int, Mapping[str, float]] | None = None,
) -> list[ExitCost]:
    """:func:`exit_costs` of ``model`` at ``exits`` (sorted, distinct), with ``speed`` added."""
    wanted = sorted(set(model.resolve_exits(None if exits is None else list(exits))))
    out = []
    for c in exit_costs(model.config.replace(depth=model.depth), wanted):
        out.append(c.with_speed(speed[c.exit]) if speed is not None and c.exit in speed else c)
    return out
