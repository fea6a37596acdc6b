"""Restricted unpickling: pickles that may only build plain data, never run code.

A pickle names the functions and classes it needs ("globals") and calls them while it is read;
:func:`pickle.load` imports and calls whatever the file names (``os.system`` included).  The
:class:`RestrictedUnpickler` here gives out only the globals of an explicit allow-list and
refuses every other one with :class:`RefusedGlobal` *before* anything is called.  No option
widens the list at load time.

:data:`BIN_GLOBALS` is the list for insightface ``.bin`` sets (docs/protocols.md §5): besides
the plain containers the pickle opcodes build themselves (lists, tuples, dicts, bytes, str,
ints, bools), the globals that Python 3 uses to pickle ``bytes``/``bytearray`` at protocols
0-2 and those that numpy uses to pickle plain arrays and scalars (protocols 0-5, numpy 1 and
2 module names).  Each is wrapped so that it accepts only the arguments those pickles hold:

* ``_codecs.encode`` only ``(str, "latin1")``, ``bytes``/``bytearray`` only ``()`` or a
  byte string (never ``bytes(10**12)``);
* ``numpy.ndarray`` is a token, not the class: the only thing a pickle can do with it is hand
  it to ``_reconstruct`` (calling ``numpy.ndarray(shape, object, buffer)`` directly would
  turn bytes into object pointers);
* ``_reconstruct`` only ``(numpy.ndarray, (0,), typecode)``, what numpy writes; the array's
  contents come from ``ndarray.__setstate__``, which numpy checks (object arrays need a list);
* ``numpy.dtype`` only a plain type string (``"u1"``, ``"b1"``, ``"S10"``, ``"O8"``: no fields,
  no subarrays), and always as a fresh copy;
* ``scalar`` and ``_frombuffer`` refuse dtypes that hold Python objects.

BUILD (``__setstate__``) is allowed only on what numpy's pickles set it on: a fresh array from
``_reconstruct`` with an ``(version, shape, dtype, order, data)`` state, and a plain dtype with
its own state (only the byte order may differ: a state that changed its size, alignment or
flags, e.g. "holds objects" on ``uint64``, would make numpy read raw bytes as pointers);
numpy checks the rest (an object array's state must be a list of the objects).  Everything a pickle
builds from its own opcodes (lists, tuples, dicts, bytes, str, ints, floats, bools) is data.

The base is the pure-Python unpickler (:class:`pickle._Unpickler`): its memo is a dict, so a
``LONG_BINPUT`` with an index of 2**31 costs nothing, where the C unpickler would allocate
and clear a 16 GiB memo table.  Read the file into memory first (:func:`restricted_loads`),
so that a length field claiming gigabytes reads only what is there.
"""

from __future__ import annotations

import importlib
import io
import pickle
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "BIN_GLOBALS",
    "RefusedGlobal",
    "RestrictedUnpickler",
    "restricted_loads",
]


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (raised before anything is called)."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name
        super().__init__(f"it asks for {self.qualname}")

    @property
    def qualname(self) -> str:
        """``module.name`` as one printable line (``ascii()`` of it when it is not)."""
        q = f"{self.module}.{self.name}"
        if not q.isprintable() or len(q) > 200:
            q = ascii(q)[:200]
        return q


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler whose ``find_class`` gives out only the globals in ``allowed``.

    Args:
        file: a binary file (prefer :class:`io.BytesIO`; see the module notes).
        allowed: ``{(module, name): object}``; the object is what the pickle gets for that
            global (usually a checking wrapper, not the real function).
        encoding: how Python-2 ``str`` is decoded (``"bytes"`` keeps it as bytes).
    """

    def __init__(
        self, file: Any, allowed: Mapping[tuple[str, str], Any], *, encoding: str = "ASCII"
    ) -> None:
        super().__init__(file, fix_imports=False, encoding=encoding)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except (KeyError, TypeError):
            raise RefusedGlobal(str(module), str(name)) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("the pickle uses a persistent id, which is not allowed")

    def _load_build(self) -> None:
        # BUILD calls inst.__setstate__(state): allowed only where numpy's own pickles use it,
        # on a fresh array from _reconstruct and on a fresh plain dtype, with states that
        # cannot change what numpy must trust (a dtype's size, alignment and flags: flags
        # saying "holds objects" on a uint64 dtype would turn raw bytes into pointers).
        stack: list[Any] = self.stack  # type: ignore[attr-defined]  # pickle._Unpickler's
        state = stack.pop()
        inst = stack[-1]
        if type(inst) is np.ndarray:
            if not (inst.shape == (0,) and inst.flags.owndata):
                raise _bad("setting the state of an array twice, or of a view")
            if not (
                isinstance(state, tuple)
                and len(state) in (4, 5)
                and isinstance(state[-3], np.dtype)
            ):
                raise _bad("numpy array state that is not (version, shape, dtype, order, data)")
        elif isinstance(inst, np.dtype):
            if not _plain_dtype_state(inst, state):
                raise _bad("numpy dtype state other than a plain dtype's own")
        else:
            raise _bad(f"setting the state of a {type(inst).__name__}")
        inst.__setstate__(state)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = _load_build  # type: ignore[assignment]


def restricted_loads(
    data: bytes, allowed: Mapping[tuple[str, str], Any], *, encoding: str = "ASCII"
) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (raises :class:`RefusedGlobal`)."""
    return RestrictedUnpickler(io.BytesIO(data), allowed, encoding=encoding).load()


# --------------------------------------------------------------------------------------
# the wrappers handed out for allowed globals
# --------------------------------------------------------------------------------------


class _Guarded:
    """A callable with no attributes to set: a pickle's BUILD cannot change it."""

    __slots__ = ("_name", "_fn")
    _name: str
    _fn: Callable[..., Any]

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_fn", fn)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{self._name} is read-only")

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __repr__(self) -> str:
        return f"<allowed {self._name}>"


class _Token:
    """Stands for a class that a pickle may name but not call (``numpy.ndarray``)."""

    __slots__ = ("_name",)
    _name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"{self._name} is read-only")

    def __repr__(self) -> str:
        return f"<token {self._name}>"


def _bad(what: str) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(f"refused {what}")


def _encode(obj: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    # Python 3 pickles bytes at protocols 0-2 as _codecs.encode(latin-1 text, "latin1").
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _bad("_codecs.encode of anything but (str, 'latin1')")
    return obj.encode("latin-1")


def _byte_string(kind: type) -> Callable[..., Any]:
    def make(*args: Any) -> Any:
        # bytes() / bytearray() (empty ones), bytearray(bytes), bytearray(str, 'latin-1')
        if not args:
            return kind()
        if len(args) == 1 and isinstance(args[0], (bytes, bytearray)):
            return kind(args[0])
        if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            return kind(args[0].encode("latin-1"))
        raise _bad(f"{kind.__name__}() of anything but a byte string")

    return make


def _numpy_function(*candidates: str) -> Callable[..., Any]:
    for qual in candidates:
        module, _, attr = qual.rpartition(".")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
        return fn  # type: ignore[no-any-return]
    raise ImportError(f"numpy has none of {candidates}")


# numpy 2 names first: importing numpy.core warns under numpy 2.
_np_reconstruct = _numpy_function(
    "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct"
)
_np_scalar = _numpy_function("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")
_np_frombuffer = _numpy_function(
    "numpy._core.numeric._frombuffer", "numpy.core.numeric._frombuffer"
)

_NDARRAY = _Token("numpy.ndarray")


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> Any:
    # numpy's ndarray.__reduce__: _reconstruct(ndarray, (0,), b'b'), then __setstate__.
    if subtype is not _NDARRAY:
        raise _bad("_reconstruct of anything but numpy.ndarray")
    if not (isinstance(shape, tuple) and shape == (0,)):
        raise _bad(f"_reconstruct with shape {shape!r:.40} (numpy writes (0,))")
    if not isinstance(typecode, (bytes, str)) or len(typecode) > 8:
        raise _bad("_reconstruct with a typecode that is not a short string")
    return _np_reconstruct(np.ndarray, (0,), typecode)


_PLAIN_TYPESTR = re.compile(r"[|<>=]?[A-Za-z][0-9]{0,9}")


def _dtype(typestr: Any, align: Any = False, copy: Any = True) -> np.dtype[Any]:
    # numpy's dtype.__reduce__: dtype("u1", False, True), then BUILD with its state. Only a
    # plain type string (no fields, no subarray), and always a copy: with copy=False numpy
    # would hand out its shared built-in descriptor for the BUILD to change.
    if isinstance(typestr, bytes):
        typestr = typestr.decode("latin-1")
    if not isinstance(typestr, str) or not _PLAIN_TYPESTR.fullmatch(typestr):
        raise _bad(f"numpy dtype {typestr!r:.40} (only plain type strings such as 'u1')")
    return np.dtype(typestr, False, True)


def _plain_dtype_state(dt: np.dtype[Any], state: Any) -> bool:
    """Whether ``state`` is what numpy pickles for ``dt`` itself, up to the byte order.

    (version 3 or 4, endian, subarray, names, fields, elsize, alignment, flags[, metadata]),
    with no subarray, names, fields or metadata and ``dt``'s own size, alignment and flags.
    """
    if not (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)):
        return False
    endian = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]
    return (
        endian in ("|", "<", ">", "=")
        and state[2:5] == (None, None, None)
        and (len(state) == 8 or state[8] is None)
        and type(state[5]) is int
        and state[5] in (-1, dt.itemsize)
        and type(state[6]) is int
        and state[6] in (-1, dt.alignment)
        and type(state[7]) is int
        and state[7] == dt.flags
    )


def _checked_dtype(dtype: Any, where: str) -> np.dtype[Any]:
    if not isinstance(dtype, np.dtype):
        raise _bad(f"{where} without a numpy dtype")
    if dtype.hasobject:
        raise _bad(f"{where} of a dtype that holds Python objects ({dtype})")
    return dtype


def _scalar(dtype: Any, *args: Any) -> Any:
    return _np_scalar(_checked_dtype(dtype, "numpy scalar"), *args)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> Any:
    # numpy's protocol-5 array pickle, with the buffer in band (bytes or bytearray).
    if not isinstance(buf, (bytes, bytearray)):
        raise _bad("numpy _frombuffer of anything but bytes")
    return _np_frombuffer(buf, _checked_dtype(dtype, "numpy _frombuffer"), shape, order)


BIN_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("_codecs", "encode"): _Guarded("_codecs.encode", _encode),
    ("builtins", "bytes"): _Guarded("bytes", _byte_string(bytes)),
    ("__builtin__", "bytes"): _Guarded("bytes", _byte_string(bytes)),
    ("builtins", "bytearray"): _Guarded("bytearray", _byte_string(bytearray)),
    ("__builtin__", "bytearray"): _Guarded("bytearray", _byte_string(bytearray)),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Guarded("numpy.dtype", _dtype),
    ("numpy.core.multiarray", "_reconstruct"): _Guarded("_reconstruct", _reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): _Guarded("_reconstruct", _reconstruct),
    ("numpy.core.multiarray", "scalar"): _Guarded("scalar", _scalar),
    ("numpy._core.multiarray", "scalar"): _Guarded("scalar", _scalar),
    ("numpy.core.numeric", "_frombuffer"): _Guarded("_frombuffer", _frombuffer),
    ("numpy._core.numeric", "_frombuffer"): _Guarded("_frombuffer", _frombuffer),
}
"""The globals an insightface ``.bin`` pickle may name (see the module notes); nothing else."""
