"""Loading face-ViT checkpoints into models: architecture inference and strict loading.

The file side (reading state_dicts, exit-head files) is :mod:`vitfree.models.files`.

Checkpoints are plain ``torch.save(state_dict)`` files (insightface, TransFace, LVFace
``model.pt``) or safetensors; some are wrapped (``{"state_dict": ...}``, DDP ``module.``
prefixes, ``torch.compile``'s ``_orig_mod.``, CVLface's ``net.``).  The wrapping is undone
here, never in the model, so the model keeps exactly the published state_dict names.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from vitfree.errors import CheckpointError
from vitfree.models.files import (
    PathLike,
    _looks_like,
    check_tensor_kinds,
    describe_mismatch,
    read_exit_heads,
    read_state_dict,
    save_exit_heads,
)
from vitfree.models.vit import VARIANTS, VisionTransformer, ViTConfig

__all__ = [
    "CheckpointError",
    "describe_mismatch",
    "model_fingerprint",
    "infer_config",
    "load",
    "read_exit_heads",
    "read_state_dict",
    "save_exit_heads",
]


# --------------------------------------------------------------------------------------
# architecture inference
# --------------------------------------------------------------------------------------

_REQUIRED = ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "feature.0.weight")


def infer_config(sd: Mapping[str, Tensor]) -> tuple[ViTConfig, str | None]:
    """Architecture of a face-ViT state_dict from its tensor shapes.

    Embed dim, patch size and input channels come from ``patch_embed.proj.weight``, token
    count from ``pos_embed``, depth from the ``blocks.{i}`` keys, MLP width from ``fc1``,
    embedding size from ``feature.2``, TransFace's ``senet`` and ``mask_token`` from their
    presence.  The head count is not visible in shapes: it comes from the matching named
    variant (8 for every insightface/TransFace/LVFace model).

    Returns:
        ``(config, name)`` with ``name`` the matching key of :data:`VARIANTS` or None.

    Raises:
        CheckpointError: the state_dict is not a face ViT; the message says what it looks like.
    """
    missing = [k for k in _REQUIRED if k not in sd]
    if missing:
        raise CheckpointError(f"checkpoint looks like {_looks_like(sd)}")
    d, c, p, p2 = sd["patch_embed.proj.weight"].shape
    n = sd["pos_embed"].shape[-2]
    grid = math.isqrt(n)
    if grid * grid != n or p != p2:
        raise CheckpointError(f"pos_embed has {n} tokens, not a square grid of {p}x{p2} patches")
    img_size = 112 if 112 // p == grid else grid * p
    block_ids = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = max(block_ids) + 1
    if block_ids != set(range(depth)):
        gaps = sorted(set(range(depth)) - block_ids)
        raise CheckpointError(f"checkpoint is missing blocks {gaps} of {depth}")
    hidden = sd["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in sd else 4 * d
    num_features = sd["feature.2.weight"].shape[0] if "feature.2.weight" in sd else 512
    found = {
        "img_size": img_size,
        "patch_size": p,
        "in_chans": c,
        "embed_dim": d,
        "depth": depth,
        "mlp_ratio": hidden / d,
        "qkv_bias": "blocks.0.attn.qkv.bias" in sd,
        "num_features": num_features,
        "senet": "senet.0.weight" in sd,
        "mask_token": "mask_token" in sd,
    }
    for name, cfg in VARIANTS.items():
        if all(getattr(cfg, f) == v for f, v in found.items() if f not in ("senet", "mask_token")):
            return cfg.replace(senet=found["senet"], mask_token=found["mask_token"]), name
    return ViTConfig(**found), None  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------
# strict matching with readable errors
# --------------------------------------------------------------------------------------


def load(
    path: PathLike,
    arch: str | ViTConfig | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> VisionTransformer:
    """Load a face-ViT checkpoint into a :class:`VisionTransformer` (eval mode).

    Args:
        path: ``.pt``/``.pth`` (read with ``torch.load(weights_only=True)``) or
            ``.safetensors``; ``module.``/``net.`` prefixes and ``{"state_dict": ...}``
            wrappers are undone.
        arch: A :data:`VARIANTS` name, a :class:`ViTConfig`, or None to infer it from the
            tensor shapes.  With a name, TransFace's ``senet`` and the training-only
            ``mask_token`` follow the file (TransFace uses the insightface config names);
            a :class:`ViTConfig` is taken as is.
        dtype: Floating-point dtype of the returned model's weights.
        device: Where to put the model.

    Raises:
        CheckpointError: not a face ViT (the message says what it looks like), or its tensors
            do not fit ``arch``; the message lists missing, unexpected and mis-shaped keys.
            Also an empty or unreadable file, one that is not a PyTorch or safetensors
            checkpoint, or one whose weights are not floating point (int64, complex: the
            dtype and the first such key named).
    """
    sd = read_state_dict(path)
    heads: dict[int, dict[str, Tensor]] = {}
    name: str | None
    for key in [k for k in sd if k.startswith("exit_heads.")]:
        k, _, param = key[len("exit_heads.") :].partition(".")
        if not k.lstrip("-").isdigit() or not param:
            raise CheckpointError(f"{path}: key {key!r} is not exit_heads.<exit>.<name>")
        heads.setdefault(int(k), {})[param] = sd.pop(key)
    if arch is None:
        cfg, name = infer_config(sd)
    elif isinstance(arch, ViTConfig):
        cfg, name = arch, None
    elif isinstance(arch, str):
        if arch not in VARIANTS:
            raise ValueError(f"unknown arch {arch!r}; known: {', '.join(sorted(VARIANTS))}")
        if not all(k in sd for k in _REQUIRED):
            raise CheckpointError(f"{path}: checkpoint looks like {_looks_like(sd)}")
        cfg = VARIANTS[arch].replace(senet="senet.0.weight" in sd, mask_token="mask_token" in sd)
        name = arch
    else:
        raise TypeError(f"arch must be a variant name, a ViTConfig or None, got {arch!r}")
    with torch.device("meta"):
        model = VisionTransformer.from_config(cfg)
    problem = describe_mismatch(sd, model.state_dict())
    if problem:
        label = name or "the inferred architecture"
        hint = ""
        if arch is not None:
            try:
                found_cfg, found = infer_config(sd)
                hint = f"\n  the file looks like {found or 'a ViT'} ({found_cfg.describe()}); "
                hint += "pass arch=None to infer it"
            except CheckpointError:
                pass
        raise CheckpointError(f"{path} does not fit {label} ({cfg.describe()}):\n{problem}{hint}")
    check_tensor_kinds(sd, model.state_dict(), path)
    for exit_k, head in heads.items():
        check_tensor_kinds(head, None, path, prefix=f"exit_heads.{exit_k}.")
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=True)
    model.arch = name
    model = model.to(device).eval()
    if heads:
        model.set_exit_heads(heads)
    return model


def model_fingerprint(model: torch.nn.Module) -> str:
    """A short digest of a model's state_dict: names, shapes, dtypes and sampled values.

    Up to 4096 evenly spaced values per tensor are hashed exactly (no reductions, so the
    digest does not depend on the device); two different checkpoints differ in essentially
    every weight, so this tells them apart in well under a second even for vit_h.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        flat = t.detach().reshape(-1)
        if flat.numel() > 4096:
            # integer spacing: float linspace rounds past the end for tensors of > 2^24 values
            idx = torch.arange(4096, device=flat.device) * (flat.numel() - 1) // 4095
            flat = flat[idx]
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]
