"""Dynamic exits: the exit chosen per face (or per pair, per probe) at run time.

A static exit cuts every face at the same block.  A *policy* looks at what the model has
computed so far and decides, face by face, whether to stop or go deeper.  Four policies,
all training-free except the last, which is trained with the backbone frozen:

================  ==========  ===============================================================
kind              decides     rule at checked exit ``e_i``
================  ==========  ===============================================================
``stability``     a face      stop when cos(emb(e_i), emb(e_{i-1})) >= ``tau``
``learned``       a face      stop when a tiny decision net (2-layer MLP on [has previous,
                              cos with previous, log norm, log norm ratio, depth]) gives
                              p(going deeper does not change the decision) >= ``threshold``
``cascade``       a 1:1 pair  decide the pair at ``e_i`` when its score is farther than
                              ``alpha * scale_i`` from exit ``e_i``'s threshold at the FAR
``search-cascade``  a probe   search the gallery at ``e_1``, keep the ``top_k`` candidates,
                              re-rank them at deeper exits until top-1 leads top-2 by
                              ``margin``
================  ==========  ===============================================================

The last checked exit decides everything that is left, so a policy never runs a face past
its deepest checked exit, and never past the model's depth (the exits are checked against it).

**Execution** (:func:`run_dynamic`): a batch runs block by block (:meth:`embed`,
:meth:`run_blocks`); at each checked exit the head gives the embeddings of the faces still
running, the policy decides per face, the faces that stop leave the batch (the token rows of
the others are gathered with ``index_select``: *compaction*) and only the others run the next
blocks.  Image and flip are one face, as in :func:`vitfree.inference.embed_batch`: both rows
run together, the policy decides on their *sum* (the embedding every protocol uses,
docs/protocols.md §3, §5), and both leave together.

*Equality with per-face execution*: the embedding of a face is the one of running that face
alone to its exit, within floating-point tolerance, not bit for bit: the matrix kernels
(oneDNN / MKL on CPU, cuBLAS on GPU) choose their blocking from the batch size, so a row in a
batch of 37 and the same row alone can differ in the last bits (relative 1e-6).  The rows do
not mix: eval-mode BatchNorm and attention are per row.  A face whose statistic lies within
that noise of the threshold could therefore stop at a neighbouring exit in the two runs; the
decisions are computed in float64 from the float32 embeddings by one function
(:func:`face_statistic`), used online and offline (:func:`simulate`), so they agree
everywhere else.

**Offline simulation** (:func:`simulate`): a face policy's decision at exit ``e_i`` depends
only on the embeddings at the checked exits up to ``e_i``, so running a policy on features
extracted at every checked exit (one pass, :meth:`forward_exits`) gives the same exits and
embeddings as :func:`run_dynamic`.  Calibration uses this: one extraction, then hundreds of
thresholds tried in milliseconds each.

**Calibration** (:func:`calibrate`, ``vitfree dynamic calibrate``) on a held-out IJB-format set
(disjoint identities from the evaluation set): the threshold (``tau``, ``threshold``,
``alpha``, ``margin``) that meets a :class:`Target`: at most ``x`` points of TAR@FAR (rank-1
for the search cascade) lost against the full model, or an average-block budget.  The policy
file (JSON, :func:`save_policy`) records the model's fingerprint, the target and the
calibration data; :func:`load_policy` refuses a file made for another model.

**Templates and pairs** (face policies on IJB, :func:`dynamic_ijb_results`): by default each
image stops at its own exit and a template aggregates images of several exits.  With
*per-template exits* (:func:`template_exits`, ``simulate(..., per_template=True)``) every
image of a template stops at the deepest exit any of its images asked for, so a template
lives in one exit's space.  With *common-exit pairs* (:func:`common_exit_scores`) a pair is
scored at the deepest exit every image of both templates reached (the minimum image exit over
both; with per-template exits, the shallower template's exit): both sides come from one exit's
embeddings and no extra block runs.

**Costs**: "blocks" of a face = the blocks it ran (its exit); each checked exit up to it also
ran the head once (``heads``).  For the pair cascade a pair's blocks are its decision exit
(what a 1:1 claim against an enrolled template stored at every checked exit costs); on a
benchmark where a template takes part in many pairs, the face blocks (the deepest exit any
of its pairs needed) are reported too, and they are what compute a whole benchmark costs.

This module imports no torch at import time: the policies, the simulation, the cascades and
the policy files work on numpy features; the functions that run a model import torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import numpy.typing as npt

from vitfree._logging import get_logger
from vitfree.errors import (
    CheckpointError,
    FormatError,
    InputError,
    InputTypeError,
    NonFiniteFeaturesError,
)

if TYPE_CHECKING:
    from vitfree.data.ijb import IJB1N, IJBMeta
    from vitfree.evaluate import ExitResult, IJBOptions, PairSetResult
    from vitfree.models import VisionTransformer
    from vitfree.store import FeatureSet

__all__ = [
    "FACE_KINDS",
    "KINDS",
    "PAIR_EXITS",
    "POLICY_FORMAT",
    "CalibrationSet",
    "CascadeResult",
    "CommonExitScores",
    "DynamicResult",
    "Policy",
    "SearchCascadeResult",
    "Target",
    "calibrate",
    "calibrate_features",
    "calibration_set",
    "cascade_scores",
    "common_exit_scores",
    "default_policy_exits",
    "embed_faces",
    "face_statistic",
    "face_statistics",
    "load_policy",
    "make_policy",
    "measure_dynamic_speed",
    "resolve_policy",
    "run_dynamic",
    "save_policy",
    "search_cascade",
    "simulate",
    "template_exits",
    "train_decision_net",
    "check_policy_model",
    "decision_features",
    "dynamic_cost",
    "exit_indices",
    "face_blocks_of_pairs",
    "model_record",
    "search_rank1",
]

log = get_logger(__name__)

POLICY_FORMAT = "vitfree.dynamic-policy"
POLICY_VERSION = 1
FACE_KINDS: tuple[str, ...] = ("stability", "learned")
KINDS: tuple[str, ...] = (*FACE_KINDS, "cascade", "search-cascade")
#: The inputs of the learned policy's decision net, in order.
DECISION_FEATURES: tuple[str, ...] = (
    "has_previous",
    "cos_previous",
    "log_norm",
    "log_norm_ratio",
    "depth_fraction",
)
TARGET_METRICS: tuple[str, ...] = ("tar_loss", "blocks", "rank1_loss")


# --------------------------------------------------------------------------------------
# targets and policies
# --------------------------------------------------------------------------------------


def _number(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise InputTypeError(f"{name} must be a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise InputError(f"{name} must be finite, got {v!r}")
    return f


@dataclasses.dataclass(frozen=True)
class Target:
    """What calibration aims at.

    Attributes:
        metric: ``"tar_loss"`` (at most ``value`` points of TAR@``far`` lost against the full
            model), ``"rank1_loss"`` (at most ``value`` points of 1:N rank-1 lost: the search
            cascade) or ``"blocks"`` (an average-block budget: the most accurate setting
            whose blocks per face (per pair, per probe) average at most ``value``).
        value: points in [0, 100] for the losses; blocks > 0 for the budget.
        far: the FAR of the TAR (in (0, 1)); also the FAR of the cascade's thresholds.
    """

    metric: str
    value: float
    far: float = 1e-4

    def __post_init__(self) -> None:
        if self.metric not in TARGET_METRICS:
            raise InputError(
                f"unknown calibration target {self.metric!r}; known: {', '.join(TARGET_METRICS)}"
            )
        v = _number("the target value", self.value)
        if self.metric.endswith("_loss") and not 0.0 <= v <= 100.0:
            raise InputError(
                f"a {self.metric} target is in points of accuracy, within [0, 100]; got {v:g}"
            )
        if self.metric == "blocks" and not v > 0:
            raise InputError(f"a block budget must be > 0 blocks per face, got {v:g}")
        far = _number("far", self.far)
        if not 0.0 < far < 1.0:
            raise InputError(f"far must lie in (0, 1), got {far:g}")
        object.__setattr__(self, "value", v)
        object.__setattr__(self, "far", far)

    def as_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "far": self.far}

    def describe(self) -> str:
        if self.metric == "blocks":
            return f"at most {self.value:g} blocks per face on average"
        what = "rank-1" if self.metric == "rank1_loss" else f"TAR@FAR={self.far:g}"
        return f"at most {self.value:g} points of {what} lost against the full model"


def _exits_tuple(exits: Any) -> tuple[int, ...]:
    try:
        ks = [int(k) for k in exits]
    except (TypeError, ValueError):
        raise InputError(f"exits must be a sequence of block numbers, got {exits!r}") from None
    if not ks:
        raise InputError("a policy needs at least one checked exit")
    if any(isinstance(k, bool) for k in exits) or any(k < 1 for k in ks):
        raise InputError(f"policy exits are 1-based block numbers >= 1, got {list(exits)!r}")
    if ks != sorted(set(ks)):
        raise InputError(f"policy exits must be increasing and distinct, got {ks}")
    return tuple(ks)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A dynamic-exit policy: its kind, the checked exits and its parameters.

    Build one with :func:`make_policy`, :func:`calibrate` or :func:`load_policy`.

    Attributes:
        kind: one of :data:`KINDS`.
        exits: the checked exits, 1-based, increasing; the last decides what is left.
        params: ``stability``: ``{"tau"}``; ``learned``: ``{"threshold", "net"}``;
            ``cascade``: ``{"far", "alpha", "thresholds", "scales"}`` (one threshold and
            scale per exit); ``search-cascade``: ``{"top_k", "margin"}``.
        model: the model it was calibrated for (``fingerprint``, ``depth``, ``config``,
            ``arch``), or None for a hand-made policy.
        target: the calibration target, when calibrated.
        calibration: what calibration saw and achieved (data, sizes, the full model's and
            the policy's accuracy, average blocks, the curve of tried settings).
    """

    kind: str
    exits: tuple[int, ...]
    params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    model: Mapping[str, Any] | None = None
    target: Target | None = None
    calibration: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown policy {self.kind!r}; known: {', '.join(KINDS)}")
        object.__setattr__(self, "exits", _exits_tuple(self.exits))
        p = dict(self.params)
        m = len(self.exits)
        if self.kind == "stability":
            tau = _number("tau", p.get("tau"))
            if tau > 1.0:
                raise InputError(
                    f"tau = {tau:g} can never be met: tau is a cosine and must lie in [-1, 1]"
                )
            if tau < -1.0:
                raise InputError(f"tau must lie in [-1, 1] (a cosine), got {tau:g}")
            p["tau"] = tau
        elif self.kind == "learned":
            t = _number("threshold", p.get("threshold"))
            if not 0.0 <= t <= 1.0:
                raise InputError(f"threshold is a probability and must lie in [0, 1], got {t:g}")
            p["threshold"] = t
            p["net"] = _check_net(p.get("net"))
        elif self.kind == "cascade":
            far = _number("far", p.get("far"))
            if not 0.0 < far < 1.0:
                raise InputError(f"far must lie in (0, 1), got {far:g}")
            alpha = _number("alpha", p.get("alpha"))
            if alpha < 0:
                raise InputError(f"alpha (margins in units of each exit's scale) must be >= 0, got {alpha:g}")
            for name in ("thresholds", "scales"):
                vals = [_number(f"{name}[{i}]", v) for i, v in enumerate(p.get(name) or [])]
                if len(vals) != m:
                    raise InputError(f"a cascade needs one of {name} per exit ({m}), got {len(vals)}")
                if name == "scales" and any(v <= 0 for v in vals):
                    raise InputError(f"cascade scales must be > 0, got {vals}")
                p[name] = vals
            p["far"], p["alpha"] = far, alpha
        else:  # search-cascade
            k = p.get("top_k")
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or int(k) < 1:
                raise InputError(f"top_k must be an integer >= 1, got {k!r}")
            margin = _number("margin", p.get("margin"))
            if margin < 0:
                raise InputError(f"margin (a cosine gap) must be >= 0, got {margin:g}")
            p["top_k"], p["margin"] = int(k), margin
        object.__setattr__(self, "params", p)

    # ---------------------------------------------------------------- properties

    @property
    def is_face_policy(self) -> bool:
        """Decides per face (run with :func:`run_dynamic`)."""
        return self.kind in FACE_KINDS

    @property
    def threshold(self) -> float:
        """A face policy stops a face where its statistic is >= this value."""
        if self.kind == "stability":
            return float(self.params["tau"])
        if self.kind == "learned":
            return float(self.params["threshold"])
        raise InputError(f"a {self.kind} policy has no per-face threshold")

    def with_threshold(self, value: float) -> Policy:
        """The same face policy with another threshold (``tau`` or ``threshold``)."""
        key = {"stability": "tau", "learned": "threshold"}.get(self.kind)
        if key is None:
            raise InputError(f"a {self.kind} policy has no per-face threshold")
        return dataclasses.replace(self, params={**self.params, key: value})

    def describe(self) -> str:
        """One line: kind, parameter, exits."""
        ex = ",".join(map(str, self.exits))
        p = self.params
        if self.kind == "stability":
            what = f"tau={p['tau']:.4f}"
        elif self.kind == "learned":
            what = f"threshold={p['threshold']:.4f}"
        elif self.kind == "cascade":
            what = f"alpha={p['alpha']:.3f} at FAR={p['far']:g}"
        else:
            what = f"top_k={p['top_k']} margin={p['margin']:.4f}"
        return f"{self.kind} {what}, exits {ex}"

    # ---------------------------------------------------------------- files

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of a policy file."""
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "kind": self.kind,
            "exits": list(self.exits),
            "params": _jsonable(self.params),
            "model": _jsonable(self.model) if self.model is not None else None,
            "target": self.target.as_dict() if self.target is not None else None,
            "calibration": _jsonable(self.calibration) if self.calibration is not None else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policy:
        """A policy from :meth:`as_dict`'s form (raises :class:`InputError` naming the problem)."""
        if not isinstance(d, Mapping):
            raise InputError(f"a policy is a JSON object, got {type(d).__name__}")
        if d.get("format") != POLICY_FORMAT:
            raise InputError(f"not a vitfree policy (format {d.get('format')!r}, expected {POLICY_FORMAT!r})")
        if int(d.get("version", 0)) > POLICY_VERSION:
            raise InputError(f"policy version {d.get('version')} is newer than this vitfree reads ({POLICY_VERSION})")
        tgt = d.get("target")
        return cls(
            kind=str(d.get("kind")),
            exits=tuple(d.get("exits") or ()),
            params=dict(d.get("params") or {}),
            model=d.get("model"),
            target=Target(**tgt) if tgt else None,
            calibration=d.get("calibration"),
        )


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, Path):
        return str(x)
    return x


def _check_net(net: Any) -> dict[str, Any]:
    """The decision net's weights, checked: 5 inputs, one hidden layer, one output."""
    if not isinstance(net, Mapping):
        raise InputError("a learned policy needs its decision net ('net': weights from train_decision_net)")
    try:
        mean = np.asarray(net["mean"], dtype=np.float64)
        std = np.asarray(net["std"], dtype=np.float64)
        w1 = np.asarray(net["w1"], dtype=np.float64)
        b1 = np.asarray(net["b1"], dtype=np.float64)
        w2 = np.asarray(net["w2"], dtype=np.float64)
        b2 = float(net["b2"])
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"the decision net's weights are incomplete or not numbers: {e}") from None
    f = len(DECISION_FEATURES)
    h = b1.shape[0] if b1.ndim == 1 else -1
    if mean.shape != (f,) or std.shape != (f,) or w1.shape != (h, f) or w2.shape != (h,):
        raise InputError(
            f"the decision net must map {f} inputs through one hidden layer to one output; got "
            f"mean {mean.shape}, std {std.shape}, w1 {w1.shape}, b1 {b1.shape}, w2 {w2.shape}"
        )
    arrays = (mean, std, w1, b1, w2, np.array([b2]))
    if not all(np.isfinite(a).all() for a in arrays) or (std <= 0).any():
        raise InputError("the decision net has non-finite weights or a non-positive std")
    return {**dict(net), "mean": mean.tolist(), "std": std.tolist(), "w1": w1.tolist(),
            "b1": b1.tolist(), "w2": w2.tolist(), "b2": b2}  # fmt: skip


def make_policy(kind: str, exits: Sequence[int], **params: Any) -> Policy:
    """A policy by hand: ``make_policy("stability", [3, 4, 6, 8, 12], tau=0.95)``.

    Raises:
        InputError: an unknown kind, exits that are not increasing block numbers, or a
            parameter out of range (``tau`` outside [-1, 1], ...).
    """
    return Policy(kind=kind, exits=tuple(exits), params=params)


def default_policy_exits(depth: int, kind: str = "stability") -> list[int]:
    """The checked exits a calibration uses by default.

    Face policies check every block from a quarter of the depth on (3..12 for 12 blocks: a
    head costs a few percent of a block, and a finer grid lets faces stop earlier); the
    cascades check 1/3, 1/2, 2/3, 5/6 of the depth and the full model (4,6,8,10,12).
    """
    if kind in FACE_KINDS:
        return list(range(max(1, depth // 4), depth + 1))
    return sorted({max(1, round(depth * f)) for f in (1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0)})


# --------------------------------------------------------------------------------------
# the face policies' statistic: one function, online and offline
# --------------------------------------------------------------------------------------


def _norms(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def _cosine(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    den = _norms(a) * _norms(b)
    num = np.einsum("ij,ij->i", a, b)
    cos = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return np.clip(cos, -1.0, 1.0)


def decision_features(
    exit: int, depth: int, emb: npt.ArrayLike, prev: npt.ArrayLike | None
) -> npt.NDArray[np.float64]:
    """The learned policy's inputs (B, 5) float64 at ``exit`` (:data:`DECISION_FEATURES`).

    Args:
        exit: the checked exit, 1-based; depth: the model's blocks.
        emb: (B, F) embeddings at ``exit``; prev: (B, F) at the previous checked exit, or
            None at the first.
    """
    e = np.asarray(emb, dtype=np.float64)
    log_n = np.log(np.maximum(_norms(e), 1e-12))
    frac = np.full(e.shape[0], exit / depth)
    if prev is None:
        z = np.zeros(e.shape[0])
        return np.stack([z, z, log_n, z, frac], axis=1)
    p = np.asarray(prev, dtype=np.float64)
    log_p = np.log(np.maximum(_norms(p), 1e-12))
    return np.stack([np.ones(e.shape[0]), _cosine(e, p), log_n, log_n - log_p, frac], axis=1)


def _net_prob(net: Mapping[str, Any], x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    z = (x - np.asarray(net["mean"])) / np.asarray(net["std"])
    h = np.maximum(z @ np.asarray(net["w1"]).T + np.asarray(net["b1"]), 0.0)
    logit = h @ np.asarray(net["w2"]) + float(net["b2"])
    return 1.0 / (1.0 + np.exp(-np.clip(logit, -500, 500)))


def face_statistic(
    policy: Policy, i: int, emb: npt.ArrayLike, prev: npt.ArrayLike | None
) -> npt.NDArray[np.float64]:
    """The statistic a face policy compares with its threshold at checked exit ``exits[i]``.

    A face stops there when the statistic is >= :attr:`Policy.threshold` (the last checked
    exit stops every face whatever the statistic).

    * ``stability``: the cosine of the embedding with the previous checked exit's, in
      [-1, 1]; at the first checked exit, which has no previous one, it is -1 (the least a
      cosine can be), so only ``tau = -1`` stops faces there.
    * ``learned``: the decision net's probability that going deeper changes nothing.

    Args:
        policy: a face policy.
        i: index of the checked exit in ``policy.exits``.
        emb: (B, F) embeddings at that exit (image + flip summed when flips are used).
        prev: (B, F) embeddings of the same faces at the previous checked exit (None at i=0).

    Returns:
        (B,) float64.
    """
    e = np.asarray(emb, dtype=np.float64)
    if policy.kind == "stability":
        if prev is None:
            return np.full(e.shape[0], -1.0)
        return _cosine(e, np.asarray(prev, dtype=np.float64))
    if policy.kind == "learned":
        depth = int((policy.model or {}).get("depth") or policy.params["net"].get("depth") or policy.exits[-1])
        x = decision_features(policy.exits[i], depth, e, prev)
        return _net_prob(policy.params["net"], x)
    raise InputError(f"a {policy.kind} policy decides {'pairs' if policy.kind == 'cascade' else 'probes'}, not faces")


def _per_exit(feats: Mapping[int, npt.ArrayLike], exits: Sequence[int]) -> list[npt.NDArray[Any]]:
    missing = [k for k in exits if k not in feats]
    if missing:
        raise InputError(f"features of the checked exits {missing} are missing (have {sorted(feats)})")
    arrs = [np.asarray(feats[k]) for k in exits]
    n = arrs[0].shape[0]
    for k, a in zip(exits, arrs):
        if a.ndim != 2 or a.shape[0] != n:
            raise InputError(f"features of exit {k} have shape {a.shape}; expected ({n}, F) like the others")
    return arrs


def face_statistics(policy: Policy, feats: Mapping[int, npt.ArrayLike]) -> npt.NDArray[np.float64]:
    """(N, m) statistic of every face at each of the policy's m checked exits, from features
    extracted at all of them (``feats[k]``: (N, F), image + flip summed)."""
    arrs = _per_exit(feats, policy.exits)
    cols = [face_statistic(policy, i, a, arrs[i - 1] if i else None) for i, a in enumerate(arrs)]
    return np.stack(cols, axis=1)


def exit_indices(statistics: npt.ArrayLike, threshold: float) -> npt.NDArray[np.int64]:
    """Index of the checked exit where each face stops: the first column whose statistic is
    >= ``threshold``, the last column when none is.  ``statistics``: (N, m)."""
    s = np.asarray(statistics)
    stop = s >= threshold
    stop[:, -1] = True
    return np.argmax(stop, axis=1).astype(np.int64)


class DynamicResult(NamedTuple):
    """Embeddings of faces at their own exits (a tuple: ``emb, exits = run_dynamic(...)``).

    Attributes:
        embeddings: (B, F) float32, each face's embedding at its exit (image + flip summed
            when run with flips).
        exits: (B,) int64, the exit (= blocks run) of each face.
    """

    embeddings: npt.NDArray[np.float32]
    exits: npt.NDArray[np.int64]


def simulate(
    policy: Policy,
    feats: Mapping[int, npt.ArrayLike],
    *,
    per_template: bool = False,
    templates: npt.ArrayLike | None = None,
) -> DynamicResult:
    """What :func:`run_dynamic` gives, from features extracted at every checked exit.

    Args:
        policy: a face policy.
        feats: ``{exit: (N, F)}`` at every checked exit (image + flip summed for flips).
        per_template: every image of a template stops at one exit, the deepest exit the
            policy chose for any of its images (:func:`template_exits`); needs ``templates``.
        templates: (N,) integer template id of each row (IJB ``face_tid_mid`` order), with
            ``per_template`` only.

    Returns:
        :class:`DynamicResult`: each row's embedding (N, F) float32 at its exit, exits (N,).
    """
    _check_per_template(per_template, templates)
    arrs = _per_exit(feats, policy.exits)
    idx = exit_indices(face_statistics(policy, feats), policy.threshold)
    if per_template and templates is not None:
        idx = template_exits(idx, templates, n=idx.shape[0])  # indices are ordered as the exits
    stacked = np.stack([np.asarray(a, dtype=np.float32) for a in arrs])
    emb = stacked[idx, np.arange(idx.shape[0])]
    return DynamicResult(emb, np.asarray(policy.exits, dtype=np.int64)[idx])


#: How a face policy's IJB pairs are scored (:func:`common_exit_scores`).
PAIR_EXITS: tuple[str, ...] = ("own", "common")


def _check_bool(per_template: Any) -> None:
    if not isinstance(per_template, (bool, np.bool_)):
        raise InputTypeError(f"per_template must be True or False, got {per_template!r}")


def _check_per_template(per_template: Any, templates: Any) -> None:
    _check_bool(per_template)
    if per_template and templates is None:
        raise InputError("per_template=True needs the template id of every row (templates=)")
    if not per_template and templates is not None:
        raise InputError("templates= is only used with per_template=True")


def _check_pair_exit(pair_exit: Any) -> str:
    if pair_exit not in PAIR_EXITS:
        raise InputError(f"unknown pair_exit {pair_exit!r}; known: {', '.join(PAIR_EXITS)} (own: each template "
                         f"at its images' own exits; common: each pair at the deepest exit both templates reached)")  # fmt: skip
    return str(pair_exit)


def _ids(name: str, v: npt.ArrayLike, n: int | None = None) -> npt.NDArray[np.int64]:
    a = np.asarray(v)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{name} must be a 1-D array of integers, got {a.dtype} {a.shape}")
    if n is not None and a.shape[0] != n:
        raise InputError(f"{name} has {a.shape[0]} rows, expected {n} (one per image row)")
    return a.astype(np.int64, copy=False)


def template_exits(
    exits: npt.ArrayLike, templates: npt.ArrayLike, *, n: int | None = None
) -> npt.NDArray[np.int64]:
    """Per-template exits: every row raised to the deepest exit of any row of its template.

    With per-template policies each template lives in one exit's embedding space: its images
    run until the last of them has asked to stop (the policy decides per image as usual; the
    template's exit is the maximum of its images' exits).

    Args:
        exits: (N,) int exits (or exit indices: any order-preserving code) of the rows.
        templates: (N,) int template id of each row.
        n: the expected number of rows (checked), or None.

    Returns:
        (N,) int64, ``max(exits[templates == templates[i]])`` for every row i.
    """
    ex = _ids("exits", exits, n)
    t = _ids("templates", templates, ex.shape[0])
    tids, inv = np.unique(t, return_inverse=True)
    deepest = np.full(tids.size, np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(deepest, inv, ex)
    return deepest[inv]


class CommonExitScores(NamedTuple):
    """Pairs of templates scored at a common exit (:func:`common_exit_scores`).

    Attributes:
        scores: (P,) float32 cosine of the two template features at the pair's exit.
        pair_exits: (P,) int64 the exit each pair was scored at.
        template_ids: (T,) int64 sorted template ids; template_exits: (T,) int64 the deepest
            exit every image of the template reached (its *reach*).
    """

    scores: npt.NDArray[np.float32]
    pair_exits: npt.NDArray[np.int64]
    template_ids: npt.NDArray[np.int64]
    template_exits: npt.NDArray[np.int64]


def _template_reach(ex: npt.NDArray[np.int64], t: npt.NDArray[np.int64]) -> tuple[Any, Any, Any]:
    tids, inv = np.unique(t, return_inverse=True)
    reach = np.full(tids.size, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(reach, inv, ex)
    return tids, inv, reach


def _pair_exits(
    tids: npt.NDArray[np.int64], reach: npt.NDArray[np.int64], p1: npt.NDArray[np.int64], p2: npt.NDArray[np.int64]
) -> tuple[Any, Any, Any]:
    i1, i2 = np.searchsorted(tids, p1), np.searchsorted(tids, p2)
    for name, side, i in (("p1", p1, i1), ("p2", p2, i2)):
        bad = (i >= tids.size) | (tids[np.minimum(i, tids.size - 1)] != side)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise InputError(f"pair {j}: template {int(side[j])} of {name} has no images")
    return i1, i2, np.minimum(reach[i1], reach[i2])


def common_exit_scores(
    feats: Mapping[int, npt.ArrayLike],
    exits: npt.ArrayLike,
    templates: npt.ArrayLike,
    medias: npt.ArrayLike,
    p1: npt.ArrayLike,
    p2: npt.ArrayLike,
    *,
    weights: npt.ArrayLike | None = None,
    normalize_images: bool = False,
) -> CommonExitScores:
    """Each pair of templates scored at the deepest exit both templates reached.

    A template *reaches* exit k when every one of its images ran at least k blocks (the
    minimum of its rows' exits; with per-template exits, :func:`template_exits`, all its rows
    share one exit and that is its reach).  Pair (A, B) is scored at ``min(reach_A,
    reach_B)``: both templates then have every image's features at that exit (an image that
    stopped at exit e passed every checked exit <= e), so both sides are aggregated from the
    same exit's embeddings (one space) and no block runs beyond what the policy ran.  The
    template features at exit k are the usual IJB aggregation (:func:`vitfree.ijb.aggregate_templates`)
    of the rows of the templates that reach k.

    Args:
        feats: ``{exit: (N, F)}`` per-image features (image + flip summed) at every exit a
            pair is scored at; rows of an image that did not pass an exit are never read
            there (they may hold NaN).
        exits: (N,) int64 each row's exit (a key of ``feats`` for every value).
        templates, medias: (N,) int ids of each row; p1, p2: (P,) template ids of the pairs.
        weights: (N,) per-image weights (detector scores) or None; normalize_images: the
            protocol option.

    Returns:
        :class:`CommonExitScores`.

    Raises:
        InputError: length mismatches, an exit without features, a pair naming a template
            with no images.
    """
    from vitfree.ijb import aggregate_templates

    ex = _ids("exits", exits)
    n = ex.shape[0]
    t = _ids("templates", templates, n)
    m = _ids("medias", medias, n)
    a, b = _ids("p1", p1), _ids("p2", p2)
    if a.shape != b.shape:
        raise InputError(f"p1 and p2 differ in length ({a.shape[0]} and {b.shape[0]})")
    w = None if weights is None else np.asarray(weights)
    tids, inv, reach = _template_reach(ex, t)
    i1, i2, pex = _pair_exits(tids, reach, a, b)
    scores = np.zeros(a.shape[0], dtype=np.float32)
    for k in np.unique(pex).tolist():
        if k not in feats:
            raise InputError(f"pairs are scored at exit {k} but its features are missing (have {sorted(feats)})")
        f = np.asarray(feats[k])
        if f.ndim != 2 or f.shape[0] != n:
            raise InputError(f"features of exit {k} have shape {f.shape}; expected ({n}, F)")
        rows = np.flatnonzero(reach[inv] >= k)  # every row of the templates that reach k
        tf, ids_k = aggregate_templates(np.ascontiguousarray(f[rows]), t[rows], m[rows],
                                        None if w is None else w[rows], normalize_images=normalize_images)  # fmt: skip
        sel = np.flatnonzero(pex == k)
        j1, j2 = np.searchsorted(ids_k, a[sel]), np.searchsorted(ids_k, b[sel])
        scores[sel] = np.einsum("ij,ij->i", tf[j1], tf[j2])
    return CommonExitScores(scores, pex.astype(np.int64), tids, reach)


# --------------------------------------------------------------------------------------
# execution with compaction
# --------------------------------------------------------------------------------------


def _check_fits(policy: Policy, model: VisionTransformer) -> None:
    if not policy.is_face_policy:
        raise InputError(
            f"run_dynamic runs face policies ({', '.join(FACE_KINDS)}); a {policy.kind} policy "
            f"decides {'pairs: use cascade_scores()' if policy.kind == 'cascade' else 'probes: use search_cascade()'}"
        )
    if policy.exits[-1] > model.depth:
        raise InputError(
            f"the policy checks exit {policy.exits[-1]} but the model has {model.depth} blocks "
            f"(a policy for another model?)"
        )


def _as_input(model: VisionTransformer, images: Any, scaling: str = "div255") -> Any:
    """(B, 3, H, W) float normalised batch on the model's device from float or uint8 faces."""
    import torch

    from vitfree.models import preprocess

    dev, dt = model.pos_embed.device, model.pos_embed.dtype
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise InputTypeError(
                f"numpy faces must be uint8 RGB (B, H, W, 3), got {images.dtype}; pass float "
                f"input as a normalised torch tensor (B, 3, H, W)"
            )
        return preprocess(images, device=dev, dtype=dt, scaling=scaling)
    if not isinstance(images, torch.Tensor):
        raise InputTypeError(f"expected a torch.Tensor or a uint8 numpy array of faces, got {type(images).__name__}")
    if images.dtype == torch.uint8:
        x = images if images.shape[-1] == 3 else images.permute(0, 2, 3, 1)
        return preprocess(x.to(dev), dtype=dt, scaling=scaling)
    return images.to(dev)


def run_dynamic(
    model: VisionTransformer,
    images: Any,
    policy: Policy,
    *,
    flip: bool = True,
    amp: str | None = None,
    scaling: str = "div255",
) -> DynamicResult:
    """Each face to its own exit: block by block, faces that stop leave the batch.

    Args:
        model: the face ViT in eval mode (on any device; the faces are moved to it).
        images: (B, 3, H, W) float tensor normalised as ``(x / 255 - 0.5) / 0.5``, or uint8
            RGB faces: a numpy array (B, H, W, 3) or a tensor (B, 3, H, W) / (B, H, W, 3).
        policy: a face policy (``stability`` or ``learned``), e.g. from :func:`load_policy`.
        flip: run each face's horizontal flip with it and decide on (and return) the sum of
            the two embeddings, as the IJB and ``.bin`` protocols use them.
        amp: ``"bf16"``/``"fp16"`` autocast on CUDA (heads stay float32), None for float32.
        scaling: pixel scaling of uint8 faces (:func:`vitfree.models.preprocess`).

    Returns:
        :class:`DynamicResult`: ``(embeddings (B, F) float32 numpy, exits (B,) int64)``.

    Raises:
        InputError: a pair or search policy, a policy checking exits past the model's depth,
            a model in training mode (BatchNorm would mix the faces of a batch).
    """
    return _run_dynamic(model, images, policy, flip=flip, amp=amp, scaling=scaling)[0]


def _run_dynamic(
    model: VisionTransformer, images: Any, policy: Policy, *, flip: bool = True, amp: str | None = None,
    scaling: str = "div255", keep_passed: bool = False,
) -> tuple[DynamicResult, npt.NDArray[np.float32] | None]:
    """:func:`run_dynamic`, and with ``keep_passed`` also the (m, B, F) float32 embeddings of
    every face at each checked exit it passed (NaN at the exits it did not reach)."""
    import torch

    from vitfree.runtime import runtime

    _check_fits(policy, model)
    if model.training:
        raise InputError("put the model in eval mode (model.eval()): in training mode BatchNorm mixes the faces of a batch")
    x = _as_input(model, images, scaling)
    b = int(x.shape[0])
    rt = runtime(model.pos_embed.device, amp)
    out = np.zeros((b, model.num_features), dtype=np.float32)
    exits = np.zeros(b, dtype=np.int64)
    passed = np.full((len(policy.exits), b, model.num_features), np.nan, np.float32) if keep_passed else None
    thr = policy.threshold
    last = len(policy.exits) - 1
    with torch.inference_mode(), rt.autocast():
        t = model.embed(torch.cat([x, x.flip(3)]) if flip else x)
        active = np.arange(b)
        prev: npt.NDArray[np.float32] | None = None
        done = 0
        for i, k in enumerate(policy.exits):
            t = model.run_blocks(t, done, k)
            done = k
            e = model.head_at(t, k).float()
            n = active.shape[0]
            emb = (e[:n] + e[n:]) if flip else e
            emb_np = emb.cpu().numpy()
            if passed is not None:
                passed[i, active] = emb_np
            if i == last:
                stop = np.ones(n, dtype=bool)
            else:
                stop = face_statistic(policy, i, emb_np, prev) >= thr
            out[active[stop]] = emb_np[stop]
            exits[active[stop]] = k
            if stop.all():
                break
            if stop.any():
                keep = np.flatnonzero(~stop)
                rows = np.concatenate([keep, keep + n]) if flip else keep
                t = t.index_select(0, torch.from_numpy(rows).to(t.device))
                active = active[keep]
                prev = emb_np[keep]
            else:
                prev = emb_np
    return DynamicResult(out, exits), passed


def _batches(n: int, size: int) -> Iterator[slice]:
    for s in range(0, n, size):
        yield slice(s, min(s + size, n))


def embed_faces(
    model: VisionTransformer,
    faces: npt.ArrayLike,
    policy: Policy,
    *,
    batch_size: int = 64,
    flip: bool = True,
    amp: str | None = None,
    progress: bool = False,
    desc: str = "dynamic exits",
) -> DynamicResult:
    """:func:`run_dynamic` over aligned uint8 RGB faces (M, 112, 112, 3) in batches."""
    from tqdm.auto import tqdm

    arr = np.asarray(faces)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise InputError(f"expected uint8 RGB faces (M, H, W, 3), got {arr.dtype} {arr.shape}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    embs = np.zeros((arr.shape[0], model.num_features), dtype=np.float32)
    exits = np.zeros(arr.shape[0], dtype=np.int64)
    with tqdm(total=arr.shape[0], desc=desc, unit="img", disable=not progress) as bar:
        for sl in _batches(arr.shape[0], batch_size):
            r = run_dynamic(model, np.ascontiguousarray(arr[sl]), policy, flip=flip, amp=amp)
            embs[sl], exits[sl] = r
            bar.update(sl.stop - sl.start)
    return DynamicResult(embs, exits)


def measure_dynamic_speed(
    model: VisionTransformer,
    faces: npt.ArrayLike,
    policies: Mapping[str, Policy],
    static_exits: Sequence[int],
    *,
    batch_size: int = 64,
    flip: bool = True,
    rounds: int = 3,
    amp: str | None = None,
) -> dict[str, float]:
    """Measured seconds per face of each policy and each static exit on the same faces.

    Every round runs every method once over all ``faces`` (in batches of ``batch_size``, image
    + flip), in turn, so that a load change hits all of them alike; the best round of each
    counts.  Static exit k runs ``k`` blocks and one head (:meth:`forward_exits`).

    Returns:
        ``{"exit 4": s, ..., name: s}``: seconds per face (one image and its flip).
    """
    import torch

    from vitfree.runtime import runtime, synchronize

    arr = np.asarray(faces)
    rt = runtime(model.pos_embed.device, amp)
    xs = [_as_input(model, np.ascontiguousarray(arr[sl])) for sl in _batches(arr.shape[0], batch_size)]

    def static(k: int) -> Callable[[], None]:
        def go() -> None:
            with torch.inference_mode(), rt.autocast():
                for x in xs:
                    model.forward_exits(torch.cat([x, x.flip(3)]) if flip else x, [k])
        return go

    def dynamic(p: Policy) -> Callable[[], None]:
        def go() -> None:
            for x in xs:
                run_dynamic(model, x, p, flip=flip, amp=amp)
        return go

    methods: dict[str, Callable[[], None]] = {f"exit {k}": static(int(k)) for k in static_exits}
    methods.update({name: dynamic(p) for name, p in policies.items()})
    best = {name: math.inf for name in methods}
    for fn in methods.values():  # warm-up
        fn()
    for _ in range(max(1, rounds)):
        for name, fn in methods.items():
            synchronize(rt.device)
            t0 = time.perf_counter()
            fn()
            synchronize(rt.device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: s / max(arr.shape[0], 1) for name, s in best.items()}


# --------------------------------------------------------------------------------------
# the 1:1 verification cascade (pairs)
# --------------------------------------------------------------------------------------


class CascadeResult(NamedTuple):
    """The verification cascade's output for P pairs.

    Attributes:
        scores: (P,) float64, each pair's score at its decision exit, shifted by that exit's
            threshold onto the last exit's scale (``s_k - thr_k + thr_last``), so that one
            threshold (the last exit's) reproduces every decision and a ROC can be drawn.
        exits: (P,) int64, the exit where each pair was decided.
        accept: (P,) bool, the decision at the calibrated thresholds (score >= threshold).
    """

    scores: npt.NDArray[np.float64]
    exits: npt.NDArray[np.int64]
    accept: npt.NDArray[np.bool_]


def cascade_scores(
    policy: Policy,
    scores: npt.ArrayLike | Mapping[int, npt.ArrayLike] | Callable[[int, npt.NDArray[np.int64]], npt.ArrayLike],
    n_pairs: int | None = None,
) -> CascadeResult:
    """Decide pairs exit by exit: at exit ``e_i`` a pair whose score ``s`` satisfies
    ``|s - thresholds[i]| > alpha * scales[i]`` is decided there; the others go deeper; the
    last exit decides the rest.

    Args:
        policy: a ``cascade`` policy.
        scores: (P, m) scores at the m checked exits, ``{exit: (P,)}``, or a function
            ``(exit, pair_indices) -> scores`` called only for the pairs still undecided
            (lazy: features of deeper exits are then needed only for those pairs).
        n_pairs: P, required with a function.

    Returns:
        :class:`CascadeResult`.
    """
    if policy.kind != "cascade":
        raise InputError(f"cascade_scores needs a cascade policy, got a {policy.kind} policy")
    p = policy.params
    thr = np.asarray(p["thresholds"], dtype=np.float64)
    margin = float(p["alpha"]) * np.asarray(p["scales"], dtype=np.float64)
    m = len(policy.exits)
    if callable(scores):
        if n_pairs is None:
            raise InputError("give n_pairs with a scoring function")
        get = scores
        total = int(n_pairs)
    else:
        mat = _score_matrix(scores, policy.exits)
        total = mat.shape[0]

        def get(k: int, idx: npt.NDArray[np.int64]) -> npt.ArrayLike:
            return mat[idx, policy.exits.index(k)]

    out = np.zeros(total, dtype=np.float64)
    ex = np.zeros(total, dtype=np.int64)
    todo = np.arange(total, dtype=np.int64)
    for i, k in enumerate(policy.exits):
        if todo.size == 0:
            break
        s = np.asarray(get(k, todo), dtype=np.float64).reshape(-1)
        if s.shape[0] != todo.shape[0]:
            raise InputError(f"the scoring function gave {s.shape[0]} scores for {todo.shape[0]} pairs at exit {k}")
        done = np.abs(s - thr[i]) > margin[i] if i < m - 1 else np.ones(s.shape[0], dtype=bool)
        out[todo[done]] = s[done] - thr[i] + thr[-1]
        ex[todo[done]] = k
        todo = todo[~done]
    return CascadeResult(out, ex, out >= thr[-1])


def _score_matrix(scores: npt.ArrayLike | Mapping[int, npt.ArrayLike], exits: Sequence[int]) -> npt.NDArray[np.float64]:
    if isinstance(scores, Mapping):
        cols = _per_exit({k: np.asarray(v).reshape(-1, 1) for k, v in scores.items()}, exits)
        return np.concatenate(cols, axis=1).astype(np.float64)
    mat = np.asarray(scores, dtype=np.float64)
    if mat.ndim != 2 or mat.shape[1] != len(exits):
        raise InputError(f"scores must be (P, {len(exits)}): one column per checked exit, got {mat.shape}")
    return mat


# --------------------------------------------------------------------------------------
# the 1:N search cascade (probes)
# --------------------------------------------------------------------------------------


class SearchCascadeResult(NamedTuple):
    """The 1:N search cascade's output for P probes.

    Attributes:
        candidates: (P, K) int64 gallery rows, best first, ranked at each probe's decision
            exit (K = min(top_k, gallery size)).
        scores: (P, K) float32 their scores at that exit.
        exits: (P,) int64 the exit where each probe was decided.
        comparisons: probe-gallery scores computed (P * G at the first exit, K per probe and
            deeper exit after it).
    """

    candidates: npt.NDArray[np.int64]
    scores: npt.NDArray[np.float32]
    exits: npt.NDArray[np.int64]
    comparisons: int


def _rank_rows(scores: npt.NDArray[np.float32], cand: npt.NDArray[np.int64]) -> tuple[Any, Any]:
    # best first; ties broken by the smaller gallery row, so that the order is deterministic
    order = np.lexsort((cand, -scores.astype(np.float64)), axis=1)
    return np.take_along_axis(cand, order, 1), np.take_along_axis(scores, order, 1)


def search_cascade(
    policy: Policy,
    probe_feats: Mapping[int, npt.ArrayLike],
    gallery_feats: Mapping[int, npt.ArrayLike],
) -> SearchCascadeResult:
    """Search at the first checked exit, re-rank the ``top_k`` candidates deeper.

    At the first exit every probe is scored against the whole gallery and keeps its
    ``top_k`` best candidates.  A probe whose top-1 leads its top-2 by at least ``margin``
    (cosine) is decided; the others re-score their candidates with the next exit's features,
    re-rank them, and are tested again; the last exit decides the rest.

    Args:
        policy: a ``search-cascade`` policy.
        probe_feats: ``{exit: (P, D)}`` L2-normalised probe (template) features at each
            checked exit (a deployment computes the deeper ones only for undecided probes).
        gallery_feats: ``{exit: (G, D)}`` the gallery enrolled at every checked exit.

    Returns:
        :class:`SearchCascadeResult`.
    """
    if policy.kind != "search-cascade":
        raise InputError(f"search_cascade needs a search-cascade policy, got a {policy.kind} policy")
    probes = [np.asarray(a, dtype=np.float32) for a in _per_exit(probe_feats, policy.exits)]
    gallery = [np.asarray(a, dtype=np.float32) for a in _per_exit(gallery_feats, policy.exits)]
    n_p, n_g = probes[0].shape[0], gallery[0].shape[0]
    if n_g == 0:
        raise InputError("the gallery is empty")
    for k, a, g in zip(policy.exits, probes, gallery):
        if a.shape[1] != g.shape[1]:
            raise InputError(f"exit {k}: probe features have dimension {a.shape[1]}, the gallery {g.shape[1]}")
    kk = min(int(policy.params["top_k"]), n_g)
    margin = float(policy.params["margin"])
    cand = np.zeros((n_p, kk), dtype=np.int64)
    sc = np.zeros((n_p, kk), dtype=np.float32)
    for sl in _batches(n_p, 4096):
        s = probes[0][sl] @ gallery[0].T
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < n_g else np.tile(np.arange(n_g), (s.shape[0], 1))
        cand[sl], sc[sl] = _rank_rows(np.take_along_axis(s, top, 1), top)
    comparisons = n_p * n_g
    ex = np.full(n_p, policy.exits[0], dtype=np.int64)
    todo = np.arange(n_p)
    last = len(policy.exits) - 1
    for i in range(len(policy.exits)):
        if i > 0:
            c = cand[todo]
            s = np.einsum("pd,pkd->pk", probes[i][todo], gallery[i][c])
            cand[todo], sc[todo] = _rank_rows(s.astype(np.float32), c)
            ex[todo] = policy.exits[i]
            comparisons += c.size
        if i == last or todo.size == 0:
            break
        gap = (sc[todo, 0].astype(np.float64) - sc[todo, 1]) if kk > 1 else np.full(todo.size, np.inf)
        todo = todo[gap < margin]
    return SearchCascadeResult(cand, sc, ex, comparisons)


# --------------------------------------------------------------------------------------
# the learned policy: a tiny decision net, backbone frozen
# --------------------------------------------------------------------------------------


def _exit_embeddings(
    model: VisionTransformer, faces: npt.NDArray[np.uint8], exits: Sequence[int], batch_size: int,
    flip: bool = True, progress: bool = False, desc: str = "embeddings",
) -> dict[int, npt.NDArray[np.float32]]:
    """``{exit: (M, F)}`` image (+ flip) embeddings of uint8 faces at every exit, one pass."""
    import torch
    from tqdm.auto import tqdm

    out = {k: np.zeros((faces.shape[0], model.num_features), dtype=np.float32) for k in exits}
    with torch.inference_mode(), tqdm(total=faces.shape[0], desc=desc, disable=not progress) as bar:
        for sl in _batches(faces.shape[0], batch_size):
            x = _as_input(model, np.ascontiguousarray(faces[sl]))
            n = x.shape[0]
            e = model.forward_exits(torch.cat([x, x.flip(3)]) if flip else x, list(exits))
            for k in exits:
                v = e[k].float()
                out[k][sl] = (v[:n] + v[n:] if flip else v).cpu().numpy()
            bar.update(n)
    return out


def _nearest_identity(emb: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Leave-one-out nearest identity: each face against the mean of the other faces of every
    identity (its own left out), cosine."""
    e = np.asarray(emb, dtype=np.float64)
    e = e / np.maximum(_norms(e), 1e-12)[:, None]
    n_id = int(ids.max()) + 1
    proto = np.zeros((n_id, e.shape[1]))
    np.add.at(proto, ids, e)
    s = e @ proto.T  # e . P_c
    pn2 = np.einsum("ij,ij->i", proto, proto)
    norms = np.sqrt(np.maximum(pn2[None, :], 1e-24)).repeat(e.shape[0], 0)
    own = np.arange(e.shape[0])
    own_dot = s[own, ids] - 1.0  # e . (P_c - e) with |e| = 1
    own_norm = np.sqrt(np.maximum(pn2[ids] - 2.0 * s[own, ids] + 1.0, 1e-24))
    s[own, ids] = own_dot
    norms[own, ids] = own_norm
    return np.argmax(s / norms, axis=1).astype(np.int64)


def train_decision_net(
    model: VisionTransformer,
    exits: Sequence[int],
    *,
    identities: int = 200,
    images_per_identity: int = 6,
    seed: int = 21,
    preset: str = "medium",
    hidden: int = 16,
    steps: int = 800,
    lr: float = 1e-2,
    batch_size: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the learned policy's decision net, the backbone frozen (AdaViT-style halting).

    Renders ``identities`` x ``images_per_identity`` SYNTHETIC aligned faces of the people of
    ``seed`` (:mod:`vitfree.synthetic.faces`; keep the seed apart from the training and
    benchmark seeds, so that the identities are disjoint), embeds them (image + flip) at every
    checked exit, and labels each face at each checked exit but the last with whether its
    *decision* there (the nearest identity, leave-one-out, among the rendered people, at that
    exit) is already the decision of the last checked exit: 1 = going deeper changes nothing.
    A 2-layer MLP (:data:`DECISION_FEATURES` -> ``hidden`` ReLU -> 1) is fitted with binary
    cross-entropy (Adam, full batch, seeded) on standardised inputs.

    Returns:
        The net: ``{"mean", "std", "w1", "b1", "w2", "b2", "features", "depth", "training"}``
        (JSON-ready; ``training`` records the data, the seed and the fit's accuracy).
    """
    import torch

    from vitfree.synthetic.faces import aligned_faces

    ks = list(_exits_tuple(exits))
    if len(ks) < 2:
        raise InputError("a learned policy needs at least two checked exits")
    if identities < 2 or images_per_identity < 2:
        raise InputError("training the decision net needs >= 2 identities with >= 2 images each")
    ids = np.repeat(np.arange(identities), images_per_identity).astype(np.int64)
    log.info("rendering %d SYNTHETIC faces (%d people of seed %d) for the decision net", ids.size, identities, seed)
    faces = aligned_faces(ids, seed=seed, image_seed=seed * 1_000_003 + 17, preset=preset)
    feats = _exit_embeddings(model, faces, ks, batch_size, progress=progress, desc="decision-net faces")
    final = _nearest_identity(feats[ks[-1]], ids)
    xs, ys = [], []
    for i, k in enumerate(ks[:-1]):
        xs.append(decision_features(k, model.depth, feats[k], feats[ks[i - 1]] if i else None))
        ys.append((_nearest_identity(feats[k], ids) == final).astype(np.float64))
    x = np.concatenate(xs)
    y = np.concatenate(ys)
    mean = x.mean(0)
    std = np.maximum(x.std(0), 1e-6)
    z = torch.from_numpy((x - mean) / std).float()
    t = torch.from_numpy(y).float()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        l1 = torch.nn.Linear(x.shape[1], hidden)
        l2 = torch.nn.Linear(hidden, 1)
        net = torch.nn.Sequential(l1, torch.nn.ReLU(), l2)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(net(z).squeeze(1), t)
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = float(((net(z).squeeze(1) > 0).float() == t).float().mean())
    return {
        "features": list(DECISION_FEATURES),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "w1": l1.weight.detach().double().numpy().tolist(),
        "b1": l1.bias.detach().double().numpy().tolist(),
        "w2": l2.weight.detach().double().numpy().reshape(-1).tolist(),
        "b2": float(l2.bias.detach().double().numpy()[0]),
        "depth": int(model.depth),
        "training": {
            "data": "SYNTHETIC faces (vitfree.synthetic.faces.aligned_faces)",
            "seed": seed, "identities": identities, "images_per_identity": images_per_identity,
            "preset": preset, "exits": ks, "hidden": hidden, "steps": steps, "lr": lr,
            "rows": int(y.size), "positive_rate": round(float(y.mean()), 4),
            "final_loss": round(float(loss.item()), 5), "train_accuracy": round(acc, 4),
        },
    }  # fmt: skip


# --------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class CalibrationSet:
    """A held-out IJB-format set, embedded at every exit calibration needs.

    Attributes:
        feats: ``{exit: (N, F) float32}`` image (+ flip) embeddings, rows of face_tid_mid.txt.
        templates, medias: (N,) int64; faceness: (N,) detector scores or None (not used).
        p1, p2: (P,) int64 template ids of the pairs; labels: (P,) 1 genuine / 0 impostor.
        normalize_images: the protocol option (as :class:`vitfree.evaluate.IJBOptions`).
        onen: the 1:N lists (for the search cascade), or None.
        source: a description recorded in the policy file (folder, sizes, seed).
    """

    feats: dict[int, npt.NDArray[np.float32]]
    templates: npt.NDArray[np.int64]
    medias: npt.NDArray[np.int64]
    faceness: npt.NDArray[np.float32] | None
    p1: npt.NDArray[np.int64]
    p2: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int8]
    normalize_images: bool = False
    onen: IJB1N | None = None
    source: dict[str, Any] = dataclasses.field(default_factory=dict)
    _cache: dict[Any, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_meta(
        cls, feats: Mapping[int, npt.ArrayLike], meta: IJBMeta, *, onen: IJB1N | None = None,
        use_faceness: bool = True, normalize_images: bool = False, source: Mapping[str, Any] | None = None,
    ) -> CalibrationSet:
        """From per-exit features (rows of ``meta``) and the IJB meta data."""
        fs = {int(k): np.ascontiguousarray(v, dtype=np.float32) for k, v in feats.items()}
        return cls(fs, meta.templates, meta.medias, meta.faceness if use_faceness else None,
                   meta.p1, meta.p2, meta.labels, normalize_images, onen, dict(source or {}))  # fmt: skip

    # the protocol pieces calibration repeats for each candidate setting
    def template_feats(self, img: npt.ArrayLike) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        from vitfree.ijb import aggregate_templates

        return aggregate_templates(img, self.templates, self.medias, self.faceness,
                                   normalize_images=self.normalize_images)  # fmt: skip

    def pair_scores(self, img: npt.ArrayLike) -> npt.NDArray[np.float32]:
        from vitfree.ijb import score_pairs

        tf, tids = self.template_feats(img)
        return score_pairs(tf, tids, self.p1, self.p2)

    def tar(self, img: npt.ArrayLike, far: float) -> float:
        """TAR@``far`` (fraction, nearest rule) of per-image features ``img``."""
        from vitfree.metrics import tar_at_far

        return float(tar_at_far(self.labels, self.pair_scores(img), [far])[0])

    def policy_scores(
        self, ks: Sequence[int], exits: npt.ArrayLike, *, per_template: bool = False, pair_exit: str = "own"
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Pair scores of a face policy whose rows stopped at ``exits`` (checked exits ``ks``).

        Returns ``(scores (P,) float32, row exits (N,) int64 after per-template extension,
        pair exits (P,) int64)``; with ``pair_exit="own"`` each template is aggregated from
        its rows' own exits and the pair exits are the deeper side's template exit.
        """
        ex = np.asarray(exits, dtype=np.int64)
        if per_template:
            ex = template_exits(ex, self.templates)
        tids, inv, reach = _template_reach(ex, np.asarray(self.templates, dtype=np.int64))
        if _check_pair_exit(pair_exit) == "own":
            idx = np.searchsorted(np.asarray(ks, dtype=np.int64), ex)
            stacked = self._stacked(ks)
            img = stacked[idx, np.arange(ex.shape[0])]
            deepest = np.zeros(tids.size, dtype=np.int64)
            np.maximum.at(deepest, inv, ex)
            i1, i2 = np.searchsorted(tids, self.p1), np.searchsorted(tids, self.p2)
            return self.pair_scores(img), ex, np.maximum(deepest[i1], deepest[i2])
        i1, i2, pex = _pair_exits(tids, reach, np.asarray(self.p1, np.int64), np.asarray(self.p2, np.int64))
        scores = np.zeros(pex.shape[0], dtype=np.float32)
        for k in np.unique(pex).tolist():
            tf, ids = self._template_feats_at(int(k))  # all templates: aggregation is per template
            sel = np.flatnonzero(pex == k)
            scores[sel] = np.einsum("ij,ij->i", tf[i1[sel]], tf[i2[sel]])
        return scores, ex, pex

    def _stacked(self, ks: Sequence[int]) -> npt.NDArray[np.float32]:
        key = tuple(int(k) for k in ks)
        if self._cache.get("stacked_key") != key:
            self._cache["stacked"] = np.stack([self.feats[k] for k in key])
            self._cache["stacked_key"] = key
        return self._cache["stacked"]  # type: ignore[no-any-return]

    def _template_feats_at(self, k: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if ("tf", k) not in self._cache:
            self._cache[("tf", k)] = self.template_feats(self.feats[k])
        return self._cache[("tf", k)]  # type: ignore[no-any-return]


def _select(costs: npt.NDArray[np.float64], accs: npt.NDArray[np.float64], full: float, target: Target) -> int:
    """Index of the candidate that meets ``target``.

    TAR at a small FAR is noisy (at FAR 1e-4 a handful of impostor pairs set the threshold),
    so the choice must not chase a lucky dip of the curve:

    * a loss target: the cheapest setting from which on *every* costlier setting tried also
      meets the target (the full-depth setting always does), so the choice sits where the
      curve has settled above ``full - value``, not on an isolated good point;
    * a block budget: the setting that spends the budget (the most blocks within it; ties:
      the more accurate), since more blocks is the more accurate side on average.
    """
    if target.metric == "blocks":
        ok = np.flatnonzero(costs <= target.value + 1e-9)
        if ok.size == 0:
            raise InputError(
                f"no setting meets a budget of {target.value:g} blocks: the cheapest costs "
                f"{float(costs.min()):.3f} (every face runs at least to the first checked exit)"
            )
        best = ok[np.lexsort((-accs[ok], -costs[ok]))]
        return int(best[0])
    meets = accs >= full - target.value / 100.0 - 1e-12
    order = np.lexsort((-accs, -costs))  # costliest first
    j = int(order[0])
    for i in order:
        if not meets[i]:
            break
        j = int(i)
    if not meets[j]:  # not even the costliest setting (a policy stopping before the full depth)
        raise InputError(
            f"no setting of this policy loses at most {target.value:g} points: its costliest "
            f"setting reaches {accs[j] * 100:.2f}% against {full * 100:.2f}% for the full model"
        )
    return j


def _candidates(values: npt.NDArray[np.float64], n: int = 400) -> npt.NDArray[np.float64]:
    """Thresholds to try: ``n`` quantiles of the observed statistic, and +inf (never stop early)."""
    v = values[np.isfinite(values)]
    qs = np.quantile(v, np.linspace(0.0, 1.0, n)) if v.size else np.zeros(0)
    return np.unique(np.concatenate([qs, [np.inf]]))


def calibrate_features(
    kind: str,
    data: CalibrationSet,
    target: Target,
    *,
    exits: Sequence[int],
    depth: int,
    net: Mapping[str, Any] | None = None,
    top_k: int = 10,
    model: Mapping[str, Any] | None = None,
    per_template: bool = False,
    pair_exit: str = "own",
) -> Policy:
    """Choose a policy's parameter on an embedded calibration set to meet ``target``.

    The full model's accuracy is that of exit ``depth`` (its features must be in
    ``data.feats``).  Face policies try 400 quantiles of their statistic as the threshold
    (:func:`simulate` per candidate, then the IJB 1:1 protocol); the cascade tries as many
    margins ``alpha``; the search cascade as many cosine gaps.  The chosen setting meets the
    target *on this set* by construction; the policy records the curve of tried settings.

    Args:
        kind: one of :data:`KINDS`.
        data: the calibration set (:func:`calibration_set`).
        target: a :class:`Target` (``rank1_loss`` for the search cascade).
        exits: the checked exits; depth: the model's depth.
        net: the decision net of a learned policy (:func:`train_decision_net`).
        top_k: candidates the search cascade re-ranks.
        model: the model record stored in the policy (fingerprint, depth, ...).
        per_template, pair_exit: face policies: calibrate for per-template exits and for
            pairs scored at a common exit (:func:`dynamic_ijb_results`), as they will be
            evaluated; recorded in the policy's calibration.
    """
    ks = _exits_tuple(exits)
    _check_bool(per_template)
    _check_pair_exit(pair_exit)
    if kind not in FACE_KINDS and (per_template or pair_exit != "own"):
        raise InputError(f"per_template and pair_exit='common' are options of face policies, not of a {kind} policy")
    if ks[-1] > depth:
        raise InputError(f"checked exit {ks[-1]} is past the model's depth ({depth})")
    if depth not in data.feats:
        raise InputError(f"the calibration set lacks the full model's features (exit {depth})")
    if kind not in KINDS:
        raise InputError(f"unknown policy {kind!r}; known: {', '.join(KINDS)}")
    _check_target(kind, target)
    model_rec = dict(model or {})
    model_rec.setdefault("depth", depth)
    if kind in FACE_KINDS:
        return _calibrate_face(kind, data, target, ks, depth, net, model_rec, per_template, pair_exit)
    if kind == "cascade":
        return _calibrate_cascade(data, target, ks, model_rec)
    return _calibrate_search(data, target, ks, depth, top_k, model_rec)


def _check_target(kind: str, target: Target) -> None:
    if (kind == "search-cascade") != (target.metric == "rank1_loss") and target.metric != "blocks":
        want = "rank1_loss" if kind == "search-cascade" else "tar_loss"
        raise InputError(f"a {kind} policy is calibrated with a {want} or blocks target, not {target.metric}")


def _curve(params: npt.ArrayLike, costs: npt.ArrayLike, accs: npt.ArrayLike, n: int = 60) -> list[list[float]]:
    params, costs, accs = np.asarray(params), np.asarray(costs), np.asarray(accs)
    idx = np.unique(np.linspace(0, len(params) - 1, min(n, len(params))).round().astype(int))
    return [[float(params[i]), round(float(costs[i]), 4), round(float(accs[i]) * 100, 4)] for i in idx]


def _calibrate_face(
    kind: str, data: CalibrationSet, target: Target, ks: tuple[int, ...], depth: int,
    net: Mapping[str, Any] | None, model_rec: dict[str, Any], per_template: bool = False, pair_exit: str = "own",
) -> Policy:
    from vitfree.metrics import tar_at_far

    params: dict[str, Any] = {"tau": 1.0} if kind == "stability" else {"threshold": 1.0, "net": net}
    base = Policy(kind, ks, params, model=model_rec)
    stats = face_statistics(base, data.feats)
    ex_arr = np.asarray(ks, dtype=np.int64)
    full = data.tar(data.feats[depth], target.far)
    modes = per_template or pair_exit != "own"
    cands = _candidates(stats[:, :-1].ravel())
    if kind == "stability":
        cands = np.unique(np.concatenate([[-1.0], np.clip(cands, -1.0, 1.0)]))
        cands = cands[cands <= 1.0]
    else:
        cands = np.clip(cands, 0.0, 1.0)
    cands = np.unique(cands)
    costs = np.zeros(cands.size)
    accs = np.zeros(cands.size)
    for j, t in enumerate(cands):
        ex = ex_arr[exit_indices(stats, float(t))]
        sc, ex, _ = data.policy_scores(ks, ex, per_template=per_template, pair_exit=pair_exit)
        costs[j] = float(ex.mean())
        accs[j] = float(tar_at_far(data.labels, sc, [target.far])[0])
    j = _select(costs, accs, full, target)
    chosen = float(cands[j])
    chosen_ex = ex_arr[exit_indices(stats, chosen)]
    if per_template:
        chosen_ex = template_exits(chosen_ex, data.templates)
    calib = {
        **data.source, "far": target.far, "full_exit": depth,
        **({"per_template": bool(per_template), "pair_exit": pair_exit} if modes else {}),
        "full_tar_percent": round(full * 100, 4),
        "tar_percent": round(float(accs[j]) * 100, 4),
        "tar_loss_points": round((full - float(accs[j])) * 100, 4),
        "avg_blocks": round(float(costs[j]), 4),
        "exit_histogram": _histogram(chosen_ex, ks),
        "curve_columns": ["threshold", "avg_blocks", "tar_percent"],
        "curve": _curve(cands, costs, accs),
    }
    log.info("calibrated %s: threshold %.4f, %.2f blocks per face, TAR %.2f%% (full %.2f%%)",
             kind, chosen, costs[j], accs[j] * 100, full * 100)  # fmt: skip
    return dataclasses.replace(base.with_threshold(chosen), target=target, calibration=calib)


def _histogram(ex: npt.NDArray[np.int64], ks: Sequence[int]) -> dict[str, int]:
    return {str(k): int((ex == k).sum()) for k in ks}


def face_blocks_of_pairs(
    pair_exits: npt.NDArray[np.int64], p1: npt.NDArray[np.int64], p2: npt.NDArray[np.int64],
    templates: npt.NDArray[np.int64],
) -> float:
    """Blocks per face when every face runs to the deepest exit any pair of its template
    needed (the compute a whole benchmark costs with the deeper features computed lazily)."""
    tids, inv = np.unique(templates, return_inverse=True)
    deepest = np.zeros(tids.size, dtype=np.int64)
    for side in (p1, p2):
        pos = np.searchsorted(tids, side)
        np.maximum.at(deepest, pos, pair_exits)
    return float(deepest[inv].mean())


def _calibrate_cascade(data: CalibrationSet, target: Target, ks: tuple[int, ...], model_rec: dict[str, Any]) -> Policy:
    from vitfree.metrics import tar_at_far, tar_at_far_points

    depth = int(model_rec["depth"])
    y = np.asarray(data.labels)
    cols = [np.asarray(data.pair_scores(data.feats[k]), dtype=np.float64) for k in ks]
    mat = np.stack(cols, axis=1)
    thr = np.array([float(tar_at_far_points(y, c.astype(np.float32), [target.far]).thresholds[0]) for c in cols])
    scales = np.array([max(float(c[y == 0].std()), 1e-6) for c in cols])
    full = float(tar_at_far(y, np.asarray(data.pair_scores(data.feats[depth])), [target.far])[0])
    dist = np.abs(mat[:, :-1] - thr[:-1]) / scales[:-1]
    cands = np.unique(np.concatenate([[0.0], _candidates(dist.ravel())]))
    costs = np.zeros(cands.size)
    accs = np.zeros(cands.size)
    for j, a in enumerate(cands):
        pol = Policy("cascade", ks, {"far": target.far, "alpha": float(min(a, 1e300)), "thresholds": thr.tolist(),
                                     "scales": scales.tolist()})  # fmt: skip
        r = cascade_scores(pol, mat)
        costs[j] = float(r.exits.mean())
        accs[j] = float(tar_at_far(y, r.scores, [target.far])[0])
    j = _select(costs, accs, full, target)
    alpha = float(min(cands[j], 1e300))
    pol = Policy("cascade", ks, {"far": target.far, "alpha": alpha, "thresholds": thr.tolist(), "scales": scales.tolist()},
                 model=model_rec, target=target)  # fmt: skip
    r = cascade_scores(pol, mat)
    calib = {
        **data.source, "far": target.far, "full_exit": depth,
        "full_tar_percent": round(full * 100, 4),
        "tar_percent": round(float(accs[j]) * 100, 4),
        "tar_loss_points": round((full - float(accs[j])) * 100, 4),
        "avg_blocks": round(float(costs[j]), 4), "blocks_are": "per pair (decision exit)",
        "face_blocks": round(face_blocks_of_pairs(r.exits, data.p1, data.p2, data.templates), 4),
        "exit_histogram": _histogram(r.exits, ks),
        "curve_columns": ["alpha", "avg_pair_blocks", "tar_percent"],
        "curve": _curve(np.minimum(cands, 1e300), costs, accs),
    }
    return dataclasses.replace(pol, calibration=calib)


def _search_inputs(
    data: CalibrationSet, ks: Sequence[int]
) -> list[tuple[dict[int, Any], dict[int, Any], npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[np.int64]]]:
    """Per gallery: probe and gallery template features per exit, subjects, and the number of
    images of each probe template (a probe's blocks weigh by its images)."""
    if data.onen is None:
        raise InputError("the search cascade needs the 1:N lists (gallery and probe csvs) of the calibration set")
    per_exit = {k: data.template_feats(data.feats[k]) for k in ks}
    tids = per_exit[ks[0]][1]
    counts = np.bincount(np.searchsorted(tids, data.templates), minlength=tids.size)
    out = []
    pt, ps = data.onen.probes
    for gt, gs in (data.onen.gallery1, data.onen.gallery2):
        mated = np.isin(ps, gs)
        sel_p = np.searchsorted(tids, pt[mated])
        sel_g = np.searchsorted(tids, gt)
        probes = {k: per_exit[k][0][sel_p] for k in ks}
        gallery = {k: per_exit[k][0][sel_g] for k in ks}
        out.append((probes, gallery, ps[mated], np.asarray(gs), counts[sel_p]))
    return out


def search_rank1(
    policy: Policy, data: CalibrationSet
) -> tuple[float, float, int, npt.NDArray[np.int64]]:
    """Closed-set rank-1 of the search cascade on a set's 1:N lists (each mated probe against
    the gallery holding its subject), blocks per probe image, comparisons, and the exits."""
    hits = 0
    n = 0
    blocks = 0.0
    images = 0
    comps = 0
    exits = []
    for probes, gallery, psub, gsub, cnt in _search_inputs(data, policy.exits):
        r = search_cascade(policy, probes, gallery)
        hits += int((gsub[r.candidates[:, 0]] == psub).sum())
        n += psub.size
        blocks += float((r.exits * cnt).sum())
        images += int(cnt.sum())
        comps += r.comparisons
        exits.append(r.exits)
    return hits / max(n, 1), blocks / max(images, 1), comps, np.concatenate(exits)


def _calibrate_search(
    data: CalibrationSet, target: Target, ks: tuple[int, ...], depth: int, top_k: int, model_rec: dict[str, Any]
) -> Policy:
    full_pol = Policy("search-cascade", (depth,), {"top_k": 1, "margin": 0.0})
    full_data = dataclasses.replace(data, feats={depth: data.feats[depth]})
    full, _, _, _ = search_rank1(full_pol, full_data)
    # gaps at the first checked exits decide; try their quantiles
    probe = Policy("search-cascade", ks, {"top_k": top_k, "margin": 0.0})
    gaps = []
    for probes, gallery, *_ in _search_inputs(data, ks):
        for k in ks[:-1]:
            s = np.sort(probes[k] @ gallery[k].T, axis=1)
            if s.shape[1] > 1:
                gaps.append(s[:, -1] - s[:, -2])
    cands = _candidates(np.concatenate(gaps).astype(np.float64)) if gaps else np.array([np.inf])
    cands = np.unique(np.concatenate([[0.0], cands]))
    costs = np.zeros(cands.size)
    accs = np.zeros(cands.size)
    for j, m in enumerate(cands):
        pol = dataclasses.replace(probe, params={"top_k": top_k, "margin": float(min(m, 1e300))})
        accs[j], costs[j], _, _ = search_rank1(pol, data)
    j = _select(costs, accs, full, target)
    pol = Policy("search-cascade", ks, {"top_k": top_k, "margin": float(min(cands[j], 1e300))},
                 model=model_rec, target=target)  # fmt: skip
    _, _, comps, ex = search_rank1(pol, data)
    calib = {
        **data.source, "full_exit": depth, "full_rank1_percent": round(full * 100, 4),
        "rank1_percent": round(float(accs[j]) * 100, 4),
        "rank1_loss_points": round((full - float(accs[j])) * 100, 4),
        "avg_blocks": round(float(costs[j]), 4), "blocks_are": "per probe image",
        "comparisons": comps, "exit_histogram": _histogram(ex, ks),
        "curve_columns": ["margin", "avg_probe_blocks", "rank1_percent"],
        "curve": _curve(np.minimum(cands, 1e300), costs, accs),
    }
    return dataclasses.replace(pol, calibration=calib)


def calibration_set(
    model: VisionTransformer,
    root: str | os.PathLike[str],
    exits: Sequence[int],
    work: str | os.PathLike[str],
    *,
    dataset: str = "IJBC",
    batch_size: int = 64,
    num_workers: int | None = None,
    device: Any = None,
    amp: str | None = None,
    use_flip: bool = True,
    use_faceness: bool = True,
    normalize_images: bool = False,
    one_n: bool = False,
    progress: bool = True,
) -> CalibrationSet:
    """Embed a held-out IJB-format set at ``exits`` (and the full depth) for calibration.

    Features go into ``work/features`` (a resumable feature store: rerunning reuses them, and
    a store there with more exits, e.g. of every block, serves any policy's exits).  Use a
    fresh ``work`` folder for another set or model: the store refuses to mix them.
    """
    from vitfree.data import load_ijb_1n, load_ijb_meta
    from vitfree.errors import StoreError
    from vitfree.extract import extract_ijb
    from vitfree.store import load_feature_sets, read_manifest

    ks = sorted(set(_exits_tuple(exits)) | {model.depth})
    store_dir = Path(work) / "features"
    try:  # a store of this folder with more exits (another policy's calibration) is reused
        have = read_manifest(store_dir).get("exits") or []
    except StoreError:
        have = []
    if set(ks) < set(int(k) for k in have):
        ks = sorted(int(k) for k in have)
    meta = load_ijb_meta(root, dataset)
    onen = load_ijb_1n(root, dataset) if one_n else None
    res = extract_ijb(model, root, Path(work) / "features", meta=meta, dataset=dataset, exits=ks,
                      batch_size=batch_size, num_workers=num_workers, device=device, amp=amp,
                      progress=progress)  # fmt: skip
    if not res.complete:
        raise InputError(f"the calibration features in {Path(work) / 'features'} are incomplete; rerun to resume")
    feats = {}
    for fs in load_feature_sets(Path(work) / "features", exits=ks):
        assert fs.exit is not None
        v = np.asarray(fs.feats, dtype=np.float32)
        feats[fs.exit] = v + np.asarray(fs.flip, dtype=np.float32) if (use_flip and fs.flip is not None) else v.copy()
    source = {
        "data": str(Path(root).resolve()), "dataset": dataset, "images": len(meta),
        "templates": int(np.unique(meta.templates).size), "pairs": int(meta.labels.size),
        "genuine": int((meta.labels == 1).sum()), "flip": use_flip, "faceness": use_faceness,
        "normalize_images": normalize_images,
    }  # fmt: skip
    note = Path(meta.meta_dir).parent / "SYNTHETIC.txt"
    if note.is_file():
        source["synthetic"] = note.read_text().splitlines()[0]
        try:
            source["synthetic_params"] = json.loads("\n".join(note.read_text().splitlines()[1:]))
        except ValueError:
            pass
    return CalibrationSet.from_meta(feats, meta, onen=onen, use_faceness=use_faceness,
                                    normalize_images=normalize_images, source=source)  # fmt: skip


def model_record(model: VisionTransformer) -> dict[str, Any]:
    """What a policy file records about its model (checked by :func:`load_policy`)."""
    from vitfree.models import model_fingerprint

    return {"fingerprint": model_fingerprint(model), "depth": int(model.depth),
            "config": model.config.describe(), "arch": model.arch}  # fmt: skip


def calibrate(
    model: VisionTransformer,
    kind: str,
    target: Target,
    data: str | os.PathLike[str] | None = None,
    *,
    exits: Sequence[int] | None = None,
    out: str | os.PathLike[str] | None = None,
    work: str | os.PathLike[str] | None = None,
    synth_seed: int | None = None,
    synth_subjects: int = 150,
    dataset: str = "IJBC",
    top_k: int = 10,
    net: Mapping[str, Any] | None = None,
    train_identities: int = 200,
    train_images: int = 6,
    train_seed: int = 21,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: Any = None,
    amp: str | None = None,
    use_flip: bool = True,
    use_faceness: bool = True,
    normalize_images: bool = False,
    progress: bool = True,
    per_template: bool = False,
    pair_exit: str = "own",
) -> Policy:
    """Calibrate a policy of ``kind`` for ``model`` on a held-out IJB-format set
    (``vitfree dynamic calibrate``).

    Args:
        model: the face ViT.
        kind: one of :data:`KINDS`.
        target: what to meet (:class:`Target`).
        data: the calibration set's IJB root (people disjoint from the evaluation set's), or
            None with ``synth_seed``: a SYNTHETIC IJB-C-format set of ``synth_subjects`` people
            of that seed is rendered into ``work/data`` (impostor pairs 100x the genuine ones,
            so that FAR 1e-4 is resolved).
        exits: the checked exits (default :func:`default_policy_exits`).
        out: write the policy file here.
        work: folder for the rendered data and the features (default: a temporary folder).
        top_k: the search cascade's candidates.
        net: a trained decision net for ``learned`` (default: :func:`train_decision_net` with
            ``train_identities`` x ``train_images`` SYNTHETIC faces of ``train_seed``).
        batch_size, num_workers, device, amp, progress: as in :func:`vitfree.extract.extract_ijb`.
        use_flip, use_faceness, normalize_images: the protocol (community defaults).
        per_template, pair_exit: face policies: calibrate for per-template exits and pairs
            scored at a common exit (:func:`calibrate_features`).

    Returns:
        The calibrated :class:`Policy` (also written to ``out``).
    """
    from vitfree.models import VisionTransformer as _VT

    if not isinstance(model, _VT):
        raise InputTypeError(f"expected a vitfree.models.VisionTransformer, got {type(model).__name__}")
    if kind not in KINDS:
        raise InputError(f"unknown policy {kind!r}; known: {', '.join(KINDS)}")
    if not isinstance(target, Target):
        raise InputTypeError(f"target must be a vitfree.dynamic.Target, got {type(target).__name__}")
    ks = list(_exits_tuple(exits if exits is not None else default_policy_exits(model.depth, kind)))
    if ks[-1] > model.depth:
        raise InputError(f"checked exit {ks[-1]} is past the model's depth ({model.depth})")
    if data is None and synth_seed is None:
        raise InputError("give the calibration data (an IJB root) or synth_seed to render one")
    _check_target(kind, target)  # before any extraction
    model.eval()
    tmp = tempfile.TemporaryDirectory(prefix="vitfree-calibrate-") if work is None else None
    folder = Path(tmp.name if tmp is not None else work)  # type: ignore[arg-type]
    try:
        root = Path(data) if data is not None else folder / "data"
        synth = None
        if data is None:
            from vitfree.synthetic.sets import write_ijbc

            synth = {"seed": synth_seed, "subjects": synth_subjects, "preset": "medium", "impostor_ratio": 100.0}
            if not (root / dataset / "SYNTHETIC.txt").is_file():
                log.info("rendering a SYNTHETIC calibration set: %d people of seed %d", synth_subjects, synth_seed)
                write_ijbc(root, synth_subjects, seed=int(synth_seed), preset="medium", impostor_ratio=100.0,  # type: ignore[arg-type]
                           dataset=dataset, overwrite=True, progress=progress)  # fmt: skip
        cs = calibration_set(model, root, ks, folder, dataset=dataset, batch_size=batch_size,
                             num_workers=num_workers, device=device, amp=amp, use_flip=use_flip,
                             use_faceness=use_faceness, normalize_images=normalize_images,
                             one_n=kind == "search-cascade", progress=progress)  # fmt: skip
        if synth is not None:
            cs.source["rendered"] = synth
        if kind == "learned" and net is None:
            net = train_decision_net(model, ks, identities=train_identities, images_per_identity=train_images,
                                     seed=train_seed, batch_size=batch_size, progress=progress)  # fmt: skip
        policy = calibrate_features(kind, cs, target, exits=ks, depth=model.depth, net=net, top_k=top_k,
                                    model=model_record(model), per_template=per_template,
                                    pair_exit=pair_exit)  # fmt: skip
    finally:
        if tmp is not None:
            tmp.cleanup()
    if out is not None:
        save_policy(policy, out)
    return policy


# --------------------------------------------------------------------------------------
# policy files
# --------------------------------------------------------------------------------------


def save_policy(policy: Policy, path: str | os.PathLike[str]) -> Path:
    """Write ``policy`` as JSON (atomically: a temporary file, then a rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(policy.as_dict(), indent=1) + "\n")
    os.replace(tmp, p)
    return p


def load_policy(path: str | os.PathLike[str], model: VisionTransformer | None = None) -> Policy:
    """Read a policy file; with ``model``, refuse a policy calibrated for another model.

    Raises:
        FileNotFoundError: no such file.
        FormatError: not JSON, or not a vitfree policy (the file named).
        InputError: an unknown kind or a parameter out of range (the file named).
        CheckpointError: the policy was calibrated for another model (both fingerprints named).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"policy file not found: {p}")
    try:
        d = json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{p} is not a JSON policy file: {e}") from None
    if not isinstance(d, dict) or d.get("format") != POLICY_FORMAT:
        raise FormatError(f"{p} is not a vitfree policy file (no \"format\": \"{POLICY_FORMAT}\")")
    try:
        policy = Policy.from_dict(d)
    except (InputError, InputTypeError) as e:
        raise InputError(f"{p}: {e}") from None
    if model is not None:
        check_policy_model(policy, model, str(p))
    return policy


def check_policy_model(policy: Policy, model: VisionTransformer, where: str = "the policy") -> None:
    """Raise :class:`CheckpointError` unless ``policy`` was calibrated for ``model``."""
    from vitfree.models import model_fingerprint

    rec = policy.model or {}
    want = rec.get("fingerprint")
    if want is None:
        if policy.exits[-1] > model.depth:
            raise CheckpointError(f"{where} checks exit {policy.exits[-1]} but the model has {model.depth} blocks")
        return
    have = model_fingerprint(model)
    if want != have:
        raise CheckpointError(
            f"{where} was calibrated for another model (fingerprint {want}, "
            f"{rec.get('config', '?')}); this model is {have} ({model.config.describe()}). "
            f"Thresholds do not carry over between models: calibrate one for this model "
            f"with 'vitfree dynamic calibrate'"
        )


def resolve_policy(policy: Policy | str | os.PathLike[str], model: VisionTransformer | None = None) -> Policy:
    """A :class:`Policy` from a policy or a policy file, checked against ``model``."""
    if isinstance(policy, Policy):
        if model is not None:
            check_policy_model(policy, model)
        return policy
    if isinstance(policy, str) and policy in KINDS and not Path(policy).exists():
        raise InputError(
            f"{policy!r} is a policy kind, not a policy file: calibrate one first "
            f"(vitfree dynamic calibrate --policy {policy} ... --out policy.json)"
        )
    if isinstance(policy, (str, os.PathLike)):
        return load_policy(policy, model)
    raise InputTypeError(f"expected a Policy or a policy file, got {type(policy).__name__}")


# --------------------------------------------------------------------------------------
# policies in the evaluation pipelines (vitfree eval ijbc|ijbb|bin|pairs --policy FILE)
# --------------------------------------------------------------------------------------


def dynamic_cost(model: VisionTransformer, policy: Policy, exits: npt.ArrayLike) -> dict[str, float]:
    """Average blocks, heads, GFLOPs and FLOP ratio per face of faces that stopped at ``exits``.

    A face that stopped at exit k ran the patch embedding, k blocks and one head per
    checked exit up to k (:func:`vitfree.models.exit_costs` counts the static exits).
    """
    from vitfree.models import exit_costs

    ex = np.asarray(exits, dtype=np.int64)
    costs = {c.exit: c for c in exit_costs(model)}
    full = costs[model.depth].gflops or 0.0
    head = _head_gflops(model)  # each checked exit before a face's own ran one more head
    ks = np.asarray(policy.exits, dtype=np.int64)
    heads = np.searchsorted(ks, ex, side="right").astype(np.float64)
    g = np.array([costs[int(k)].gflops or 0.0 for k in ex]) + (heads - 1.0) * head
    return {
        "avg_blocks": float(ex.mean()) if ex.size else 0.0,
        "avg_heads": float(heads.mean()) if ex.size else 0.0,
        "gflops": float(g.mean()) if ex.size else 0.0,
        "flop_ratio": float(g.mean() / full) if ex.size and full else 0.0,
    }


def _head_gflops(model: VisionTransformer) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vitfree.models.heads import ExitHead

    cfg = model.config.replace(depth=model.depth)
    with torch.device("meta"):
        head = ExitHead(cfg).eval()
        t = torch.empty(1, cfg.num_patches, cfg.embed_dim)
    with torch.no_grad(), FlopCounterMode(display=False) as c:
        head.embed(t)
    return c.get_total_flops() / 1e9


def _dyn_cost_record(model: VisionTransformer, policy: Policy, exits: npt.ArrayLike, speedup: float | None) -> Any:
    from vitfree.costs import ExitCost

    c = dynamic_cost(model, policy, exits)
    return ExitCost(exit=policy.exits[-1], gflops=c["gflops"], flop_ratio=c["flop_ratio"], speedup=speedup), c


def dynamic_ijb_results(
    policy: Policy,
    model: VisionTransformer,
    meta: IJBMeta,
    onen: IJB1N | None,
    sets: Sequence[FeatureSet],
    options: IJBOptions,
    *,
    batch_size: int = 64,
    num_workers: int | None = None,
    device: Any = None,
    amp: str | None = None,
    skipped_rows: Sequence[int] = (),
    speed: bool = True,
    progress: bool = True,
    face_input: Any = None,
    per_template: bool = False,
    pair_exit: str = "own",
) -> tuple[list[ExitResult], dict[str, Any]]:
    """The rows a policy adds to an IJB evaluation, and what to record about it.

    * a face policy: every image runs to its own exit (:func:`run_dynamic`, image + flip),
      then the usual template aggregation, 1:1 and 1:N; the row's cost is the average per
      face (GFLOPs with the extra heads) and, with ``speed``, the measured speed-up over the
      full model on up to 256 of the benchmark's faces;

      - ``per_template=True``: every image of a template stops at the deepest exit the
        policy chose for any of its images (:func:`template_exits`), so a template lives in
        one exit's space.  The live path decides per image first, then reads the images
        whose template goes deeper again and runs them from the first block to the
        template's exit (their tokens are not kept between the passes): the row's cost is
        the blocks the rule needs (the template's exit per image); ``info.blocks_run``
        records what this simple two-pass execution actually ran and ``info.rerun_images``
        how many images it read twice; no speed is measured;
      - ``pair_exit="common"``: each pair is scored at the deepest exit both templates
        reached (:func:`common_exit_scores`); it needs every image's embedding at every
        checked exit it passed, kept in memory (checked exits x images x features float32)
        and it runs no extra block; 1:1 only (the 1:N search has no pair to share an
        exit with), ``info.avg_pair_exit`` is the average exit a pair was scored at;
    * a ``cascade``: the pairs decided exit by exit from the static exits' template features
      (``sets`` must hold the checked exits); 1:1 only;
    * a ``search-cascade``: rank-1 of the cascade, recorded in the info (no table row).
    """
    from vitfree.evaluate import ExitResult, evaluate_ijb_exits

    by_exit = {fs.exit: fs for fs in sets if fs.exit is not None}
    info: dict[str, Any] = {"policy": policy.describe(), "kind": policy.kind, "target": policy.target.as_dict()
                            if policy.target else None, "calibration": dict(policy.calibration or {})}  # fmt: skip
    for key in ("curve", "curve_columns"):
        info["calibration"].pop(key, None)
    _check_bool(per_template)
    _check_pair_exit(pair_exit)
    if not policy.is_face_policy and (per_template or pair_exit != "own"):
        raise InputError(f"per-template exits and common-exit pairs are options of face policies "
                         f"({', '.join(FACE_KINDS)}), not of a {policy.kind} policy")  # fmt: skip
    if policy.is_face_policy:
        common = pair_exit == "common"
        live = _dynamic_ijb_features(
            model, meta, policy, batch_size=batch_size, num_workers=num_workers, device=device, amp=amp,
            flip=options.use_flip, skipped_rows=skipped_rows, progress=progress, face_input=face_input,
            per_template=per_template, keep_passed=common,
        )  # fmt: skip
        feats, exits = live.feats, live.exits
        speedup = None
        if speed and live.faces.shape[0] and not (per_template or common):
            t = measure_dynamic_speed(model, live.faces, {"dynamic": policy}, [model.depth], batch_size=batch_size,
                                      flip=options.use_flip, amp=amp)  # fmt: skip
            speedup = t[f"exit {model.depth}"] / t["dynamic"]
            info["seconds_per_face"] = t
        cost, c = _dyn_cost_record(model, policy, exits, speedup)
        mode = ", per template" if per_template else ""
        info.update(c, exit_histogram=_histogram(exits, policy.exits), images_per_s=len(meta) / max(live.secs, 1e-9),
                    speedup=speedup, per_template=bool(per_template), pair_exit=pair_exit,
                    blocks_run=live.blocks_run, rerun_images=live.rerun)  # fmt: skip
        if common:
            label = f"dynamic ({policy.kind}{mode}, common-exit pairs, {c['avg_blocks']:.2f} blocks)"
            ver, pex = _common_exit_verification(policy, meta, live, options)
            info.update(avg_pair_exit=float(pex.mean()) if pex.size else 0.0,
                        pair_exit_histogram=_histogram(pex, policy.exits))  # fmt: skip
            log.info("%s: %.2f blocks per face, pairs scored at exit %.2f on average",
                     policy.describe(), c["avg_blocks"], info["avg_pair_exit"])  # fmt: skip
            return [ExitResult(label, None, ver, None, cost)], info
        from vitfree.store import FeatureSet as _FS

        label = f"dynamic ({policy.kind}{mode}, {c['avg_blocks']:.2f} blocks)"
        res = evaluate_ijb_exits([_FS(label, feats, None, None, cost)], meta, onen, options)
        log.info("%s: %.2f blocks per face on average (%s)", policy.describe(), c["avg_blocks"], info["exit_histogram"])
        return list(res), info
    missing = [k for k in policy.exits if k not in by_exit]
    if missing:
        raise InputError(f"the cascade needs features of its exits {missing}")
    cs = CalibrationSet.from_meta(
        {k: _summed(by_exit[k], options.use_flip) for k in policy.exits}, meta, onen=onen,
        use_faceness=options.use_faceness, normalize_images=options.normalize_images,
    )  # fmt: skip
    if policy.kind == "cascade":
        from vitfree.ijb import VerificationResult
        from vitfree.metrics import roc, tar_at_far_points

        mat = np.stack([np.asarray(cs.pair_scores(cs.feats[k]), dtype=np.float64) for k in policy.exits], axis=1)
        r = cascade_scores(policy, mat)
        y = np.asarray(meta.labels)
        rc = roc(y, r.scores)
        tf, tids = cs.template_feats(cs.feats[policy.exits[-1]])
        ver = VerificationResult(
            nearest=tar_at_far_points(rc, fars=options.fars, rule="nearest"),
            at_most=tar_at_far_points(rc, fars=options.fars, rule="at_most"),
            roc=rc, auc=rc.auc(), scores=r.scores.astype(np.float32), template_feats=tf, template_ids=tids,
            n_images=len(meta),
        )  # fmt: skip
        face_blocks = face_blocks_of_pairs(r.exits, meta.p1, meta.p2, meta.templates)
        from vitfree.costs import ExitCost
        from vitfree.models import exit_costs

        full = {x.exit: x for x in exit_costs(model)}
        ratio = float(np.mean([full[int(k)].flop_ratio or 0.0 for k in r.exits]))
        cost = ExitCost(exit=policy.exits[-1], flop_ratio=ratio)
        label = f"cascade ({float(r.exits.mean()):.2f} blocks/pair)"
        tp = r.accept & (y == 1)
        fp = r.accept & (y == 0)
        info.update(
            avg_pair_blocks=float(r.exits.mean()), face_blocks=face_blocks,
            exit_histogram=_histogram(r.exits, policy.exits),
            decisions={"tar_percent": round(100 * float(tp.sum()) / max(int((y == 1).sum()), 1), 4),
                       "far": float(fp.sum()) / max(int((y == 0).sum()), 1)},
        )  # fmt: skip
        return [ExitResult(label, None, ver, None, cost)], info
    if onen is None:
        raise InputError("a search-cascade policy needs the 1:N csvs (do not pass --no-1n)")
    rank1, blocks, comps, ex = search_rank1(policy, cs)
    info.update(rank1_percent=round(rank1 * 100, 4), avg_probe_blocks=blocks, comparisons=comps,
                exit_histogram=_histogram(ex, policy.exits))  # fmt: skip
    log.info("%s: rank-1 %.2f%%, %.2f blocks per probe image, %d comparisons",
             policy.describe(), rank1 * 100, blocks, comps)  # fmt: skip
    return [], info


def _summed(fs: FeatureSet, use_flip: bool) -> npt.NDArray[np.float32]:
    v = np.asarray(fs.feats, dtype=np.float32)
    return v + np.asarray(fs.flip, dtype=np.float32) if (use_flip and fs.flip is not None) else v


class _LiveFeatures(NamedTuple):
    feats: npt.NDArray[np.float32]  # (N, F) every row at its exit
    exits: npt.NDArray[np.int64]  # (N,) after the per-template extension
    faces: npt.NDArray[np.uint8]  # a sample of aligned faces for the speed measurement
    secs: float
    passed: npt.NDArray[np.float32] | None  # (m, N, F) at every checked exit passed, NaN elsewhere
    blocks_run: float  # blocks per image the two passes ran
    rerun: int  # images read and run a second time


def _follow_template(exits: npt.NDArray[np.int64], templates: npt.NDArray[np.int64], ok: npt.NDArray[np.bool_]) -> None:
    """Skipped rows (zero features) take the deepest exit of their template's other rows, so
    they neither drive a template deeper nor limit its reach (in place)."""
    if ok.all():
        return
    tids, inv = np.unique(templates, return_inverse=True)
    deepest = np.zeros(tids.size, dtype=np.int64)
    np.maximum.at(deepest, inv[ok], exits[ok])
    bad = ~ok
    exits[bad] = np.where(deepest[inv[bad]] > 0, deepest[inv[bad]], exits[bad])


def _dynamic_ijb_features(
    model: VisionTransformer, meta: IJBMeta, policy: Policy, *, batch_size: int, num_workers: int | None,
    device: Any, amp: str | None, flip: bool, skipped_rows: Sequence[int], progress: bool, keep: int = 256,
    face_input: Any = None, per_template: bool = False, keep_passed: bool = False,
) -> _LiveFeatures:
    """Every IJB image at its own exit (zero features for the images the extraction skipped);
    with ``per_template`` a second pass runs the images whose template goes deeper to the
    template's exit; with ``keep_passed`` every image's embeddings at each checked exit it passed."""
    import torch
    from tqdm.auto import tqdm

    from vitfree.faces import IJBCrops, face_batches
    from vitfree.runtime import default_workers, runtime

    rt = runtime(device, amp)
    model.to(rt.device).eval()
    n = len(meta)
    feats = np.zeros((n, model.num_features), dtype=np.float32)
    exits = np.zeros(n, dtype=np.int64)
    passed = np.full((len(policy.exits), n, model.num_features), np.nan, np.float32) if keep_passed else None
    ok_all = np.ones(n, dtype=bool)
    skip = set(int(r) for r in skipped_rows)
    sample: list[npt.NDArray[np.uint8]] = []
    crops = IJBCrops(meta=meta, normalize=False, skip_bad=True, lenient=True, face_input=face_input)
    fi = crops.face_input
    workers = default_workers(1) if num_workers is None else int(num_workers)
    secs = 0.0
    with tqdm(total=n, desc=f"{meta.dataset} dynamic exits", unit="img", disable=not progress) as bar:
        for batch in face_batches(crops, batch_size, num_workers=workers):
            t0 = time.perf_counter()
            r, p = _run_dynamic(model, batch.images, policy, flip=flip, amp=rt.amp, scaling=fi.pixel_scaling,
                                keep_passed=keep_passed)  # fmt: skip
            secs += time.perf_counter() - t0
            rows = batch.rows
            ok = batch.ok & np.array([int(x) not in skip for x in rows], dtype=bool)
            bad_rows = rows[~batch.ok & ~np.isin(rows, list(skip))]
            if bad_rows.size:
                raise InputError(f"IJB image {crops.path(int(bad_rows[0]))} cannot be used (rerun with --skip-bad)")
            fin = np.isfinite(r.embeddings).all(axis=1)
            if (~fin & ok).any():
                i = int(np.flatnonzero(~fin & ok)[0])
                raise NonFiniteFeaturesError(f"the model gave NaN or infinite features for IJB image {crops.path(int(rows[i]))}")
            feats[rows] = np.where(ok[:, None], r.embeddings, 0.0)
            exits[rows] = r.exits
            ok_all[rows] = ok
            if passed is not None and p is not None:
                passed[:, rows] = np.where(ok[None, :, None], p, 0.0)  # skipped rows: zeros everywhere
            if len(sample) < keep:
                sample.extend(batch.images.permute(0, 2, 3, 1).numpy()[: keep - len(sample)])
            bar.update(len(batch))
    blocks_run = float(exits.sum())
    rerun = 0
    templates = np.asarray(meta.templates, dtype=np.int64)
    _follow_template(exits, templates, ok_all)
    if per_template:
        target = template_exits(exits, templates)
        need = (target > exits) & ok_all
        rerun = int(need.sum())
        for k in np.unique(target[need]).tolist():  # one group per template exit: no row runs past it
            ks = [e for e in policy.exits if e <= k]
            part = IJBCrops(meta=meta, normalize=False, skip_bad=True, lenient=True, face_input=face_input,
                            indices=np.flatnonzero(need & (target == k)))  # fmt: skip
            for batch in tqdm(face_batches(part, batch_size, num_workers=workers), disable=not progress,
                              desc=f"{meta.dataset} to the template's exit {k}", unit="batch"):  # fmt: skip
                x = _as_input(model, batch.images, fi.pixel_scaling)
                with torch.inference_mode(), rt.autocast():
                    out = model.forward_exits(torch.cat([x, x.flip(3)]) if flip else x, ks)
                b = int(x.shape[0])
                e = {j: (v[:b] + v[b:] if flip else v).float().cpu().numpy() for j, v in out.items()}
                feats[batch.rows] = e[k]
                if passed is not None:
                    for i, j in enumerate(policy.exits):
                        if j <= k:
                            passed[i, batch.rows] = e[j]
                blocks_run += k * b
        exits = np.where(ok_all, target, exits)
    faces = np.stack(sample) if sample else np.zeros((0, model.img_size, model.img_size, 3), np.uint8)
    return _LiveFeatures(feats, exits, faces, secs, passed, blocks_run / max(n, 1), rerun)


def _common_exit_verification(
    policy: Policy, meta: IJBMeta, live: _LiveFeatures, options: IJBOptions
) -> tuple[Any, npt.NDArray[np.int64]]:
    """The 1:1 result of pairs scored at the deepest exit both templates reached."""
    from vitfree.ijb import VerificationResult, aggregate_templates
    from vitfree.metrics import roc, tar_at_far_points

    if live.passed is None:
        raise InputError("common-exit pairs need the embeddings of every checked exit passed (keep_passed)")
    w = meta.faceness if options.use_faceness else None
    by_exit = {k: live.passed[i] for i, k in enumerate(policy.exits)}
    r = common_exit_scores(by_exit, live.exits, meta.templates, meta.medias, meta.p1, meta.p2,
                           weights=w, normalize_images=options.normalize_images)  # fmt: skip
    # the template features recorded: each template at its reach (every image has it there)
    _, inv = np.unique(np.asarray(meta.templates, dtype=np.int64), return_inverse=True)
    at = np.searchsorted(np.asarray(policy.exits), r.template_exits[inv])
    img = live.passed[at, np.arange(len(meta))]
    tf, tids = aggregate_templates(img, meta.templates, meta.medias, w, normalize_images=options.normalize_images)
    rc = roc(np.asarray(meta.labels), r.scores)
    ver = VerificationResult(
        nearest=tar_at_far_points(rc, fars=options.fars, rule="nearest"),
        at_most=tar_at_far_points(rc, fars=options.fars, rule="at_most"),
        roc=rc, auc=rc.auc(), scores=r.scores, template_feats=tf, template_ids=tids, n_images=len(meta),
    )  # fmt: skip
    return ver, r.pair_exits


def dynamic_pairset_results(
    policy: Policy,
    model: VisionTransformer,
    pairset: Any,
    *,
    name: str,
    batch_size: int = 64,
    n_folds: int = 10,
    far_target: float = 1e-3,
    amp: str | None = None,
    progress: bool = False,
) -> tuple[list[PairSetResult], dict[str, Any]]:
    """The ``.bin`` protocol on embeddings at each face's own exit (a face policy)."""
    from vitfree.evaluate import evaluate_pairset_embeddings

    if not policy.is_face_policy:
        raise InputError(
            f".bin sets and pair lists take face policies ({', '.join(FACE_KINDS)}); a {policy.kind} "
            f"policy works on IJB templates (vitfree eval ijbc --policy)"
        )
    images = np.asarray(getattr(pairset, "images", pairset))
    r = embed_faces(model, images, policy, batch_size=batch_size, amp=amp, progress=progress, desc=f"{name} dynamic")
    cost, c = _dyn_cost_record(model, policy, r.exits, None)
    label = f"{name} dynamic ({policy.kind}, {c['avg_blocks']:.2f} blocks)"
    res = evaluate_pairset_embeddings({policy.exits[-1]: r.embeddings}, pairset.issame, name=label,
                                      n_folds=n_folds, far_target=far_target, costs={policy.exits[-1]: cost})  # fmt: skip
    return res, {**c, "set": name, "exit_histogram": _histogram(r.exits, policy.exits)}
