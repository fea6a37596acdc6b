"""Threads of the Rust core: checked settings (``set_num_threads``, ``VITFREE_NUM_THREADS``).

The kernels give bit-identical results for any thread count; these checks only keep a
mistaken setting from raising an obscure error (``--threads -1``) or starting a pool of
100,000 threads.  A count far above the cores is clamped with a warning; an unusable
``VITFREE_NUM_THREADS`` is ignored with a warning (all cores are used).
"""

from __future__ import annotations

import operator
import os

from vitfree import _core
from vitfree._logging import get_logger
from vitfree.errors import InputError, InputTypeError

__all__ = ["get_num_threads", "max_threads", "set_num_threads"]

log = get_logger(__name__)


def max_threads() -> int:
    """The most threads accepted: 4 per available core (at least 8)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(8, 4 * (cpus or 1))


def set_num_threads(n: int) -> None:
    """Threads of the Rust core; 0 restores the default (``VITFREE_NUM_THREADS`` or all cores).

    Raises:
        InputTypeError: ``n`` is not an integer.
        InputError: ``n`` is negative.
    """
    if isinstance(n, bool):
        raise InputTypeError(f"the number of threads must be an integer, got {n!r}")
    try:
        k = operator.index(n)
    except TypeError:
        raise InputTypeError(f"the number of threads must be an integer, got {n!r}") from None
    if k < 0:
        raise InputError(f"the number of threads must be >= 0 (0 = all cores), got {k}")
    limit = max_threads()
    if k > limit:
        log.warning("%d threads asked for; using %d (4 per core)", k, limit)
        k = limit
    _core.set_num_threads(k)


def get_num_threads() -> int:
    """The number of threads the Rust kernels use now."""
    return int(_core.get_num_threads())


def sanitize_environment() -> None:
    """Check ``VITFREE_NUM_THREADS`` once, at import, before the core reads it."""
    raw = os.environ.get("VITFREE_NUM_THREADS")
    if raw is None:
        return
    try:
        k = int(raw.strip())
    except ValueError:
        k = -1
    if k <= 0:
        log.warning(
            "VITFREE_NUM_THREADS=%r is not a positive integer; ignored (using all cores)", raw
        )
        del os.environ["VITFREE_NUM_THREADS"]
    elif k > max_threads():
        log.warning(
            "VITFREE_NUM_THREADS=%s is far above the cores; using %d", raw, max_threads()
        )
        os.environ["VITFREE_NUM_THREADS"] = str(max_threads())
