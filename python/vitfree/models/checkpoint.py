"""Loading face-ViT checkpoints into models: architecture inference and strict loading.

The file side (reading state_dicts, exit-head files) is :mod:`vitfree.models.files`.

Checkpoints are plain ``torch.save(state_dict)`` files (insightface, TransFace, LVFace
``model.pt``) or safetensors; some are wrapped (``{"state_dict": ...}``, DDP ``module.``
prefixes, ``torch.compile``'s ``_orig_mod.``, CVLface's ``net.`` / ``model.net.``).  The
wrapping is undone here, never in the model, so the model keeps exactly the published
state_dict names.

The architecture comes from the tensor shapes; what they cannot show (the head count) comes
from a named variant or, for CVLface, from the ``config.json`` / ``model.yaml`` beside the
file (docs/protocols.md §1.3).  CVLface models that are not a plain ViT (KP-RPE, iRPE, ...)
are named and refused.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vitfree.errors import CheckpointError, InputError
from vitfree.models.files import (
    PathLike,
    _looks_like,
    check_tensor_kinds,
    describe_mismatch,
    read_exit_heads,
    read_model_config,
    read_state_dict,
    save_exit_heads,
)
from vitfree.models.vit import VARIANTS, VisionTransformer, ViTConfig

__all__ = [
    "CONFIG_KEYS",
    "CVLFACE_NAMES",
    "CheckpointError",
    "demo_weights",
    "describe_mismatch",
    "infer_config",
    "load",
    "model_fingerprint",
    "read_exit_heads",
    "read_model_config",
    "read_state_dict",
    "save_exit_heads",
]


# --------------------------------------------------------------------------------------
# architecture inference
# --------------------------------------------------------------------------------------

logger = logging.getLogger("vitfree")

_REQUIRED = ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "feature.0.weight")

#: The fields that tensor shapes determine (the head count is not one of them).
_GEOMETRY = (
    "img_size",
    "patch_size",
    "in_chans",
    "embed_dim",
    "depth",
    "mlp_ratio",
    "qkv_bias",
    "num_features",
)

#: Keys read from a config.json / model.yaml (after unwrapping ``conf``, ``model_config``,
#: ``model``): the first alias present wins; everything else is ignored.
CONFIG_KEYS: dict[str, tuple[str, ...]] = {
    "name": ("name", "arch", "model_name"),
    "yaml_path": ("yaml_path",),
    "rpe_config": ("rpe_config",),
    "patch_size": ("patch_size",),
    "embed_dim": ("embed_dim", "hidden_dim", "hidden_size"),
    "depth": ("depth", "num_layers"),
    "num_heads": ("num_heads", "num_attention_heads"),
    "mlp_ratio": ("mlp_ratio",),
    "num_features": ("output_dim", "num_features", "embedding_size"),
    "img_size": ("img_size", "image_size", "input_size"),
    "color_space": ("color_space",),
}
_CONFIG_WRAPPERS = ("conf", "model_config", "model")

#: CVLface's model names (``name`` in its model.yaml / config.json; the architecture folder is
#: in ``yaml_path``): ``small`` and ``base`` of ``models/vit``.
CVLFACE_NAMES = {
    "small": "cvlface_vit_s",
    "vit_small": "cvlface_vit_s",
    "base": "cvlface_vit_b",
    "vit_base": "cvlface_vit_b",
}
#: CVLface architecture folders (in ``yaml_path``) that are not a plain ViT.
_CVLFACE_OTHER = {
    "vit_kprpe": "KP-RPE",
    "swin_kprpe": "KP-RPE",
    "vit_irpe": "iRPE",
    "part_fvit": "Part fViT",
    "swin": "Swin",
    "iresnet": "IResNet",
    "iresnet_insightface": "IResNet",
}
_KPRPE_REFUSAL = "KP-RPE variants need the 5 landmarks as a second input; not supported"


def _shape_fields(sd: Mapping[str, Tensor]) -> dict[str, Any]:
    """What the tensor shapes say (raises if the state_dict is not a face ViT)."""
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
    return {
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


def _hidden(found: Mapping[str, Any]) -> int:
    return round(found["embed_dim"] * found["mlp_ratio"])


def _shape_summary(found: Mapping[str, Any]) -> str:
    """The geometry the shapes show, in :meth:`ViTConfig.describe`'s words (no head count)."""
    grid = found["img_size"] // found["patch_size"]
    return (
        f"D={found['embed_dim']}, depth={found['depth']}, {grid * grid} tokens "
        f"(patch {found['patch_size']}), mlp {_hidden(found)}"
    )


def _fits(cfg: ViTConfig, found: Mapping[str, Any]) -> bool:
    return all(getattr(cfg, f) == found[f] for f in _GEOMETRY)


def _from_file(cfg: ViTConfig, found: Mapping[str, Any]) -> ViTConfig:
    """``cfg`` with TransFace's ``senet`` and the training-only ``mask_token`` as in the file."""
    return cfg.replace(senet=found["senet"], mask_token=found["mask_token"])


def _rpe_keys(sd: Mapping[str, Tensor]) -> list[str]:
    """Keys of relative-position-encoding modules (CVLface's KP-RPE and iRPE ViTs)."""
    return [
        k
        for k in sd
        if k.startswith("keypoint_linear.") or any(p.startswith("rpe_") for p in k.split("."))
    ]


def _refuse_unsupported(
    sd: Mapping[str, Tensor], config: Mapping[str, Any] | None = None, *, source: str = "config"
) -> None:
    """Raise :class:`CheckpointError` for CVLface models that are not a plain face ViT.

    KP-RPE ViTs (keys ``keypoint_linear.*`` or ``blocks.{i}.attn.rpe_*``, or a config naming
    ``kprpe`` / holding an ``rpe_config``) take the 5 landmarks as a second input; iRPE,
    Part fViT, Swin and IResNet models (named by their CVLface ``yaml_path``) have other layers.
    """
    keys = sorted(_rpe_keys(sd), key=lambda k: not k.startswith("keypoint_linear."))
    fields = _config_fields(config, source)[0] if config is not None else {}
    text = f"{fields.get('name') or ''} {fields.get('yaml_path') or ''}".lower()
    rpe_cfg = fields.get("rpe_config")
    rpe_name = str(rpe_cfg.get("name", "")) if isinstance(rpe_cfg, Mapping) else ""
    folder = re.search(r"models/([a-z_]+)/", fields.get("yaml_path") or "")
    evidence = []
    if keys:
        more = f", ... ({len(keys)} keys)" if len(keys) > 3 else ""
        evidence.append(f"keys {', '.join(keys[:3])}{more}")
    for f in ("name", "yaml_path"):
        if fields.get(f):
            evidence.append(f"{source}: {f} {fields[f]!r}")
    if rpe_cfg:
        evidence.append(f"{source}: rpe_config {rpe_name or 'present'}")
    why = "; ".join(evidence)
    if (
        any(k.startswith("keypoint_linear.") for k in keys)
        or "kprpe" in text
        or "kp" in rpe_name.lower()
    ):
        raise CheckpointError(
            f"a KP-RPE variant (keypoint-relative position encoding: {why}): {_KPRPE_REFUSAL}"
        )
    if keys or rpe_cfg or "irpe" in text:
        raise CheckpointError(f"a ViT with relative position encoding (iRPE: {why}); not supported")
    if folder and folder.group(1) in _CVLFACE_OTHER:
        kind = _CVLFACE_OTHER[folder.group(1)]
        raise CheckpointError(
            f"a CVLface {kind} model ({why}), not a plain face ViT; vitfree.models loads "
            f"insightface-layout ViTs only"
        )


def _config_fields(config: Mapping[str, Any], source: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields of :data:`CONFIG_KEYS` found in ``config``, checked and normalised, and the
    key each was read from."""
    level: Mapping[str, Any] = config
    known = {a for aliases in CONFIG_KEYS.values() for a in aliases}
    while not known & set(level):
        inner = next(
            (level[w] for w in _CONFIG_WRAPPERS if isinstance(level.get(w), Mapping)), None
        )
        if inner is None:
            return {}, {}
        level = inner
    out: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for field, aliases in CONFIG_KEYS.items():
        key = next((a for a in aliases if a in level and level[a] is not None), None)
        if key is None:
            continue
        v = level[key]
        if field in ("name", "yaml_path", "color_space"):
            if not isinstance(v, str):
                raise CheckpointError(f"{source}: {key} = {v!r} is not a string")
            out[field] = v
        elif field == "rpe_config":
            out[field] = v
        elif field == "mlp_ratio":
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise CheckpointError(f"{source}: {key} = {v!r} is not a positive number")
            out[field] = float(v)
        else:
            if field == "img_size" and isinstance(v, list) and v:
                v = v[-1]  # input_size [3, 112, 112] (C, H, W) or [112, 112]
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CheckpointError(f"{source}: {key} = {level[key]!r} is not a positive integer")
            out[field] = v
        keys[field] = key
    return out, keys


def _heads_unknown(found: Mapping[str, Any], why: str) -> CheckpointError:
    cfg = ViTConfig(**found)  # the inferred geometry, for the message
    fields = ", ".join(
        f"{f}={getattr(cfg, f)!r}"
        for f in ("img_size", "patch_size", "embed_dim", "depth", "mlp_ratio", "num_features")
    )
    return CheckpointError(
        f"cannot infer the number of attention heads: it does not show in tensor shapes, and "
        f'{why}. Give it: arch="cvlface_vit_s" or arch="cvlface_vit_b" (--arch) for the '
        f"published CVLface sizes, arch=vitfree.models.ViTConfig({fields}, num_heads=H), or a "
        f'config.json beside the checkpoint (CVLface\'s own, or {{"num_heads": H}})'
    )


def infer_config(
    sd: Mapping[str, Tensor],
    config: Mapping[str, Any] | None = None,
    *,
    source: str = "config",
) -> tuple[ViTConfig, str | None]:
    """Architecture of a face-ViT state_dict from its tensor shapes (and a config, if given).

    Embed dim, patch size and input channels come from ``patch_embed.proj.weight``, token
    count from ``pos_embed``, depth from the ``blocks.{i}`` keys, MLP width from ``fc1``,
    embedding size from ``feature.2``, TransFace's ``senet`` and ``mask_token`` from their
    presence.  The head count is not visible in shapes; it comes, in this order, from
    ``num_heads`` in ``config``, from the variant that ``config`` names (CVLface's ``small`` /
    ``base`` are ``cvlface_vit_s`` / ``cvlface_vit_b``), from the named variant the shapes
    match, and for patch 9 (the insightface family, where every published model has 8) it is
    8.  Otherwise it is an error: a CVLface-like geometry matching no named variant.

    Args:
        sd: The state_dict (prefixes already stripped).
        config: A config.json / model.yaml as read (:func:`vitfree.models.files.read_model_config`);
            keys of :data:`CONFIG_KEYS` are read (inside ``conf`` too), the rest ignored.
            Geometry it states must agree with the shapes.
        source: What ``config`` is called in messages (its path).

    Returns:
        ``(config, name)`` with ``name`` the :data:`VARIANTS` entry used, or None.

    Raises:
        CheckpointError: not a face ViT (the message says what it looks like); a KP-RPE or other
            unsupported CVLface model; ``config`` contradicts the shapes; the head count
            cannot be inferred (the message says how to give it).
    """
    _refuse_unsupported(sd, config, source=source)
    found = _shape_fields(sd)
    matched = next((n for n, cfg in VARIANTS.items() if _fits(cfg, found)), None)
    fields, names = _config_fields(config, source) if config is not None else ({}, {})
    for f in _GEOMETRY:
        if f not in fields:
            continue
        want, have = fields[f], found[f]
        if f == "mlp_ratio":
            agree = int(found["embed_dim"] * want) == _hidden(found)
        else:
            agree = want == have
        if not agree:
            raise CheckpointError(
                f"{source} says {names[f]} {want!r}, but the checkpoint's tensors have {f} {have!r}"
            )
    variant: str | None = None
    name = fields.get("name")
    if name is not None:
        key = name.strip().lower()
        variant = key if key in VARIANTS else CVLFACE_NAMES.get(key)
        if variant is not None and not _fits(VARIANTS[variant], found):
            vcfg = VARIANTS[variant]
            diff = ", ".join(
                f"{f} {found[f]!r} (not {getattr(vcfg, f)!r})"
                for f in _GEOMETRY
                if getattr(vcfg, f) != found[f]
            )
            raise CheckpointError(
                f"{source} names {name!r} (vitfree's {variant}: {vcfg.describe()}), but the "
                f"checkpoint's tensors have {diff}"
            )
    if fields.get("color_space", "RGB").upper() == "BGR":
        logger.warning(
            "%s: color_space BGR: this network was trained on BGR input (CVLface's wrapper "
            "flips the channels of its RGB input); vitfree feeds RGB, so reverse the channels "
            "of the normalised batch (x.flip(1)) before the model",
            source,
        )
    base = variant or matched
    heads = fields.get("num_heads")
    if base is not None:
        cfg = _from_file(VARIANTS[base], found)
        if heads is not None and heads != cfg.num_heads:
            cfg, base = cfg.replace(num_heads=heads), None
    elif heads is not None:
        cfg = ViTConfig(**found, num_heads=heads)
    elif found["patch_size"] == 9:
        cfg = ViTConfig(**found)  # the insightface family: 8 heads throughout
    else:
        if name is not None:
            why = f"{source} names {name!r}, which is no named variant"
        elif config is not None:
            why = f"{source} has no num_heads and names no variant"
        else:
            why = "the shapes match no named variant and there is no config.json beside it"
        raise _heads_unknown(found, why)
    if cfg.embed_dim % cfg.num_heads:
        said = f" ({source}: {names['num_heads']})" if "num_heads" in names else ""
        raise CheckpointError(
            f"{cfg.num_heads} attention heads{said} do not divide the width D={cfg.embed_dim}"
        )
    return cfg, base


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

    insightface / TransFace / LVFace files and CVLface ViTs as distributed
    (``model.safetensors`` with ``config.json`` beside it, ``pretrained_model/model.pt`` with
    ``model.yaml``) load alike; the model's ``config.family`` says which layout it follows.

    Args:
        path: ``.pt``/``.pth`` (read with ``torch.load(weights_only=True)``) or
            ``.safetensors``; ``module.``/``net.``/``model.`` prefixes and
            ``{"state_dict": ...}`` wrappers are undone.
        arch: A :data:`VARIANTS` name, a :class:`ViTConfig`, or None to infer it from the
            tensor shapes and, when present, the ``config.json`` (else ``model.yaml``) beside
            the file (see :func:`infer_config`).  With a name, TransFace's ``senet`` and the
            training-only ``mask_token`` follow the file (TransFace uses the insightface
            config names); a :class:`ViTConfig` is taken as is.  A config beside the file is
            read only when ``arch`` is None.
        dtype: Floating-point dtype of the returned model's weights.
        device: Where to put the model.

    Raises:
        CheckpointError: not a face ViT (the message says what it looks like), or its tensors
            do not fit ``arch``; the message lists missing, unexpected and mis-shaped keys.
            A KP-RPE (or other non-plain) CVLface model, named as such.  With ``arch=None``:
            a head count that cannot be inferred (the message says how to give it), or a
            config beside the file that contradicts the shapes or cannot be read.  Also an
            empty or unreadable file, one that is not a PyTorch or safetensors checkpoint, or
            one whose weights are not floating point (int64, complex: the dtype and the first
            such key named).
        InputError: ``arch`` is an unknown name.

    ``path="demo"`` loads the SYNTHETIC demo face ViT shipped in the package
    (:func:`demo_weights`), trained by ``vitfree train`` on rendered faces.
    """
    if isinstance(path, str) and path == "demo" and not Path(path).exists():
        path = demo_weights()
    sd = read_state_dict(path)
    heads: dict[int, dict[str, Tensor]] = {}
    name: str | None
    for key in [k for k in sd if k.startswith("exit_heads.")]:
        k, _, param = key[len("exit_heads.") :].partition(".")
        if not k.lstrip("-").isdigit() or not param:
            raise CheckpointError(f"{path}: key {key!r} is not exit_heads.<exit>.<name>")
        heads.setdefault(int(k), {})[param] = sd.pop(key)
    try:
        _refuse_unsupported(sd)
    except CheckpointError as e:
        raise CheckpointError(f"{path} is {e}") from None
    if arch is None:
        side = read_model_config(path)
        conf, source = (side[0], str(side[1])) if side is not None else (None, "config")
        try:
            cfg, name = infer_config(sd, conf, source=source)
        except CheckpointError as e:
            sep = " is " if str(e).startswith("a ") else ": "
            raise CheckpointError(f"{path}{sep}{e}") from None
        if side is not None:
            logger.debug("%s: architecture from its shapes and %s: %s", path, source, name or cfg)
    elif isinstance(arch, ViTConfig):
        cfg, name = arch, None
    elif isinstance(arch, str):
        if arch not in VARIANTS:
            raise InputError(f"unknown arch {arch!r}; known: {', '.join(sorted(VARIANTS))}")
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
                found = _shape_fields(sd)
                like = next((n for n, c in VARIANTS.items() if _fits(c, found)), None)
                hint = f"\n  the file looks like {like or 'a ViT'} ({_shape_summary(found)}); "
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


def demo_weights() -> Path:
    """The file of the demo face ViT shipped in the package (``load("demo")``).

    A SYNTHETIC model: 12 blocks of width 64 in the insightface layout, trained by
    ``vitfree train`` on rendered faces (``vitfree.synthetic.faces``); ``model.json`` beside
    it records the command and its per-exit accuracy on a held-out synthetic benchmark.

    Raises:
        CheckpointError: the package was installed without its weights.
    """
    path = Path(__file__).parent / "weights" / "demo" / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"the demo model is not in this installation ({path} missing); reinstall vitfree"
        )
    return path
