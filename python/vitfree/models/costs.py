"""Per-exit compute and parameter costs, counted rather than typed.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per multiply-add;
it counts convolutions, matmuls and the attention kernel, not LayerNorm/softmax/elementwise
work) on a meta-device copy of the architecture, so no weights are allocated and any
variant, ``vit_h`` included, is costed in milliseconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch.utils.flop_counter import FlopCounterMode

from vitfree.models.vit import VisionTransformer, ViTConfig, get_config

__all__ = ["ExitCost", "exit_costs"]


@dataclasses.dataclass(frozen=True)
class ExitCost:
    """Cost of one exit, per image.

    Attributes:
        exit: 1-based exit (number of blocks run).
        gflops: GFLOPs of one image through the patch embedding, ``exit`` blocks and the head.
        params: Parameters the exit uses (patch embedding, ``pos_embed``, ``exit`` blocks and
            the head; not the training-only ``mask_token``).
        flop_ratio: ``gflops`` relative to the full-depth model.
        param_ratio: ``params`` relative to the full-depth model.
    """

    exit: int
    gflops: float
    params: int
    flop_ratio: float
    param_ratio: float

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def _count(fn, *args):  # type: ignore[no-untyped-def]
    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return out, counter.get_total_flops()


def exit_costs(
    model: VisionTransformer | ViTConfig | str,
    exits: Iterable[int] | None = None,
) -> list[ExitCost]:
    """FLOPs and parameters of each exit of a model.

    Args:
        model: A :class:`VisionTransformer`, its :class:`ViTConfig`, or a variant name.
        exits: Exits to report (1-based, negative from the end); ``None`` = every block.

    Returns:
        One :class:`ExitCost` per requested exit, in the order given.
    """
    if isinstance(model, VisionTransformer):
        cfg = model.config.replace(depth=model.depth)
    elif isinstance(model, ViTConfig):
        cfg = model
    elif isinstance(model, str):
        cfg = get_config(model)
    else:
        raise TypeError(f"expected a VisionTransformer, ViTConfig or name, got {model!r}")
    with torch.device("meta"):
        meta = VisionTransformer.from_config(cfg)
        x = torch.empty(1, cfg.in_chans, cfg.img_size, cfg.img_size)
    wanted = meta.resolve_exits(exits)
    meta.eval()
    with torch.no_grad():
        # All blocks have the same shape, but count each one anyway: it is cheap on meta
        # tensors and does not assume it.
        tokens, embed_flops = _count(meta._embed, x)
        block_flops = []
        for blk in meta.blocks:
            tokens, f = _count(blk, tokens)
            block_flops.append(f)
        _, head_flops = _count(meta.forward_head, tokens)

    def n_params(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    embed_params = n_params(meta.patch_embed) + meta.pos_embed.numel()
    head_params = n_params(meta.norm) + n_params(meta.feature)
    if meta.senet is not None:
        head_params += n_params(meta.senet)
    block_params = [n_params(b) for b in meta.blocks]

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
