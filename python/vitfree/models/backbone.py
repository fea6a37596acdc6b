"""The backbone of a face ViT, steppable block by block: patch embedding, position
embedding and the transformer blocks, without any head.

:class:`ViTBackbone` is the part of :class:`vitfree.models.VisionTransformer` that every exit
shares, and it carries the public *block-stepping* API that everything else is built on::

    t = backbone.embed(x)               # (B, 3, H, W) -> (B, N, D): patch + position embedding
    t = backbone.run_blocks(t, 0, 4)    # blocks 1..4: now the tokens of exit 4
    t = backbone.run_blocks(t, 4, 8)    # blocks 5..8, on any batch (rows may have been dropped)

``forward_exits``, ``truncate`` and the FLOP counting of :mod:`vitfree.models.costs` run on
it, and so do dynamic exits, which shrink the batch between steps.  Exits are 1-based and
resolved by :func:`vitfree.models.config.resolve_exit` (docs/protocols.md §2).
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from vitfree.errors import InputError, InputTypeError
from vitfree.models.config import ViTConfig, resolve_exit, resolve_exits
from vitfree.models.layers import Block, PatchEmbed

__all__ = ["ViTBackbone"]


class ViTBackbone(nn.Module):
    """Patch embedding, ``pos_embed``, the training-only ``mask_token`` and ``blocks``.

    Its state_dict names are those of the published checkpoints (``patch_embed.proj.*``,
    ``pos_embed``, ``mask_token``, ``blocks.{i}.*``); :class:`VisionTransformer` adds the head.

    Args:
        cfg: the architecture (see :class:`ViTConfig`).
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        if cfg.depth < 1:
            raise InputError(f"depth must be >= 1, got {cfg.depth}")
        if cfg.grid_size < 1:
            raise InputError(f"patch_size {cfg.patch_size} is larger than img_size {cfg.img_size}")
        self.config = cfg
        #: Name of the variant this model was built from, when known (set by the factories).
        self.arch: str | None = None
        self.img_size = cfg.img_size
        self.in_chans = cfg.in_chans
        self.embed_dim = cfg.embed_dim
        self.num_patches = cfg.num_patches
        self.num_features = cfg.num_features

        d = cfg.embed_dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_patches, d))
        self.mask_token: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, 1, d)) if cfg.mask_token else None
        )
        rates = [cfg.drop_path_rate * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(
            Block(
                d,
                cfg.num_heads,
                cfg.mlp_hidden,
                qkv_bias=cfg.qkv_bias,
                norm_eps=cfg.norm_eps,
                drop_path=rates[i],
                fp32_attention=cfg.fp32_attention,
            )
            for i in range(cfg.depth)
        )

    @classmethod
    def from_config(cls, cfg: ViTConfig) -> "ViTBackbone":
        """Build an (untrained) backbone from a :class:`ViTConfig`."""
        return cls(cfg)

    def _init_weights(self) -> None:
        # Same scheme as the reference (trunc-normal 0.02 for Linear and pos_embed), so a
        # freshly built model is a sensible starting point; checkpoints overwrite it anyway.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.mask_token is not None:
            nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # ---------------------------------------------------------------- input and exits

    @property
    def depth(self) -> int:
        """Number of blocks (also the deepest exit)."""
        return len(self.blocks)

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise InputTypeError(f"expected a torch.Tensor image batch, got {type(x).__name__}")
        size, c = self.img_size, self.in_chans
        want = f"(B, {c}, {size}, {size})"
        if x.dim() != 4:
            raise InputError(f"expected a {want} image batch, got shape {tuple(x.shape)}")
        if x.shape[1] != c:
            hint = ""
            if x.shape[-1] == c:
                hint = " (looks channels-last: use x.permute(0, 3, 1, 2) or preprocess())"
            raise InputError(
                f"expected {c} channels in dim 1 of a {want} batch, got {x.shape[1]}"
                f" (shape {tuple(x.shape)}){hint}"
            )
        if x.shape[2] != size or x.shape[3] != size:
            raise InputError(
                f"expected {size}x{size} images, got {x.shape[2]}x{x.shape[3]}; "
                f"align and crop faces to {size}x{size} first"
            )
        if not x.is_floating_point():
            raise InputTypeError(
                f"expected a floating-point image batch normalised as (x / 255 - 0.5) / 0.5, "
                f"got dtype {x.dtype}; use vitfree.models.preprocess() on uint8 images"
            )
        want_dtype = self.pos_embed.dtype
        if x.dtype != want_dtype:
            raise InputTypeError(
                f"input dtype {x.dtype} does not match the model's parameters ({want_dtype}); "
                f"convert with x.to({want_dtype}) or use torch.autocast for mixed precision"
            )

    @torch.jit.unused
    def resolve_exit(self, k: Any) -> int:
        """1-based block index of exit ``k`` (negative counts from the end)."""
        return resolve_exit(k, self.depth)

    @torch.jit.unused
    def resolve_exits(self, exits: Iterable[Any] | None) -> list[int]:
        """1-based block indices of ``exits`` in the given order; ``None`` means all blocks."""
        return resolve_exits(exits, self.depth)

    # ---------------------------------------------------------------- block stepping

    def embed(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W), normalised -> tokens entering block 1 (B, N, D).

        Checks the batch (shape, dtype) and raises ``TypeError``/``ValueError`` naming the
        problem.
        """
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self.patch_embed(x) + self.pos_embed

    def _embed(self, x: Tensor) -> Tensor:  # the name used before the public one existed
        return self.embed(x)

    @torch.jit.unused
    def run_blocks(self, tokens: Tensor, start: int, stop: int) -> Tensor:
        """Tokens after exit ``start`` -> tokens after exit ``stop``: runs blocks start+1..stop.

        ``start = 0`` means the output of :meth:`embed`.  The batch may differ from call to
        call (dynamic exits drop the rows that have exited); each row is computed
        independently, so the result per row does not depend on the others.

        Args:
            tokens: (B, N, D).
            start: exit the tokens come from (0 = the embedding), 0 <= start <= stop.
            stop: exit to stop at, 1-based, <= depth (negative counts from the end).
        """
        d = self.depth
        stop = resolve_exit(stop, d)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= stop:
            raise InputError(f"start must be an exit in 0..{stop} (0 = the embedding), got {start!r}")
        for i in range(start, stop):
            tokens = self.blocks[i](tokens)  # through __call__, so forward hooks fire
        return tokens

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (B, 3, H, W) -> output tokens of the last block (B, N, D), before ``norm``."""
        x = self.embed(x)
        for blk in self.blocks:
            x = blk(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Images -> output tokens of the last block (the backbone has no head)."""
        return self.forward_features(x)
