"""Embedding heads: the checkpoint's head layout and exit-specific heads."""

import copy
from typing import TYPE_CHECKING

from torch import Tensor, nn

from vitfree.models.config import ViTConfig

if TYPE_CHECKING:
    from vitfree.models.vit import VisionTransformer

__all__ = ["ExitHead"]


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


class ExitHead(nn.Module):
    """An exit-specific head: ``norm`` -> [``senet``] -> flatten -> ``feature``.

    Its state_dict names equal the head names of a checkpoint (``norm.weight``,
    ``senet.0.weight``, ``feature.0.weight``, ...), so the checkpoint's shared head can be
    copied into it (:meth:`from_model`) as the starting point of per-exit fine-tuning.

    Args:
        cfg: Architecture of the backbone it attaches to (width, token count, senet).
    """

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.senet: nn.Sequential | None = _make_senet(cfg) if cfg.senet else None
        self.feature = _make_feature(cfg)

    @classmethod
    def from_model(cls, model: "VisionTransformer") -> "ExitHead":
        """A deep copy of the model's shared head (the training-free exit head)."""
        head = cls.__new__(cls)
        nn.Module.__init__(head)
        head.norm = copy.deepcopy(model.norm)
        head.senet = copy.deepcopy(model.senet)
        head.feature = copy.deepcopy(model.feature)
        return head

    def forward(self, tokens: Tensor) -> Tensor:
        """Block output tokens (B, N, D) -> embedding (B, num_features)."""
        x = self.norm(tokens)
        if self.senet is not None:
            x = x * self.senet(x.flatten(1)).unsqueeze(-1)
        return self.feature(x.flatten(1))
