"""Embedding heads as components: one interface for the checkpoint's head and every exit head.

A *head* turns the output tokens of a block, ``(B, N, D)``, into the raw embedding
``(B, num_features)``.  The checkpoint's own head (``norm`` -> [``senet``] -> flatten ->
``feature``, docs/protocols.md §1) is what a training-free exit applies to block ``k``
(§2).  Exit-specific heads replace it at chosen exits; they are :class:`Head` subclasses:

* :class:`Head` is the interface: ``kind`` (the name recorded in a heads file),
  :meth:`Head.embed` (the computation), :meth:`Head.options` (what rebuilds it) and
  :meth:`Head.checkpoint_modules` (its equivalent ``norm``/``senet``/``feature``, which
  :meth:`VisionTransformer.truncate` needs to build a plain depth-k checkpoint).
* :meth:`Head.forward` is the one precision path of every head: under autocast it runs
  :meth:`Head.embed` in float32, as the reference evaluation does for the shared head.  So an
  exit head gives the same numbers through ``forward_exits`` and through ``truncate(k)``,
  with or without ``--amp``.
* :class:`ExitHead` (kind ``"copy"``) is a full copy of the checkpoint's head, the starting
  point of per-exit fine-tuning.  Other kinds subclass :class:`Head` with their own ``kind``;
  :meth:`Head.create` builds any registered kind, :meth:`Head.start` one initialised from a
  model's checkpoint head (what :mod:`vitfree.finetune` trains):

  ========================  ===========================================================
  kind                      trained and stored (the rest is the model's, shared, frozen)
  ========================  ===========================================================
  ``"copy"``                a full copy of ``norm``/``senet``/``feature``
  ``"lora"``                a rank-r update ``B A`` of the first Linear + the norms head
  ``"norms"``               LayerNorm, both BatchNorms, the second Linear
  ``"lgvit_local"``         LGViT local perception (1x1, depthwise 3x3, 1x1 conv) + copy
  ``"lgvit_global"``        LGViT global aggregation (attention over pooled keys) + copy
  ========================  ===========================================================

  Kinds that share the model's weights get them by :meth:`Head.bind` (called when a head is
  installed); they store only what they train, and :meth:`Head.checkpoint_modules` folds
  them back into a plain head for :meth:`VisionTransformer.truncate` (``"lgvit_*"`` have no
  such equivalent).

This module imports nothing from the model, so the model, the checkpoint reader and the
fine-tuning code can all depend on it.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from vitfree.models.config import ViTConfig
from vitfree.models.layers import _autocast_on

if TYPE_CHECKING:
    from vitfree.models.vit import VisionTransformer

__all__ = [
    "ExitHead",
    "Head",
    "HeadSpec",
    "LGViTGlobalHead",
    "LGViTLocalHead",
    "LoRAHead",
    "NormsHead",
    "checkpoint_embed",
    "fp32_under_autocast",
    "head_kinds",
]


def _make_senet(cfg: ViTConfig) -> nn.Sequential:
    n = cfg.num_patches
    return nn.Sequential(
        nn.Linear(cfg.embed_dim * n, n, bias=False),
        nn.ReLU(),
        nn.Linear(n, n, bias=False),
        nn.Sigmoid(),
    )


def _make_feature(cfg: ViTConfig) -> nn.Sequential:
    d = cfg.embed_dim
    return nn.Sequential(
        nn.Linear(d * cfg.num_patches, d, bias=False),
        nn.BatchNorm1d(d, eps=cfg.bn_eps),
        nn.Linear(d, cfg.num_features, bias=False),
        nn.BatchNorm1d(cfg.num_features, eps=cfg.bn_eps),
    )


def checkpoint_embed(
    norm: nn.Module, senet: nn.Module | None, feature: nn.Module, tokens: Tensor
) -> Tensor:
    """The checkpoint head's computation: ``feature(flatten(norm(x) [* senet weights]))``.

    Args:
        norm: the head's LayerNorm.
        senet: TransFace's token weighting (``Linear, ReLU, Linear, Sigmoid`` on the flattened
            tokens, one weight per token), or None.
        feature: ``Linear(N*D, D), BatchNorm1d, Linear(D, F), BatchNorm1d``.
        tokens: (B, N, D) block output, before ``norm``.

    Returns:
        (B, F) raw embedding.
    """
    x = norm(tokens)
    if senet is not None:
        x = x * senet(x.flatten(1)).unsqueeze(-1)
    return feature(x.flatten(1))


def fp32_under_autocast(embed: Callable[[Tensor], Tensor], tokens: Tensor) -> Tensor:
    """Run ``embed(tokens)``; under autocast, in float32 with autocast off (the one head path).

    The reference evaluation computes the head in float32 whatever the backbone's precision;
    every head of vitfree (the checkpoint's and each exit head) goes through here.
    """
    if _autocast_on(tokens):
        with torch.autocast(device_type=tokens.device.type, enabled=False):
            return embed(tokens.float())
    return embed(tokens)


class Head(nn.Module):
    """Interface of an embedding head: (B, N, D) block tokens -> (B, F) raw embedding.

    Subclasses set a unique class attribute ``kind`` (registered automatically, recorded in
    heads files), implement :meth:`embed`, and take ``(cfg: ViTConfig, **options)`` in their
    constructor, with :meth:`options` returning those options so that a heads file can
    rebuild the head before loading its state_dict.
    """

    kind: ClassVar[str] = ""
    _registry: ClassVar[dict[str, type[Head]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind", "")
        if kind:
            if kind in Head._registry and Head._registry[kind] is not cls:
                raise ValueError(f"head kind {kind!r} is registered twice")
            Head._registry[kind] = cls

    @classmethod
    def create(cls, kind: str, cfg: ViTConfig, **options: Any) -> Head:
        """A freshly initialised head of a registered ``kind`` fitting ``cfg``."""
        try:
            klass = Head._registry[kind]
        except KeyError:
            raise ValueError(
                f"unknown head kind {kind!r}; known: {', '.join(head_kinds())}"
            ) from None
        return klass(cfg, **options)

    @classmethod
    def start(cls, model: VisionTransformer, kind: str | None = None, **options: Any) -> Head:
        """A head of ``kind`` for ``model``, bound to it and initialised from its checkpoint
        head (:meth:`init_from_model`): the starting point of exit-head fine-tuning.

        ``kind`` defaults to the class's own (``LoRAHead.start(model)``), else ``"copy"``.
        The head is on the model's device and dtype.  Its output at exit ``k`` starts equal
        to the training-free exit (for ``"lora"``, ``"lgvit_*"``: their update starts at zero).
        """
        ref = model.pos_embed
        kind = kind or cls.kind or "copy"
        head = Head.create(kind, model.config, **options).to(device=ref.device, dtype=ref.dtype)
        head.bind(model)
        head.init_from_model(model)
        return head

    def options(self) -> dict[str, Any]:
        """Constructor options besides ``cfg`` (JSON-serialisable); ``{}`` by default."""
        return {}

    def bind(self, model: VisionTransformer) -> None:
        """Attach the model's shared weights that this head uses without owning them.

        Kinds that store only what they train (``"lora"``, ``"norms"``) keep the rest of the
        checkpoint head (its first Linear, ``senet``) by reference to the model:
        :meth:`VisionTransformer.set_exit_heads` and :meth:`VisionTransformer.new_exit_head`
        call this.  Shared weights are not in the head's state_dict or ``parameters()``.
        Kinds that own all their weights do nothing (the default).
        """

    def init_from_model(self, model: VisionTransformer) -> None:
        """Overwrite this head's weights from ``model``'s checkpoint head (the fine-tuning
        start); extra parts (low-rank factors, adapters) are reset to their zero update."""
        raise NotImplementedError(f"a {self.kind!r} head cannot be initialised from a model")

    def embed(self, tokens: Tensor) -> Tensor:
        """(B, N, D) tokens -> (B, F) embedding, in the dtype of ``tokens``."""
        raise NotImplementedError

    def forward(self, tokens: Tensor) -> Tensor:
        """(B, N, D) tokens -> (B, F) embedding; float32 under autocast (see module docs)."""
        return fp32_under_autocast(self.embed, tokens)

    def checkpoint_modules(self) -> tuple[nn.LayerNorm, nn.Sequential | None, nn.Sequential]:
        """``(norm, senet, feature)`` computing the same embedding in the checkpoint layout.

        :meth:`VisionTransformer.truncate` installs them, so a truncated model stays a plain
        checkpoint.  Heads that cannot be written that way raise ``NotImplementedError``.
        """
        raise NotImplementedError(
            f"a {self.kind!r} head has no checkpoint-layout equivalent, so truncate() cannot "
            f"build a plain depth-k model with it"
        )


@dataclasses.dataclass
class HeadSpec:
    """A head as stored in a heads file: what rebuilds it and its weights.

    Attributes:
        kind: a registered :attr:`Head.kind` (``"copy"`` for :class:`ExitHead`).
        options: constructor options besides the model's config (:meth:`Head.options`).
        state_dict: the head's tensors.
    """

    kind: str
    options: dict[str, Any]
    state_dict: dict[str, Tensor]


def head_kinds() -> list[str]:
    """The registered head kinds, sorted."""
    return sorted(Head._registry)


class ExitHead(Head):
    """An exit-specific copy of the checkpoint's head: ``norm`` -> [``senet``] -> ``feature``.

    Its state_dict names equal the head names of a checkpoint (``norm.weight``,
    ``senet.0.weight``, ``feature.0.weight``, ...), so the checkpoint's shared head can be
    copied into it (:meth:`from_model`) as the starting point of per-exit fine-tuning.

    Args:
        cfg: Architecture of the backbone it attaches to (width, token count, senet).
    """

    kind: ClassVar[str] = "copy"

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.senet: nn.Sequential | None = _make_senet(cfg) if cfg.senet else None
        self.feature = _make_feature(cfg)

    @classmethod
    def from_model(cls, model: VisionTransformer) -> ExitHead:
        """A deep copy of the model's shared head (the training-free exit head)."""
        head = cls.__new__(cls)
        nn.Module.__init__(head)
        head.norm = copy.deepcopy(model.norm)
        head.senet = copy.deepcopy(model.senet)
        head.feature = copy.deepcopy(model.feature)
        return head

    def init_from_model(self, model: VisionTransformer) -> None:
        with torch.no_grad():
            self.norm.load_state_dict(model.norm.state_dict())
            if self.senet is not None and model.senet is not None:
                self.senet.load_state_dict(model.senet.state_dict())
            self.feature.load_state_dict(model.feature.state_dict())

    def embed(self, tokens: Tensor) -> Tensor:
        """Block output tokens (B, N, D) -> embedding (B, num_features)."""
        return checkpoint_embed(self.norm, self.senet, self.feature, tokens)

    def checkpoint_modules(self) -> tuple[nn.LayerNorm, nn.Sequential | None, nn.Sequential]:
        return self.norm, self.senet, self.feature


# --------------------------------------------------------------------------------------
# light and heterogeneous head kinds (exit-head fine-tuning, docs/finetune.md)
# --------------------------------------------------------------------------------------


class NormsHead(Head):
    """Trains only the head's LayerNorm, its two BatchNorms and its second Linear.

    The large first Linear (``144*D x D``: 37.7M weights for vit_s) and TransFace's ``senet``
    stay the model's own, shared and frozen: they are *bound* from the model
    (:meth:`bind`, which :meth:`VisionTransformer.set_exit_heads` calls) and never stored.
    The state_dict holds what is trained: ``norm.*``, ``feature.1.*`` (BatchNorm1d),
    ``feature.2.weight`` (``D x F``) and ``feature.3.*`` (BatchNorm1d): the checkpoint's own
    names (``feature.0`` is an empty placeholder for the shared Linear).

    Args:
        cfg: Architecture of the backbone it attaches to.
    """

    kind: ClassVar[str] = "norms"

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        d = cfg.embed_dim
        self.norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.feature = nn.Sequential(
            nn.Identity(),  # feature.0: the model's Linear(N*D, D), bound, not owned
            nn.BatchNorm1d(d, eps=cfg.bn_eps),
            nn.Linear(d, cfg.num_features, bias=False),
            nn.BatchNorm1d(cfg.num_features, eps=cfg.bn_eps),
        )
        # (first Linear, senet) of the bound model: a plain tuple, so neither is registered
        # as a sub-module (not in state_dict(), parameters(), .to()): the model owns them.
        self._shared: tuple[nn.Linear, nn.Sequential | None] | None = None

    def bind(self, model: VisionTransformer) -> None:
        """Use ``model``'s first feature Linear and ``senet`` (shared, not copied, not stored)."""
        first = model.feature[0]
        if not isinstance(first, nn.Linear):
            raise TypeError(f"a {self.kind!r} head needs the model's feature.0 to be a Linear")
        self._shared = (first, model.senet)

    def _bound(self) -> tuple[nn.Linear, nn.Sequential | None]:
        if self._shared is None:
            raise RuntimeError(
                f"this {self.kind!r} head is not bound to a model (it shares the model's first "
                f"head Linear): install it with model.set_exit_heads(...) or call head.bind(model)"
            )
        return self._shared

    def init_from_model(self, model: VisionTransformer) -> None:
        self.bind(model)
        with torch.no_grad():
            self.norm.load_state_dict(model.norm.state_dict())
            for i in (1, 2, 3):
                self.feature[i].load_state_dict(model.feature[i].state_dict())

    def _first_linear(self, x: Tensor) -> Tensor:
        return self._bound()[0](x)

    def embed(self, tokens: Tensor) -> Tensor:
        _, senet = self._bound()
        x = self.norm(tokens)
        if senet is not None:
            x = x * senet(x.flatten(1)).unsqueeze(-1)
        h = self._first_linear(x.flatten(1))
        return self.feature[3](self.feature[2](self.feature[1](h)))

    def _checkpoint_first_linear(self) -> nn.Linear:
        return self._bound()[0]

    def checkpoint_modules(self) -> tuple[nn.LayerNorm, nn.Sequential | None, nn.Sequential]:
        _, senet = self._bound()
        f = self.feature
        return self.norm, senet, nn.Sequential(self._checkpoint_first_linear(), f[1], f[2], f[3])

    def extra_repr(self) -> str:
        return "bound" if self._shared is not None else "unbound"


class LoRAHead(NormsHead):
    """A low-rank update of the head's first Linear on top of the model's frozen weights.

    ``feature.0(x) = x W^T + (alpha / rank) * (x A^T) B^T`` with the model's ``W`` (shared,
    bound, frozen) and the trained ``A`` (``rank x N*D``, ``lora_a``) and ``B``
    (``D x rank``, ``lora_b``, zero at the start, so training starts from the checkpoint's
    head); the LayerNorm, BatchNorms and second Linear are the head's own, as in
    :class:`NormsHead`.  Stored: ``lora_a``, ``lora_b`` and the tensors of a
    :class:`NormsHead`.  :meth:`checkpoint_modules` merges ``W + (alpha/rank) B A`` into a
    plain Linear, so :meth:`VisionTransformer.truncate` builds an ordinary checkpoint.

    Args:
        cfg: Architecture of the backbone it attaches to.
        rank: Rank of the update (default 8).
        alpha: Scale numerator (default: ``rank``, i.e. a scale of 1).
    """

    kind: ClassVar[str] = "lora"

    def __init__(self, cfg: ViTConfig, rank: int = 8, alpha: float | None = None) -> None:
        super().__init__(cfg)
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"lora rank must be an integer >= 1, got {rank!r}")
        self.rank = rank
        self.alpha = float(rank if alpha is None else alpha)
        self.lora_a = nn.Parameter(torch.zeros(rank, cfg.embed_dim * cfg.num_patches))
        self.lora_b = nn.Parameter(torch.zeros(cfg.embed_dim, rank))
        self._init_factors()

    def _init_factors(self) -> None:
        # as LoRA does: A random (Kaiming-uniform, like a Linear's weight), B zero
        nn.init.kaiming_uniform_(self.lora_a, a=5**0.5)
        nn.init.zeros_(self.lora_b)

    def options(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha}

    def init_from_model(self, model: VisionTransformer) -> None:
        super().init_from_model(model)
        self._init_factors()

    def _first_linear(self, x: Tensor) -> Tensor:
        w = self._bound()[0]
        low = nn.functional.linear(nn.functional.linear(x, self.lora_a), self.lora_b)
        return w(x) + low * (self.alpha / self.rank)

    def merged_weight(self) -> Tensor:
        """``W + (alpha/rank) B A``: the first Linear's weight with the update folded in."""
        w = self._bound()[0].weight
        delta = (self.lora_b.float() @ self.lora_a.float()) * (self.alpha / self.rank)
        return (w.float() + delta).to(w.dtype)

    def _checkpoint_first_linear(self) -> nn.Linear:
        w = self._bound()[0].weight
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.merged_weight())
        return lin

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, {super().extra_repr()}"


class _AdaptedCopyHead(Head):
    """A token-mixing module (residual, zero at the start) before a copy of the checkpoint head.

    State: the adapter's tensors and ``norm.*`` / ``senet.*`` / ``feature.*`` as in
    :class:`ExitHead`.  No checkpoint-layout equivalent (the adapter is not a head of a
    published checkpoint), so :meth:`VisionTransformer.truncate` refuses these heads.
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.grid = cfg.grid_size
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.senet: nn.Sequential | None = _make_senet(cfg) if cfg.senet else None
        self.feature = _make_feature(cfg)

    def init_from_model(self, model: VisionTransformer) -> None:
        with torch.no_grad():
            self.norm.load_state_dict(model.norm.state_dict())
            if self.senet is not None and model.senet is not None:
                self.senet.load_state_dict(model.senet.state_dict())
            self.feature.load_state_dict(model.feature.state_dict())
            self._reset_adapter()

    def _reset_adapter(self) -> None:
        raise NotImplementedError

    def adapt(self, tokens: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D): the adapter, residual."""
        raise NotImplementedError

    def embed(self, tokens: Tensor) -> Tensor:
        return checkpoint_embed(self.norm, self.senet, self.feature, self.adapt(tokens))


class LGViTLocalHead(_AdaptedCopyHead):
    """LGViT's local-perception exit head, then a copy of the checkpoint head.

    On the ``g x g`` token grid (12x12 for patch 9 on 112x112): ``1x1 conv (D -> hidden),
    GELU, depthwise 3x3 conv, GELU, 1x1 conv (hidden -> D)``, added to the tokens
    (residual; the last conv starts at zero, so the head starts as the checkpoint's).
    State: ``local.{0,2,4}.{weight,bias}`` and the copied head's tensors.

    Args:
        cfg: Architecture of the backbone it attaches to.
        hidden: Channels of the convolutions (default: D).
    """

    kind: ClassVar[str] = "lgvit_local"

    def __init__(self, cfg: ViTConfig, hidden: int | None = None) -> None:
        super().__init__(cfg)
        d = cfg.embed_dim
        h = int(hidden or d)
        if h < 1:
            raise ValueError(f"lgvit_local hidden must be >= 1, got {hidden!r}")
        self.hidden = h
        self.local = nn.Sequential(
            nn.Conv2d(d, h, 1),
            nn.GELU(),
            nn.Conv2d(h, h, 3, padding=1, groups=h),
            nn.GELU(),
            nn.Conv2d(h, d, 1),
        )
        self._reset_adapter()

    def _reset_adapter(self) -> None:
        for m in self.local:
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
        last = self.local[4]
        assert isinstance(last, nn.Conv2d) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def options(self) -> dict[str, Any]:
        return {"hidden": self.hidden}

    def adapt(self, tokens: Tensor) -> Tensor:
        b, n, d = tokens.shape
        g = self.grid
        grid = tokens.transpose(1, 2).reshape(b, d, g, g)
        return tokens + self.local(grid).flatten(2).transpose(1, 2)


class LGViTGlobalHead(_AdaptedCopyHead):
    """LGViT's global-aggregation exit head, then a copy of the checkpoint head.

    Multi-head attention of every token over a pooled grid: queries from the LayerNorm-ed
    tokens, keys and values from the same grid average-pooled ``pool x pool`` (12x12 -> 6x6
    for ``pool=2``), output projection added to the tokens (residual; the projection starts at
    zero, so the head starts as the checkpoint's).  State: ``attn_norm.*``, ``q.*``, ``kv.*``,
    ``proj.*`` and the copied head's tensors.

    Args:
        cfg: Architecture of the backbone it attaches to.
        pool: Pooling window and stride of the keys/values (default 2).
        heads: Attention heads (default: the backbone's).
    """

    kind: ClassVar[str] = "lgvit_global"

    def __init__(self, cfg: ViTConfig, pool: int = 2, heads: int | None = None) -> None:
        super().__init__(cfg)
        d = cfg.embed_dim
        nh = int(heads or cfg.num_heads)
        if nh < 1 or d % nh:
            raise ValueError(f"lgvit_global heads={heads!r} must divide the width D={d}")
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ValueError(f"lgvit_global pool must be an integer >= 1, got {pool!r}")
        self.pool, self.heads = pool, nh
        self.attn_norm = nn.LayerNorm(d, eps=cfg.norm_eps)
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.proj = nn.Linear(d, d)
        self._reset_adapter()

    def _reset_adapter(self) -> None:
        self.attn_norm.reset_parameters()
        for lin in (self.q, self.kv):
            nn.init.trunc_normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def options(self) -> dict[str, Any]:
        return {"pool": self.pool, "heads": self.heads}

    def adapt(self, tokens: Tensor) -> Tensor:
        b, n, d = tokens.shape
        g, nh = self.grid, self.heads
        x = self.attn_norm(tokens)
        grid = x.transpose(1, 2).reshape(b, d, g, g)
        pooled = nn.functional.avg_pool2d(
            grid, self.pool, self.pool, ceil_mode=True, count_include_pad=False
        )
        kv_in = pooled.flatten(2).transpose(1, 2)  # (B, M, D)
        q = self.q(x).reshape(b, n, nh, d // nh).transpose(1, 2)
        k, v = self.kv(kv_in).reshape(b, -1, 2, nh, d // nh).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return tokens + self.proj(out.transpose(1, 2).reshape(b, n, d))
