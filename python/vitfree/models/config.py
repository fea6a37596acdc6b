"""Architecture of a face ViT (:class:`ViTConfig`, the named variants) and the exit resolver."""

import dataclasses
import operator
from collections.abc import Iterable
from typing import Any

from vitfree.errors import InputError, InputTypeError

__all__ = ["FAMILIES", "VARIANTS", "ViTConfig", "get_config", "resolve_exit", "resolve_exits"]


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Architecture of a face ViT; everything needed to rebuild an empty model.

    Args:
        img_size: Input height and width in pixels (112 for every published face ViT).
        patch_size: Patch-embedding kernel and stride (9 -> 12x12 = 144 tokens for the
            insightface family, 8 -> 14x14 = 196 tokens for CVLface).
        in_chans: Input channels (3, RGB).
        embed_dim: Token width D.
        depth: Number of transformer blocks.
        num_heads: Attention heads (8 for insightface / TransFace / LVFace; 8 or 16 for
            CVLface).  Not visible in tensor shapes.
        mlp_ratio: MLP hidden width as a multiple of D.
        qkv_bias: Whether the fused qkv projection has a bias (False in the published models).
        num_features: Embedding size produced by the ``feature`` head.
        senet: Whether the head has TransFace's ``senet`` token weighting.
        mask_token: Whether the (training-only) ``mask_token`` parameter exists; insightface
            checkpoints carry it (CVLface's only when trained with masking), so it follows the
            file for strict loading.
        norm_eps: LayerNorm epsilon.
        bn_eps: BatchNorm1d epsilon of the ``feature`` head.
        drop_path_rate: Stochastic-depth rate (training only; linearly increasing per block).
        fp32_attention: Under autocast, compute attention in float32 as the reference
            implementation does (qkv/proj/MLP stay in the autocast dtype).  No effect in fp32.
    """

    img_size: int = 112
    patch_size: int = 9
    in_chans: int = 3
    embed_dim: int = 512
    depth: int = 12
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    num_features: int = 512
    senet: bool = False
    mask_token: bool = True
    norm_eps: float = 1e-5
    bn_eps: float = 2e-5
    drop_path_rate: float = 0.0
    fp32_attention: bool = True

    @property
    def grid_size(self) -> int:
        """Patches per side (112 // 9 = 12; the last pixels are never seen)."""
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        """Number of tokens (144 for the published models)."""
        return self.grid_size**2

    @property
    def mlp_hidden(self) -> int:
        return int(self.embed_dim * self.mlp_ratio)

    @property
    def family(self) -> str:
        """The published layout this geometry follows, for reports (docs/protocols.md §1.3).

        ``"insightface"`` for patch 9 (144 tokens: insightface arcface_torch, TransFace,
        LVFace), ``"cvlface"`` for patch 8 (196 tokens: CVLface / AdaFace ViTs), ``"custom"``
        otherwise.  Both families share the layer order, the key names and the input
        convention, so nothing but this label depends on it.
        """
        return FAMILIES.get(self.patch_size, "custom")

    def replace(self, **changes: Any) -> "ViTConfig":
        """A copy with some fields changed (``cfg.replace(depth=6)``)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """Short human description used in error messages."""
        extra = ", senet" if self.senet else ""
        return (
            f"D={self.embed_dim}, depth={self.depth}, {self.num_patches} tokens "
            f"(patch {self.patch_size}), mlp {self.mlp_hidden}, {self.num_heads} heads{extra}, "
            f"{self.family} family"
        )


#: ``ViTConfig.family`` by patch size: the geometry that tells the published layouts apart.
FAMILIES: dict[int, str] = {9: "insightface", 8: "cvlface"}


_BASE = {
    "vit_t": {"embed_dim": 256, "depth": 12},
    "vit_s": {"embed_dim": 512, "depth": 12},
    "vit_b": {"embed_dim": 512, "depth": 24},
    "vit_l": {"embed_dim": 768, "depth": 24},
    "vit_h": {"embed_dim": 1024, "depth": 48},
}

#: Named architectures.  The suffixed insightface config names differ from their base only
#: in training-time drop-path and masking, so they map to the same inference architecture.
#: ``cvlface_vit_s``/``cvlface_vit_b`` are CVLface/AdaFace ViTs (CVLface's ``small``/``base``:
#: patch 8 -> 196 tokens; ``mask_token`` only when trained with masking, so off by default).
VARIANTS: dict[str, ViTConfig] = {
    **{name: ViTConfig(**kw) for name, kw in _BASE.items()},  # type: ignore[arg-type]
    "vit_t_dp005_mask0": ViTConfig(**_BASE["vit_t"]),  # type: ignore[arg-type]
    "vit_s_dp005_mask_0": ViTConfig(**_BASE["vit_s"]),  # type: ignore[arg-type]
    "vit_b_dp005_mask_005": ViTConfig(**_BASE["vit_b"]),  # type: ignore[arg-type]
    "vit_l_dp005_mask_005": ViTConfig(**_BASE["vit_l"]),  # type: ignore[arg-type]
    "cvlface_vit_s": ViTConfig(
        embed_dim=512, depth=12, patch_size=8, mlp_ratio=5.0, num_heads=8, mask_token=False
    ),
    "cvlface_vit_b": ViTConfig(
        embed_dim=512, depth=24, patch_size=8, mlp_ratio=3.0, num_heads=16, mask_token=False
    ),
}


def get_config(name: str, **overrides: Any) -> ViTConfig:
    """The :class:`ViTConfig` of a named variant, with optional field overrides.

    Args:
        name: One of :data:`VARIANTS` (``vit_t`` ... ``vit_h``, the suffixed insightface names,
            ``cvlface_vit_s``, ``cvlface_vit_b``).
        **overrides: Fields to change, e.g. ``senet=True`` for TransFace.
    """
    try:
        cfg = VARIANTS[name]
    except KeyError:
        raise InputError(
            f"unknown architecture {name!r}; known: {', '.join(sorted(VARIANTS))}"
        ) from None
    return cfg.replace(**overrides) if overrides else cfg


# --------------------------------------------------------------------------------------
# exits: the one resolver
# --------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    try:
        operator.index(x)
    except TypeError:
        return False
    return True


def resolve_exit(k: Any, depth: int) -> int:
    """1-based block index of exit ``k`` of a ``depth``-block model.

    Exit ``k`` is the output of block ``k`` (1-based); negative ``k`` counts from the end
    (``-1`` is the last block).  Every exit-taking function of vitfree goes through here.

    Raises:
        TypeError: ``k`` is not an integer (bools are refused too).
        ValueError: ``k`` is 0 or outside ``-depth..depth``.
    """
    if isinstance(k, bool) or not _is_int(k):
        raise InputTypeError(f"exits must be integers, got {k!r} ({type(k).__name__})")
    k = operator.index(k)
    if k == 0 or not -depth <= k <= depth:
        raise InputError(
            f"exit {k} is out of range for a {depth}-block model: "
            f"use 1..{depth} (1-based) or -{depth}..-1 (from the end)"
        )
    return k if k > 0 else depth + 1 + k


def resolve_exits(exits: Iterable[Any] | None, depth: int) -> list[int]:
    """1-based block indices of ``exits`` in the given order; ``None`` means every block.

    Duplicates are kept here (``[3, 3]`` -> ``[3, 3]``); every consumer counts an exit once:
    :meth:`VisionTransformer.forward_exits` returns one entry per distinct exit as given
    (``[3, 3]`` -> ``{3: ...}``; ``[12, -1]`` of a 12-block model -> both keys, one block
    run), and the command line and the pipelines evaluate each distinct block once
    (``--exits 4,4,-1`` on 12 blocks = ``4,12``).

    Raises:
        TypeError: ``exits`` is not a sequence of integers.
        ValueError: an exit out of range (see :func:`resolve_exit`), or no exit at all.
    """
    if exits is None:
        return list(range(1, depth + 1))
    if isinstance(exits, (str, bytes)) or not isinstance(exits, Iterable):
        if _is_int(exits):
            raise InputTypeError(f"exits must be a sequence of integers, e.g. [{exits!r}], got {exits!r}")
        raise InputTypeError(f"exits must be a sequence of integers, got {exits!r}")
    resolved = [resolve_exit(k, depth) for k in exits]
    if not resolved:
        raise InputError(f"exits is empty: ask for at least one of 1..{depth}")
    return resolved
