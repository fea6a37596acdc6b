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
  point of per-exit fine-tuning.  Other kinds (low-rank, norms-only, LGViT heads) subclass
  :class:`Head` with their own ``kind``; :meth:`Head.create` builds any registered kind.

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

    def options(self) -> dict[str, Any]:
        """Constructor options besides ``cfg`` (JSON-serialisable); ``{}`` by default."""
        return {}

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

    def embed(self, tokens: Tensor) -> Tensor:
        """Block output tokens (B, N, D) -> embedding (B, num_features)."""
        return checkpoint_embed(self.norm, self.senet, self.feature, tokens)

    def checkpoint_modules(self) -> tuple[nn.LayerNorm, nn.Sequential | None, nn.Sequential]:
        return self.norm, self.senet, self.feature
