"""Tiny random-weight ViTs and the direct per-image feature reference of the extraction tests.

A helper module shared by test_extract.py and test_cli_models.py (and the ``tiny_checkpoint``
fixture of conftest.py): test modules import helpers from here, never from each other.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from models_reference import randomize_
from vitfree.data import align_face
from vitfree.models import VisionTransformer, preprocess

__all__ = ["reference_features", "tiny_bn_model", "tiny_images", "tiny_model"]


def tiny_model(seed: int = 0, **kw) -> VisionTransformer:
    """A 3-block, 64-wide ViT with random weights (``randomize_``), in eval mode."""
    cfg = {"embed_dim": 64, "depth": 3, "num_heads": 4} | kw
    return randomize_(VisionTransformer(**cfg), seed=seed).eval()


def tiny_bn_model(depth: int = 4, senet: bool = False, seed: int = 0) -> VisionTransformer:
    """A vit_t-shaped ViT 32 wide with ``depth`` blocks and non-trivial BatchNorm statistics
    (so that different heads give visibly different embeddings), in eval mode."""
    from torch import nn
    from vitfree.models import create_model

    torch.manual_seed(seed)
    m = create_model("vit_t", senet=senet, depth=depth, embed_dim=32, num_heads=4, num_features=24)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m.eval()


def tiny_images(b: int, seed: int = 1) -> torch.Tensor:
    """(b, 3, 112, 112) float32 in [-1, 1), seeded."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 112, 112, generator=g) * 2 - 1


def reference_features(model, meta, exits):
    """Image and flip features of every row, one image at a time (no batching, no workers)."""
    feats = {k: [] for k in exits}
    flips = {k: [] for k in exits}
    with torch.inference_mode():
        for i, name in enumerate(meta.names):
            rgb = align_face(cv2.imread(str(meta.image_dir / name)), meta.landmarks[i])
            a = model.forward_exits(preprocess(rgb), exits)
            b = model.forward_exits(preprocess(np.ascontiguousarray(rgb[:, ::-1])), exits)
            for k in exits:
                feats[k].append(a[k][0].numpy())
                flips[k].append(b[k][0].numpy())
    return {k: np.stack(v) for k, v in feats.items()}, {k: np.stack(v) for k, v in flips.items()}
