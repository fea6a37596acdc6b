"""Argument validation: the one set of checks every module uses (features, ids, labels, scores).

Every helper returns a C-contiguous array of the exact dtype the kernels take, copying only when
the input is not already in that form, and raises TypeError/ValueError naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vitfree.errors import InputError, InputTypeError

__all__ = [
    "NonIntegerIdError",
    "as_features",
    "as_ids",
    "as_labels",
    "as_scores",
    "as_weights",
    "check_same_length",
    "ids_to_int64",
]


class NonIntegerIdError(InputError, InputTypeError):
    """Float ids that are NaN, infinite or not integral: a wrong value (:class:`InputError`), and
    a :class:`InputTypeError` too, which is what such ids raised before the values were checked.
    """


#: Floats in [-2**63, 2**63) convert to int64 exactly; anything outside would wrap.
_INT64_LOW = -(2.0**63)
_INT64_HIGH = 2.0**63


def _array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, np.ndarray):  # as is: a memory map stays one
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise InputTypeError(f"{name} could not be converted to a numpy array: {exc}") from exc


def as_features(
    x: Any,
    name: str,
    *,
    allow_f64: bool = True,
    dtype: Any = None,
    finite: bool = False,
    dim: int | None = None,
    allow_empty: bool = False,
    contiguous: bool = True,
) -> np.ndarray:
    """The one check of a feature matrix, used by every module: (N, D) floating point.

    Accepted: float16 (widened to float32), float32 and float64 arrays (or torch tensors).
    Integer, boolean and complex arrays are refused (``TypeError``): features are real
    vectors, and a silent cast would hide a wrong input.

    Args:
        x: the matrix.
        name: its argument name, used in every message.
        allow_f64: keep float64 (else converted to float32).
        dtype: convert to this dtype (e.g. ``np.float32`` for faiss); None keeps
            float32/float64 as given.
        finite: refuse NaN/inf, naming the first rows that hold them (the Rust kernels check
            this themselves, so their wrappers leave it off).
        dim: the required width D.
        allow_empty: accept N == 0 or D == 0.
        contiguous: return a C-contiguous array (copying only when needed); False returns
            the input's memory as is (a memory map stays a memory map).

    Raises:
        TypeError: not a floating-point array.
        ValueError: not 2-D, empty, wrong width, or non-finite values (with ``finite``).
    """
    arr = _array(x, name)
    if arr.dtype.kind != "f":
        raise InputTypeError(
            f"{name} must be a float array, got dtype {arr.dtype}: {name} must be float32 or "
            f"float64 (float16 is widened; real numeric values only)"
        )
    if arr.ndim != 2:
        raise InputError(
            f"{name} must be 2-D, got shape {arr.shape}: {name} must be a 2-D (N, D) array, "
            f"one row per item"
        )
    if not allow_empty and (arr.shape[0] == 0 or arr.shape[1] == 0):
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{name} has dimension {arr.shape[1]}, expected {dim}")
    if dtype is not None:
        if arr.dtype != dtype:
            arr = arr.astype(dtype)
    elif arr.dtype == np.float16 or (arr.dtype == np.float64 and not allow_f64):
        arr = arr.astype(np.float32)
    elif arr.dtype not in (np.float32, np.float64):  # float128 and other exotic widths
        arr = arr.astype(np.float64 if allow_f64 else np.float32)
    if contiguous:
        arr = np.ascontiguousarray(arr)
    if finite:
        ok = np.isfinite(arr).all(axis=1)
        if not ok.all():
            bad = np.flatnonzero(~ok)
            raise InputError(
                f"{name} has NaN or infinite values in rows {bad[:10].tolist()}"
                + (f" ({bad.size} rows)" if bad.size > 10 else "")
            )
    return arr


def ids_to_int64(arr: np.ndarray, name: str, *, allow_bool: bool = False) -> npt.NDArray[np.int64]:
    """Integer ids of any integer or float dtype as int64, refusing every value that would change.

    Integer dtypes convert when their values fit (uint64 above the int64 range is refused);
    floats must be finite, integral and inside the int64 range, since a cast would turn 1e19
    and 2e19 both into -2**63 and merge distinct ids. (A float above 2**53 holds only every
    other integer: pass integer arrays for ids that large.)

    Raises:
        InputError: ids outside the int64 range (the first such entry named).
        NonIntegerIdError: NaN, infinite or non-integral floats (both ValueError and TypeError).
        InputTypeError: any other dtype (strings, objects, complex; booleans unless allowed).
    """
    kind = arr.dtype.kind
    if kind == "i" or (kind == "b" and allow_bool):
        return np.ascontiguousarray(arr, dtype=np.int64)
    if kind == "u":
        if arr.dtype.itemsize == 8 and arr.size:
            big = np.flatnonzero(arr > np.iinfo(np.int64).max)
            if big.size:
                raise InputError(
                    f"{name}[{big[0]}] is {arr[big[0]]}, above the int64 range of ids "
                    f"({big.size} such entries)"
                )
        return np.ascontiguousarray(arr, dtype=np.int64)
    if kind == "f":
        if arr.size == 0:
            return np.zeros(0, dtype=np.int64)
        finite = np.isfinite(arr)
        if not finite.all():
            i = int(np.argmin(finite))
            raise NonIntegerIdError(f"{name} must hold integer ids: {name}[{i}] is {arr[i]}")
        outside = np.flatnonzero((arr < _INT64_LOW) | (arr >= _INT64_HIGH))
        if outside.size:
            i = int(outside[0])
            raise InputError(
                f"{name}[{i}] is {arr[i]:.17g}, outside the int64 range of ids "
                f"({outside.size} such entries): a cast would wrap it and merge distinct ids"
            )
        fractional = np.flatnonzero(arr != np.round(arr))
        if fractional.size:
            i = int(fractional[0])
            raise NonIntegerIdError(
                f"{name} must hold integer ids: {name}[{i}] is {arr[i]}, not a whole number "
                f"({fractional.size} such entries)"
            )
        return np.ascontiguousarray(arr, dtype=np.int64)
    raise InputTypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")


def as_ids(x: Any, name: str, n: int | None = None) -> npt.NDArray[np.int64]:
    """A (N,) int64 vector of integer ids (integer arrays, or floats holding whole numbers).

    Refuses, naming ``name`` and the first offending entry, every id that int64 cannot hold
    exactly (floats or uint64 beyond the int64 range, NaN/inf, non-integral floats): see
    :func:`ids_to_int64`.
    """
    arr = _array(x, name)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array of ids, got shape {arr.shape}")
    if arr.size == 0 and arr.dtype.kind not in "iuf":  # np.asarray([]) and friends
        arr = arr.astype(np.int64)
    out = ids_to_int64(arr, name)
    if n is not None and out.shape[0] != n:
        raise InputError(f"{name} has {out.shape[0]} entries, expected {n}")
    return out


def as_weights(x: Any, name: str, n: int) -> npt.NDArray[np.float64]:
    """A (N,) finite float64 vector."""
    arr = _array(x, name)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{name} has {arr.shape[0]} entries, expected {n}")
    if arr.dtype.kind not in "fiub":
        raise InputTypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{name}[{bad[0]}] is {arr[bad[0]]}; {name} must be finite ({bad.size} bad entries)")
    return arr


def as_labels(x: Any, name: str = "labels", n: int | None = None) -> npt.NDArray[np.uint8]:
    """A (N,) uint8 vector of 0 (impostor) / 1 (genuine); bool arrays are viewed, not copied."""
    arr = _array(x, name)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty")
    if n is not None and arr.shape[0] != n:
        raise InputError(f"{name} has {arr.shape[0]} entries, expected {n}")
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr).view(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise InputTypeError(f"{name} must be 0/1 integers or booleans, got dtype {arr.dtype}")
    if arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 1:
        if arr.dtype.itemsize == 1 and arr.flags.c_contiguous:
            return arr.view(np.uint8)  # int8 0/1: the same bytes, no copy
        return np.ascontiguousarray(arr, dtype=np.uint8)  # fast path: two reductions
    bad = np.flatnonzero((arr != 0) & (arr != 1))
    if bad.size:
        raise InputError(
            f"{name}[{bad[0]}] is {arr[bad[0]]}; {name} must be 0 (impostor) or 1 (genuine)"
            f" ({bad.size} bad entries)"
        )
    return np.ascontiguousarray(arr, dtype=np.uint8)


def as_scores(x: Any, name: str = "scores", n: int | None = None, *, check_finite: bool = True) -> np.ndarray:
    """A (N,) finite float32 or float64 vector (other numeric dtypes become float64).

    ``check_finite=False`` leaves the check to the Rust kernel (which names the entry too).
    """
    arr = _array(x, name)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise InputError(f"{name} is empty")
    if n is not None and arr.shape[0] != n:
        raise InputError(f"{name} has {arr.shape[0]} entries, expected {n}")
    if arr.dtype.kind not in "iuf":
        raise InputTypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    arr = np.ascontiguousarray(arr)
    if not check_finite:
        return arr
    finite = np.isfinite(arr)
    if not finite.all():
        i = int(np.argmin(finite))
        raise InputError(f"{name}[{i}] is {arr[i]}; {name} must be finite")
    return arr


def check_same_length(**arrays: np.ndarray) -> None:
    """Raise ValueError unless all arrays have the same first dimension."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, arr in items[1:]:
        if arr.shape[0] != first.shape[0]:
            raise InputError(
                f"{name} has {arr.shape[0]} entries but {first_name} has {first.shape[0]}"
            )
