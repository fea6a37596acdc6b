"""What an exit costs: one typed record, from counting and measuring to the reports.

:class:`ExitCost` is written by :mod:`vitfree.models.costs` (FLOPs and parameters counted,
speed measured), stored in a feature store's manifest (:mod:`vitfree.store`), read back with
the features and shown by :mod:`vitfree.report`.  This module needs neither torch nor numpy,
so evaluation from saved features stays light.

In JSON (manifests, ``results.json``) a record is the dict of its fields that are set
(:meth:`ExitCost.as_dict`); :meth:`ExitCost.from_dict` reads it back and tolerates records
of other tools that carry only some fields.  For code written against the dict records of
earlier versions, a record also reads like that dict (``cost["flop_ratio"]``,
``"speedup" in cost``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["ExitCost", "cost_table"]

_FLOAT_FIELDS = (
    "gflops",
    "flop_ratio",
    "param_ratio",
    "latency_ms",
    "throughput",
    "speedup",
    "latency_speedup",
    "batch_size",
)


@dataclasses.dataclass(frozen=True)
class ExitCost:
    """Cost of one exit, per image.

    Attributes:
        exit: 1-based exit (number of blocks run).
        gflops: GFLOPs of one image through the patch embedding, ``exit`` blocks and the head.
        params: Parameters the exit uses (patch embedding, ``pos_embed``, ``exit`` blocks and
            the head; not the training-only ``mask_token``).
        flop_ratio: ``gflops`` relative to the full-depth model.
        param_ratio: ``params`` relative to the full-depth model.
        latency_ms: measured batch-1 latency (None when not measured).
        throughput: measured images per second at ``batch_size``.
        speedup: throughput relative to the full model (the reports' "speed-up").
        latency_speedup: batch-1 latency of the full model / this exit's.
        batch_size: batch of the throughput measurement.
    """

    exit: int
    gflops: float | None = None
    params: int | None = None
    flop_ratio: float | None = None
    param_ratio: float | None = None
    latency_ms: float | None = None
    throughput: float | None = None
    speedup: float | None = None
    latency_speedup: float | None = None
    batch_size: float | None = None

    # ------------------------------------------------------------------ serialisation

    def as_dict(self) -> dict[str, Any]:
        """The fields that are set (``exit`` included), as stored in JSON."""
        return {f.name: v for f in dataclasses.fields(self) if (v := getattr(self, f.name)) is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], exit: int | None = None) -> ExitCost:
        """A record from its JSON form; ``exit`` fills in a record stored without one.

        Unknown keys are ignored (records of other tools); values must be numbers.

        Raises:
            ValueError: a field that is not a finite number, or no exit.
        """
        k = d.get("exit", exit)
        if k is None:
            raise ValueError(f"cost record without an exit: {dict(d)!r}")
        values: dict[str, Any] = {"exit": int(k)}
        for name in ("params", *_FLOAT_FIELDS):
            if name not in d or d[name] is None:
                continue
            v = d[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"cost record of exit {k}: {name} must be a finite number, got {v!r}")
            values[name] = int(v) if name == "params" else float(v)
        return cls(**values)

    def with_speed(self, speed: Mapping[str, float]) -> ExitCost:
        """This record with measured speed fields (from :func:`vitfree.models.measure_speed`)."""
        known = {"latency_ms", "throughput", "speedup", "latency_speedup", "batch_size"}
        changes: dict[str, Any] = {k: float(v) for k, v in speed.items() if k in known}
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ the dict view

    def __getitem__(self, key: str) -> Any:
        value = self.as_dict().get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self.as_dict()

    def __iter__(self) -> Iterator[str]:
        return iter(self.as_dict())

    def get(self, key: str, default: Any = None) -> Any:
        """``cost.get("speedup")``: the field, or ``default`` when it is not set."""
        return self.as_dict().get(key, default)

    def keys(self) -> list[str]:
        """The names of the fields that are set."""
        return list(self.as_dict())


def cost_table(costs: Mapping[Any, Any] | None) -> dict[int, ExitCost]:
    """``{exit: ExitCost}`` from a manifest's ``{"4": {...}, ...}`` (records or dicts)."""
    out: dict[int, ExitCost] = {}
    for key, rec in (costs or {}).items():
        c = rec if isinstance(rec, ExitCost) else ExitCost.from_dict(rec, exit=int(key))
        out[c.exit] = c
    return out
