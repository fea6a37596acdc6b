"""TorchScript archives (``torch.jit.save``): their weights, read without running their code.

insightface's ``ijb_evals.py`` evaluates TorchScript files (``torch.jit.load``, then the
program's ``forward``).  A TorchScript archive is a program, not only weights: a zip with the
TorchScript source of every class (``code/``), the constants it uses (``constants.pkl``) and
the module tree with its tensors (``data.pkl``, a pickle whose globals name the program's
classes, ``__torch__.<module>.<Class>``, plus ``data/<n>`` raw storages).  ``torch.jit.load``
compiles that source and runs it while loading (a class's ``__setstate__`` runs then) and
whenever the model is called.

vitfree runs none of it.  :func:`read_torchscript_weights` reads ``data.pkl`` with a
restricted unpickler that:

* gives every ``__torch__.*`` class an inert record type (:class:`ScriptObject`) that only
  stores the attribute dict BUILD hands it (a class whose state is not a plain attribute dict,
  i.e. one with its own ``__setstate__``, is refused: that state is meant for code);
* allows only the tensor rebuild ``torch._utils._rebuild_tensor_v2`` (checked arguments, the
  storage bounds checked by torch), the storage type names (``torch.FloatStorage`` ...), an
  empty ``collections.OrderedDict`` (the backward hooks) and the ``torch.jit._pickle``
  list builders; every other global is refused before anything is called;
* reads each storage from ``data/<n>`` as raw little-endian bytes (its size checked);
* never opens ``code/`` or ``constants.pkl``.

The tensors found in the module tree, named by their attribute path (``blocks.0.attn.qkv.weight``
...), form a state_dict that :func:`vitfree.models.load` fits to vitfree's own
:class:`VisionTransformer` like any checkpoint.  So a TorchScript of an insightface-layout face
ViT (a ``torch.jit.trace`` or ``torch.jit.script`` of insightface's ``vit_t``, TransFace's or
vitfree's) loads with all its exits and computes what the traced program computes; a
TorchScript of another network is refused with what its weights look like.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from vitfree.errors import CheckpointError

__all__ = [
    "ScriptObject",
    "is_torchscript_archive",
    "read_torchscript_config",
    "read_torchscript_weights",
]

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_MAX_DEPTH = 64


def _archive_prefix(zf: zipfile.ZipFile) -> str | None:
    """The top folder of a torch zip archive (``archive/``, or the file's stem)."""
    names = zf.namelist()
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    for top in sorted(tops):
        if f"{top}/data.pkl" in names:
            return top
    return None


def is_torchscript_archive(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a TorchScript archive (``torch.jit.save``): a torch zip with
    ``constants.pkl`` or ``code/`` beside ``data.pkl`` (a ``torch.save`` zip has neither)."""
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = _archive_prefix(zf)
            if prefix is None:
                return False
            names = zf.namelist()
            return f"{prefix}/constants.pkl" in names or any(
                n.startswith(f"{prefix}/code/") for n in names
            )
    except (zipfile.BadZipFile, OSError):
        return False


class ScriptObject:
    """An object of a TorchScript class, as data: the class's qualified name
    (:attr:`type_name`, e.g. ``"__torch__.backbones.vit.VisionTransformer"``) and the
    attribute dict the archive holds for it (:attr:`attrs`).  Nothing of the class runs."""

    type_name: ClassVar[str] = "?"
    attrs: dict[str, Any]

    def __init__(self) -> None:
        self.attrs = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise CheckpointError(
                f"the TorchScript class {self.type_name} stores a state that is not a plain "
                f"attribute dict (it has its own __setstate__, which is TorchScript code); "
                f"vitfree does not run code from model files"
            )
        self.attrs = dict(state)


class _Storage:
    """A storage named in the pickle, read from ``data/<key>``: a flat tensor (None when only
    the module tree is read, not the weights)."""

    __slots__ = ("flat",)

    def __init__(self, flat: Tensor | None) -> None:
        self.flat = flat


class _StorageType:
    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name = name
        self.dtype = dtype


def _refuse(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"refused {what}")


def _ints(x: Any) -> bool:
    return isinstance(x, tuple) and all(type(v) is int and v >= 0 for v in x)


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    hooks: Any = None,
    metadata: Any = None,
) -> Tensor:
    if not isinstance(storage, _Storage):
        raise _refuse("a tensor whose storage is not one of the archive's data records")
    if type(offset) is not int or offset < 0 or not _ints(size) or not _ints(stride):
        raise _refuse("a tensor with a malformed offset, size or stride")
    if len(size) != len(stride) or len(size) > 8:
        raise _refuse("a tensor whose size and stride do not match")
    if hooks is not None and not (isinstance(hooks, OrderedDict) and not hooks):
        raise _refuse("a tensor with backward hooks")
    if storage.flat is None:
        return None  # type: ignore[return-value]  # structure only (read_torchscript_config)
    t = torch.empty((0,), dtype=storage.flat.dtype)
    try:
        # torch checks that size, stride and offset stay inside the storage
        t.set_(storage.flat.untyped_storage(), offset, size, stride)
    except RuntimeError as e:
        raise _refuse(f"a tensor outside its storage ({str(e).splitlines()[0][:120]})") from None
    return t


def _empty_ordered_dict(*args: Any) -> OrderedDict[Any, Any]:
    if args:
        raise _refuse("collections.OrderedDict with contents")
    return OrderedDict()


def _same_list(*args: Any) -> Any:
    # torch.jit._pickle.build_intlist([1, 2]) etc. rebuild typed lists: the list itself
    if len(args) != 1 or not isinstance(args[0], list):
        raise _refuse("a torch.jit._pickle list builder without a list")
    return list(args[0])


def _restore_type_tag(value: Any, type_str: Any = None) -> Any:
    return value


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("collections", "OrderedDict"): _empty_ordered_dict,
    ("torch.jit._pickle", "build_intlist"): _same_list,
    ("torch.jit._pickle", "build_doublelist"): _same_list,
    ("torch.jit._pickle", "build_boollist"): _same_list,
    ("torch.jit._pickle", "build_tensorlist"): _same_list,
    ("torch.jit._pickle", "restore_type_tag"): _restore_type_tag,
    **{("torch", name): _StorageType(name, dt) for name, dt in _STORAGE_DTYPES.items()},
}


class _ArchiveUnpickler(pickle._Unpickler):
    """``data.pkl`` of a TorchScript archive as inert data (see the module notes)."""

    def __init__(self, data: bytes, zf: zipfile.ZipFile, prefix: str, weights: bool = True) -> None:
        super().__init__(io.BytesIO(data), fix_imports=False)
        self._zf = zf
        self._prefix = prefix
        self._weights = weights
        self._classes: dict[str, type[ScriptObject]] = {}
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = str(module), str(name)
        if module == "__torch__" or module.startswith("__torch__."):
            qual = f"{module}.{name}"
            if not re.fullmatch(r"[\w.]{1,300}", qual):
                raise _refuse(f"the class name {qual[:80]!r}")
            if qual not in self._classes:
                self._classes[qual] = type(name, (ScriptObject,), {"type_name": qual})
            return self._classes[qual]
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise _refuse(f"the global {module}.{name} (only TorchScript classes, tensors and storages)")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _refuse("a persistent id that is not a storage record")
        _, kind, key, _location, numel = pid
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or type(numel) is not int:
            raise _refuse("a malformed storage record")
        if not re.fullmatch(r"\w{1,40}", key) or numel < 0:
            raise _refuse(f"the storage key {key[:40]!r}")
        if key in self._storages:
            return self._storages[key]
        if not self._weights:
            self._storages[key] = _Storage(None)
            return self._storages[key]
        try:
            raw = self._zf.read(f"{self._prefix}/data/{key}")
        except KeyError:
            raise _refuse(f"storage {key}: no data/{key} in the archive") from None
        itemsize = torch.empty((), dtype=kind.dtype).element_size()
        if len(raw) != numel * itemsize:
            raise _refuse(f"storage {key}: {len(raw)} bytes for {numel} values of {kind.dtype}")
        flat = torch.frombuffer(bytearray(raw), dtype=kind.dtype) if raw else torch.empty(0, dtype=kind.dtype)
        st = _Storage(flat)
        self._storages[key] = st
        return st

    def _load_build(self) -> None:
        stack: list[Any] = self.stack  # type: ignore[attr-defined]  # pickle._Unpickler's
        state = stack.pop()
        inst = stack[-1]
        if not isinstance(inst, ScriptObject):
            raise _refuse(f"setting the state of a {type(inst).__name__}")
        inst.__setstate__(state)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build  # type: ignore[assignment]


def _collect(obj: ScriptObject, prefix: str, out: dict[str, Tensor], seen: set[int], depth: int) -> None:
    if depth > _MAX_DEPTH or id(obj) in seen:
        return
    seen.add(id(obj))
    for name, v in obj.attrs.items():
        if isinstance(v, Tensor):
            out[prefix + name] = v
        elif isinstance(v, ScriptObject):
            _collect(v, f"{prefix}{name}.", out, seen, depth + 1)


def _read_root(path: str | os.PathLike[str], weights: bool) -> ScriptObject:
    p = Path(path)
    what = f"{p} is a TorchScript archive (torch.jit.save)"
    try:
        with zipfile.ZipFile(p) as zf:
            prefix = _archive_prefix(zf)
            if prefix is None:
                raise CheckpointError(f"{p} is not a TorchScript archive (no data.pkl)")
            names = set(zf.namelist())
            if f"{prefix}/byteorder" in names and zf.read(f"{prefix}/byteorder").strip() != b"little":
                raise CheckpointError(f"{what} written on a big-endian machine; not supported")
            data = zf.read(f"{prefix}/data.pkl")
            try:
                root = _ArchiveUnpickler(data, zf, prefix, weights).load()
            except CheckpointError as e:
                raise CheckpointError(f"{what}: {e}") from None
            except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
                raise CheckpointError(
                    f"{what}, but its module data cannot be read as weights without running "
                    f"code ({e}); vitfree reads TorchScript weights only, never its program. "
                    f"Save the weights with torch.save(model.state_dict(), path) instead"
                ) from None
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{p}: cannot read it as a zip archive ({e})") from None
    if not isinstance(root, ScriptObject):
        raise CheckpointError(f"{what}, but its data is a {type(root).__name__}, not a module")
    return root


def read_torchscript_config(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """What the archive's module tree says about the architecture beyond tensor shapes:
    ``{"num_heads": H}`` when its attention modules store the head count as an attribute
    (``torch.jit.script`` keeps ``num_heads``; a ``torch.jit.trace`` keeps only tensors, and
    then the head count is inferred as for any state_dict, docs/protocols.md §1.3).
    None when nothing is found.  Reads no weights and runs no code."""
    root = _read_root(path, weights=False)
    heads: set[int] = set()
    stack: list[ScriptObject] = [root]
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen or len(seen) > 100_000:
            continue
        seen.add(id(obj))
        nh = obj.attrs.get("num_heads")
        if isinstance(obj.attrs.get("qkv"), ScriptObject) and type(nh) is int and nh > 0:
            heads.add(nh)
        stack.extend(v for v in obj.attrs.values() if isinstance(v, ScriptObject))
    return {"num_heads": heads.pop()} if len(heads) == 1 else None


def read_torchscript_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a TorchScript archive's module tree, by attribute path, read without
    compiling or running any of its code (see the module notes).

    Returns:
        ``{"blocks.0.attn.qkv.weight": tensor, ...}``: parameters and buffers of every
        submodule (a state_dict, as ``module.state_dict()`` of the scripted model would name
        them).

    Raises:
        CheckpointError: not a TorchScript archive; a big-endian archive; a ``data.pkl``
            that asks for anything but TorchScript classes, tensors and storages (the global
            named), or that stores a class state meant for code; no tensors at all.
    """
    root = _read_root(path, weights=True)
    sd: dict[str, Tensor] = {}
    _collect(root, "", sd, set(), 0)
    if not sd:
        raise CheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save) of {root.type_name} holding no tensors"
        )
    return sd
