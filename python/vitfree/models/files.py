"""Checkpoint and exit-head *files*: reading state_dicts, the exit-head format, key matching.

Nothing here builds a model, so the model itself can use this module (to load and save its
exit heads) without importing the loader of :mod:`vitfree.models.checkpoint`.

Checkpoints are plain ``torch.save(state_dict)`` files (insightface, TransFace, LVFace
``model.pt``) or safetensors; some are wrapped (``{"state_dict": ...}``, DDP ``module.``
prefixes, ``torch.compile``'s ``_orig_mod.``, CVLface's ``net.``).  The wrapping is undone
here, never in the model, so the model keeps exactly the published state_dict names.

Exit-head file format (written by :func:`save_exit_heads`):

* ``.pt``/``.pth``: ``torch.save({"format": "vitfree.exit_heads", "version": 2,
  "exits": {k: head_state_dict}, "kinds": {k: kind}, "options": {k: {...}}})`` with ``k``
  the 1-based exit (int), ``kind`` the head's :attr:`vitfree.models.heads.Head.kind`
  (``"copy"``: an :class:`vitfree.models.ExitHead`, whose tensors are ``norm.*``, optional
  ``senet.*``, ``feature.*``: the same names as the checkpoint's head) and ``options`` what
  rebuilds the head (:meth:`Head.options`).  Version 1 had no ``kinds``/``options``: all
  its heads are ``"copy"`` heads.  Only plain containers are stored, so the file reads with
  ``torch.load(weights_only=True)``.
* ``.safetensors``: the same tensors flattened to ``exits.{k}.{name}``, with
  ``{"format": "vitfree.exit_heads", "version": "2", "kinds": json, "options": json}`` as
  metadata.

:func:`read_exit_heads` accepts either layout in either container.
"""

from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

from vitfree.errors import CheckpointError
from vitfree.models.heads import Head, HeadSpec

__all__ = [
    "EXIT_HEADS_FORMAT",
    "describe_mismatch",
    "read_exit_head_specs",
    "read_exit_heads",
    "read_state_dict",
    "save_exit_heads",
]

PathLike = Union[str, "os.PathLike[str]"]

EXIT_HEADS_FORMAT = "vitfree.exit_heads"
EXIT_HEADS_VERSION = 2
_PREFIXES = ("module.", "_orig_mod.", "net.", "backbone.", "model.")
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")


# --------------------------------------------------------------------------------------
# raw files
# --------------------------------------------------------------------------------------


def _read_file(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise CheckpointError(
            f"{path} is an ONNX model; vitfree.models.load needs PyTorch weights "
            f"(.pt/.pth state_dict or .safetensors)"
        )
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except SafetensorError as e:
            raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path} holds pickled Python objects beyond tensors (e.g. a whole nn.Module from "
            f"torch.save(model)); vitfree loads state_dicts only, with weights_only=True. "
            f"Re-save it with torch.save(model.state_dict(), path). Detail: {e}"
        ) from None
    except RuntimeError as e:
        if suffix in _TORCH_SUFFIXES:
            raise CheckpointError(f"{path} is not a readable PyTorch file: {e}") from None
        raise CheckpointError(
            f"{path}: unknown format (expected .pt/.pth/.bin/.ckpt or .safetensors): {e}"
        ) from None


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    # {"state_dict": {...}} and similar training-script wrappers, possibly nested.
    while isinstance(obj, Mapping) and not _all_tensors(obj):
        for key in ("state_dict", "model_state_dict", "model", "module"):
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                obj = inner
                break
        else:
            break
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} does not hold a state_dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(f"{path} holds no tensors at the top level (keys: {keys})")
    if len(tensors) != len(obj):
        other = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)][:8]
        raise CheckpointError(
            f"{path} mixes tensors with other entries ({', '.join(other)}); "
            f"expected a plain state_dict or {{'state_dict': ...}}"
        )
    return {str(k): v for k, v in tensors.items()}


def _all_tensors(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def _strip_prefixes(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if sd and all(k.startswith(p) for k in sd):
                sd = {k[len(p) :]: v for k, v in sd.items()}
                changed = True
    return sd


def read_state_dict(path: PathLike) -> dict[str, Tensor]:
    """The state_dict in a ``.pt``/``.pth``/``.safetensors`` file, unwrapped.

    ``{"state_dict": ...}`` wrappers and whole-file prefixes (``module.``, ``_orig_mod.``,
    ``net.``) are removed.  ``.pt`` files are read with ``torch.load(weights_only=True)``.
    """
    p = Path(path)
    obj = _read_file(p)
    if isinstance(obj, Mapping) and "exits" in obj:
        raise CheckpointError(
            f"{p} is an exit-head file, not a model checkpoint; "
            f"load it with model.load_exit_heads(path)"
        )
    return _strip_prefixes(_unwrap(obj, p))



def _looks_like(sd: Mapping[str, Tensor]) -> str:
    keys = list(sd)
    has = sd.__contains__
    some = ", ".join(keys[:5])
    if any(k.startswith("exits.") for k in keys):
        return "an exit-head file (keys exits.*); load it with model.load_exit_heads(path)"
    if has("conv1.weight") and any(k.startswith("layer1.") for k in keys):
        depth = _iresnet_name(keys)
        return (
            f"an insightface IResNet checkpoint{depth} (conv1, layer1..layer4, "
            f"{'prelu, ' if has('prelu.weight') else ''}fc); vitfree.models loads ViT face "
            f"backbones only"
        )
    if any(k.startswith(("conv_sep", "features.", "layers.")) for k in keys) and not has(
        "pos_embed"
    ):
        return f"a CNN checkpoint (MobileFaceNet-like keys: {some}), not a ViT"
    if has("cls_token") or has("head.weight"):
        return (
            "a classification ViT (timm/ImageNet layout: cls_token, head.weight), not a face "
            "ViT with a 'feature' embedding head"
        )
    if has("patch_embed.proj.weight") and not has("feature.0.weight"):
        return "a ViT backbone without the face 'feature' head (feature.0..3 missing)"
    return f"not a face-ViT checkpoint (first keys: {some})"


def _iresnet_name(keys: list[str]) -> str:
    layers: dict[int, int] = {}
    for k in keys:
        m = re.match(r"layer(\d)\.(\d+)\.", k)
        if m:
            layers[int(m.group(1))] = max(layers.get(int(m.group(1)), 0), int(m.group(2)) + 1)
    known = {
        (2, 3, 14, 3): "iresnet50",
        (3, 13, 30, 3): "iresnet100",
        (2, 2, 2, 2): "iresnet18",
        (3, 4, 6, 3): "iresnet34",
        (6, 26, 60, 6): "iresnet200",
    }
    shape = tuple(layers.get(i, 0) for i in (1, 2, 3, 4))
    name = known.get(shape)  # type: ignore[arg-type]
    return f" ({name}, blocks per stage {shape})" if name else f" (blocks per stage {shape})"


def describe_mismatch(
    got: Mapping[str, Tensor], want: Mapping[str, Tensor], limit: int = 12
) -> str:
    """Missing, unexpected and mis-shaped keys of ``got`` against ``want``; '' if they fit."""
    missing = [k for k in want if k not in got]
    unexpected = [k for k in got if k not in want]
    shaped = [
        f"{k}: file {tuple(got[k].shape)} vs model {tuple(want[k].shape)}"
        for k in want
        if k in got and tuple(got[k].shape) != tuple(want[k].shape)
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shaped)):
        if items:
            more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
            parts.append(f"  {label} ({len(items)}): {', '.join(items[:limit])}{more}")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------
# exit-head files
# --------------------------------------------------------------------------------------


def save_exit_heads(
    path: PathLike, heads: Mapping[int, nn.Module | HeadSpec | Mapping[str, Tensor]]
) -> None:
    """Write exit-specific heads ``{exit: Head, HeadSpec or head state_dict}`` (format above).

    A :class:`vitfree.models.heads.Head` records its ``kind`` and ``options``; a plain
    state_dict is recorded as a ``"copy"`` head.
    """
    p = Path(path)
    flat: dict[int, dict[str, Tensor]] = {}
    kinds: dict[int, str] = {}
    options: dict[int, dict[str, Any]] = {}
    for k, h in heads.items():
        sd: Mapping[str, Tensor]
        if isinstance(h, HeadSpec):
            kind, opts, sd = h.kind, h.options, h.state_dict
        elif isinstance(h, Head):
            kind, opts, sd = h.kind, h.options(), h.state_dict()
        elif isinstance(h, nn.Module):
            kind, opts, sd = "copy", {}, h.state_dict()
        else:
            kind, opts, sd = "copy", {}, h
        flat[int(k)] = {n: t.detach().cpu().contiguous() for n, t in sd.items()}
        kinds[int(k)] = kind
        options[int(k)] = dict(opts)
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        tensors = {f"exits.{k}.{n}": t for k, sd in flat.items() for n, t in sd.items()}
        meta = {
            "format": EXIT_HEADS_FORMAT,
            "version": str(EXIT_HEADS_VERSION),
            "kinds": json.dumps({str(k): v for k, v in kinds.items()}),
            "options": json.dumps({str(k): v for k, v in options.items()}),
        }
        save_file(tensors, str(p), metadata=meta)
    else:
        torch.save(
            {
                "format": EXIT_HEADS_FORMAT,
                "version": EXIT_HEADS_VERSION,
                "exits": flat,
                "kinds": kinds,
                "options": options,
            },
            p,
        )


def read_exit_heads(path: PathLike) -> dict[int, dict[str, Tensor]]:
    """Read an exit-head file into ``{exit: head state_dict}`` (either layout, any version)."""
    return {k: spec.state_dict for k, spec in read_exit_head_specs(path).items()}


def read_exit_head_specs(path: PathLike) -> dict[int, HeadSpec]:
    """Read an exit-head file into ``{exit: HeadSpec}`` (kind, options, state_dict).

    Version-1 files (and bare ``exits.<k>.<name>`` state_dicts) hold ``"copy"`` heads.
    """
    p = Path(path)
    obj = _read_file(p)
    kinds: Mapping[Any, Any] = {}
    options: Mapping[Any, Any] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("exits"), Mapping):
        sds: dict[int, dict[str, Tensor]] = {}
        for k, sd in obj["exits"].items():
            if not isinstance(sd, Mapping):
                raise CheckpointError(f"{p}: exits[{k!r}] is not a state_dict")
            sds[_exit_key(k, p)] = _strip_prefixes(dict(sd))
        if not sds:
            raise CheckpointError(f"{p} holds no exit heads")
        kinds = obj.get("kinds") or {}
        options = obj.get("options") or {}
    else:
        sd = _strip_prefixes(_unwrap(obj, p))
        sds = {}
        for key, t in sd.items():
            m = re.match(r"(?:exits|exit_heads)\.(-?\d+)\.(.+)$", key)
            if not m:
                raise CheckpointError(
                    f"{p} is not an exit-head file: key {key!r} is not exits.<k>.<name> "
                    f"(it looks like {_looks_like(sd)})"
                )
            sds.setdefault(int(m.group(1)), {})[m.group(2)] = t
        if p.suffix.lower() == ".safetensors":
            kinds, options = _safetensors_head_metadata(p)
    specs = {}
    for k, sd in sds.items():
        kind = kinds.get(k, kinds.get(str(k), "copy"))
        opts = options.get(k, options.get(str(k), {}))
        if not isinstance(kind, str) or not isinstance(opts, Mapping):
            raise CheckpointError(f"{p}: the kind or options recorded for exit {k} are malformed")
        specs[k] = HeadSpec(kind, dict(opts), sd)
    return specs


def _safetensors_head_metadata(p: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        kinds = json.loads(meta.get("kinds", "{}"))
        options = json.loads(meta.get("options", "{}"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: malformed head kinds/options in the metadata: {e}") from None
    if not isinstance(kinds, dict) or not isinstance(options, dict):
        raise CheckpointError(f"{p}: malformed head kinds/options in the metadata")
    return kinds, options


def _exit_key(k: Any, p: Path) -> int:
    try:
        return int(k)
    except (TypeError, ValueError):
        raise CheckpointError(f"{p}: exit key {k!r} is not an integer") from None
