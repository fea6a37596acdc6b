"""Argument validation shared by the public wrappers of the Rust core.

Every helper returns a C-contiguous array of the exact dtype the kernels take, copying only when
the input is not already in that form, and raises TypeError/ValueError naming the argument.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["as_features", "as_ids", "as_labels", "as_scores", "as_weights", "check_same_length"]


def _array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise TypeError(f"{name} could not be converted to a numpy array: {exc}") from exc


def as_features(x: Any, name: str, *, allow_f64: bool = True) -> np.ndarray:
    """A (N, D) float32 (or float64 when allowed) C-contiguous matrix; float16 is widened."""
    arr = _array(x, name)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    if arr.dtype == np.float64 and not allow_f64:
        arr = arr.astype(np.float32)
    if arr.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def as_ids(x: Any, name: str, n: int | None = None) -> npt.NDArray[np.int64]:
    """A (N,) int64 vector of integer ids."""
    arr = _array(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of ids, got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and arr.size and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        elif arr.size == 0:
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} holds ids above the int64 range")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    return np.ascontiguousarray(arr, dtype=np.int64)


def as_weights(x: Any, name: str, n: int) -> npt.NDArray[np.float64]:
    """A (N,) finite float64 vector."""
    arr = _array(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name}[{bad[0]}] is {arr[bad[0]]}; {name} must be finite ({bad.size} bad entries)")
    return arr


def as_labels(x: Any, name: str = "labels", n: int | None = None) -> npt.NDArray[np.uint8]:
    """A (N,) uint8 vector of 0 (impostor) / 1 (genuine); bool arrays are viewed, not copied."""
    arr = _array(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr).view(np.uint8)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be 0/1 integers or booleans, got dtype {arr.dtype}")
    if arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 1:
        return np.ascontiguousarray(arr, dtype=np.uint8)  # fast path: two reductions
    bad = np.flatnonzero((arr != 0) & (arr != 1))
    if bad.size:
        raise ValueError(
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
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n}")
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    arr = np.ascontiguousarray(arr)
    if not check_finite:
        return arr
    finite = np.isfinite(arr)
    if not finite.all():
        i = int(np.argmin(finite))
        raise ValueError(f"{name}[{i}] is {arr[i]}; {name} must be finite")
    return arr


def check_same_length(**arrays: np.ndarray) -> None:
    """Raise ValueError unless all arrays have the same first dimension."""
    items = list(arrays.items())
    first_name, first = items[0]
    for name, arr in items[1:]:
        if arr.shape[0] != first.shape[0]:
            raise ValueError(
                f"{name} has {arr.shape[0]} entries but {first_name} has {first.shape[0]}"
            )
