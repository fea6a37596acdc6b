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
  its heads are ``"copy"`` heads.  Version 3 adds, when known, ``"backbone"``: the
  :func:`backbone_fingerprint` of the model the heads were trained on (loading them onto
  another backbone is a :class:`CheckpointError`), and ``"info"``: a JSON-like description
  of how they were made (exits, loss, data, command line: see :mod:`vitfree.finetune`).
  Only plain containers are stored, so the file reads with ``torch.load(weights_only=True)``.
* ``.safetensors``: the same tensors flattened to ``exits.{k}.{name}``, with
  ``{"format": "vitfree.exit_heads", "version": "3", "kinds": json, "options": json,
  "backbone": str, "info": json}`` as metadata.

Heads store only what they train (``state_dict()`` of a :class:`Head`: a ``"lora"`` head holds
its low-rank factors and norms, not the model's first Linear), so a file can be small.
:func:`read_exit_heads` accepts either layout in either container, versions 1 to 3;
:func:`read_exit_heads_file` also returns the fingerprint and the description.
"""

from __future__ import annotations

import dataclasses
import hashlib
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
    "CONFIG_NAMES",
    "EXIT_HEADS_FORMAT",
    "ExitHeadsFile",
    "backbone_fingerprint",
    "check_tensor_kinds",
    "describe_mismatch",
    "read_exit_head_specs",
    "read_exit_heads",
    "read_exit_heads_file",
    "read_model_config",
    "read_state_dict",
    "save_exit_heads",
]

PathLike = Union[str, "os.PathLike[str]"]

EXIT_HEADS_FORMAT = "vitfree.exit_heads"
EXIT_HEADS_VERSION = 3
_PREFIXES = ("module.", "_orig_mod.", "net.", "backbone.", "model.")
_TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
#: Architecture descriptions looked for beside a checkpoint, first found wins: CVLface's
#: Hugging Face repos ship ``config.json`` beside ``model.safetensors``, its research folders
#: ``model.yaml`` beside ``pretrained_model/model.pt``.
CONFIG_NAMES = ("config.json", "model.yaml")


# --------------------------------------------------------------------------------------
# raw files
# --------------------------------------------------------------------------------------


# torch.save's legacy (non-zip) format starts with a pickle of its magic number
# 0x1950a86a20f9469cfc6c: LONG1 at protocols 2-5, a text LONG at 0 and 1.
_LEGACY_TORCH_MAGIC = (
    b"\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19",
    b"L119547037146038801333356L\n",
)


def _kind_of(head: bytes) -> str | None:
    """What the first bytes of a file say it is: "torch", "safetensors", "pickle" or None.

    "torch" covers every format ``torch.load`` reads: the zip archive (torch >= 1.6, also
    TorchScript), the legacy pickle stream (it starts with the magic number) and the tar
    archive of torch < 0.4.  Anything else ``torch.load`` refuses anyway, so vitfree does not
    hand it to torch's unpickler at all.
    """
    if head.startswith(b"PK\x03\x04") or any(m in head[:32] for m in _LEGACY_TORCH_MAGIC):
        return "torch"
    if len(head) > 262 and head[257:262] == b"ustar":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 28:
        return "safetensors"  # an 8-byte header length, then the JSON header
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"  # a plain pickle (pickle.dump), not torch.save
    return None


def _brief_error(e: BaseException) -> str:
    """One line from an exception of torch or safetensors (their messages run to paragraphs)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    m = re.search(r"WeightsUnpickler error:\s*(.*)", text, re.S)
    if m:
        text = m.group(1)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(line) > 200:
        line = line[:197] + "..."
    return f"{type(e).__name__}: {line}" if line else type(e).__name__


def _refused_global(e: BaseException) -> str | None:
    """The global that torch's weights_only unpickler refused, if that is what ``e`` says."""
    m = re.search(
        r"(?:Unsupported global: GLOBAL|unsupported GLOBAL|Unsupported class)\s+(\S+?)[.,]?(?:\s|$)",
        str(e),
    )
    return m.group(1) if m else None


def _read_file(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise CheckpointError(
            f"{path} is an ONNX model; vitfree.models.load needs PyTorch weights "
            f"(.pt/.pth state_dict or .safetensors)"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror or e})") from None
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): not a PyTorch or safetensors checkpoint")
    kind = _kind_of(head)
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001 - any failure here means an unreadable file
            hint = "; it looks like a torch.save() file: name it .pt" if kind == "torch" else ""
            raise CheckpointError(
                f"{path} is not a readable safetensors file{hint} ({_brief_error(e)})"
            ) from None
    if kind == "safetensors":
        raise CheckpointError(f"{path} looks like a safetensors file: name it .safetensors")
    if kind != "torch":
        if kind == "pickle":
            what = (
                "it is a plain Python pickle, not a torch.save() file; vitfree does not unpickle it"
            )
        else:
            what = f"it starts with {head[:8]!r}"
        expected = "" if suffix in _TORCH_SUFFIXES else " (.pt/.pth/.bin/.ckpt)"
        raise CheckpointError(
            f"{path} is not a PyTorch or safetensors checkpoint ({what}); expected a "
            f"torch.save() state_dict{expected} or a .safetensors file"
        )
    if head.startswith(b"PK\x03\x04"):
        from vitfree.models.torchscript import is_torchscript_archive, read_torchscript_weights

        if is_torchscript_archive(path):
            # a program (torch.jit.save): its weights only, no code run (models/torchscript.py)
            return read_torchscript_weights(path)
    try:
        # weights_only=True: torch's restricted unpickler builds tensors and plain containers
        # only, and refuses every other global before calling it.
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise CheckpointError(
            f"{path}: out of memory reading it ({path.stat().st_size} bytes)"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad file
        refused = _refused_global(e) if isinstance(e, pickle.UnpicklingError) else None
        if refused is not None:
            raise CheckpointError(
                f"{path} holds pickled Python objects beyond tensors (it asks for {refused}; "
                f"e.g. a whole nn.Module from torch.save(model)); vitfree loads state_dicts "
                f"only, with weights_only=True. Re-save it with "
                f"torch.save(model.state_dict(), path)"
            ) from None
        raise CheckpointError(
            f"{path} is not a readable PyTorch file (truncated or corrupt?): {_brief_error(e)}"
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


def check_tensor_kinds(
    sd: Mapping[str, Tensor],
    want: Mapping[str, Tensor] | None,
    path: PathLike,
    *,
    prefix: str = "",
) -> None:
    """Raise :class:`CheckpointError` unless the weights of ``sd`` are dense floating point.

    With ``want`` (the model's state_dict), every tensor that is floating point there must be
    floating point (any width) in ``sd``; without it, every tensor but BatchNorm's
    ``num_batches_tracked`` counters.  Sparse or other non-strided tensors are refused too.
    The message names the dtype (or layout) and the first offending key.
    """
    bad: list[str] = []
    for k, v in sd.items():
        if not isinstance(v, Tensor):
            raise CheckpointError(f"{path}: {prefix}{k} is a {type(v).__name__}, not a tensor")
        if v.layout != torch.strided:
            raise CheckpointError(
                f"{path}: {prefix}{k} is a {str(v.layout).replace('torch.', '')} tensor; "
                f"vitfree loads dense tensors only"
            )
        if want is not None:
            needs_float = k in want and want[k].is_floating_point()
        else:
            needs_float = not k.endswith("num_batches_tracked")
        if needs_float and not v.is_floating_point():
            bad.append(k)
    if bad:
        first = bad[0]
        dt = str(sd[first].dtype).replace("torch.", "")
        more = f" ({len(bad)} tensors are not floating point)" if len(bad) > 1 else ""
        raise CheckpointError(
            f"{path}: tensor {prefix}{first} has dtype {dt}, but the model needs floating-point "
            f"weights{more}; re-save the checkpoint with float32, float16 or bfloat16 weights"
        )


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


def read_model_config(path: PathLike) -> tuple[dict[str, Any], Path] | None:
    """The architecture description beside a checkpoint, as stored, and where it was found.

    Looks for :data:`CONFIG_NAMES` in the checkpoint's folder and reads the first one found:
    ``config.json`` as JSON, ``model.yaml`` with a reader of flat ``key: value`` YAML (what
    CVLface writes: scalars, quoted strings, ``[3, 112, 112]`` lists; an indented block under a
    key is recorded as present, not read).  What the keys mean is decided by
    :func:`vitfree.models.checkpoint.infer_config`.  Without such a file, a TorchScript
    archive's own module tree is asked (``{"num_heads": H}`` when it stores the head count:
    :func:`vitfree.models.torchscript.read_torchscript_config`).  None when nothing is found.

    Raises:
        CheckpointError: the file exists but cannot be read, is not valid JSON (or not flat
            YAML), or does not hold an object (mapping) at the top level.
    """
    folder = Path(path).parent
    for name in CONFIG_NAMES:
        where = folder / name
        if not where.is_file():
            continue
        try:
            text = where.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{where}: cannot read it ({e})") from None
        hint = "fix or remove it, or give the architecture with arch= (--arch)"
        if where.suffix == ".json":
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise CheckpointError(f"{where} is not valid JSON ({e}); {hint}") from None
        else:
            obj = _read_flat_yaml(text, where, hint)
        if not isinstance(obj, dict):
            raise CheckpointError(
                f"{where} holds a {type(obj).__name__}, not an object of settings; {hint}"
            )
        return obj, where
    # a TorchScript archive may carry its head count in its module tree (models/torchscript.py)
    from vitfree.models.torchscript import is_torchscript_archive, read_torchscript_config

    if Path(path).is_file() and is_torchscript_archive(path):
        found = read_torchscript_config(path)
        if found is not None:
            return found, Path(path)
    return None


#: Stands for an indented (nested) YAML block, which :func:`_read_flat_yaml` does not read.
NESTED_BLOCK = {"<nested block>": True}


def _read_flat_yaml(text: str, where: Path, hint: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    last: str | None = None
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#") or raw.strip() == "---":
            continue
        if raw[0] in " \t-":  # content of the block opened by the previous key
            if last is not None and out[last] is None:
                out[last] = dict(NESTED_BLOCK)
            continue
        key, sep, value = raw.partition(":")
        if not sep or not key.strip():
            raise CheckpointError(f"{where}: line {raw.strip()!r} is not 'key: value'; {hint}")
        last = key.strip().strip("'\"")
        out[last] = _yaml_scalar(value.strip())
    return out


def _yaml_scalar(v: str) -> Any:
    if v[:1] in ("'", '"'):
        end = v.find(v[0], 1)
        return v[1:end] if end > 0 else v[1:]
    v = v.split(" #", 1)[0].strip()
    if v.startswith("[") and v.endswith("]"):
        inner = v[1:-1].strip()
        return [_yaml_scalar(x.strip()) for x in inner.split(",")] if inner else []
    low = v.lower()
    if low in ("", "~", "null"):
        return None
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


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


def backbone_fingerprint(model: nn.Module) -> str:
    """A short digest of a model's own weights, exit-specific heads left out.

    What a heads file records of the model its heads were trained on (``"lora"`` and
    ``"norms"`` heads use the model's shared head weights, every head its block tokens).
    Names, shapes and up to 4096 evenly spaced values per tensor, taken as float32, are hashed
    (no reductions: the digest does not depend on the device), so a checkpoint loaded in
    float32 or float16 from a float16 file has one fingerprint.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        if name.startswith("exit_heads."):
            continue
        h.update(f"{name}|{tuple(t.shape)}".encode())
        flat = t.detach().reshape(-1)
        if flat.numel() > 4096:
            idx = torch.arange(4096, device=flat.device) * (flat.numel() - 1) // 4095
            flat = flat[idx]
        flat = flat.float() if flat.is_floating_point() else flat.long()
        h.update(flat.cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


@dataclasses.dataclass
class ExitHeadsFile:
    """An exit-heads file as read: the heads, and what it says about where they came from.

    Attributes:
        heads: ``{exit: HeadSpec}``.
        backbone: :func:`backbone_fingerprint` of the model they were trained on, or None
            (files of versions 1-2, or written without one).
        info: how the heads were made (exits, loss, data, command), ``{}`` when not recorded.
        version: the file's format version.
    """

    heads: dict[int, HeadSpec]
    backbone: str | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    version: int = EXIT_HEADS_VERSION


def save_exit_heads(
    path: PathLike,
    heads: Mapping[int, nn.Module | HeadSpec | Mapping[str, Tensor]],
    *,
    backbone: str | None = None,
    info: Mapping[str, Any] | None = None,
) -> None:
    """Write exit-specific heads ``{exit: Head, HeadSpec or head state_dict}`` (format above).

    A :class:`vitfree.models.heads.Head` records its ``kind`` and ``options``; a plain
    state_dict is recorded as a ``"copy"`` head.

    Args:
        backbone: the :func:`backbone_fingerprint` of the model the heads belong to.
        info: JSON-serialisable description of how they were made (stored as is).
    """
    p = Path(path)
    info_d = dict(info or {})
    try:
        info_json = json.dumps(info_d)
    except (TypeError, ValueError) as e:
        raise TypeError(f"exit-heads info must be JSON-serialisable: {e}") from None
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
            "info": info_json,
        }
        if backbone is not None:
            meta["backbone"] = str(backbone)
        save_file(tensors, str(p), metadata=meta)
    else:
        torch.save(
            {
                "format": EXIT_HEADS_FORMAT,
                "version": EXIT_HEADS_VERSION,
                "exits": flat,
                "kinds": kinds,
                "options": options,
                "backbone": backbone,
                "info": json.loads(info_json),
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
    return read_exit_heads_file(path).heads


def read_exit_heads_file(path: PathLike) -> ExitHeadsFile:
    """Read an exit-head file: its heads, the backbone fingerprint and the description."""
    p = Path(path)
    obj = _read_file(p)
    kinds: Mapping[Any, Any] = {}
    options: Mapping[Any, Any] = {}
    backbone: Any = None
    info: Any = {}
    version: Any = 1
    if isinstance(obj, Mapping) and isinstance(obj.get("exits"), Mapping):
        sds: dict[int, dict[str, Tensor]] = {}
        for k, sd in obj["exits"].items():
            if not isinstance(sd, Mapping):
                raise CheckpointError(f"{p}: exits[{k!r}] is not a state_dict")
            sds[_exit_key(k, p)] = _strip_prefixes({str(n): t for n, t in sd.items()})
        if not sds:
            raise CheckpointError(f"{p} holds no exit heads")
        kinds = obj.get("kinds") or {}
        options = obj.get("options") or {}
        if not isinstance(kinds, Mapping) or not isinstance(options, Mapping):
            raise CheckpointError(f"{p}: the recorded head kinds or options are malformed")
        backbone, info = obj.get("backbone"), obj.get("info") or {}
        version = obj.get("version", 1)
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
            kinds, options, backbone, info, version = _safetensors_head_metadata(p)
    if backbone is not None and not isinstance(backbone, str):
        raise CheckpointError(f"{p}: the recorded backbone fingerprint is malformed")
    if not isinstance(info, Mapping):
        raise CheckpointError(f"{p}: the recorded description (info) is malformed")
    specs = {}
    for k, sd in sds.items():
        check_tensor_kinds(sd, None, p, prefix=f"exits.{k}.")
        kind = kinds.get(k, kinds.get(str(k), "copy"))
        opts = options.get(k, options.get(str(k), {}))
        if not isinstance(kind, str) or not isinstance(opts, Mapping):
            raise CheckpointError(f"{p}: the kind or options recorded for exit {k} are malformed")
        specs[k] = HeadSpec(kind, dict(opts), sd)
    try:
        v = int(version)
    except (TypeError, ValueError):
        v = 1
    return ExitHeadsFile(specs, backbone, dict(info), v)


def _safetensors_head_metadata(
    p: Path,
) -> tuple[dict[str, Any], dict[str, Any], str | None, Any, Any]:
    from safetensors import safe_open

    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        kinds = json.loads(meta.get("kinds", "{}"))
        options = json.loads(meta.get("options", "{}"))
        info = json.loads(meta.get("info", "{}"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: malformed head kinds/options in the metadata: {e}") from None
    if not isinstance(kinds, dict) or not isinstance(options, dict):
        raise CheckpointError(f"{p}: malformed head kinds/options in the metadata")
    return kinds, options, meta.get("backbone"), info, meta.get("version", 1)


def _exit_key(k: Any, p: Path) -> int:
    try:
        return int(k)
    except (TypeError, ValueError):
        raise CheckpointError(f"{p}: exit key {k!r} is not an integer") from None
